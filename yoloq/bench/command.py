"""Speed and memory of fake-quantized training: `yoloq bench` or `python scripts/bench.py` (table on stdout,
JSON file).

Sections (--sections, default all):
  step    QAT/FP training-step time and peak memory, yolov5n at --batch/--imgsz, per-tensor and per-channel
  op      fake-quant forward+backward over --op-numel elements: ours, PyTorch's builtin, plain ops, the
          memory-bandwidth floor
  stages  the QC stage against one QAT epoch, and evaluation images/s, on the embedded dataset (Hydra
          overrides after `--`, e.g. `-- trainer.batch=8`)
  epoch   one FP and one QAT epoch (default method, every per-step callback, the configured loader and
          workers) on the embedded dataset, alternating, --epoch-repeats times each; their ratio
  export  export time of yolov5n (--imgsz, --bits) to ONNX QDQ, and inference images/s of the ONNX graph in
          onnxruntime (CPU) next to PyTorch float, fake-quantized and deploy form on the same --batch images
  contention  FP and QAT steps (as in `step`, per-tensor) beside one competing busy process that the
          benchmark starts and stops, each against its own time alone; adapting and fixed CPU threads
Every ratio is taken inside this one process, from interleaved repeats.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from yoloq.atomic import write_json_atomic
from yoloq.bench.report import goals_table, print_table

SECTIONS = ("step", "op", "stages", "epoch", "contention", "export")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="yoloq bench", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model", default="yolov5n.yaml", help="ultralytics model YAML for the step section")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="autocast the step section, float16 tensors in the op section (CUDA)")
    p.add_argument("--repeats", type=int, default=11, help="timed repeats per measurement (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--op-numel", type=int, default=13_000_000)
    p.add_argument("--epoch-repeats", type=int, default=2, help="FP and QAT epochs each in the epoch section")
    p.add_argument("--epoch-fraction", type=float, default=1.0, help="share of the training set per epoch")
    p.add_argument("--stage-fraction", type=float, default=0.25, help="share of the training set for the stages")
    p.add_argument("--out", default=None, help="JSON file (default runs/bench-<time>.json)")
    args, overrides = p.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    unknown = [o for o in overrides if "=" not in o]
    if unknown:
        p.error(f"unrecognised arguments {' '.join(unknown)}: options are listed by --help; Hydra overrides "
                "(key=value) go after --")
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        p.error(f"--sections={args.sections} names no section or an unknown one: use a subset of {','.join(SECTIONS)}")
    if min(args.repeats, args.batch, args.imgsz, args.op_numel, args.epoch_repeats) < 1 or args.warmup < 0:
        p.error("--repeats, --batch, --imgsz, --op-numel and --epoch-repeats must be positive and --warmup not negative")
    if not 2 <= args.bits <= 8:
        p.error(f"--bits={args.bits} is out of range: use an integer from 2 to 8")
    for name in ("stage_fraction", "epoch_fraction"):
        if not 0 < getattr(args, name) <= 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} is out of range: use a share in (0, 1]")
    return args, sections, overrides


def environment(device: torch.device) -> dict:
    from yoloq.quant import kernels

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "kernel": kernels.kernel_mode(), "compiled": kernels.uses_compiled(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def main(argv=None) -> int:
    args, sections, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from yoloq.config import resolve_device
    from yoloq.errors import UserError

    try:
        device = resolve_device(args.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"command": " ".join(["python scripts/bench.py", *(sys.argv[1:] if argv is None else argv)]),
              "environment": environment(device)}
    if "step" in sections:
        from yoloq.bench.train_step import bench_train_step

        try:
            result["step"] = bench_train_step(args.model, args.batch, args.imgsz, args.bits, device, args.repeats,
                                              args.warmup, amp=args.amp)
        except FileNotFoundError as e:  # ultralytics' answer to an unknown model YAML
            print(f"error: --model={args.model} was not found ({e}): use an ultralytics YAML such as yolov5n.yaml",
                  file=sys.stderr)
            return 2
    if "op" in sections:
        from yoloq.bench.fake_quant_op import bench_fake_quant_op

        dtype = torch.float16 if args.amp else torch.float32
        result["op"] = {mode: bench_fake_quant_op(args.op_numel, args.bits, device, args.repeats, args.warmup,
                                                  per_channel=mode == "per_channel", dtype=dtype)
                        for mode in ("per_tensor", "per_channel")}
    if "export" in sections:
        from yoloq.bench.export import bench_export

        result["export"] = bench_export(args.model, args.batch, args.imgsz, args.bits, args.repeats, args.warmup)
    if "contention" in sections:
        from yoloq.bench.contention import bench_contention

        result["contention"] = bench_contention(args.model, args.batch, args.imgsz, args.bits, device, args.repeats,
                                                args.warmup)
    if "stages" in sections or "epoch" in sections:
        from hydra import compose, initialize_config_dir

        from yoloq.bench.epoch import bench_epoch
        from yoloq.bench.stages import bench_stages
        from yoloq.config import CONF_DIR, validate

        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose("config", overrides=[f"device={args.device}", *overrides])
        try:
            validate(cfg)
            if "stages" in sections:
                result["stages"] = bench_stages(cfg, args.stage_fraction)
            if "epoch" in sections:
                result["epoch"] = bench_epoch(cfg, args.epoch_repeats, args.epoch_fraction)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print_table(goals_table(result))
    print(f"\nwrote {out}")
    return 0
