"""RFS training of an evaluation network on all base classes (research §7.2; paper §6.1 "Optimization Setup").

Cross-entropy, SGD (momentum 0.9, weight decay 5e-4), step decay x0.1 after each milestone epoch (1-based, as RFS's
``adjust_learning_rate``), drop-path ramped linearly to ``drop_path`` (p = drop_path * epoch / epochs, epochs counted from 1), transform A
on uint8 tensors.  Every random draw of batch (epoch, step) comes from a generator seeded with (seed, epoch, step),
so a run resumed from any checkpoint ends with the same weights as an uninterrupted one.

Checkpoints (``ckpt_last.pt`` and the previous one, ``ckpt_prev.pt``) are written atomically after every epoch,
and within the epoch when SIGTERM/SIGUSR1 arrive (SLURM preemption / time limit): the current step finishes, the
checkpoint holds the model, the optimiser's momentum buffers, the grad scaler, the epoch, the step within it and
the epoch's running loss/accuracy sums, and the stage exits with ``preemption.EXIT_REQUEUE``; the resumed run goes on
from that step to the same weights, bit for bit on CPU.  A corrupt checkpoint is reported and the previous one
(or a fresh start) is used, never a partial state.  A checkpoint records the fingerprint of its genotype and
training config (:func:`run_fingerprint`); one of another fingerprint (the config changed since) is not resumed.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..config import TrainConfig
from ..data.prepared import PreparedSplit
from ..data.transforms import TrainAugment
from ..nas.genotype import Genotype
from ..nas.networks import EvalNet, count_parameters, init_weights_
from ..preemption import Preempted, SignalFlag
from ..provenance import sha256_json, write_bytes_atomic, write_text_atomic
from ..seeding import derive_seed, torch_gen

log = logging.getLogger(__name__)


def step_lr(base: float, epoch1: int, milestones: tuple[int, ...], rate: float = 0.1) -> float:
    """RFS: lr = base * rate ** #(milestones strictly below the 1-based epoch)."""
    return base * rate ** sum(epoch1 > m for m in milestones)


def drop_path_probability(max_p: float, epoch1: int, epochs: int) -> float:
    """The original's ramp ``aug_dp * epoch / epochs`` with 1-based epochs: max_p / epochs in the first epoch,
    max_p in the last."""
    return max_p * epoch1 / epochs


@dataclass
class TrainState:
    """Where a run is: finished epochs, steps finished in the current epoch and that epoch's running sums."""

    epoch: int = 0            # epochs finished
    step: int = 0             # steps finished in epoch ``epoch`` (0 at an epoch boundary)
    loss_sum: float = 0.0     # sum over the finished steps of this epoch of loss * batch
    correct: int = 0
    epoch_seconds: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumes: list[list[int]] = field(default_factory=list)   # [epochs finished, step] at every resume


