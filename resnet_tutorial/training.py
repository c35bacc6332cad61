"""Training: one readable loop (``fit``), the ``Recipe`` it follows, its history, and gradient norms.

Everything an iteration does is visible in ``fit``, in order: get a batch, forward under autocast,
backward, (record gradient norms), clip, step, schedule, (average the weights). How to train (epochs,
SGD's settings, schedule, label smoothing, mixed precision, channels_last, ``torch.compile``, an EMA of
the weights, test-time augmentation) is one ``Recipe``; the named ones are ``PAPER_RECIPE`` (He et al.
2016a on CIFAR-10), ``GPU_RECIPE`` (CIFAR-10 in minutes) and ``CPU_RECIPE`` (the book's MNIST-5k run).
The schedules are ``torch.optim.lr_scheduler``'s, the averaging is ``torch.optim.swa_utils``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ResnetTutorialError
from .evaluation import predict_logits
from .runtime import amp_settings, max_steps, pick_device, shifted  # amp_settings: used here and re-exported


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


# --- the recipe -----------------------------------------------------------------------------------

SCHEDULES = ("cosine", "warmup_cosine", "step", "constant")
#: Old schedule names that still work: "onecycle" was never ``OneCycleLR``; it is a warm-up, then cosine.
SCHEDULE_ALIASES = {"onecycle": "warmup_cosine"}


@dataclass(frozen=True)
class Recipe:
    """How to train: every setting of :func:`fit` that decides the result, as one named object.

    ``fit(model, data, recipe=CPU_RECIPE)`` trains with it; ``fit(model, data, recipe=CPU_RECIPE,
    epochs=2)`` or ``CPU_RECIPE.replace(epochs=2)`` changes one setting. A recipe unpacks like a
    dict (``fit(model, data, **recipe)``, ``{**recipe, "augment": False}``).

    Attributes:
        epochs: passes over the training split.
        batch_size, lr, momentum, nesterov, weight_decay: SGD's settings (weight decay on every weight).
        schedule: ``"cosine"`` (to zero), ``"warmup_cosine"`` (linear warm-up over ``warmup_epochs``,
            by default the first quarter of the run, then cosine), ``"step"`` (times ``gamma`` at each
            of ``milestones``, in epochs; default 50 % and 75 % of the run) or ``"constant"``.
        warmup_epochs: a linear warm-up from ``lr / steps`` to ``lr`` (any schedule).
        label_smoothing: the target's share spread over the other classes.
        augment: the dataset's augmentation of the training batches.
        amp: ``"auto"`` (on for CUDA, and on a CPU that computes bf16 natively:
            ``runtime.cpu_bf16_native``), ``True`` or ``False``; bf16 autocast (fp16 on a GPU without bf16).
        channels_last: ``"auto"`` (on for CUDA), ``True`` or ``False``.
        compile: ``torch.compile`` the model.
        clip_grad_norm: clip the gradient's norm to this value.
        ema_decay: keep an exponential moving average of the weights (and BN statistics), updated
            every step, evaluate it, and return it as the trained model.
        tta: evaluate on each test image and its four one-pixel shifts (mean of the probabilities).
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    amp: bool | str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("schedule", SCHEDULE_ALIASES.get(self.schedule, self.schedule))
        if self.milestones is not None:
            set_("milestones", tuple(self.milestones))
        problems = [
            f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            if self.schedule not in SCHEDULES else "",
            "epochs must be a whole number of at least 1" if not _whole(self.epochs, 1) else "",
            "batch_size must be a whole number of at least 1" if not _whole(self.batch_size, 1) else "",
            "lr must be positive" if not self.lr > 0 else "",
            "weight_decay must be 0 or more" if not self.weight_decay >= 0 else "",
            "momentum must be in [0, 1)" if not 0 <= self.momentum < 1 else "",
            "label_smoothing must be in [0, 1)" if not 0 <= self.label_smoothing < 1 else "",
            "warmup_epochs must be 0 or more" if not self.warmup_epochs >= 0 else "",
            "ema_decay must be in (0, 1)" if self.ema_decay is not None and not 0 < self.ema_decay < 1 else "",
        ]
        if any(problems):
            raise TrainingError("; ".join(p for p in problems if p))

    def replace(self, **changes) -> Recipe:
        """A copy with ``changes`` (names checked)."""
        unknown = set(changes) - set(self.keys())
        if unknown:
            raise TrainingError(f"not a recipe setting: {', '.join(sorted(unknown))}; "
                                f"the settings are {', '.join(self.keys())}")
        return dataclasses.replace(self, **changes)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str):
        return getattr(self, key)


