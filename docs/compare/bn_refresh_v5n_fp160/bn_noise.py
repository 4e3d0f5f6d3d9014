"""Is the evaluation-to-evaluation swing of long W3A3 runs BatchNorm running-statistics noise?

For a QAT checkpoint: score it as saved; then re-estimate BN running stats the way training does (train mode,
momentum 0.03, no weight or scale change) from N fresh mosaic batches of k different shuffles, and score each; then
from a cumulative average over many batches. Usage: python bn_noise.py RUN/qat.pt [N] [K] [C]"""

import copy
import json
import sys
import time

import torch
from omegaconf import OmegaConf

from yoloq.checkpoint import load_checkpoint
from yoloq.eval.checkpoint_eval import model_from_checkpoint
from yoloq.factory import build_data

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
k = int(sys.argv[3]) if len(sys.argv) > 3 else 4
c = int(sys.argv[4]) if len(sys.argv) > 4 else 2
ckpt = load_checkpoint(path)
cfg = OmegaConf.create(ckpt["config"])
OmegaConf.set_struct(cfg, False)
cfg.progress = False
device = torch.device("cpu")
data = build_data(cfg, device)
base = model_from_checkpoint(ckpt, cfg, data.info.names, data.hyp)
bns = [m for m in base.modules() if isinstance(m, torch.nn.BatchNorm2d)]
print("BN layers", len(bns), "momentum", {m.momentum for m in bns}, flush=True)


def score(model):
    model.eval()
    return round(100 * data.evaluator(model)["mAP50-95"], 2)


@torch.no_grad()
def refresh(model, seed, batches, momentum):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = momentum
            if momentum is None:
                m.reset_running_stats()
    model.train()
    for i, batch in enumerate(data.train_loader(seed=seed)):
        if i >= batches:
            break
        model(batch["img"].float() / 255)
    return model


out = {"checkpoint": path, "as_saved": score(base)}
print("as saved", out["as_saved"], flush=True)
out["momentum_0.03"] = []
for s in range(k):
    t = time.time()
    v = score(refresh(copy.deepcopy(base), 1000 + s, n, 0.03))
    out["momentum_0.03"].append(v)
    print(f"refresh {n} batches momentum 0.03, shuffle {s}: {v} ({time.time() - t:.0f} s)", flush=True)
out["cumulative"] = []
for s in range(c):
    v = score(refresh(copy.deepcopy(base), 2000 + s, 4 * n, None))
    out["cumulative"].append(v)
    print(f"refresh {4 * n} batches cumulative, shuffle {s}: {v}", flush=True)
print(json.dumps(out))
