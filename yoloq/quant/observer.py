"""Statistics of the values a quantizer sees during calibration, in bounded memory."""

import torch

DEFAULT_MAX_SAMPLES = 2**18


class SampleObserver:
    """Running min/max and a uniform random sample of every value seen.

    The sample is a bottom-k sample: each value gets a random key and the k smallest keys are
    kept, which is a uniform sample of all values seen so far however the batches are sized.
    The generator is seeded so that calibration is deterministic.
    """

    def __init__(self, max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0):
        self.max_samples = max_samples
        self.seed = seed
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self._keys: torch.Tensor | None = None
        self._generator: torch.Generator | None = None

    @property
    def empty(self) -> bool:
        return self.values is None

    def on_grid(self, levels: int = 255, tol: float = 1e-3) -> bool:
        """Whether every value seen lies in [0, 1] and the sample on the grid k / levels (an 8-bit image
        scaled to [0, 1] is on it with levels=255)."""
        if self.empty or self.min < 0 or self.max > 1:
            return False
        v = self.values * levels
        return bool(((v - v.round()).abs() <= tol).all())

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten()
        if x.numel() == 0:
            return
        if self._generator is None:
            # Created on first use because a generator must live on the device of the data.
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keys = torch.rand(x.numel(), generator=self._generator, device=x.device)
        if self.empty:
            self.min, self.max = x.min(), x.max()
            self._keys, self.values = keys, x
        else:
            self.min = torch.minimum(self.min, x.min())
            self.max = torch.maximum(self.max, x.max())
            self._keys = torch.cat([self._keys, keys])
            self.values = torch.cat([self.values, x])
        if self.values.numel() > self.max_samples:
            keep = torch.topk(self._keys, self.max_samples, largest=False).indices
            self._keys, self.values = self._keys[keep], self.values[keep]
