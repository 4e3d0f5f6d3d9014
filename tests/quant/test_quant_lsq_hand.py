"""LSQ forward values and gradients on small cases worked out by hand.

Rules (PAPER.md §1): q = clip(round(v/s), -Qn, Qp), out = q*s;
d out/dx = 1 iff -Qn <= v/s <= Qp (unrounded, edges inside); d out/ds = round(v/s) - v/s inside,
-Qn below, Qp above; scale gradient times g = 1/sqrt(N*Qp). torch.round sends ties to even.
"""

import math

import torch
from quant_testutils import quantize_with_grads, ready_quantizer


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


def test_signed_per_tensor_edges_outside_and_ties():
    # 3-bit signed: Qn=4, Qp=3, s=0.5. Per element (v/s -> q, out, dx, ds):
    #  -2.0 : -4.0 edge, inside -> -4, -2.0, 1,  0
    #  -2.1 : -4.2 below        -> -4, -2.0, 0, -4
    #   1.5 :  3.0 edge, inside ->  3,  1.5, 1,  0
    #   1.6 :  3.2 above        ->  3,  1.5, 0,  3
    #   0.25:  0.5 tie          ->  0,  0.0, 1, -0.5
    #   0.75:  1.5 tie          ->  2,  1.0, 1,  0.5
    #  -0.75: -1.5 tie          -> -2, -1.0, 1, -0.5
    #  -1.25: -2.5 tie          -> -2, -1.0, 1,  0.5
    #   0.6 :  1.2              ->  1,  0.5, 1, -0.2
    #  -0.3 : -0.6              -> -1, -0.5, 1, -0.4
    # sum ds = -1.6; N = 10, g = 1/sqrt(30): grad_s = -1.6/sqrt(30) = -0.2921187
    q = ready_quantizer(3, 0.5, signed=True)
    x = [-2.0, -2.1, 1.5, 1.6, 0.25, 0.75, -0.75, -1.25, 0.6, -0.3]
    out, gx, gs, _ = quantize_with_grads(q, x)
    close(out, [-2.0, -2.0, 1.5, 1.5, 0.0, 1.0, -1.0, -1.0, 0.5, -0.5])
    close(gx, [1, 0, 1, 0, 1, 1, 1, 1, 1, 1])
    close(gs, -0.2921187)
    assert math.isclose(-1.6 / math.sqrt(30), -0.2921187, abs_tol=1e-7)


def test_unsigned_per_tensor():
    # 2-bit unsigned: Qn=0, Qp=3, s=0.25.
    #  -0.1  : -0.4 below        -> 0, 0.0,  0, -Qn = 0
    #   0.0  :  0.0 edge, inside -> 0, 0.0,  1, 0
    #   0.75 :  3.0 edge, inside -> 3, 0.75, 1, 0
    #   0.8  :  3.2 above        -> 3, 0.75, 0, 3
    #   0.375:  1.5 tie          -> 2, 0.5,  1, 0.5
    #   0.625:  2.5 tie          -> 2, 0.5,  1, -0.5
    # sum ds = 3; N = 6, g = 1/sqrt(18): grad_s = 3/sqrt(18) = 0.7071068
    q = ready_quantizer(2, 0.25, signed=False)
    out, gx, gs, _ = quantize_with_grads(q, [-0.1, 0.0, 0.75, 0.8, 0.375, 0.625])
    close(out, [0.0, 0.0, 0.75, 0.75, 0.5, 0.5])
    close(gx, [0, 1, 1, 0, 1, 1])
    close(gs, 0.7071068)


