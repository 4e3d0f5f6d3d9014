"""The elementwise math of LSQ fake quantization, and its fused (compiled) form.

    forward:   out = clip(round(v / s), -Qn, Qp) * s + offset,   v = x - offset (offset may be None)
    backward:  grad_x      = g inside, 0 outside           ("inside": -Qn <= v/s <= Qp, unrounded)
               grad_scale  = sum g * (round(v/s) - v/s inside, -Qn below, Qp above)
               grad_offset = sum g outside

Each is written once in plain torch ops. Run eagerly, PyTorch makes about ten passes over memory
with a full-size temporary per op; torch.compile (inductor: C++/OpenMP on CPU, Triton on GPU)
turns each into one pass that reads its inputs once. The math runs in float32 whatever the input
dtype (safe under autocast); outputs and grad_x take x's dtype.

YOLOQ_FAKE_QUANT_KERNEL picks the kernel: auto (default) compiles for tensors of at least
MIN_COMPILED_NUMEL elements and falls back to eager, with one warning, on a device type where
compiling fails (e.g. no C++ compiler); compiled always compiles and raises on failure; eager never.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import torch

KERNEL_CHOICES = ("auto", "compiled", "eager")
_ENV = "YOLOQ_FAKE_QUANT_KERNEL"


def forward_math(x, scale, offset, qn, qp):
    v = x.float() if offset is None else x.float() - offset.float()
    out = torch.clamp(torch.round(v / scale.float()), -qn, qp) * scale.float()
    if offset is not None:
        out = out + offset.float()
    return out.to(x.dtype)


def backward_math(grad, x, scale, offset, qn, qp, dims: tuple[int, ...], in_place: bool = False):
    """(grad_x, grad_scale, grad_offset): grad_scale/grad_offset summed over dims with keepdim, not yet
    multiplied by LSQ's gradient scale; grad_offset is None without an offset. in_place writes grad_x
    into grad (same dtype as x), which the caller must own: no new full-size tensor."""
    v = x.float() if offset is None else x.float() - offset.float()
    v_s = v / scale.float()
    below, above = v_s < -qn, v_s > qp
    inside = ~(below | above)
    g = grad.float()
    grad_x = torch.where(inside, g, 0.0)
    d_scale = torch.where(inside, torch.round(v_s) - v_s, torch.where(below, -qn, qp))
    grad_scale = (g * d_scale).sum(dims, keepdim=True)
    grad_offset = None if offset is None else (g - grad_x).sum(dims, keepdim=True)
    if in_place:
        return grad.copy_(grad_x), grad_scale, grad_offset
    return grad_x.to(x.dtype), grad_scale, grad_offset


class _Kernels:
    """The compiled forms, built lazily, and which device types have fallen back to eager."""

    def __init__(self):
        self.compiled = None
        self.broken: dict[str, str] = {}

    def get(self):
        if self.compiled is None:
            # Each rank, dtype and mode (offset or not, reduced dims) is a compilation of its own, and the
            # default limit of 8 per function is below what a model plus the tests use.
            config = torch._dynamo.config
            name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
            setattr(config, name, max(getattr(config, name), 64))
            # The CPU kernels read torch's thread count when they run, not when compiled: engine/cpu_threads.py
            # lowers it while other processes compete for the cores.
            from torch._inductor import config as inductor_config

            if hasattr(inductor_config.cpp, "dynamic_threads"):
                inductor_config.cpp.dynamic_threads = True
            if not torch.cuda.is_available():  # inductor's import warns "No CUDA runtime is found" on CPU hosts
                logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            # dynamic: one kernel for every layer's shape instead of a recompile per shape.
            self.compiled = (
                torch.compile(forward_math, dynamic=True, fullgraph=True),
                torch.compile(backward_math, dynamic=True, fullgraph=True),
            )
        return self.compiled


_kernels = _Kernels()


_forced: str | None = None


@contextlib.contextmanager
def forced(mode: str):
    """Within the block every fake quantization uses this kernel mode (for benchmarks and tests)."""
    global _forced
    if mode not in KERNEL_CHOICES:
        raise ValueError(f"kernel mode {mode!r} is unknown: use one of {', '.join(KERNEL_CHOICES)}")
    previous, _forced = _forced, mode
    try:
        yield
    finally:
        _forced = previous


def kernel_mode() -> str:
    mode = _forced or os.environ.get(_ENV, "auto")
    if mode not in KERNEL_CHOICES:
        raise ValueError(f"{_ENV}={mode!r} is unknown: use one of {', '.join(KERNEL_CHOICES)}")
    return mode


# Below this many elements a compiled call's fixed cost (guards, launch) exceeds what fusing saves:
# measured on CPU, a 10-element call costs about 40 us compiled and 16 us eager.
MIN_COMPILED_NUMEL = 1 << 16


def uses_compiled(device: torch.device, numel: int | None = None) -> bool:
    """Whether a tensor of numel elements on this device goes through the compiled kernels now."""
    mode = kernel_mode()
    if mode == "compiled":
        return True
    small = numel is not None and numel < MIN_COMPILED_NUMEL
    return mode == "auto" and not small and device.type not in _kernels.broken


_bound_tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _bounds(qn: int, qp: int, device: torch.device):
    """qn/qp as tensors on the device: python numbers would be baked in, one compile per bit width."""
    key = (qn, qp, device)
    if key not in _bound_tensors:
        _bound_tensors[key] = (torch.tensor(float(qn), device=device), torch.tensor(float(qp), device=device))
    return _bound_tensors[key]


def _run(which: int, eager, x: torch.Tensor, before: tuple, qn: int, qp: int, after: tuple = ()):
    """eager(*before, qn, qp, *after), or its compiled form where that is in use."""
    if not uses_compiled(x.device, x.numel()):
        return eager(*before, qn, qp, *after)
    # Plain tensors: parameters would get their own (static-shape) compilations.
    before = tuple(t if t is None else t.detach() for t in before)
    try:
        with torch.autocast(x.device.type, enabled=False):
            return _kernels.get()[which](*before, *_bounds(qn, qp, x.device), *after)
    except torch.cuda.OutOfMemoryError:  # an alias of torch.OutOfMemoryError, which torch < 2.5 lacks
        raise
    except Exception as e:  # inductor raises many types for a missing or failing compiler
        if kernel_mode() == "compiled":
            raise
        reason = f"{e.__class__.__name__}: {(str(e).splitlines() or [''])[0]}"
        _kernels.broken[x.device.type] = reason
        warnings.warn(
            f"compiling the fake-quantization kernel failed on {x.device.type} ({reason}); using the "
            f"slower eager kernel. Set {_ENV}=eager to skip the attempt.",
            stacklevel=3,
        )
        return eager(*before, qn, qp, *after)


def fake_quant_forward(x, scale, offset, qn: int, qp: int) -> torch.Tensor:
    return _run(0, forward_math, x, (x, scale, offset), qn, qp)


def fake_quant_backward(grad, x, scale, offset, qn: int, qp: int, dims: tuple[int, ...], in_place: bool = False):
    # Not in place with an offset: inductor's CPU kernel that writes grad_x into grad and also reduces the offset's
    # gradient ran about 20x slower than the same math into new memory (yolov5n's step with asymmetric activations:
    # 1.7x an FP step instead of 1.3x, scripts/bench.py).
    in_place = in_place and grad.dtype == x.dtype and offset is None
    return _run(1, backward_math, x, (grad, x, scale, offset), qn, qp, (dims, in_place))
