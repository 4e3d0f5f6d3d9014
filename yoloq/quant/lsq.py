"""LSQ fake quantizer (Esser et al., 2019), with LSQ+'s learnable offset as an option."""

import math

import torch
from torch import nn

from . import kernels
from .grid import int_range, soft_round
from .observer import SampleObserver
from .scale_init import INIT_METHODS, initial_scale, zero_point_scale


class LSQFakeQuantize(torch.autograd.Function):
    """out = clip(round(v / s), -Qn, Qp) * s + offset, with v = x - offset (offset may be None).

    Gradients (straight-through estimator), "inside" meaning -Qn <= v/s <= Qp on the unrounded v/s:
      d out/d x      = 1 inside, 0 outside
      d out/d s      = round(v/s) - v/s inside, -Qn below, Qp above
      d out/d offset = 0 inside, 1 outside
    The scale and offset gradients are multiplied by grad_scale and summed to their shapes, so
    scale/offset may be passed as views that broadcast against x (e.g. [1, C, 1, 1]).
    The math is kernels.py's (fused where compiled); the output and grad_x have x's dtype.
    """

    @staticmethod
    def forward(ctx, x, scale, offset, qn: int, qp: int, grad_scale: float):
        # Only the inputs are saved: the masks are cheap to recompute and would cost memory.
        ctx.save_for_backward(x, scale, offset)
        ctx.qn, ctx.qp, ctx.grad_scale = qn, qp, grad_scale
        return kernels.fake_quant_forward(x, scale, offset, qn, qp)

    @staticmethod
    def backward(ctx, grad_out):
        x, scale, offset = ctx.saved_tensors
        grad_x, grad_scale, grad_offset = quantizer_backward(
            grad_out, x, scale, offset, ctx.qn, ctx.qp, ctx.grad_scale
        )
        return grad_x, grad_scale, grad_offset, None, None, None


def quantizer_backward(grad_out, x, scale, offset, qn: int, qp: int, grad_scale: float, in_place: bool = False):
    """(grad_x, grad_scale, grad_offset) of LSQFakeQuantize, each shaped like its input; in_place may write
    grad_x into grad_out (a caller that owns it)."""
    # Reduce over every dim where the (broadcast) scale has size 1.
    shape = (1,) * (x.dim() - scale.dim()) + tuple(scale.shape)
    dims = tuple(d for d in range(x.dim()) if shape[d] == 1)
    grad_x, d_scale, d_offset = kernels.fake_quant_backward(grad_out, x, scale, offset, qn, qp, dims, in_place)
    d_scale = (d_scale.reshape(scale.shape) * grad_scale).to(scale.dtype)
    if offset is not None:
        d_offset = (d_offset.reshape(offset.shape) * grad_scale).to(offset.dtype)
    return grad_x, d_scale, d_offset


