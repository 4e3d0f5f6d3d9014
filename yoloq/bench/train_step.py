"""A yolov5n-style training step in FP and with fake quantization, on a fixed random batch."""

from __future__ import annotations

import copy

import torch

from yoloq.engine.cpu_threads import CpuThreads
from yoloq.models.build import build_model, high_precision_layers
from yoloq.quant import QuantConfig, kernels, quantize_model

from .measure import interleaved_times, median, median_ratio, peak_memory_mb, ratio_spread, saved_for_backward_mb


def random_batch(batch: int, imgsz: int, num_classes: int, device: torch.device, boxes_per_image: int = 4) -> dict:
    """An ultralytics training batch of noise images (8-bit, scaled to [0, 1] as the trainer does) with random
    boxes (normalised xywh)."""
    gen = torch.Generator().manual_seed(0)
    n = batch * boxes_per_image
    return {
        "img": (torch.randint(0, 256, (batch, 3, imgsz, imgsz), generator=gen).float() / 255).to(device),  # 8-bit
        "cls": torch.randint(0, num_classes, (n, 1), generator=gen).float().to(device),
        "bboxes": (torch.rand(n, 4, generator=gen) * 0.4 + 0.2).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes_per_image).float().to(device),
    }


class StepRunner:
    """One SGD training step of a model on a fixed batch (loss, backward, optimizer step), its fake
    quantization run by the given kernel mode."""

    def __init__(self, model: torch.nn.Module, batch: dict, amp: bool, kernel: str = "auto",
                 threads: CpuThreads | None = None):
        self.model, self.batch, self.amp, self.kernel = model.train(), batch, amp, kernel
        self.threads = threads  # ticked after each step, as the trainer does
        self.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
        self.device = batch["img"].device

    def forward(self) -> torch.Tensor:
        with kernels.forced(self.kernel), torch.autocast(self.device.type, enabled=self.amp):
            loss, _ = self.model.loss(self.batch)
        return loss.sum()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward()
        with kernels.forced(self.kernel):
            loss.backward()
        self.optimizer.step()
        if self.threads is not None:
            self.threads.tick()

    def clear(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def bench_train_step(model_yaml: str, batch: int, imgsz: int, bits: int, device: torch.device,
                     repeats: int, warmup: int, amp: bool = False, num_classes: int = 80) -> dict:
    """FP vs QAT (per-tensor and per-channel weights) step time, peak memory and saved activations, two
    per-tensor variants that show where QAT's extra time goes, and two with asymmetric activations."""
    names = tuple(str(i) for i in range(num_classes))
    data = random_batch(batch, imgsz, num_classes, device)
    fp = build_model(model_yaml, names).to(device)
    models = {"fp": fp}
    for per_channel in (False, True):
        q = quantize_model(copy.deepcopy(fp), QuantConfig(w_bits=bits, a_bits=bits, per_channel=per_channel),
                           calib_batches=[data["img"][:2]], high_precision=high_precision_layers(fp))
        models["qat_per_channel" if per_channel else "qat_per_tensor"] = q
    runners = {name: StepRunner(m, data, amp) for name, m in models.items()}
    # Where the rest of the time goes: the plain-torch kernels, and the first conv's input gradient, which
    # FP never computes and the image quantizer's fixed grid (quant.input_grid) avoids; a learned scale needs it.
    runners["qat_per_tensor_eager"] = StepRunner(models["qat_per_tensor"], data, amp, kernel="eager")
    learned = quantize_model(copy.deepcopy(fp), QuantConfig(w_bits=bits, a_bits=bits, input_grid=False),
                             calib_batches=[data["img"][:2]], high_precision=high_precision_layers(fp))
    runners["qat_per_tensor_input_scale_learned"] = StepRunner(learned, data, amp)
    # What asymmetric activations cost: LSQ+'s float offset, and the offset rounded to an integer zero point.
    for name, zero_point in (("qat_per_tensor_asymmetric", "float"), ("qat_per_tensor_integer_zero_point", "integer")):
        config = QuantConfig(w_bits=bits, a_bits=bits, act_asymmetric=True, act_zero_point=zero_point)
        asym = quantize_model(copy.deepcopy(fp), config, calib_batches=[data["img"][:2]],
                              high_precision=high_precision_layers(fp))
        runners[name] = StepRunner(asym, data, amp)
    times = interleaved_times(runners, repeats, warmup, device)
    result = {"model": model_yaml, "batch": batch, "imgsz": imgsz, "bits": bits, "amp": amp, "repeats": repeats}
    for name, runner in runners.items():
        runner.clear()
        result[name] = {
            "step_s": median(times[name]),
            "peak_mb": peak_memory_mb(runner, device),
            "saved_mb": saved_for_backward_mb(runner.forward),
        }
        runner.clear()
    for name in runners:
        if name == "fp":
            continue
        fp_mem, q_mem = result["fp"]["peak_mb"], result[name]["peak_mb"]
        result[name]["time_ratio"] = median_ratio(times[name], times["fp"])
        result[name]["time_ratio_iqr"] = ratio_spread(times[name], times["fp"])
        result[name]["peak_ratio"] = None if not fp_mem or q_mem is None else q_mem / fp_mem
        result[name]["saved_ratio"] = result[name]["saved_mb"] / result["fp"]["saved_mb"]
    return result
