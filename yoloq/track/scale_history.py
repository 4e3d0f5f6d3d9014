"""Trajectories of every quantizer's scale over the last N optimizer steps, of the trained model and of its
EMA copy when the method keeps one (PAPER.md Fig. 2c, 4, 5). A ring buffer on the device: no host sync."""

from __future__ import annotations

import torch

from yoloq.callbacks import Callback
from yoloq.quant import QuantConv2d


def scale_params(model) -> dict[str, tuple[torch.Tensor, int]]:
    """'w/<conv>' and 'a/<conv>' -> the quantizer's scale parameter, with the quantizer's bit width."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantConv2d):
            for kind, q in (("w", m.weight_quantizer), ("a", m.act_quantizer)):
                if q is not None:
                    out[f"{kind}/{name}"] = (q.scale, q.bits)
    return out


class ScaleHistory(Callback):
    """Runs after the EMA callback, so the EMA scales of a step are the updated ones. Per-channel weight
    scales are recorded by their first channel (one trajectory per layer)."""

    def __init__(self, window: int = 500):
        self.window = window
        self.names: list[str] = []
        self.bits: list[int] = []
        self.steps = torch.zeros(0, dtype=torch.long)
        self._raw = self._ema = None
        self._raw_params: list[torch.Tensor] = []
        self._ema_params: list[torch.Tensor] = []
        self._n = 0  # steps recorded

    def on_stage_start(self, trainer) -> None:
        raw = scale_params(trainer.model)
        self.names = list(raw)
        self.bits = [b for _, b in raw.values()]
        self._raw_params = [p for p, _ in raw.values()]
        ema_model = trainer.eval_model
        self._ema_params = [] if ema_model is trainer.model else [scale_params(ema_model)[n][0] for n in self.names]
        dev = trainer.device
        self._raw = torch.zeros(self.window, len(self.names), device=dev)
        self._ema = torch.zeros(self.window, len(self.names), device=dev) if self._ema_params else None
        self.steps = torch.zeros(self.window, dtype=torch.long)
        self._n = 0

    @torch.no_grad()
    def on_step_end(self, trainer) -> None:
        if not self.names:
            return
        i = self._n % self.window
        self._raw[i] = torch.stack([p.detach().flatten()[0] for p in self._raw_params])
        if self._ema is not None:
            self._ema[i] = torch.stack([p.detach().flatten()[0] for p in self._ema_params])
        self.steps[i] = trainer.step
        self._n += 1

    def state_dict(self) -> dict:
        return {"n": self._n, "steps": self.steps.clone(), "raw": None if self._raw is None else self._raw.cpu(),
                "ema": None if self._ema is None else self._ema.cpu()}

    def load_state_dict(self, state: dict) -> None:
        """After on_stage_start, which sized the buffers for this model."""
        self._n, self.steps = state["n"], state["steps"].clone()
        if state["raw"] is not None and self._raw is not None:
            self._raw.copy_(state["raw"])
        if state["ema"] is not None and self._ema is not None:
            self._ema.copy_(state["ema"])

    def series(self) -> dict:
        """steps, names, bits, raw [steps x quantizers], ema (or None), in step order."""
        n = min(self._n, self.window)
        order = torch.arange(self._n - n, self._n) % self.window if n else torch.zeros(0, dtype=torch.long)
        raw = self._raw.cpu()[order] if self._raw is not None else torch.zeros(0, 0)
        ema = self._ema.cpu()[order].tolist() if self._ema is not None else None
        return {"steps": self.steps[order].tolist(), "names": self.names, "bits": self.bits,
                "raw": raw.tolist(), "ema": ema}
