#!/usr/bin/env bash
# The GPU checks in one go, on one CUDA GPU, in at most 8 minutes: the CUDA tests, the bench step and op
# sections with and without AMP, and a short QAT+QC run of the embedded data; then one summary table.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: $OUT if set, else runs/gpu-check)
#
# Each part has its own time limit and log in OUT_DIR; a failing part is reported and the rest still run.
# On a machine without network whose Python lacks yoloq's dependencies, put their wheels in .whl/ first
# (bash scripts/gpu_wheels.sh, where pip reaches PyPI): they are installed into /tmp/site here.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$out"
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export YOLOQ_CACHE=${YOLOQ_CACHE:-/tmp/yoloq-cache} TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/yoloq-cache/inductor}
py=${PYTHON:-python3}

"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "error: PyTorch sees no CUDA device: run scripts/gpu_check.sh on a GPU machine"; exit 2; }
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: installing the wheels in .whl/ failed"; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
missing=$("$py" -c "
import importlib.util as u
print(' '.join(m for m in ('ultralytics', 'hydra', 'omegaconf', 'pycocotools', 'albumentations', 'cv2', 'onnx',
                            'onnxruntime') if u.find_spec(m) is None))")
[ -z "$missing" ] || { echo "error: missing Python packages: $missing; pip install -e . or carry wheels in .whl/ (scripts/gpu_wheels.sh)"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1 || true

declare -a names codes secs
part() {  # part NAME SECONDS COMMAND...: run it with a time limit, log to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  names+=("$name"); codes+=("$rc"); secs+=("$((SECONDS - start))")
  tail -n 3 "$out/$name.log"
}

part cuda_tests 90 "$py" -m pytest -q -p no:cacheprovider tests/quant/test_quant_fused_conv.py \
  tests/quant/test_quant_lsq_reference.py tests/quant/test_quant_kernels.py tests/quant/test_quant_input_grid.py
part bench_fp32 110 "$py" scripts/bench.py --sections step,op --device cuda --batch 32 --imgsz 640 --repeats 11 \
  --op-numel 50000000 --out "$out/bench_fp32.json"
part bench_amp 110 "$py" scripts/bench.py --sections step,op --device cuda --amp --batch 32 --imgsz 640 --repeats 11 \
  --op-numel 50000000 --out "$out/bench_amp.json"
part qat_qc_run 150 "$py" scripts/train.py model=yolov5n bits=3 device=cuda trainer.fp.epochs=3 trainer.qat.epochs=2 \
  trainer.workers=8 "run_dir=$out/run" cache_dir="$YOLOQ_CACHE" logger.diagnostics=false

"$py" - "$out" "${names[*]}" "${codes[*]}" "${secs[*]}" <<'EOF'
import json, sys
from pathlib import Path

out, names, codes, secs = Path(sys.argv[1]), *(a.split() for a in sys.argv[2:])
rows = [("part", "exit", "seconds", "result")]

def bench_summary(path):
    if not path.is_file():
        return "no JSON"
    r = json.loads(path.read_text())
    s, bits = r.get("step", {}), []
    if s:
        bits.append(f"FP step {s['fp']['step_s'] * 1e3:.1f} ms, QAT/FP {s['qat_per_tensor']['time_ratio']:.2f}x "
                    f"(per-channel {s['qat_per_channel']['time_ratio']:.2f}x), peak mem {s['qat_per_tensor']['peak_ratio']:.2f}x")
    for mode, op in (r.get("op") or {}).items():
        bits.append(f"op {mode} {op['ms']['ours']:.2f} ms, builtin/ours {op['builtin_over_ours']:.2f}x")
    return "; ".join(bits)

for name, code, sec in zip(names, codes, secs):
    result = ""
    if name.startswith("bench"):
        result = bench_summary(out / f"{name}.json")
    elif name == "qat_qc_run" and (out / "run" / "results.json").is_file():
        res = json.loads((out / "run" / "results.json").read_text())
        result = ", ".join(f"{r['stage']} {r['metrics']['mAP50-95']:.4f}" for r in res)
    elif name == "cuda_tests":
        lines = (out / "cuda_tests.log").read_text().strip().splitlines()
        result = lines[-1] if lines else ""
    rows.append((name, code, sec, result))
gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").is_file() else ""
print(f"\nGPU: {gpu}")
widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
for r in rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r[:3], widths)) + "  " + str(r[3]))
(out / "summary.json").write_text(json.dumps({"gpu": gpu, "parts": [dict(zip(rows[0], r)) for r in rows[1:]]}, indent=2))
sys.exit(0 if all(c == "0" for c in codes) else 1)
EOF
