"""One training loop for every stage (FP, QAT, ...): ultralytics' loss on ultralytics' dataset,
SGD with YOLOv5's warm-up and linear schedule for the weights, Adam for quantization parameters,
AMP on CUDA, DDP under torchrun, evaluation each epoch, and named hooks (yoloq/callbacks.py) where methods
plug in. Its whole state (state_dict) goes into a checkpoint after every epoch and on a stop signal, and
a Trainer built with that state continues where it stopped: exactly from an epoch boundary; from mid-epoch
(a stop signal) with the same model, optimizer and random states and the same remaining samples in the same
order, but with other augmentation draws for them (the loader workers' random streams start again at the
resume point; data/epoch_loader.py, pinned by a test)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from yoloq.engine import distributed
from yoloq.engine.cpu_threads import CpuThreads
from yoloq.callbacks import Callback, state_keys
from yoloq.engine.preemption import Preempted, StopSignal
from yoloq.engine.rng import rng_state, set_rng_state
from yoloq.errors import UserError
from yoloq.quant import LSQQuantizer

log = logging.getLogger("yoloq")


@dataclass
class Recipe:
    """A stage's optimisation settings (YOLOv5's defaults unless the config says otherwise)."""

    epochs: int = 10
    optimizer: str = "sgd"  # sgd (YOLOv5) | adamw (what ultralytics picks for short schedules)
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8
    close_mosaic: int = 0  # last N epochs without mosaic
    quant_lr: float = 1e-4  # Adam, for scales and offsets
    # Adam's step is absolute, so an activation scale (~0.4 on YOLOv7-tiny) moves ~20x slower relative to its size
    # than a weight scale (~0.02) at the same lr; None: the activation quantizers share quant_lr
    act_quant_lr: float | None = None
    # The schedule's granularity. YOLOv5 lowers the lr once per epoch, which at 100 epochs ends at ~2% of lr0 but
    # at 4 epochs never goes below 26%: per step, every length ends annealed at lrf (the same curve at 100 epochs).
    lr_per_step: bool = False
    quant_lr_decay: bool = False  # the quantizers' Adam lr follows the same warm-up-free decay (LSQ anneals all)
    grad_clip: float = 10.0
    eval_every: int = 1  # epochs; the last epoch is always evaluated

    @classmethod
    def from_cfg(cls, cfg) -> "Recipe":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(cfg).items() if k in names})


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters the way YOLOv5 does, plus a separate group for quantizer parameters ("quant",
    all of them in module order) and, within it, the activation quantizers' ("act_quant")."""
    groups = {"bias": [], "decay": [], "no_decay": [], "quant": [], "act_quant": []}
    norms = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, LSQQuantizer):
                groups["quant"].append(p)
                if module_name.rsplit(".", 1)[-1] == "act_quantizer":
                    groups["act_quant"].append(p)
            elif name == "bias":
                groups["bias"].append(p)
            elif isinstance(module, norms) or p.ndim <= 1:
                groups["no_decay"].append(p)
            else:
                groups["decay"].append(p)
    return groups