class SGD:
    """torch.optim.SGD's update (momentum, weight decay; no dampening, no Nesterov), bitwise: per parameter
    d = g + wd * p; b = d (first step) or m * b + d; p -= lr * b.  Its own class because constructing any
    ``torch.optim.Optimizer`` imports torch._dynamo (1.6 s of every training job here); it has the
    ``param_groups`` and ``step`` that GradScaler uses, and a state_dict of its momentum buffers."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float, weight_decay: float):
        self.param_groups = [{"params": list(params), "lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.param_groups[0]["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        for i, p in enumerate(g["params"]):
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad
            if g["momentum"]:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(d).detach()
                else:
                    buf.mul_(g["momentum"]).add_(d)
                d = buf
            p.add_(d, alpha=-g["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.param_groups[0]["lr"], "buffers": [b for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buffers = list(state["buffers"])
        if len(buffers) != len(self.buffers):
            raise ValueError(f"optimizer state for {len(buffers)} parameters, the model has {len(self.buffers)}")
        self.buffers = [None if b is None else b.to(p.device) for b, p in zip(buffers, self.param_groups[0]["params"])]
        self.param_groups[0]["lr"] = state["lr"]


def build_model(genotype: Genotype, cfg: TrainConfig, n_classes: int) -> EvalNet:
    model = EvalNet(genotype, cfg.channels, cfg.cells, n_classes)
    init_weights_(model, torch_gen(cfg.seed, 0xC0FFEE), "default")
    return model


CKPT_FIELDS = ("epoch", "step", "loss_sum", "correct", "epoch_seconds", "seconds", "resumes")


def _save_checkpoint(path: Path, model: nn.Module, opt: SGD, scaler: torch.amp.GradScaler, state: TrainState,
                     fingerprint: str) -> None:
    """Everything the rest of the run depends on; the data order and every augmentation and drop-path draw are
    functions of (seed, epoch, step), so (epoch, step) restores them."""
    buf = io.BytesIO()
    torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                **{k: getattr(state, k) for k in CKPT_FIELDS},
                "log": [[r[k] for k in LOG_FIELDS] for r in state.log]}, buf)
    last = path / "ckpt_last.pt"
    if last.exists():
        last.replace(path / "ckpt_prev.pt")
    write_bytes_atomic(last, buf.getvalue())


def run_fingerprint(genotype: Genotype, cfg: TrainConfig) -> str:
    """What a checkpoint belongs to: the genotype and every training setting.  A checkpoint of another
    fingerprint (the config or the cell changed since it was written) is never resumed."""
    return sha256_json({"genotype": genotype.to_dict(), "train": dataclasses.asdict(cfg)})


def _load_checkpoint(path: Path, model: nn.Module, opt: SGD, scaler: torch.amp.GradScaler,
                     fingerprint: str) -> TrainState:
    for name in ("ckpt_last.pt", "ckpt_prev.pt"):
        f = path / name
        if not f.exists():
            continue
        try:
            ck = torch.load(f, map_location="cpu", weights_only=True)
            if ck.get("fingerprint") != fingerprint:
                log.warning("%s: a checkpoint of another training config or genotype; starting afresh", f)
                return TrainState()
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            state = TrainState(int(ck["epoch"]), int(ck["step"]), float(ck["loss_sum"]), int(ck["correct"]),
                               float(ck["epoch_seconds"]), [dict(zip(LOG_FIELDS, r)) for r in ck["log"]],
                               float(ck["seconds"]), [list(r) for r in ck.get("resumes", [])])
            state.resumes.append([state.epoch, state.step])
            log.info("resuming from %s at epoch %d, step %d", f, state.epoch + 1, state.step)
            return state
        except Exception as e:  # corrupt, truncated or foreign file
            log.error("%s: unreadable checkpoint (%s: %s); trying an older one", f, type(e).__name__, str(e)[:120])
    return TrainState()


LOG_FIELDS = ("epoch", "loss", "accuracy", "lr", "seconds")


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return out.getvalue()


def train_model(genotype: Genotype, cfg: TrainConfig, data: PreparedSplit, ckpt_dir: Path,
                device: torch.device, progress: bool = True,
                on_step: Callable[[int, int], None] | None = None) -> tuple[EvalNet, TrainState]:
    """Train (or resume from ``ckpt_dir``) to ``cfg.epochs``.

    On SIGTERM/SIGUSR1 the current step finishes, a checkpoint (mid-epoch if need be) is written and
    :class:`Preempted` is raised.  ``on_step(epoch, step)`` is called after every step (tests send a signal or
    stop a run from it: raising there leaves the last checkpoint, as a SIGKILL would)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(genotype, cfg, data.n_classes).to(device)
    cuda = device.type == "cuda"
    if cfg.channels_last:   # a memory layout (faster convolutions and pools, CPU and CUDA); float32 either way
        model = model.to(memory_format=torch.channels_last)
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.mixed_precision)
    fingerprint = run_fingerprint(genotype, cfg)
    state = _load_checkpoint(ckpt_dir, model, opt, scaler, fingerprint)
    aug = TrainAugment(cfg.image_size, cfg.crop_padding, cfg.color_jitter, data.mean, data.std)
    labels = torch.as_tensor(np.asarray(data.labels))
    n = len(labels)
    steps = n // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} larger than the {n} training images")
    with SignalFlag() as sig:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            lr = step_lr(cfg.lr, epoch + 1, cfg.decay_epochs)
            opt.param_groups[0]["lr"] = lr
            model.set_drop_path(drop_path_probability(cfg.drop_path, epoch + 1, cfg.epochs))
            model.train()
            perm = torch.randperm(n, generator=torch_gen(cfg.seed, epoch, 0xBA7C))
            for step in tqdm(range(state.step, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                             disable=not progress, dynamic_ncols=True, initial=state.step, total=steps):
                t0 = time.perf_counter()
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size].numpy()
                order = np.argsort(idx)
                x = aug(data.images[idx[order]], torch_gen(cfg.seed, epoch, step), device)
                y = labels[idx[order]].to(device)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                torch.manual_seed(derive_seed(cfg.seed, epoch, step, 0xD0))  # drop-path masks
                with torch.autocast(device.type, enabled=cuda and cfg.mixed_precision):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                state.loss_sum += float(loss.detach()) * len(y)
                state.correct += int((logits.argmax(1) == y).sum())
                state.step = step + 1
                state.epoch_seconds += time.perf_counter() - t0
                if on_step is not None:
                    on_step(epoch, step)
                if sig.hit is not None and state.step < steps:
                    _save_checkpoint(ckpt_dir, model, opt, scaler, state, fingerprint)
                    raise Preempted(f"signal {sig.hit}: checkpointed at epoch {epoch + 1}, step {state.step}/{steps}; "
                                    "rerun to resume")
            _finish_epoch(state, cfg, steps, lr)
            _save_checkpoint(ckpt_dir, model, opt, scaler, state, fingerprint)
            if sig.hit is not None:
                raise Preempted(f"signal {sig.hit}: checkpointed after epoch {state.epoch}; rerun to resume")
    return model, state


