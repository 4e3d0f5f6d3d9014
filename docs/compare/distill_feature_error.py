"""The relative feature error table of docs/RESULTS.md ("Distillation from the FP model"): for each QAT checkpoint
(or the calibrated, untrained model), the distillation callback's own relative feature error against the 40-epoch
YOLOv7-tiny FP model, on the same 8 mosaic training batches (loader seed 123), both models' BatchNorm on batch
statistics. A record of how that table was measured, not a tested tool:

    PYTHONPATH=. python docs/compare/distill_feature_error.py calibrated <run>/qat.pt [<run>/qat.pt ...]
"""
import os, sys, torch
from itertools import islice
os.environ.setdefault("YOLO_OFFLINE", "1")
from tests.conftest import compose_config
from yoloq.factory import build_data, float_model, calibration_batches, quantized_copy
from yoloq.engine.stages.fp import fp_cache_path, load_fp_cache
from yoloq.methods.distill import FeatureDistillation
from types import SimpleNamespace
cfg = compose_config(["experiment=other_models", "model=yolov7-tiny", "method=lsq", "trainer.fp.epochs=40", "bits=4", "progress=false"])
dev = torch.device("cpu")
data = build_data(cfg, dev)
fp = float_model(cfg, data)
fp.load_state_dict(load_fp_cache(fp_cache_path(cfg, data.info))["model"])
calib = calibration_batches(cfg, data, dev)
batches = [b["img"].float() / 255 for b in islice(data.train_loader(123), 8)]
for path in sys.argv[1:]:
    q = quantized_copy(cfg, fp, calib)
    if path != "calibrated":
        q.load_state_dict(torch.load(path, weights_only=False)["model"])
    q.train()
    kd = FeatureDistillation(fp, 1.0)
    tr = SimpleNamespace(model=q, batch=0, history=[{}])
    kd.on_stage_start(tr)
    errs = []
    with torch.no_grad():
        for imgs in batches:
            q(imgs)
            errs.append(kd.extra_loss(tr).item() / imgs.shape[0])
    kd.on_stage_end(tr)
    print(f"{path}: {sum(errs)/len(errs):.3f} [{min(errs):.3f}, {max(errs):.3f}]", flush=True)
