"""Training: one readable loop (:func:`fit`), its history, and per-layer gradient norms.

Everything an iteration does is visible in :func:`fit`, in order: get a batch, forward under autocast,
backward, (record gradient norms), clip, step, schedule. The options (schedule, label smoothing, mixed
precision, channels_last, ``torch.compile``, checkpoints) are plain arguments.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ResnetTutorialError
from .runtime import pick_device

SCHEDULES = ("cosine", "step", "onecycle", "constant")


class TrainingError(ResnetTutorialError):
    """Training went wrong in a way the user can fix (a diverging loss, a bad setting)."""


# --- the history ----------------------------------------------------------------------------------


@dataclass
class History:
    """Per-epoch metrics of a run, as plain data (``to_dict``/``from_dict`` round-trip through JSON)."""

    epochs: list[dict] = field(default_factory=list)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def as_arrays(self, key: str) -> np.ndarray:
        """One metric over the epochs, e.g. ``history.as_arrays("test_error")`` (NaN where not measured)."""
        return np.array([e.get(key, float("nan")) for e in self.epochs], dtype=float)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "grad_norms": self.grad_norms, "seconds": self.seconds, "config": self.config}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(
            epochs=[dict(e) for e in d.get("epochs", [])],
            grad_norms={k: list(v) for k, v in d.get("grad_norms", {}).items()},
            seconds=float(d.get("seconds", 0.0)),
            config=dict(d.get("config", {})),
        )

    def __repr__(self) -> str:
        f = self.final
        last = ", ".join(f"{k}={v:.4g}" for k, v in f.items() if isinstance(v, float) and k != "lr") if f else "empty"
        return f"History({len(self.epochs)} epochs, {self.seconds:.1f} s; last: {last})"


# --- gradient norms -------------------------------------------------------------------------------


def weight_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every convolution and linear layer, in depth (definition) order, by module name."""
    from .models.weights import clean_state_dict

    layers = {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    return dict(zip(clean_state_dict(dict.fromkeys(layers)).keys(), layers.values(), strict=True))


def layer_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=None) -> dict[str, float]:
    """The gradient norm of every conv/linear weight for one batch (the model is left unchanged)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    norms = {name: w.grad.norm().item() for name, w in weight_layers(model).items() if w.grad is not None}
    model.zero_grad(set_to_none=True)
    return norms


class GradNormRecorder:
    """Accumulates the per-layer gradient norms of each step; :meth:`end_epoch` keeps their mean."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = weight_layers(model)
        self.history: dict[str, list[float]] = {name: [] for name in self.layers}
        self._sums = torch.zeros(len(self.layers))
        self._steps = 0

    @torch.no_grad()
    def record(self) -> None:
        """Call after ``backward()`` (and after unscaling, with a GradScaler)."""
        norms = [w.grad.norm().float().cpu() if w.grad is not None else torch.tensor(0.0) for w in self.layers.values()]
        self._sums += torch.stack(norms)
        self._steps += 1

    def end_epoch(self) -> None:
        for name, v in zip(self.layers, (self._sums / max(self._steps, 1)).tolist(), strict=True):
            self.history[name].append(v)
        self._sums.zero_()
        self._steps = 0


# --- optimiser and schedules ----------------------------------------------------------------------


def lr_factor(schedule: str, step: int, total: int, steps_per_epoch: int, milestones, gamma, warmup: int) -> float:
    """The learning rate at ``step`` as a fraction of the base rate."""
    if step < warmup:  # linear warm-up (also the first phase of one-cycle)
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # the paper: divide by 10 at each milestone epoch
        epoch = step // steps_per_epoch
        return gamma ** sum(epoch >= m for m in milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))  # cosine, and one-cycle's annealing phase


def make_optimizer(model, lr, momentum, nesterov, weight_decay, param_groups=None) -> torch.optim.SGD:
    params = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def make_scheduler(optimizer, schedule, epochs, steps_per_epoch, milestones=None, gamma=0.1, warmup_epochs=0.0):
    """A per-step ``LambdaLR`` for ``"cosine"``, ``"step"`` (milestones in epochs; default 50% and 75%
    of the run, the paper's 32k and 48k of 64k iterations), ``"onecycle"`` (warm up over the first 25%,
    then cosine to zero) or ``"constant"``."""
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    total = epochs * steps_per_epoch
    milestones = list(milestones) if milestones else [round(epochs * 0.5), round(epochs * 0.75)]
    warmup = int(0.25 * total) if schedule == "onecycle" else int(warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(schedule, s, total, steps_per_epoch, milestones, gamma, warmup)
    )