class LSQQuantizer(nn.Module):
    """Fake-quantizes its input on a b-bit grid with a learned scale (and optional offset).

    signed: True (grid -2^(b-1)..2^(b-1)-1), False (0..2^b-1), or None to decide at
    initialisation: signed iff the minimum seen is < 0.
    per_channel: one scale per slice along channel_axis (num_channels of them).
    asymmetric: LSQ+ -- unsigned grid shifted by a learnable offset, initialised to the minimum.
    integer_zero_point (asymmetric only): the offset is used as -z * s with z = round(-offset / s) clipped to
    0..Qp, so the grid is an integer runtime's uint grid with zero point z (zero is a level, as zero padding
    needs); z's rounding is straight-through, so the latent offset and the scale still learn. It starts at -z * s.
    per_sample: the gradient scale counts the elements of one sample (x[0]), as LSQ does for
    activations; otherwise it counts the elements covered by one scale element.

    An uninitialised quantizer initialises itself from the first tensor it sees (LSQ's
    first-batch init); calibration (start_observing/stop_observing/init_from_observer) is the
    better way. All state that training needs is in parameters and buffers; the python copies
    (_qn, _qp, _initialized) exist so that forward never synchronises with the device.
    """

    def __init__(
        self,
        bits: int,
        signed: bool | None = True,
        per_channel: bool = False,
        channel_axis: int = 0,
        asymmetric: bool = False,
        integer_zero_point: bool = False,
        per_sample: bool = False,
        init_method: str = "mse",
        num_channels: int = 1,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"bits={bits} is out of range: use an integer from 2 to 16")
        if init_method not in INIT_METHODS:
            raise ValueError(
                f"init_method={init_method!r} is unknown: use one of {', '.join(INIT_METHODS)}"
            )
        if asymmetric and signed:
            raise ValueError("signed=True conflicts with asymmetric=True: the asymmetric grid is unsigned")
        if integer_zero_point and not asymmetric:
            raise ValueError("integer_zero_point=True needs asymmetric=True: a symmetric grid's zero point is 0")
        if per_sample and per_channel:
            raise ValueError("per_sample=True needs a per-tensor scale: use per_channel=False")
        self.bits = bits
        self.per_channel = per_channel
        self.channel_axis = channel_axis
        self.asymmetric = asymmetric
        self.integer_zero_point = integer_zero_point
        self.per_sample = per_sample
        self.init_method = init_method
        self.auto_signed = signed is None and not asymmetric

        shape = (num_channels,) if per_channel else ()
        self.scale = nn.Parameter(torch.ones(shape, device=device))
        offset = nn.Parameter(torch.zeros(shape, device=device)) if asymmetric else None
        self.register_parameter("offset", offset)
        # Auto starts signed: the grid that also covers negative values.
        self.register_buffer("signed", torch.tensor(signed is not False and not asymmetric, device=device))
        self.register_buffer("initialized", torch.tensor(False, device=device))
        self._observer: SampleObserver | None = None
        # Evaluation-only analysis mode (not state): soft rounding with this threshold instead of round().
        self.soft_round: float | None = None
        self._refresh_cache()

    @property
    def qn(self) -> int:
        return self._qn

    @property
    def qp(self) -> int:
        return self._qp

    @property
    def observing(self) -> bool:
        return self._observer is not None

    def _refresh_cache(self) -> None:
        self._qn, self._qp = int_range(self.bits, bool(self.signed))
        self._initialized = bool(self.initialized)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_cache()

    def set_signed(self, signed: bool) -> None:
        if self.asymmetric and signed:
            raise ValueError("an asymmetric quantizer is unsigned")
        self.signed.fill_(signed)
        self._refresh_cache()

    def set_bits(self, bits: int) -> None:
        """Another bit width (mixed-precision search); the scale is the old grid's: initialise it again."""
        if not 2 <= bits <= 16:
            raise ValueError(f"bits={bits} is out of range: use an integer from 2 to 16")
        self.bits = bits
        self._refresh_cache()

    @torch.no_grad()
    def fix_scale(self, scale: float, signed: bool) -> None:
        """A grid that is known, not learned: the scale stays `scale` and gets no gradient (e.g. the 8-bit image
        grid 1/255, on which the stem's 8-bit quantizer is exact). An asymmetric grid's offset stays 0 (zero point
        0), without gradient too, so that its input needs no gradient either."""
        if self.per_channel:
            raise ValueError("fix_scale takes a per-tensor quantizer")
        self.set_signed(signed)
        self.scale.fill_(scale)
        self.scale.requires_grad_(False)
        if self.offset is not None:
            self.offset.zero_()
            self.offset.requires_grad_(False)
        self.initialized.fill_(True)
        self._refresh_cache()

    def start_observing(self) -> None:
        """From now on forward records statistics and returns its input unchanged."""
        if self.per_channel:
            raise ValueError(
                "observing collects per-tensor statistics: initialise a per-channel quantizer with init_from"
            )
        self._observer = SampleObserver()

    def stop_observing(self) -> SampleObserver | None:
        """Leaves observing mode; returns what was observed (None if not observing)."""
        observer, self._observer = self._observer, None
        return observer

    @torch.no_grad()
    def init_from_observer(self, observer: SampleObserver) -> None:
        self._init_from_stats(observer.values[None], observer.min[None], observer.max[None])

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Decides the sign (if auto) and sets scale/offset from the values of x."""
        if not self.per_channel:
            observer = SampleObserver()  # bounds the cost of the MSE search on large tensors
            observer.update(x)
            self.init_from_observer(observer)
            return
        v = x.detach().float().movedim(self.channel_axis, 0).reshape(self.scale.numel(), -1)
        self._init_from_stats(v, v.amin(dim=1), v.amax(dim=1))

    def _init_from_stats(self, v: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor) -> None:
        # v: [C, K] values, vmin/vmax: [C] extremes, one row per scale element.
        if self.integer_zero_point:
            # The latent offset starts at -z * s, the middle of its rounding interval, not next to a threshold.
            scale, zero = zero_point_scale(v, vmin, vmax, self._qp, self.init_method)
            self.offset.copy_((-zero * scale).reshape(self.offset.shape))
        else:
            if self.asymmetric:
                self.offset.copy_(vmin.reshape(self.offset.shape))
                v, vmin, vmax = v - vmin[:, None], torch.zeros_like(vmin), vmax - vmin
            elif self.auto_signed:
                self.set_signed(bool((vmin < 0).any()))
            scale = initial_scale(v, vmin, vmax, self._qn, self._qp, self.init_method)
        self.scale.copy_(scale.reshape(self.scale.shape))
        self.initialized.fill_(True)
        self._refresh_cache()

    def _broadcast(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return p
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return p.view(shape)

    def _grad_scale(self, x: torch.Tensor) -> float:
        n = x[0].numel() if self.per_sample else x.numel() // self.scale.numel()
        return 1.0 / math.sqrt(n * self._qp)

    def _unrounded_zero_point(self) -> torch.Tensor:
        return (-self.offset / self.scale).clamp(0, self._qp)

    def _offset(self) -> torch.Tensor | None:
        """The offset the grid uses: the latent one, or -z * s for an integer zero point z (straight-through)."""
        if not self.integer_zero_point:
            return self.offset
        z = self._unrounded_zero_point()
        z = z + (torch.round(z) - z).detach()
        return -z * self.scale

    def offset_like(self, x: torch.Tensor) -> torch.Tensor | None:
        """The offset the grid uses, shaped to broadcast against x; None on a symmetric grid."""
        return None if self.offset is None else self._broadcast(self._offset(), x)

    @property
    def float_offset(self) -> bool:
        """Whether the grid has LSQ+'s float offset (not a whole number of steps, so no integer zero point)."""
        return self.offset is not None and not self.integer_zero_point

    def zero_point(self) -> torch.Tensor:
        """The integer zero point z (one per scale element) of an integer_zero_point quantizer; 0 otherwise."""
        with torch.no_grad():
            if not self.integer_zero_point:
                return torch.zeros_like(self.scale, dtype=torch.int32)
            return torch.round(self._unrounded_zero_point()).to(torch.int32)

    def scale_like(self, x: torch.Tensor) -> torch.Tensor:
        """The scale shaped to broadcast against x (per-channel: one value per slice along channel_axis)."""
        return self._broadcast(self.scale, x)

    def integers(self, x: torch.Tensor) -> torch.Tensor:
        """The integer grid values clip(round((x - offset) / s), -Qn, Qp) of x, as floats, without gradient."""
        with torch.no_grad():
            offset = self.offset_like(x)
            v = x if offset is None else x - offset
            return torch.clamp(torch.round(v / self.scale_like(x)), -self._qn, self._qp)

    @property
    def plain(self) -> bool:
        """Whether forward is the plain fake quantization of fake_quant_args (not observing, initialised,
        no soft rounding), so that a caller may fuse it with what follows."""
        return self._observer is None and self._initialized and self.soft_round is None

    def fake_quant_args(self, x: torch.Tensor) -> tuple:
        """(scale, offset, qn, qp, grad_scale) as LSQFakeQuantize takes them for input x."""
        return self._broadcast(self.scale, x), self.offset_like(x), self._qn, self._qp, self._grad_scale(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observer is not None:
            self._observer.update(x)
            return x
        if not self._initialized:
            self.init_from(x)
        if self.soft_round is not None:
            return self._soft_forward(x, self.offset_like(x))
        return LSQFakeQuantize.apply(x, *self.fake_quant_args(x))

    @torch.no_grad()
    def _soft_forward(self, x: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        s = self._broadcast(self.scale, x)
        v = x if offset is None else x - offset
        out = torch.clamp(soft_round(v / s, self.soft_round), -self._qn, self._qp) * s
        return out if offset is None else out + offset

    def extra_repr(self) -> str:
        signed = "auto" if self.auto_signed and not self._initialized else self._qn > 0
        return (
            f"bits={self.bits}, signed={signed}, per_channel={self.per_channel}, "
            f"asymmetric={self.asymmetric}" + (", integer_zero_point=True" if self.integer_zero_point else "")
        )
