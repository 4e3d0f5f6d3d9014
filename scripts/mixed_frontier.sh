#!/usr/bin/env bash
# The mixed-precision frontier of issue 18: uniform W4A4, W3A3, W2A2 and the EAGL, ALPS and random plans of the
# budgets below (BOPs of uniform WbAb), each trained with the comparison recipe (trainer=converged) for every seed,
# then runs/frontier/frontier.{md,csv,png}. ALPS scores the layers once per seed (the other budgets reuse its
# alps_scores.json), from the cached FP model quantized at W4A4 or, with ALPS_FROM=w4, from the seed's trained W4A4
# run. Finished runs and plans are skipped, so the same command continues a stopped frontier.
#   [METHOD=lsq] [ALPS_FROM=fp|w4] [UNIFORM="4 3 2"] bash scripts/mixed_frontier.sh [seeds (default "0 1")]
#   [budgets (default "2.5 3 3.5")] [extra overrides...]
# UNIFORM picks the uniform widths to train (e.g. UNIFORM=3 with seeds "2" and budgets "3": one more seed at W3A3's cost).
# The defaults are what docs/RESULTS.md measured: LSQ (METHOD=ema_qc for EMA+QC), ALPS from the FP model.
set -euo pipefail
method=${METHOD:-lsq}; alps_from=${ALPS_FROM:-fp}
case $alps_from in fp|w4) ;; *) echo "ALPS_FROM=$alps_from: use fp or w4" >&2; exit 2;; esac
uniform=${UNIFORM-"4 3 2"}
for b in $uniform; do
  case $b in [2-8]) ;; *) echo "UNIFORM=\"$uniform\": give bit widths from 2 to 8, e.g. UNIFORM=\"4 3 2\"" >&2; exit 2;; esac
done
seeds=${1:-"0 1"}; budgets=${2:-"2.5 3 3.5"}; shift $(( $# > 2 ? 2 : $# )) || true
out=runs/frontier
train() {  # train <folder name> <overrides...>
  local dir=$out/$1; shift
  [ -f "$dir/results.json" ] && { echo "$dir: finished before, skipped"; return; }
  local resume=""; [ -d "$dir" ] && resume="resume=true"
  python scripts/train.py trainer=converged method=$method export.onnx=false logger.diagnostics=false \
    run_dir="$dir" $resume "$@" "${EXTRA[@]}"
}
EXTRA=("$@")
for s in $seeds; do
  for b in $uniform; do train "uniform-w$b-s$s" bits=$b seed=$s; done
  for budget in $budgets; do
    for search in eagl alps random; do
      plan=$out/plans/$search-b$budget-s$s; from=()
      if [ $search = alps ]; then
        [ $alps_from = w4 ] && from=(+checkpoint=$out/uniform-w4-s$s/qat.pt)
        scored=$(ls $out/plans/alps-b*-s$s/alps_scores.json 2>/dev/null | head -1 || true)
        [ -n "$scored" ] && [ ! -f "$plan/alps_scores.json" ] && mkdir -p "$plan" && cp "$scored" "$plan/"
      fi
      [ -f "$plan/layer_bits.yaml" ] || python scripts/mixed_precision.py trainer=converged search=$search high=4 low=2 \
        budget=$budget seed=$s run_dir="$plan" "${from[@]}" "${EXTRA[@]}"
      train "$search-b$budget-s$s" bits=4 seed=$s quant.layer_bits="$plan/layer_bits.yaml"
    done
  done
done
python -m yoloq.report.frontier $out/*-s*