def amp_settings(amp, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and to which dtype: bf16 where supported, else fp16 (with a GradScaler)."""
    enabled = device.type == "cuda" if amp == "auto" else bool(amp)
    if device.type == "cuda":  # bf16 needs Ampere (8.x); a T4 (7.5) only emulates it, slowly: fp16 there
        return enabled, torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return enabled, torch.bfloat16


# --- evaluation inside the loop -------------------------------------------------------------------


@torch.no_grad()
def evaluate_loss_acc(model, loader, amp=False, amp_dtype=torch.bfloat16, channels_last=False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1)


# --- fit ------------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    data,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    milestones=None,
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    label_smoothing: float = 0.0,
    augment: bool = True,
    amp="auto",
    channels_last="auto",
    compile: bool = False,
    clip_grad_norm: float | None = None,
    record_grad_norms: bool = False,
    param_groups=None,
    device=None,
    seed: int = 0,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    eval_every: int = 1,
) -> History:
    """Train ``model`` on ``data`` (an :class:`~resnet_tutorial.data.ImageData`) with SGD; return its History.

    ``amp`` and ``channels_last`` are ``"auto"`` (on for CUDA), ``True`` or ``False``. ``param_groups``
    (e.g. from :func:`~resnet_tutorial.finetune.stage_param_groups`) replaces ``model.parameters()``.
    ``checkpoint_path`` saves a checkpoint after every epoch; ``resume=True`` continues from it (from
    scratch if it does not exist yet). Inside ``torchrun`` the model is wrapped in DDP and each process
    trains on its own share of every epoch; only rank 0 writes files and shows progress.
    """
    from . import distributed as dist_utils
    from .checkpoint import load_checkpoint, save_checkpoint

    device = pick_device(device)
    rank, world = dist_utils.rank_and_world()
    use_amp, amp_dtype = amp_settings(amp, device)
    channels_last = device.type == "cuda" if channels_last == "auto" else bool(channels_last)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    train_loader = data.loader("train", batch_size, augment=augment, device=device, seed=seed, rank=rank, world_size=world)
    test_loader = data.loader("test", 512, device=device)
    optimizer = make_optimizer(model, lr, momentum, nesterov, weight_decay, param_groups)
    scheduler = make_scheduler(optimizer, schedule, epochs, len(train_loader), milestones, gamma, warmup_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    recorder = GradNormRecorder(model) if record_grad_norms else None
    config = dict(dataset=getattr(data, "name", None), epochs=epochs, batch_size=batch_size, lr=lr,
                  momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, schedule=schedule,
                  label_smoothing=label_smoothing, augment=augment, amp=use_amp, amp_dtype=str(amp_dtype),
                  channels_last=channels_last, seed=seed, world_size=world)
    history, start = History(config=config), 0
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler=scaler)
        history, start = History.from_dict(state["history"]), state["epoch"]
        if recorder:
            recorder.history.update(history.grad_norms)
    net = dist_utils.wrap_ddp(model, device) if world > 1 else model
    if world > 1:
        dist_utils.seed_this_rank(seed)  # the copies are identical now; dropout masks should not be
    net = torch.compile(net) if compile else net
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    for epoch in range(start, epochs):
        t0, net = time.perf_counter(), net.train()
        train_loader.set_epoch(epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        sums = torch.zeros(3, device=device)  # loss sum, correct, seen
        bar = dist_utils.progress_bar(len(train_loader), f"epoch {epoch + 1}/{epochs}", progress and rank == 0)
        for step, (x, y) in enumerate(train_loader):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recorder or clip_grad_norm:
                scaler.unscale_(optimizer)
            if recorder:
                recorder.record()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums += torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum().float(),
                                 torch.tensor(float(len(y)), device=device)])
            if step % 20 == 0 or step == len(train_loader) - 1:  # one sync every 20 steps
                train_loss = sums[0].item() / sums[2].item()
                if not math.isfinite(train_loss):
                    bar.close()
                    raise TrainingError(
                        f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning rate "
                        f"(lr={lr}), add warm-up or gradient clipping (clip_grad_norm=1.0)"
                    )
                bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{sums[1].item() / sums[2].item():.3f}", refresh=False)
            bar.update()
        sums = dist_utils.all_reduce_sum(sums)
        row = dict(epoch=epoch + 1, train_loss=(sums[0] / sums[2]).item(), train_acc=(sums[1] / sums[2]).item())
        row["train_error"] = 1 - row["train_acc"]
        row["lr"] = epoch_lr  # the first group's learning rate at the start of the epoch
        row["train_seconds"] = time.perf_counter() - t0
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            row["test_loss"], row["test_acc"] = evaluate_loss_acc(model, test_loader, use_amp, amp_dtype, channels_last)
            row["test_error"] = 1 - row["test_acc"]
        row["seconds"] = time.perf_counter() - t0
        history.epochs.append(row)
        history.seconds += row["seconds"]
        if recorder:
            recorder.end_epoch()
            history.grad_norms = recorder.history
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "train_acc", "test_acc") if k in row})
        bar.close()
        if checkpoint_path and rank == 0:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch=epoch + 1, history=history.to_dict(),
                            config=config, scaler=scaler)
    model.eval()
    return history