def _finish_epoch(state: TrainState, cfg: TrainConfig, steps: int, lr: float) -> None:
    row = {"epoch": state.epoch + 1, "loss": round(state.loss_sum / (steps * cfg.batch_size), 6),
           "accuracy": round(state.correct / (steps * cfg.batch_size), 6), "lr": lr,
           "seconds": round(state.epoch_seconds, 3)}
    state.log.append(row)
    state.seconds += state.epoch_seconds
    state.epoch, state.step, state.loss_sum, state.correct, state.epoch_seconds = state.epoch + 1, 0, 0.0, 0, 0.0
    log.info("epoch %d/%d: loss %.4f acc %.3f lr %g (%.1fs)", state.epoch, cfg.epochs, row["loss"], row["accuracy"],
             lr, row["seconds"])


def write_outputs(model: EvalNet, state: TrainState, out_dir: Path, device: torch.device, title: str = "") -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)   # layout-free
    write_bytes_atomic(out_dir / "model.pt", buf.getvalue())
    write_text_atomic(out_dir / "train_log.csv", _csv(state.log))
    from .curves import plot_curve   # matplotlib only here: the training loop does not import it

    plot_curve(state.log, out_dir / "train_curve.png", title)
    return {"params": count_parameters(model), "params_millions": round(count_parameters(model) / 1e6, 4),
            "train_seconds": round(state.seconds, 3), "epochs": state.epoch,
            "final_loss": state.log[-1]["loss"] if state.log else None,
            "final_accuracy": state.log[-1]["accuracy"] if state.log else None,
            "resumed_at": [{"epochs_done": e, "step": s} for e, s in state.resumes]}
