#!/usr/bin/env bash
# Start scripts/train.py under torchrun; every argument is passed to it as a Hydra override.
#
#   docker/entrypoint.sh model=yolov5n bits=4            # one node, one process per visible GPU
#   NPROC_PER_NODE=1 docker/entrypoint.sh --help         # the config groups and every key
#
# Environment (defaults in brackets):
#   NPROC_PER_NODE  processes on this node [one per visible GPU; 1 without a GPU]
#   NNODES          nodes taking part [1]; above 1 the nodes meet at MASTER_ADDR:MASTER_PORT
#   MASTER_ADDR     host of the rendezvous, any of the nodes, usually the first [localhost]
#   MASTER_PORT     its port [29500]
#   RDZV_ID         name of the rendezvous, the same on every node [yoloq]
#   PYTHON          the interpreter whose torchrun to use [torchrun on PATH]
#   TORCH_ELASTIC_SHUTDOWN_TIMEOUT  seconds torchrun waits for workers to checkpoint after SIGTERM before
#                   it kills them [110]; torch releases without this setting wait a fixed 30 s
#
# The image's entrypoint, and usable from a checkout: train.py is found relative to this file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
train="$here/../scripts/train.py"
if [[ ! -f "$train" ]]; then
    echo "error: $train not found: keep entrypoint.sh in the docker/ folder of a yoloq checkout" >&2
    exit 2
fi

visible_gpus() {
    # CUDA_VISIBLE_DEVICES (set by SLURM's GPU allocation, or by hand) wins; nvidia-smi sees every GPU
    # the container was given. No GPU, or no driver: 0.
    if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        local ids=()
        IFS=',' read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
        if [[ ${#ids[@]} -eq 0 || "${ids[0]}" == "-1" || "${ids[0]}" == "NoDevFiles" ]]; then
            echo 0
        else
            echo "${#ids[@]}"
        fi
    elif command -v nvidia-smi >/dev/null 2>&1; then
        { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU ' || true
    else
        echo 0
    fi
}

positive_int() {  # name value
    if ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $1=$2 is not a positive integer" >&2
        exit 2
    fi
}

if [[ -z "${NPROC_PER_NODE-}" ]]; then
    NPROC_PER_NODE="$(visible_gpus)"
    [[ "$NPROC_PER_NODE" -gt 0 ]] || NPROC_PER_NODE=1
fi
NNODES="${NNODES:-1}"
MASTER_ADDR="${MASTER_ADDR:-localhost}"
MASTER_PORT="${MASTER_PORT:-29500}"
RDZV_ID="${RDZV_ID:-yoloq}"
positive_int NPROC_PER_NODE "$NPROC_PER_NODE"
positive_int NNODES "$NNODES"
positive_int MASTER_PORT "$MASTER_PORT"
# Newer torchrun reads this; older releases ignore it and keep their fixed 30 s.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-110}"

if [[ "$NNODES" -eq 1 ]]; then
    launch=(--standalone --nnodes=1 --nproc_per_node="$NPROC_PER_NODE")
else
    # Node ranks are handed out by the c10d rendezvous: start the same command on every node.
    launch=(--nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" --rdzv_id="$RDZV_ID" --rdzv_backend=c10d
            --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT")
fi

# torchrun runs as a child so that a stop ends with a meaningful exit code: SIGTERM/SIGINT/SIGHUP (from
# `docker stop`, SLURM, Ctrl-C) are passed on to torchrun, which passes them to the workers; they finish
# their step, write <run>/<stage>-last.pt and exit with 143. torchrun itself then exits with 1 (its own
# traceback about the signal), so after a stop this script exits with 128 + the signal number (143 for
# SIGTERM) unless the run happened to finish cleanly.
stopped=0
child=""
forward() {  # signal number, name
    stopped=$1
    kill -s "$2" "$child" 2>/dev/null || true
}
trap 'forward 15 TERM' TERM
trap 'forward 2 INT' INT
trap 'forward 1 HUP' HUP

# PYTHON=/path/to/python runs that interpreter's torchrun (a checkout with an unactivated venv)
if [[ -n "${PYTHON-}" ]]; then
    torchrun=("$PYTHON" -m torch.distributed.run)
elif command -v torchrun >/dev/null 2>&1; then
    torchrun=(torchrun)
else
    torchrun=(python3 -m torch.distributed.run)
fi

[[ "$stopped" -eq 0 ]] || exit $((128 + stopped))  # stopped before it started
"${torchrun[@]}" "${launch[@]}" "$train" "$@" &
child=$!
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    # a trapped signal interrupts `wait` (status > 128) while torchrun is still stopping the workers
    kill -0 "$child" 2>/dev/null || break
done
if [[ "$stopped" -ne 0 && "$rc" -ne 0 ]]; then
    exit $((128 + stopped))
fi
exit "$rc"
