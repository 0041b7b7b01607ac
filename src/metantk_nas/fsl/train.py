"""RFS training of an evaluation network on all base classes (research §7.2; paper §6.1 "Optimization Setup").

Cross-entropy, SGD (momentum 0.9, weight decay 5e-4), step decay x0.1 after each milestone epoch (1-based, as RFS's
``adjust_learning_rate``), drop-path ramped linearly to ``drop_path`` (p = drop_path * epoch / epochs, epochs counted from 1), transform A
on uint8 tensors.  Every random draw of batch (epoch, step) comes from a generator seeded with (seed, epoch, step),
so a run resumed from any checkpoint ends with the same weights as an uninterrupted one.

Checkpoints (``ckpt_last.pt`` and the previous one, ``ckpt_prev.pt``) are written atomically after every epoch and
when SIGTERM/SIGUSR1 arrive (SLURM preemption / time limit); the process then exits with :data:`EXIT_REQUEUE`.
A corrupt checkpoint is reported and the previous one (or a fresh start) is used, never a partial state.
"""
from __future__ import annotations

import csv
import io
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from ..provenance import write_bytes_atomic, write_text_atomic
from ..seeding import derive_seed, torch_gen

log = logging.getLogger(__name__)
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpointed after a signal; run again to resume


def step_lr(base: float, epoch1: int, milestones: tuple[int, ...], rate: float = 0.1) -> float:
    """RFS: lr = base * rate ** #(milestones strictly below the 1-based epoch)."""
    return base * rate ** sum(epoch1 > m for m in milestones)


def drop_path_probability(max_p: float, epoch1: int, epochs: int) -> float:
    """The original's ramp ``aug_dp * epoch / epochs`` with 1-based epochs: max_p / epochs in the first epoch,
    max_p in the last."""
    return max_p * epoch1 / epochs


class Preempted(Exception):
    pass


@dataclass
class TrainState:
    epoch: int = 0            # epochs finished
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def build_model(genotype: Genotype, cfg: TrainConfig, n_classes: int) -> EvalNet:
    model = EvalNet(genotype, cfg.channels, cfg.cells, n_classes)
    init_weights_(model, torch_gen(cfg.seed, 0xC0FFEE), "default")
    return model


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": state.epoch,
                "seconds": state.seconds, "log": [[r[k] for k in LOG_FIELDS] for r in state.log]}, buf)
    last = path / "ckpt_last.pt"
    if last.exists():
        last.replace(path / "ckpt_prev.pt")
    write_bytes_atomic(last, buf.getvalue())


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> TrainState:
    for name in ("ckpt_last.pt", "ckpt_prev.pt"):
        f = path / name
        if not f.exists():
            continue
        try:
            ck = torch.load(f, map_location="cpu", weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            state = TrainState(int(ck["epoch"]), [dict(zip(LOG_FIELDS, r)) for r in ck["log"]], float(ck["seconds"]))
            log.info("resuming from %s after epoch %d", f, state.epoch)
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


class _SignalFlag:
    def __init__(self) -> None:
        self.hit: int | None = None
        self.old: dict[int, Any] = {}

    def __enter__(self) -> "_SignalFlag":
        for s in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self.old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.hit = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def train_model(genotype: Genotype, cfg: TrainConfig, data: PreparedSplit, ckpt_dir: Path,
                device: torch.device, progress: bool = True, stop_after_epochs: int | None = None) -> tuple[EvalNet, TrainState]:
    """Train (or resume) to ``cfg.epochs``. ``stop_after_epochs`` simulates a kill between epochs (tests)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(genotype, cfg, data.n_classes).to(device)
    cuda = device.type == "cuda"
    if cfg.channels_last:   # a memory layout (faster convolutions and pools, CPU and CUDA); float32 either way
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = _load_checkpoint(ckpt_dir, model, opt)
    aug = TrainAugment(cfg.image_size, cfg.crop_padding, cfg.color_jitter, data.mean, data.std)
    labels = torch.as_tensor(np.asarray(data.labels))
    n = len(labels)
    steps = n // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} larger than the {n} training images")
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.mixed_precision)
    with _SignalFlag() as sig:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            lr = step_lr(cfg.lr, epoch + 1, cfg.decay_epochs)
            for group in opt.param_groups:
                group["lr"] = lr
            model.set_drop_path(drop_path_probability(cfg.drop_path, epoch + 1, cfg.epochs))
            model.train()
            perm = torch.randperm(n, generator=torch_gen(cfg.seed, epoch, 0xBA7C))
            t0, tot_loss, correct = time.perf_counter(), 0.0, 0
            for step in tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                             disable=not progress, dynamic_ncols=True):
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size].numpy()
                order = np.argsort(idx)
                gen = torch_gen(cfg.seed, epoch, step)
                x = aug(data.images[idx[order]], gen, device)
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
                tot_loss += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
            secs = time.perf_counter() - t0
            state.seconds += secs
            state.epoch += 1
            row = {"epoch": state.epoch, "loss": round(tot_loss / (steps * cfg.batch_size), 6),
                   "accuracy": round(correct / (steps * cfg.batch_size), 6), "lr": lr, "seconds": round(secs, 3)}
            state.log.append(row)
            _save_checkpoint(ckpt_dir, model, opt, state)
            log.info("epoch %d/%d: loss %.4f acc %.3f lr %g (%.1fs)", state.epoch, cfg.epochs, row["loss"],
                     row["accuracy"], lr, secs)
            if sig.hit is not None:
                raise Preempted(f"signal {sig.hit}: checkpointed after epoch {state.epoch}; rerun to resume")
            if stop_after_epochs is not None and state.epoch >= stop_after_epochs:
                break
    return model, state


def plot_curve(rows: list[dict[str, Any]], path: Path) -> None:
    """Training loss and accuracy per epoch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..provenance import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["loss"] for r in rows], "o-", color="#1f77b4", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["accuracy"] for r in rows], "s--", color="#d62728", label="train accuracy")
    ax2.set_ylabel("accuracy")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_outputs(model: EvalNet, state: TrainState, out_dir: Path, device: torch.device) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    write_bytes_atomic(out_dir / "model.pt", buf.getvalue())
    write_text_atomic(out_dir / "train_log.csv", _csv(state.log))
    plot_curve(state.log, out_dir / "train_curve.png")
    return {"params": count_parameters(model), "params_millions": round(count_parameters(model) / 1e6, 4),
            "train_seconds": round(state.seconds, 3), "epochs": state.epoch,
            "final_loss": state.log[-1]["loss"] if state.log else None,
            "final_accuracy": state.log[-1]["accuracy"] if state.log else None}