def _whole(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


#: He et al. (2016a, Sec. 4.2) on CIFAR-10: SGD, batch 128, lr 0.1 divided by 10 at 32k and 48k of
#: 64k iterations (epochs 82 and 123 of 164 with 50k images), momentum 0.9, weight decay 1e-4, crop+flip.
PAPER_RECIPE = Recipe(epochs=164, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
                      milestones=(82, 123), gamma=0.1)

#: A quick GPU recipe for CIFAR-10: 30 epochs (a fifth of the paper's 164) of warm-up then cosine, label
#: smoothing 0.1, mixed precision and channels_last on CUDA ("auto").
GPU_RECIPE = Recipe(epochs=30, batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4,
                    schedule="warmup_cosine", warmup_epochs=2, label_smoothing=0.1)

#: The book's CPU recipe for ResNet-20 on MNIST-5k, the fastest to 98.5 % we found on two cores: 8 epochs
#: of batches of 64 with Nesterov momentum, a linear warm-up over the first quarter then cosine to zero,
#: label smoothing 0.1, bf16 autocast where the CPU computes bf16 natively ("auto"; emulated bf16 is slower
#: than fp32), channels_last, and test-time augmentation with one-pixel shifts. ``benchmarks/train_speed.py``
#: measures it.
CPU_RECIPE = Recipe(epochs=8, batch_size=64, lr=0.1, nesterov=True, weight_decay=5e-4, schedule="warmup_cosine",
                    label_smoothing=0.1, amp="auto", channels_last=True, tta=True)

RECIPES = {"paper": PAPER_RECIPE, "gpu": GPU_RECIPE, "cpu": CPU_RECIPE}


# --- optimiser and schedules ----------------------------------------------------------------------


def make_optimizer(model, lr, momentum, nesterov, weight_decay, param_groups=None) -> torch.optim.SGD:
    params = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def make_scheduler(optimizer, schedule, epochs, steps_per_epoch, milestones=None, gamma=0.1, warmup_epochs=0.0):
    """A per-step scheduler from ``torch.optim.lr_scheduler`` (see :class:`Recipe` for the schedules):
    ``CosineAnnealingLR``, ``MultiStepLR`` or ``ConstantLR``, after a ``LinearLR`` warm-up (joined by
    ``SequentialLR``) when there is one."""
    from torch.optim import lr_scheduler as S

    schedule = SCHEDULE_ALIASES.get(schedule, schedule)
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    total = epochs * steps_per_epoch
    if schedule == "warmup_cosine" and not warmup_epochs:
        warmup_epochs = epochs / 4
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    if schedule == "cosine" or schedule == "warmup_cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=0.0)
    elif schedule == "step":
        epochs_at = list(milestones) if milestones else [round(epochs * 0.5), round(epochs * 0.75)]
        main = S.MultiStepLR(optimizer, [m * steps_per_epoch - warmup for m in epochs_at], gamma=gamma)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup < 2:
        return main
    # From lr / warmup at the first step to lr at step ``warmup - 1``; ``main`` starts at step ``warmup``.
    ramp = S.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return S.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


# --- evaluation inside the loop -------------------------------------------------------------------


def evaluate_loss_acc(model, loader, amp=False, amp_dtype=torch.bfloat16, channels_last=False,
                      tta_fill=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (the loop is
    :func:`~resnet_tutorial.evaluation.predict_logits`)."""
    logits, labels = predict_logits(model, loader, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
                                    tta_fill=tta_fill)
    if not len(labels):
        return 0.0, 0.0
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


# --- fit ------------------------------------------------------------------------------------------


RUN_ARGUMENTS = ("record_grad_norms", "param_groups", "device", "seed", "progress", "checkpoint_path", "resume",
                 "eval_every")


def split_recipe(recipe: Recipe | None, kwargs: dict) -> tuple[Recipe, dict]:
    """``(recipe with the overrides in kwargs, the run arguments in kwargs)``, with clear errors."""
    unknown = set(kwargs) - set(RUN_ARGUMENTS) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise TrainingError(f"fit got unknown argument(s) {', '.join(sorted(unknown))}; the recipe's settings "
                            f"are {', '.join(f.name for f in dataclasses.fields(Recipe))}")
    overrides = {k: v for k, v in kwargs.items() if k not in RUN_ARGUMENTS}
    run = {k: v for k, v in kwargs.items() if k in RUN_ARGUMENTS}
    if recipe is None:
        if "epochs" not in overrides:
            raise TrainingError("fit needs a recipe or epochs: fit(model, data, recipe=CPU_RECIPE) or "
                                "fit(model, data, epochs=10)")
        return Recipe(**overrides), run
    return recipe.replace(**overrides), run


def fit(
    model: nn.Module,
    data,
    recipe: Recipe | None = None,
    *,
    record_grad_norms: bool = False,
    param_groups=None,
    device=None,
    seed: int = 0,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    eval_every: int = 1,
    **settings,
) -> History:
    """Train ``model`` on ``data`` (an ``ImageData``) with SGD; return its History.

    ``recipe`` (a ``Recipe``) says how to train; keyword ``settings`` override its
    fields, or make the recipe without one: ``fit(model, data, epochs=10, lr=0.05)``.
    ``param_groups`` (e.g. from ``finetune.stage_param_groups``) replaces
    ``model.parameters()``. ``checkpoint_path`` saves a checkpoint after every epoch;
    ``resume=True`` continues from it (from scratch if it does not exist yet). Inside
    ``torchrun`` the model is wrapped in DDP and each process trains on its own share
    of every epoch; only rank 0 writes files and shows progress.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from . import distributed as dist_utils
    from .checkpoint import load_checkpoint, save_checkpoint

    r, _ = split_recipe(recipe, settings)
    device = pick_device(device)
    rank, world = dist_utils.rank_and_world()
    use_amp, amp_dtype = amp_settings(r.amp, device)
    cl = device.type == "cuda" if r.channels_last == "auto" else bool(r.channels_last)
    model.to(device, memory_format=torch.channels_last if cl else torch.preserve_format)
    train_loader = data.loader("train", r.batch_size, augment=r.augment, device=device,
                               seed=shifted(seed), rank=rank, world_size=world)
    test_loader = data.loader("test", 512, device=device)
    zeros = torch.zeros(data.in_chans, 1, 1, dtype=torch.uint8)
    black = data.normalize(zeros).flatten()  # the border of a shifted test image
    optimizer = make_optimizer(model, r.lr, r.momentum, r.nesterov, r.weight_decay,
                               param_groups)
    scheduler = make_scheduler(optimizer, r.schedule, r.epochs, len(train_loader),
                               r.milestones, r.gamma, r.warmup_epochs)
    fp16 = use_amp and amp_dtype == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    ema = None  # the average of the weights, when the recipe keeps one
    if r.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(r.ema_decay),
                            use_buffers=True)
    recorder = GradNormRecorder(model) if record_grad_norms else None
    config = dict(dataset=getattr(data, "name", None), **dataclasses.asdict(r),
                  seed=seed, world_size=world)
    config.update(getattr(data, "run_info", {}))  # a folder's classes and preprocessing
    config.update(amp=use_amp, amp_dtype=str(amp_dtype), channels_last=cl)
    cap = max_steps()  # RESNET_TUTORIAL_MAX_STEPS: the smoke run's cap on the steps
    if cap:
        config["max_steps"] = cap
    history, start = History(config=config), 0
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler,
                                scaler=scaler, ema=ema)
        history, start = History.from_dict(state["history"]), state["epoch"]
        if recorder:
            recorder.history.update(history.grad_norms)
    net = dist_utils.wrap_ddp(model, device) if world > 1 else model
    if world > 1:
        # The copies are identical now; dropout masks should differ between ranks.
        dist_utils.seed_this_rank(shifted(seed))
    net = torch.compile(net) if r.compile else net
    loss_fn = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
    steps = 0

    for epoch in range(start, r.epochs):
        t0, cpu0, net = time.perf_counter(), time.process_time(), net.train()
        train_loader.set_epoch(epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        sums = torch.zeros(3, device=device)  # loss sum, correct, seen
        desc = f"epoch {epoch + 1}/{r.epochs}"
        bar = dist_utils.progress_bar(len(train_loader), desc, progress and rank == 0)
        for step, (x, y) in enumerate(train_loader):
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recorder or r.clip_grad_norm:
                scaler.unscale_(optimizer)
            if recorder:
                recorder.record()
            if r.clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), r.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            sums += torch.stack([loss.detach().float() * len(y),
                                 (logits.argmax(1) == y).sum().float(),
                                 torch.tensor(float(len(y)), device=device)])
            steps += 1
            capped = cap is not None and steps >= cap
            if step % 20 == 0 or step == len(train_loader) - 1 or capped:
                _check_finite(sums, epoch, r.lr, bar)  # syncs: every 20 steps
            bar.update()
            if capped:
                break
        sums = dist_utils.all_reduce_sum(sums)
        loss_mean, acc = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
        row = dict(epoch=epoch + 1, train_loss=loss_mean, train_acc=acc,
                   train_error=1 - acc, lr=epoch_lr,  # the first group's, at the start
                   train_seconds=time.perf_counter() - t0,
                   train_cpu_seconds=time.process_time() - cpu0)  # all threads
        capped = cap is not None and steps >= cap
        if (epoch + 1) % eval_every == 0 or epoch + 1 == r.epochs or capped:
            row["test_loss"], row["test_acc"] = evaluate_loss_acc(
                model if ema is None else ema.module, test_loader, use_amp, amp_dtype,
                cl, tta_fill=black if r.tta else None)
            row["test_error"] = 1 - row["test_acc"]
        row["seconds"] = time.perf_counter() - t0
        history.epochs.append(row)
        history.seconds += row["seconds"]
        if recorder:
            recorder.end_epoch()
            history.grad_norms = recorder.history
        shown = ("train_loss", "train_acc", "test_acc")
        bar.set_postfix({k: f"{row[k]:.3f}" for k in shown if k in row})
        bar.close()
        if checkpoint_path and rank == 0:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler,
                            epoch=epoch + 1, history=history.to_dict(), config=config,
                            scaler=scaler, ema=ema)
        if capped:
            _pad_capped(history, r.epochs)
            break
    if ema is not None:  # the average is the trained model
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    return history


def _pad_capped(history: History, epochs: int) -> None:
    """A run stopped by ``RESNET_TUTORIAL_MAX_STEPS`` (the smoke run) keeps the shape of a whole one: its last
    row (and gradient norms) repeated for the epochs it did not train, marked ``capped``, so that the code
    reading the history per epoch runs as it would after a whole run."""
    last = history.epochs[-1]
    for epoch in range(len(history.epochs), epochs):
        history.epochs.append({**last, "epoch": epoch + 1, "seconds": 0.0, "capped": True})
    history.grad_norms = {k: v + v[-1:] * (epochs - len(v)) for k, v in history.grad_norms.items()}


def _check_finite(sums: torch.Tensor, epoch: int, lr: float, bar) -> None:
    """Show the running loss and accuracy; stop with a clear error when the loss diverged."""
    train_loss = sums[0].item() / sums[2].item()
    if not math.isfinite(train_loss):
        bar.close()
        raise TrainingError(
            f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning "
            f"rate (lr={lr}), add warm-up or gradient clipping (clip_grad_norm=1.0)"
        )
    bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{sums[1].item() / sums[2].item():.3f}",
                    refresh=False)
