"""torch.distributed for torchrun: one process per GPU (NCCL) or per CPU worker (gloo), multi-node through
torchrun's rendezvous. Every rank trains on its shard of each batch; rank 0 evaluates, logs and writes
checkpoints; state that DDP does not keep in step (BN statistics, EMA buffers, calibration) is broadcast
from rank 0. Without torchrun (WORLD_SIZE unset or 1) every helper here is a no-op."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os

import torch
import torch.distributed as dist

# rank 0 evaluates while the others wait in a collective: COCO val on a big model must not time them out
TIMEOUT = datetime.timedelta(hours=3)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """cuda means this process's GPU (LOCAL_RANK) under torchrun."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a dataset or a label cache), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(obj):
    """rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank when it is true on any rank (e.g. a stop signal seen by one process);
    one all-reduce for all of them."""
    if not dist.is_initialized():
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or only the buffers) into every rank's `module`."""
    if not dist.is_initialized():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict(keep_vars=True).values())
    comm = _comm_device()
    for t in tensors:
        t = t.data if isinstance(t, torch.nn.Parameter) else t
        if t.device == comm:
            dist.broadcast(t, src=0)
        else:
            staged = t.to(comm)
            dist.broadcast(staged, src=0)
            t.copy_(staged)


def fingerprint(module: torch.nn.Module, buffers: bool = False) -> str:
    """A hash of the exact bytes of every parameter (and buffer): equal on two ranks iff they are identical."""
    h = hashlib.sha1()
    tensors = list(module.named_parameters()) + (list(module.named_buffers()) if buffers else [])
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_fingerprints(module: torch.nn.Module, buffers: bool = False) -> list[str]:
    """Every rank's fingerprint of `module`, in rank order (one entry without torchrun)."""
    own = fingerprint(module, buffers)
    if not dist.is_initialized():
        return [own]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, own)
    return out


def from_main(fn):
    """fn() run on rank 0 only (file reads and writes, evaluation); its result, or the exception it raised,
    on every rank, so that an error on rank 0 stops all ranks instead of leaving them waiting."""
    if not dist.is_initialized():
        return fn()
    result = error = None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            error = e
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result
