"""Feature distillation from the FP model during QAT (`trainer.qat.distill`, a weight; 0 is off).

The quantized student is pulled towards its own FP model at the inputs of the detection head (the neck's P3-P5
feature maps): for each level, the squared error relative to the teacher's energy,

    L_distill = weight * B * sum_levels ||f_student - f_teacher||^2 / ||f_teacher||^2,

with B the global batch, so the term sums over images as ultralytics' task loss does. Every channel at every
position of every image gets a target, where the task loss only supervises the few anchors near an object:
a denser signal for the recovery from rounding that the first QAT epochs are (RESULTS, issue 16). The teacher
runs frozen on the same augmented images, and its BatchNorm normalises with the batch's statistics as the
student's does in training (its running statistics stay as they are). An eval-mode teacher would be a target the
student cannot reach: on mosaic batches the FP model's own features in training mode are 0.3-0.6 (relative
squared error, summed over P3-P5) away from its eval-mode ones, as far as a W4A4 student is after 4 epochs.

Measured on YOLOv7-tiny W4A4 (RESULTS, "Distillation from the FP model"): it brings the features a third closer to
the FP model's and leaves the mAP where it was, at 22% more time a step; off by default.

The hooks are plain closures, added at the stage's start and removed at its end, so a deepcopy of the model (an
EMA copy, an export) never copies the teacher."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from yoloq.callbacks import Callback


def detection_head(model: nn.Module) -> nn.Module:
    """The last layer of an ultralytics model (Detect or Segment), whose inputs are the distilled features."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or len(layers) == 0:
        raise TypeError(f"{type(model).__name__} is not an ultralytics model (no .model layer sequence)")
    return layers[-1]


def relative_feature_error(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """sum over levels of ||s - t||^2 / ||t||^2, each level over the whole local batch."""
    if len(student) != len(teacher):
        raise ValueError(f"the student's head has {len(student)} inputs, the teacher's {len(teacher)}")
    total = None
    for s, t in zip(student, teacher):
        s, t = s.float(), t.float()
        term = (s - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)
        total = term if total is None else total + term
    return total


def _capture(store: dict, key: str):
    """A forward pre-hook keeping a module's input under `key`, in training forwards only (not evaluation's)."""
    def hook(module, args):
        if module.training:
            store[key] = args[0]
    return hook


class FeatureDistillation(Callback):
    def __init__(self, teacher: nn.Module, weight: float):
        self.teacher = copy.deepcopy(teacher).train().requires_grad_(False)
        for m in self.teacher.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0  # batch statistics in the forward; the running ones are kept as they are
        self.weight = float(weight)
        self.seen: dict = {}
        self.handles: list = []
        self.error_sum, self.error_steps = 0.0, 0  # this epoch's relative feature errors (before the weight)

    def on_stage_start(self, trainer) -> None:
        student = trainer.model
        self.teacher.to(next(student.parameters()).device)
        head = detection_head(student)  # refuses a model without ultralytics' layer sequence
        self.handles = [
            student.model[0].register_forward_pre_hook(_capture(self.seen, "images")),  # the step's images, as seen
            head.register_forward_pre_hook(_capture(self.seen, "student")),
            detection_head(self.teacher).register_forward_pre_hook(_capture(self.seen, "teacher")),  # always training
        ]

    def extra_loss(self, trainer) -> torch.Tensor | None:
        if self.weight == 0 or "student" not in self.seen:
            return None
        images, student = self.seen.pop("images"), self.seen.pop("student")
        with torch.no_grad():
            self.teacher(images)
        error = relative_feature_error(list(student), list(self.seen.pop("teacher")))  # the head's P3-P5 list
        self.error_sum += float(error.detach())
        self.error_steps += 1
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return self.weight * images.shape[0] * world * error  # the global batch: DDP averages the ranks' gradients

    def on_epoch_start(self, trainer) -> None:
        if trainer.batch == 0:  # a resume mid-epoch keeps the sums of the epoch's first part (state_dict)
            self.error_sum, self.error_steps = 0.0, 0

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        """The epoch's mean relative feature error goes into its history row, next to the task loss parts."""
        if self.error_steps:
            trainer.history[-1]["distill_error"] = self.error_sum / self.error_steps

    def state_dict(self) -> dict:
        return {"error_sum": self.error_sum, "error_steps": self.error_steps}

    def load_state_dict(self, state: dict) -> None:
        self.error_sum, self.error_steps = state["error_sum"], state["error_steps"]

    def on_stage_end(self, trainer) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.seen = [], {}
