"""The QAT diagnostics: grid offsets on hand-placed weights, the recorders' series, and plots whose drawn
data are the recorded series, saved as valid PNGs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from yoloq.methods.oscillation import OscillationTracker
from yoloq.quant import QuantConv2d
from yoloq.track import plots
from yoloq.track.diagnostics import threshold_note
from yoloq.track.grid import grid_summary
from yoloq.track.oscillation_history import OscillationHistory
from yoloq.track.scale_history import ScaleHistory

S = 0.125  # a power of two: w / s is exact
FRACS = [0.5, 17 / 32, 15 / 32, 0.125, 0.25, 0.75, 0.875, 0.0625]  # the first three are near 0.5


def set_scale(q, value):
    q.scale.data.fill_(value)
    q.initialized.fill_(True)
    q._refresh_cache()


def placed_conv():
    """3-bit weights at integer + FRACS (signed grid -4..3), plus one clipped weight at 10 steps."""
    conv = QuantConv2d(1, len(FRACS) + 1, 1, bias=False, w_bits=3, a_bits=3)
    ints = [-3, -2, -1, 0, 1, 2, 0, -4]
    x = [i + f for i, f in zip(ints, FRACS)] + [10.0]
    conv.weight.data = torch.tensor(x).view(-1, 1, 1, 1) * S
    set_scale(conv.weight_quantizer, S)
    set_scale(conv.act_quantizer, 1.0)
    return conv


def test_grid_offsets_of_placed_weights():
    summary = grid_summary(nn.Sequential(placed_conv()), max_bits=4, bins=8)
    assert summary["per_layer_near_pct"] == {"0": pytest.approx(100 * 3 / 8)}  # the clipped weight is left out
    assert summary["near_pct"] == pytest.approx(37.5)
    counts = np.histogram(FRACS, bins=8, range=(0, 1))[0]
    assert summary["density"] == pytest.approx((counts / len(FRACS) * 8).tolist())
    assert grid_summary(nn.Sequential(placed_conv()), max_bits=2)["per_layer_near_pct"] == {}  # 3 > max_bits
    assert threshold_note(summary, 4) == "37.5% of the latent weights lie within 0.05 of a rounding threshold"
    none = threshold_note(grid_summary(nn.Sequential(placed_conv()), max_bits=2), 2)
    assert none.startswith("no layer at 2 bits or fewer") and "nan" not in none


def test_grid_plot_draws_the_summary(tmp_path):
    summary = grid_summary(nn.Sequential(placed_conv()), max_bits=4, bins=8)
    fig = plots.grid_distribution({"trained": summary})
    density_ax, bar_ax = fig.axes
    assert density_ax.lines[0].get_ydata().tolist() == pytest.approx(summary["density"])
    assert [p.get_height() for p in bar_ax.patches] == pytest.approx([37.5])
    assert_png(plots.save(fig, tmp_path / "grid.png"))


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


class FakeTrainer(SimpleNamespace):
    pass


def test_scale_history_keeps_the_last_window_in_order_raw_and_ema():
    model, ema = nn.Sequential(placed_conv()), nn.Sequential(placed_conv())
    trainer = FakeTrainer(model=model, eval_model=ema, device=torch.device("cpu"), step=0)
    hist = ScaleHistory(window=3)
    hist.on_stage_start(trainer)
    assert hist.names == ["w/0", "a/0"]
    for step in range(1, 6):
        trainer.step = step
        set_scale(model[0].weight_quantizer, step)
        set_scale(ema[0].weight_quantizer, 10 * step)
        hist.on_step_end(trainer)
    s = hist.series()
    assert s["steps"] == [3, 4, 5] and s["bits"] == [3, 3]
    assert [r[0] for r in s["raw"]] == [3, 4, 5] and [r[0] for r in s["ema"]] == [30, 40, 50]
    assert [r[1] for r in s["raw"]] == [1, 1, 1]
    trainer.eval_model = model  # no EMA copy: no EMA series
    hist.on_stage_start(trainer)
    assert hist.series()["ema"] is None and hist.series()["steps"] == []


def test_scale_plot_shows_the_most_moving_scales(tmp_path):
    steps = list(range(1, 11))
    raw = [[1.0, 1.0 + 0.1 * (t % 2), 2.0 + 0.01 * t, 0.5 + 0.2 * (t % 2)] for t in steps]
    ema = [[1.0, 1.05, 2.0, 0.6] for _ in steps]
    series = {"steps": steps, "names": ["w/model.1.conv", "w/model.2.conv", "w/model.3.conv", "a/model.2.conv"],
              "bits": [4, 4, 4, 4], "raw": raw, "ema": ema}
    fig = plots.scale_trajectories(series, k=2)
    top_left = fig.axes[0]  # the weight scale that moved most: model.2 (10% swing)
    assert "2" in top_left.get_title() and top_left.get_title().startswith("weight scale")
    assert top_left.lines[0].get_ydata().tolist() == [r[1] for r in raw]
    assert top_left.lines[1].get_ydata().tolist() == [e[1] for e in ema]
    assert fig.axes[1].lines[0].get_ydata().tolist() == [r[2] for r in raw]
    assert fig.axes[2].get_title().startswith("activation scale")
    assert not fig.axes[3].axison  # only one activation quantizer: the second panel stays empty
    assert_png(plots.save(fig, tmp_path / "scales.png"))


def test_oscillation_history_and_its_plot(tmp_path):
    small, big = OscillationTracker(torch.Size([4])), OscillationTracker(torch.Size([12]))
    tracking = SimpleNamespace(pairs=[("model.1.conv", None, small), ("model.2.conv", None, big)], threshold=0.005)
    hist = OscillationHistory(tracking, every=2)
    trainer = FakeTrainer(step=0, total_steps=5)
    hist.on_stage_start(trainer)
    for step in range(1, 6):
        trainer.step = step
        small.freq.fill_(0.0)
        small.freq[:step - 1] = 0.01  # step-1 of its 4 weights oscillate
        big.freq.fill_(0.001)         # never above the threshold
        hist.on_step_end(trainer)
    s = hist.series()
    assert s["steps"] == [2, 4, 5]  # every 2 steps, and the last step
    np.testing.assert_allclose(s["oscillating_pct"], [[25.0, 0.0], [75.0, 0.0], [100.0, 0.0]])
    assert s["overall_pct"] == pytest.approx([100 * 1 / 16, 100 * 3 / 16, 100 * 4 / 16])
    fig = plots.oscillation_history(s)
    assert fig.axes[0].lines[0].get_ydata().tolist() == pytest.approx(s["overall_pct"])
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), np.asarray(s["oscillating_pct"]).T)
    assert_png(plots.save(fig, tmp_path / "oscillations.png"))


def test_comparison_bars_are_the_means(tmp_path):
    cells = {("lsq", "W4A4"): [0.50, 0.52], ("lsq", "W3A3"): [0.40], ("ema+QC", "W4A4"): [0.58, 0.60]}
    fig = plots.method_comparison(cells, ["lsq", "ema+QC"], ["W4A4", "W3A3"], [0.63])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:2] == pytest.approx([51.0, 59.0])  # W4A4 bars: lsq, ema+QC
    assert heights[2] == pytest.approx(40.0) and np.isnan(heights[3])  # W3A3: lsq, none for ema+QC
    assert_png(plots.save(fig, tmp_path / "compare.png"))


def test_comparison_labels_do_not_overlap_when_long():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    labels = ["lsq asym int-zp", "lsq asym int-zp+QC", "ema asym int-zp+QC[per-tensor, scale only]",
              "ema asym int-zp+QC[lr 0.0001]", "ema pc-W asym int-zp+QC", "ema* asym int-zp soft"]
    cells = {(m, "W4A4"): [0.5] for m in labels}
    fig = plots.method_comparison(cells, labels, ["W4A4"], [0.6])
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels()]
    assert len(boxes) == len(labels)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