PER_CHANNEL_X = [[-2.0, 1.4, -0.5], [0.5, -1.2, 0.2]]
PER_CHANNEL_GRAD_OUT = [[1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]
# 2-bit signed: Qn=2, Qp=1; channel 0 has s=1, channel 1 has s=0.5. Upstream gradient weights.
# ch0:  -2.0: -2.0 edge -> -2, -2.0, dx 1, ds 0      (weight 1)
#        1.4:  1.4 above ->  1,  1.0, dx 0, ds 1      (weight 2)
#       -0.5: -0.5 tie   -> -0, -0.0, dx 1, ds 0.5    (weight 1)
# ch1:   0.5:  1.0 edge ->  1,  0.5, dx 1, ds 0      (weight 1)
#       -1.2: -2.4 below -> -2, -1.0, dx 0, ds -2     (weight 1)
#        0.2:  0.4       ->  0,  0.0, dx 1, ds -0.4   (weight 2)
# grad_x = weight * dx; N = 3 per channel, g = 1/sqrt(3):
# grad_s = [(2*1 + 0.5)/sqrt(3), (-2 + 2*-0.4)/sqrt(3)] = [1.4433757, -1.6165808]
PER_CHANNEL_OUT = [[-2.0, 1.0, 0.0], [0.5, -1.0, 0.0]]
PER_CHANNEL_GRAD_X = [[1.0, 0.0, 1.0], [1.0, 0.0, 2.0]]
PER_CHANNEL_GRAD_S = [1.4433757, -1.6165808]


def test_signed_per_channel_axis0():
    q = ready_quantizer(2, [1.0, 0.5], signed=True, per_channel=True, channel_axis=0)
    out, gx, gs, _ = quantize_with_grads(q, PER_CHANNEL_X, torch.tensor(PER_CHANNEL_GRAD_OUT))
    close(out, PER_CHANNEL_OUT)
    close(gx, PER_CHANNEL_GRAD_X)
    close(gs, PER_CHANNEL_GRAD_S)


def test_signed_per_channel_axis1_is_the_transpose():
    q = ready_quantizer(2, [1.0, 0.5], signed=True, per_channel=True, channel_axis=1)
    x = torch.tensor(PER_CHANNEL_X).T
    out, gx, gs, _ = quantize_with_grads(q, x, torch.tensor(PER_CHANNEL_GRAD_OUT).T)
    close(out, torch.tensor(PER_CHANNEL_OUT).T)
    close(gx, torch.tensor(PER_CHANNEL_GRAD_X).T)
    close(gs, PER_CHANNEL_GRAD_S)


def test_per_sample_counts_one_sample():
    # 3-bit signed, s=0.5, batch of 2 samples of 3 values. ds per element:
    #  0.6 -> -0.2, 1.6 -> 3 (above), 0.0 -> 0, -2.1 -> -4 (below), 0.25 -> -0.5, 0.75 -> 0.5
    # sum ds = -1.2. per_sample: N = 3, g = 1/sqrt(3*3) = 1/3 -> -0.4.
    # whole tensor: N = 6, g = 1/sqrt(18) -> -1.2/sqrt(18) = -0.2828427.
    x = [[0.6, 1.6, 0.0], [-2.1, 0.25, 0.75]]
    _, _, gs, _ = quantize_with_grads(ready_quantizer(3, 0.5, per_sample=True), x)
    close(gs, -0.4)
    _, _, gs, _ = quantize_with_grads(ready_quantizer(3, 0.5, per_sample=False), x)
    close(gs, -0.2828427)


def test_asymmetric_offset():
    # 2-bit asymmetric: grid 0..3, s=0.5, offset b=-0.25, v = x - b, out = q*s + b.
    #  -0.25: v=0.0,  v/s=0.0 edge -> 0, -0.25, dx 1, ds 0,    db 0
    #  -0.5 : v=-0.25, -0.5 below  -> 0, -0.25, dx 0, ds -0=0, db 1
    #   1.25: v=1.5,   3.0 edge    -> 3,  1.25, dx 1, ds 0,    db 0
    #   1.5 : v=1.75,  3.5 above   -> 3,  1.25, dx 0, ds 3,    db 1
    #   0.5 : v=0.75,  1.5 tie     -> 2,  0.75, dx 1, ds 0.5,  db 0
    #   0.0 : v=0.25,  0.5 tie     -> 0, -0.25, dx 1, ds -0.5, db 0
    # N = 6, g = 1/sqrt(6*3): grad_s = 3/sqrt(18) = 0.7071068, grad_b = 2/sqrt(18) = 0.4714045
    q = ready_quantizer(2, 0.5, offset=-0.25)
    out, gx, gs, gb = quantize_with_grads(q, [-0.25, -0.5, 1.25, 1.5, 0.5, 0.0])
    close(out, [-0.25, -0.25, 1.25, 1.25, 0.75, -0.25])
    close(gx, [1, 0, 1, 0, 1, 1])
    close(gs, 0.7071068)
    close(gb, 0.4714045)


def test_integer_zero_point_rounds_the_offset_straight_through():
    # 2-bit, s=0.5, latent offset b=-0.3: z = round(0.6) = 1, so the grid's offset is -z*s = -0.5 and the forward
    # is the float-offset quantizer's at b=-0.5. Straight through the rounding, d(-z s)/db = 1 and
    # d(-z s)/ds = -(z - (-b/s)) = -0.4: the scale also gets the offset's gradient times -0.4.
    x = [-0.6, -0.5, 0.2, 0.74, 1.1, 2.0]
    q = ready_quantizer(2, 0.5, offset=-0.3, integer_zero_point=True)
    out, gx, gs, gb = quantize_with_grads(q, x)
    ref_out, ref_gx, ref_gs, ref_gb = quantize_with_grads(ready_quantizer(2, 0.5, offset=-0.5), x)
    close(out, ref_out)
    close(out, [-0.5, -0.5, 0.0, 0.5, 1.0, 1.0])
    close(gx, ref_gx)
    close(gb, ref_gb)
    close(gs, ref_gs - 0.4 * ref_gb)
    assert gb.abs() > 0 and int(q.zero_point()) == 1 and q.integers(torch.tensor([-0.5, 0.0])).tolist() == [0, 1]


def test_integer_zero_point_stays_on_the_grid():
    # A positive offset would need z < 0: z clips to 0 (an unsigned grid from 0); z never exceeds Qp either.
    q = ready_quantizer(2, 0.5, offset=0.2, integer_zero_point=True)
    out, _, _, gb = quantize_with_grads(q, [0.1, 0.3, 0.8])
    close(out, [0.0, 0.5, 1.0])
    close(gb, 0.0)
    assert int(q.zero_point()) == 0
    assert int(ready_quantizer(2, 0.5, offset=-9.0, integer_zero_point=True).zero_point()) == 3