class Trainer:
    """`checkpoint(trainer) -> path` writes the trainer's state (called on rank 0 after every epoch and on a
    stop signal); `state` is such a state to continue from; `stop` is the run's StopSignal; `threads` sets
    (and on CPU adapts) the intra-op thread count while the stage trains (None: leave torch's as it is)."""

    def __init__(self, name: str, model: nn.Module, loader, evaluate: Callable[[nn.Module], dict],
                 recipe: Recipe, device: torch.device, callbacks: list[Callback] = (), hyp=None,
                 progress: bool = True, checkpoint: Callable[["Trainer"], Path] | None = None,
                 stop: StopSignal | None = None, state: dict | None = None, threads: CpuThreads | None = None):
        self.name, self.model, self.loader, self.evaluate = name, model.to(device), loader, evaluate
        self.recipe, self.device, self.callbacks, self.hyp = recipe, device, list(callbacks), hyp
        self.progress = progress and distributed.is_main()
        self.checkpoint, self.stop = checkpoint, stop or StopSignal()
        self.threads = threads
        self.last_checkpoint: Path | None = None
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch = 0  # epochs completed (during an epoch: the one running)
        self.batch = 0  # batches completed in the running epoch
        self.step = 0  # optimizer steps taken in this stage
        self.total_steps = max(len(loader) * recipe.epochs, 1)
        self.history: list[dict] = []
        self.loss_items: dict = {}
        self.last_metrics: dict = {}
        self.mosaic_closed = False
        self.wall_time = 0.0  # of earlier sessions of this stage (resume); the running one is _elapsed()
        self._started: float | None = None
        self.replica_fingerprints: dict[str, list[str]] = {}  # model (and EMA) hash per rank
        self._build_optimizers()
        self._callback_state = None
        if state is not None:
            self.load_state_dict(state)
        # DDP averages gradients over ranks; its constructor broadcasts rank 0's parameters and buffers
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
                    if distributed.world_size() > 1 else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue: model, optimizers, AMP scaler, callbacks (EMA, trackers, ...),
        counters, history and random states."""
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "batches_per_epoch": len(self.loader),
                "history": self.history,
                "metrics": self.last_metrics, "loss_items": self.loss_items,
                "wall_time": self.wall_time + self._elapsed(), "model": self.model.state_dict(),
                "optimizers": [opt.state_dict() for opt in self.optimizers], "scaler": self.scaler.state_dict(),
                "callbacks": self.callback_states(), "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise UserError(f"{self.name}: the checkpoint has {len(state['optimizers'])} optimizer(s), this stage "
                            f"{len(self.optimizers)}: it was written by a different configuration; start a new run")
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            if len(opt_state["param_groups"]) != len(opt.param_groups):
                raise UserError(f"{self.name}: the checkpoint's {type(opt).__name__} has {len(opt_state['param_groups'])} "
                                f"parameter group(s), this stage {len(opt.param_groups)} (trainer.qat.act_quant_lr "
                                "set on one side only?): resume with the run's own settings or start a new run")
            sizes = [len(g["params"]) for g in opt_state["param_groups"]]
            ours = [len(g["params"]) for g in opt.param_groups]
            if sizes != ours:  # e.g. a quantizer that trained then is fixed now: torch would stop with a traceback
                raise UserError(f"{self.name}: the checkpoint's {type(opt).__name__} trains {sizes} parameters per "
                                f"group, this stage {ours}: it was written by another configuration or yoloq "
                                "version; resume with the run's own settings and version or start a new run")
        nb = state.get("batches_per_epoch")  # absent in checkpoints written before it was recorded
        if nb is not None and nb != len(self.loader):
            raise UserError(f"{self.name}: the checkpoint was written with {nb} batches an epoch, this stage has "
                            f"{len(self.loader)} (trainer.batch or trainer.qat.batch changed?): resume with the run's "
                            "own batch or start a new run")
        self.model.load_state_dict(state["model"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self._apply_recipe()  # the loaded groups carry the old run's settings; a resume may change them
        if state["scaler"]:  # empty when written without AMP (CPU)
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history, self.last_metrics = state["history"], state["metrics"]
        self.loss_items = state["loss_items"]  # mosaic is closed again on this trainer's fresh loader
        self.wall_time = state["wall_time"]
        set_rng_state(state["rng"])
        self._callback_state = state["callbacks"]  # loaded once the callbacks have set up (on_stage_start)

    def _elapsed(self) -> float:
        return time.time() - self._started if self._started is not None else 0.0

    def _save(self) -> None:
        """Rank 0 writes; a failed write stops every rank."""
        if self.checkpoint is not None:
            self.last_checkpoint = distributed.from_main(lambda: self.checkpoint(self))

    def _stop_now(self, save: bool = True) -> None:
        """Write the state (unless just written) and stop after a stop signal."""
        if save:
            self._save()  # from_main: every rank leaves once rank 0 has written
        where = f"; resumable checkpoint {self.last_checkpoint}" if self.last_checkpoint else ""
        raise Preempted(f"{self.name} stopped by {self.stop.name or 'a signal'} after {self.epoch} epoch(s) and "
                        f"{self.batch} batch(es){where}", self.last_checkpoint)

    # ------------------------------------------------------------------ set-up
    def _build_optimizers(self) -> None:
        g = param_groups(self.model)
        r = self.recipe
        # three groups, like YOLOv5: biases (own warm-up lr), decayed weights, norms and other 1-d parameters
        groups = [{"params": g["bias"]}, {"params": g["decay"], "weight_decay": r.weight_decay},
                  {"params": g["no_decay"], "weight_decay": 0.0}]
        if r.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=r.lr0, momentum=r.momentum, nesterov=True, weight_decay=0.0)
        elif r.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=r.lr0, betas=(r.momentum, 0.999), weight_decay=0.0)
        else:
            raise UserError(f"{self.name}: optimizer={r.optimizer!r} is unknown: use sgd or adamw")
        self.optimizers = [self.optimizer]
        if g["quant"]:
            self.optimizers.append(torch.optim.Adam(self._quant_groups(g), lr=r.quant_lr, weight_decay=0.0))
        for pg in self.optimizer.param_groups:
            pg["initial_lr"] = r.lr0

    def _quant_groups(self, g: dict[str, list[nn.Parameter]]) -> list[dict]:
        """One Adam group for every quantizer, or with act_quant_lr two: weight quantizers, then activation ones."""
        if self.recipe.act_quant_lr is None:
            return [{"params": g["quant"]}]
        act = {id(p) for p in g["act_quant"]}
        return [{"params": [p for p in g["quant"] if id(p) not in act]}, {"params": g["act_quant"]}]

    def _quant_lrs(self) -> list[float]:
        """The base lr of each group of the quantizers' Adam (see _quant_groups)."""
        r = self.recipe
        return [r.quant_lr] if r.act_quant_lr is None else [r.quant_lr, r.act_quant_lr]

    def _apply_recipe(self) -> None:
        """The recipe's base learning rates and weight decay on the optimizers' groups (e.g. a lower lr0 given
        when resuming after a NaN); the current lr follows at the next epoch start or warm-up step."""
        r = self.recipe
        for j, pg in enumerate(self.optimizer.param_groups):
            pg["initial_lr"] = r.lr0
            if j == 1:
                pg["weight_decay"] = r.weight_decay
        for opt in self.optimizers[1:]:
            for pg, lr in zip(opt.param_groups, self._quant_lrs()):
                pg["lr"] = lr

    def _lr_factor(self, epoch: float) -> float:
        """YOLOv5's linear schedule from 1 down to lrf over the stage (epoch may be fractional: per step)."""
        return (1 - epoch / max(self.recipe.epochs, 1)) * (1.0 - self.recipe.lrf) + self.recipe.lrf

    def _schedule_point(self, ni: int, nb: int) -> float:
        """Where the schedule stands at global batch ni: the epoch (YOLOv5), or the exact progress with
        lr_per_step, reaching lrf at the last step."""
        if not self.recipe.lr_per_step:
            return float(self.epoch)
        return self.recipe.epochs * min(ni / max(nb * self.recipe.epochs - 1, 1), 1.0)

    def _set_lrs(self, ni: int, nb: int) -> None:
        """The decayed lr of every group at global batch ni (the warm-up overrides it in its first steps)."""
        factor = self._lr_factor(self._schedule_point(ni, nb))
        for pg in self.optimizer.param_groups:
            pg["lr"] = pg["initial_lr"] * factor
        if self.recipe.quant_lr_decay:
            for opt in self.optimizers[1:]:
                for pg, lr in zip(opt.param_groups, self._quant_lrs()):
                    pg["lr"] = lr * factor

    def _warmup(self, ni: int, n_warm: int, nb: int) -> None:
        """Bias lr falls from warmup_bias_lr, other lrs rise from 0; momentum rises to its final value."""
        r = self.recipe
        if ni > n_warm:
            return
        for j, pg in enumerate(self.optimizer.param_groups):
            target = pg["initial_lr"] * self._lr_factor(self._schedule_point(ni, nb))
            pg["lr"] = float(np.interp(ni, [0, n_warm], [r.warmup_bias_lr if j == 0 else 0.0, target]))
            if "momentum" in pg:  # SGD only; AdamW keeps its betas
                pg["momentum"] = float(np.interp(ni, [0, n_warm], [r.warmup_momentum, r.momentum]))

    def _hook(self, name: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(self, *args)

    @property
    def progress_frac(self) -> float:
        """Share of the stage's optimizer steps taken so far (0 at the start, 1 at the end)."""
        return min(self.step / self.total_steps, 1.0)

    def callback_states(self) -> dict:
        """Every callback's state (EMA copy, oscillation trackers, ...), keyed by its state key (callbacks.state_keys)."""
        return {key: cb.state_dict() for key, cb in zip(state_keys(self.callbacks), self.callbacks)}

    def load_callback_states(self, states: dict) -> None:
        keys = state_keys(self.callbacks)
        missing = [k for k in keys if k not in states]
        if missing:
            raise UserError(f"{self.name}: the checkpoint has no state for {', '.join(missing)}: it was written with "
                            "other method settings (e.g. method.ema.enabled); resume with the run's own settings")
        for key, cb in zip(keys, self.callbacks):
            cb.load_state_dict(states[key])

    def callback(self, kind: type) -> Callback:
        """The one callback of this type (e.g. the oscillation tracker); an error if there is none or several."""
        found = [cb for cb in self.callbacks if isinstance(cb, kind)]
        if len(found) != 1:
            raise LookupError(f"{self.name}: {len(found)} callbacks of type {kind.__name__}, expected one")
        return found[0]

    @property
    def eval_model(self) -> nn.Module:
        for cb in self.callbacks:
            m = cb.eval_model(self)
            if m is not None:
                return m
        return self.model

    # ------------------------------------------------------------------ the loop
    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The task loss of a batch and its parts. Under DDP each rank's loss covers its share of the global
        batch and DDP averages gradients, so the loss is scaled by the world size (as for the global batch)."""
        if self.ddp is None:
            loss, items = self.model.loss(batch)
            return loss.sum(), items
        loss, items = self.ddp(batch)  # ultralytics models compute the loss when called with a dict
        return loss.sum() * distributed.world_size(), items

    def _train_step(self, batch: dict) -> None:
        imgs = batch["img"].to(self.device, non_blocking=True).float() / 255
        targets = {k: batch[k].to(self.device) for k in ("batch_idx", "cls", "bboxes")}
        if "masks" in batch:
            targets["masks"] = batch["masks"].to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss, items = self.loss({**targets, "img": imgs})
            for cb in self.callbacks:
                extra = cb.extra_loss(self)
                if extra is not None:
                    loss = loss + extra
        bad = not torch.isfinite(loss)
        stop = self.stop.requested
        if self.ddp is not None:  # one small all-reduce: every rank stops at the same step
            bad, stop = distributed.any_rank(bad, stop)
        if bad:
            kept = (f"the last good checkpoint {self.last_checkpoint} (after epoch {self.epoch}) is kept: continue "
                    f"from it with resume=<run folder> and a lower learning rate" if self.last_checkpoint else
                    "lower the learning rate")
            raise UserError(f"{self.name}: the loss became {loss.item()} at epoch {self.epoch + 1}, step "
                            f"{self.step + 1}; the stage stopped and {kept} (lr0={self.recipe.lr0}), or check the data")
        if stop:
            self._stop_now()
        self.scaler.scale(loss).backward()
        for opt in self.optimizers:
            self.scaler.unscale_(opt)
        self._hook("on_after_backward")
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.recipe.grad_clip)
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.step += 1
        self._hook("on_step_end")
        self.loss_items = {k: float(v) for k, v in items.items()}

    def _evaluate(self) -> dict:
        """Rank 0 evaluates (pycocotools needs every prediction in one place); the others receive its numbers."""
        return distributed.from_main(lambda: self.evaluate(self.eval_model))

    def _sync_replicas(self) -> None:
        """DDP keeps parameters equal; BN statistics (and the EMA's copies of them) follow each rank's data, so
        rank 0's are broadcast before evaluating and saving."""
        if self.ddp is None:
            return
        distributed.broadcast_state(self.model, buffers_only=True)
        if self.eval_model is not self.model:
            distributed.broadcast_state(self.eval_model, buffers_only=True)

    def _check_replicas(self) -> None:
        """The proof that DDP kept the ranks in step: every rank's hash of the parameters and, with an EMA, of the
        EMA copy (parameters and, after _sync_replicas, buffers: the copy that is evaluated and saved)."""
        self.replica_fingerprints = {"model": distributed.gather_fingerprints(self.model)}
        if self.eval_model is not self.model:
            self.replica_fingerprints["ema"] = distributed.gather_fingerprints(self.eval_model, buffers=True)
        diverged = [part for part, hashes in self.replica_fingerprints.items() if len(set(hashes)) > 1]
        if diverged:
            raise RuntimeError(f"{self.name}: DDP replicas diverged ({', '.join(diverged)} fingerprints "
                               f"{self.replica_fingerprints})")

    def _close_mosaic_if_due(self, epoch: int) -> None:
        r = self.recipe
        if r.close_mosaic and epoch >= r.epochs - r.close_mosaic and self.hyp is not None and not self.mosaic_closed:
            # a copy: close_mosaic writes into the namespace, which the model's loss gains also read
            self.loader.dataset.close_mosaic(copy.copy(self.hyp))
            self.loader.reset()  # a persistent loader's workers hold the old transforms
            self.mosaic_closed = True

    def fit(self) -> dict:
        r = self.recipe
        nb = len(self.loader)
        n_warm = max(round(r.warmup_epochs * nb), 100) if r.warmup_epochs > 0 else -1
        self._started = time.time()
        if self.threads is not None:
            self.threads.start()
        self._hook("on_stage_start")
        if self._callback_state is not None:
            self.load_callback_states(self._callback_state)
            self._callback_state = None
        metrics: dict = self.last_metrics
        for epoch in range(self.epoch, r.epochs):
            self.epoch = epoch
            self._close_mosaic_if_due(epoch)
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch, self.batch)
            per_step = r.lr_per_step or r.quant_lr_decay
            if not per_step:
                self._set_lrs(epoch * nb, nb)
            self.model.train()
            self._hook("on_epoch_start")
            bar = tqdm(self.loader, total=nb, initial=self.batch, desc=f"{self.name} {epoch + 1}/{r.epochs}",
                       unit="batch", disable=not self.progress)
            for i, batch in enumerate(bar, start=self.batch):
                if per_step:
                    self._set_lrs(epoch * nb + i, nb)
                self._warmup(epoch * nb + i, n_warm, nb)
                self._train_step(batch)
                if self.threads is not None:
                    self.threads.tick()
                self.batch = i + 1
                bar.set_postfix({k.replace("_loss", ""): f"{v:.3f}" for k, v in self.loss_items.items()})
            self._sync_replicas()
            last = epoch == r.epochs - 1
            evaluated: dict = {}  # an epoch row carries mAP only when this epoch was evaluated (not a stale copy)
            if last or (r.eval_every > 0 and (epoch + 1) % r.eval_every == 0):
                metrics = evaluated = self._evaluate()
                masks = (f"  mask mAP50-95 {metrics['mask_mAP50-95']:.4f}  mask mAP50 {metrics['mask_mAP50']:.4f}"
                         if "mask_mAP50-95" in metrics else "")
                log.info("%s epoch %d/%d: mAP50-95 %.4f  mAP50 %.4f%s", self.name, epoch + 1, r.epochs,
                         metrics["mAP50-95"], metrics["mAP50"], masks)
            self.history.append({"epoch": epoch + 1, **self.loss_items, **evaluated})
            self._hook("on_epoch_end", metrics)
            self.epoch, self.batch, self.last_metrics = epoch + 1, 0, metrics
            self._save()
            if distributed.any_rank(self.stop.requested)[0]:  # e.g. a signal during the evaluation
                self._stop_now(save=False)
        self.epoch = r.epochs
        if r.epochs > 0:  # the loader as its last epoch left it, also when a resume had no epoch left to run
            self._close_mosaic_if_due(r.epochs - 1)
        if self.ddp is not None:  # one process has nothing to compare (hashing a large model costs seconds)
            self._check_replicas()
        if self.threads is not None and self.threads.changes:
            log.info("%s: the CPU thread count changed %d times while other processes (another job, or this run's "
                     "own data loader workers) competed for the cores", self.name,
                     self.threads.changes)
        self._hook("on_stage_end")
        self.wall_time += self._elapsed()
        self._started = None
        if not metrics:  # zero epochs: still report where the stage stands
            metrics = self._evaluate()
        return metrics
