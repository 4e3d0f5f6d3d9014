"""Oscillation tracking of quantized weights (Nagel et al., 2022; PAPER.md §5).

A weight oscillates at step t when its integer value w_int = clip(round(w/s), -Qn, Qp) changes and the
direction of that change is opposite to the direction of its previous change. Its frequency is the EMA
f <- m * o_t + (1 - m) * f. All state (directions, frequencies, the EMA of w_int and the freezing mask used by
iterative freezing) lives in buffers, so state_dict carries it, in compact dtypes; what can be derived from
the weights (the previous step's integers, a frozen weight's integer) is recomputed after loading.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloq.callbacks import Callback
from yoloq.quant import QuantConv2d

OSCILLATING = 0.005  # f above this at the end of training counts as oscillating (Nagel et al.)


class OscillationTracker(nn.Module):
    """Oscillation state of one weight tensor of `bits`-bit integers, 6 bytes a weight in its state_dict: the
    direction of its last change (int8), its frequency (float16), the EMA of its integer (int16, fixed point
    with 2^(16 - bits) steps per integer) and the freezing mask (bool).

    The integers of the previous step are not state: at a step boundary they are those of the current weights
    (a frozen weight's too, since freezing puts it back on its integer), so `derive()` recomputes them after
    a checkpoint is loaded, and the run continues bit for bit. Updates compute in float32."""

    def __init__(self, shape: torch.Size, momentum: float = 0.01, device=None, bits: int = 4):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"bits={bits} is out of range: oscillation tracking takes 2- to 8-bit weights")
        self.momentum = momentum
        self.ema_unit = 2.0 ** (bits - 16)  # |integers| <= 2^(bits-1): the int16 range holds them
        kw = dict(device=device)
        self.register_buffer("started", torch.tensor(False, **kw))
        self.register_buffer("last_dir", torch.zeros(shape, dtype=torch.int8, **kw))  # -1, 0 (none yet), +1
        self.register_buffer("freq", torch.zeros(shape, dtype=torch.float16, **kw))
        self.register_buffer("int_ema_fixed", torch.zeros(shape, dtype=torch.int16, **kw))
        self.register_buffer("frozen", torch.zeros(shape, dtype=torch.bool, **kw))
        # Derived from the weights, not saved: this step's integers, and a frozen weight's integer.
        self.register_buffer("prev_int", torch.zeros(shape, dtype=torch.int8, **kw), persistent=False)
        self.register_buffer("frozen_int", torch.zeros(shape, dtype=torch.int8, **kw), persistent=False)
        self._started = False  # python copy of `started`, so that update() never synchronises with a GPU

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._started = bool(self.started)

    @property
    def int_ema(self) -> torch.Tensor:
        """The EMA of the weight's integer, as float32."""
        return self.int_ema_fixed.float() * self.ema_unit

    def _set_int_ema(self, value: torch.Tensor) -> None:
        self.int_ema_fixed.copy_(torch.round(value / self.ema_unit))

    def frequency(self) -> torch.Tensor:
        return self.freq.float()

    @torch.no_grad()
    def derive(self, w_int: torch.Tensor) -> None:
        """The state that is not saved, from the integers of the current weights (after loading a checkpoint)."""
        self.prev_int.copy_(w_int)
        self.frozen_int.copy_(w_int)

    @torch.no_grad()
    def update(self, w_int: torch.Tensor) -> torch.Tensor:
        """Record this step's integers; returns the mask of weights that oscillated now."""
        m = self.momentum
        if not self._started:
            self.prev_int.copy_(w_int)
            self._set_int_ema(w_int)
            self.started.fill_(True)
            self._started = True
            return torch.zeros_like(self.frozen)
        direction = torch.sign(w_int - self.prev_int).to(torch.int8)
        changed = direction != 0
        oscillated = changed & (self.last_dir != 0) & (direction != self.last_dir)
        self.freq.copy_(self.freq.float().mul_(1 - m).add_(oscillated.float(), alpha=m))
        self._set_int_ema(self.int_ema.mul_(1 - m).add_(w_int, alpha=m))
        self.last_dir.copy_(torch.where(changed, direction, self.last_dir))
        self.prev_int.copy_(w_int)
        return oscillated

    def oscillating_share(self, threshold: float = OSCILLATING) -> float:
        return float((self.frequency() > threshold).float().mean())


def tracked_convs(model: nn.Module, max_bits: int) -> dict[str, QuantConv2d]:
    """Quantized convs whose weights have at most max_bits (8-bit first/last layers barely oscillate)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, QuantConv2d) and m.w_bits is not None and m.w_bits <= max_bits}


def _key(name: str) -> str:
    return name.replace(".", "/")  # ModuleDict keys may not contain dots


class OscillationMonitor(nn.Module):
    """An OscillationTracker for every tracked conv of a model, keyed by the conv's module name."""

    def __init__(self, model: nn.Module, momentum: float = 0.01, max_bits: int = 4):
        super().__init__()
        self.max_bits = max_bits
        convs = tracked_convs(model, max_bits)
        self.trackers = nn.ModuleDict({_key(n): OscillationTracker(c.weight.shape, momentum, c.weight.device,
                                                                   c.w_bits)
                                       for n, c in convs.items()})

    def pairs(self, model: nn.Module) -> list[tuple[str, QuantConv2d, OscillationTracker]]:
        return [(n, c, self.trackers[_key(n)]) for n, c in tracked_convs(model, self.max_bits).items()]

    @torch.no_grad()
    def update(self, pairs: list[tuple[str, QuantConv2d, OscillationTracker]]) -> None:
        for _, conv, tracker in pairs:
            tracker.update(conv.weight_quantizer.integers(conv.weight))

    @torch.no_grad()
    def derive(self, pairs: list[tuple[str, QuantConv2d, OscillationTracker]]) -> None:
        """Recompute what the state_dict leaves out from the model's current weights (after loading)."""
        for _, conv, tracker in pairs:
            tracker.derive(conv.weight_quantizer.integers(conv.weight))

    def stats(self, threshold: float = OSCILLATING) -> dict:
        """Per-layer and overall % of weights with frequency above threshold, and % frozen."""
        per_layer, n_osc, n_frozen, n = {}, 0, 0, 0
        for key, t in self.trackers.items():
            osc = int((t.frequency() > threshold).sum())
            frozen = int(t.frozen.sum())
            per_layer[key.replace("/", ".")] = {"oscillating_pct": 100.0 * osc / t.freq.numel(),
                                                "frozen_pct": 100.0 * frozen / t.freq.numel()}
            n_osc, n_frozen, n = n_osc + osc, n_frozen + frozen, n + t.freq.numel()
        return {"oscillating_pct": 100.0 * n_osc / max(n, 1), "frozen_pct": 100.0 * n_frozen / max(n, 1),
                "tracked_weights": n, "per_layer": per_layer}


class TrackOscillations(Callback):
    """Updates the oscillation statistics after every optimizer step (for every method: it is reported)."""

    def __init__(self, momentum: float = 0.01, max_bits: int = 4, threshold: float = OSCILLATING):
        self.momentum, self.max_bits, self.threshold = momentum, max_bits, threshold
        self.monitor: OscillationMonitor | None = None
        self.pairs: list = []  # (name, conv, tracker) of the stage's model, found once per stage
        self._loaded: dict | None = None  # state loaded before the stage started (resume)

    def on_stage_start(self, trainer) -> None:
        self.monitor = OscillationMonitor(trainer.model, self.momentum, self.max_bits)
        self.pairs = self.monitor.pairs(trainer.model)
        if self._loaded is not None:
            self.load_state_dict(self._loaded)

    def on_step_end(self, trainer) -> None:
        self.monitor.update(self.pairs)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        s = self.monitor.stats(self.threshold)
        trainer.history[-1].update(oscillating_pct=s["oscillating_pct"], frozen_pct=s["frozen_pct"])

    def stats(self) -> dict:
        return self.monitor.stats(self.threshold)

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Before the stage starts, kept until on_stage_start; then loaded into the trackers, whose derived state
        comes from the model's weights (loaded before the callbacks' states)."""
        if self.monitor is None:
            self._loaded = state
            return
        self.monitor.load_state_dict(state)
        self.monitor.derive(self.pairs)
