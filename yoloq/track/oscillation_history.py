"""The share of oscillating weights per layer over training (the tracker only knows the present): sampled
every few steps, kept on the device until the end so that recording never waits for a GPU."""

from __future__ import annotations

import torch

from yoloq.callbacks import Callback
from yoloq.methods.oscillation import TrackOscillations


class OscillationHistory(Callback):
    """Runs after TrackOscillations: reads its trackers' frequencies."""

    def __init__(self, tracking: TrackOscillations, every: int = 10):
        self.tracking, self.every = tracking, every
        self.steps: list[int] = []
        self._shares: list[torch.Tensor] = []  # [layers] share of weights with f > threshold
        self._freqs: list[torch.Tensor] = []   # [layers] mean frequency
        self.layers: list[str] = []
        self.sizes: list[int] = []

    def on_stage_start(self, trainer) -> None:
        self.layers = [name for name, _, _ in self.tracking.pairs]
        self.sizes = [t.freq.numel() for _, _, t in self.tracking.pairs]

    @torch.no_grad()
    def on_step_end(self, trainer) -> None:
        if trainer.step % self.every and trainer.step != trainer.total_steps:
            return
        trackers = [t for _, _, t in self.tracking.pairs]
        if not trackers:
            return
        thr = self.tracking.threshold
        self.steps.append(trainer.step)
        self._shares.append(torch.stack([(t.frequency() > thr).float().mean() for t in trackers]))
        self._freqs.append(torch.stack([t.frequency().mean() for t in trackers]))

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "shares": [t.cpu() for t in self._shares],
                "freqs": [t.cpu() for t in self._freqs]}

    def load_state_dict(self, state: dict) -> None:
        dev = self.tracking.pairs[0][2].freq.device if self.tracking.pairs else "cpu"
        self.steps = list(state["steps"])
        self._shares = [t.to(dev) for t in state["shares"]]
        self._freqs = [t.to(dev) for t in state["freqs"]]

    def series(self) -> dict:
        """steps, layers, per-layer % oscillating and mean frequency [steps x layers], overall % oscillating."""
        if not self.steps:
            return {"steps": [], "layers": self.layers, "oscillating_pct": [], "mean_freq": [], "overall_pct": []}
        shares = torch.stack(self._shares).cpu() * 100
        sizes = torch.tensor(self.sizes, dtype=torch.float32)
        overall = (shares * sizes).sum(1) / sizes.sum()
        return {"steps": list(self.steps), "layers": self.layers, "oscillating_pct": shares.tolist(),
                "mean_freq": torch.stack(self._freqs).cpu().tolist(), "overall_pct": overall.tolist()}
