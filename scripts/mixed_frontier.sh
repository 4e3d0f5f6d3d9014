#!/usr/bin/env bash
# The mixed-precision frontier of issue 18: uniform W4A4, W3A3, W2A2 and the EAGL and random plans of the budgets
# below (BOPs of uniform WbAb), each trained with the comparison recipe and EMA+QC for every seed, then
# runs/frontier/frontier.{md,csv,png}. Finished runs are skipped, so the same command continues a stopped frontier.
#   bash scripts/mixed_frontier.sh [seeds (default "0 1")] [budgets (default "2.5 3 3.5")] [extra overrides...]
set -euo pipefail
seeds=${1:-"0 1"}; budgets=${2:-"2.5 3 3.5"}; shift $(( $# > 2 ? 2 : $# )) || true
out=runs/frontier
train() {  # train <folder name> <overrides...>
  local dir=$out/$1; shift
  [ -f "$dir/results.json" ] && { echo "$dir: finished before, skipped"; return; }
  local resume=""; [ -d "$dir" ] && resume="resume=true"
  python scripts/train.py trainer=converged method=ema_qc export.onnx=false logger.diagnostics=false \
    run_dir="$dir" $resume "$@" "${EXTRA[@]}"
}
EXTRA=("$@")
for s in $seeds; do
  for b in 4 3 2; do train "uniform-w$b-s$s" bits=$b seed=$s; done
  for budget in $budgets; do
    for search in eagl random; do
      plan=$out/plans/$search-b$budget-s$s
      [ -f "$plan/layer_bits.yaml" ] || python scripts/mixed_precision.py search=$search high=4 low=2 \
        budget=$budget seed=$s run_dir="$plan" "${EXTRA[@]}"
      train "$search-b$budget-s$s" bits=4 seed=$s quant.layer_bits="$plan/layer_bits.yaml"
    done
  done
done
python -m yoloq.report.frontier $out/*-s*
