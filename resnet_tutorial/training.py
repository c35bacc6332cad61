"""Training: the ``Recipe`` that says how to train, ``fit`` that follows it, its history, and gradient norms.

``fit`` is a setup (:func:`setup`, then :func:`wrap` for DDP and compile) and one :func:`train_one_epoch` after
another, each followed by an evaluation (:func:`evaluate_run`) and a checkpoint. ``train_one_epoch`` is an
iteration in order: get a batch, forward under autocast, loss, backward, (record gradient norms,) clip, step,
schedule, (average the weights,) log. How to train (epochs,
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
from torch import nn
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import checkpoint, distributed
from .data import AUGMENTATIONS
from .errors import ResnetTutorialError
from .evaluation import loss_and_accuracy
from .models.weights import clean_state_dict
from .runtime import amp_settings, max_steps, pick_device, shifted, use_channels_last

#: The version of what training produces, part of every experiment's cache key (``experiments.experiment_key``).
#: Bump it in the same commit as any change to the package that changes a trained result for the same model,
#: data and recipe (this loop, the optimiser or schedules, batching and augmentation in ``data``, a block's
#: forward): cached results then train again. A change that keeps the results (a docstring, a refactor shown
#: bit-identical) keeps the cache.
TRAINING_VERSION = 2


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
    steps: int = 0  # optimizer steps, in all

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def as_arrays(self, key: str) -> np.ndarray:
        """One metric over the epochs, e.g. ``history.as_arrays("test_error")`` (NaN where not measured)."""
        return np.array([e.get(key, float("nan")) for e in self.epochs], dtype=float)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "grad_norms": self.grad_norms, "seconds": self.seconds, "config": self.config,
                "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(
            epochs=[dict(e) for e in d.get("epochs", [])],
            grad_norms={k: list(v) for k, v in d.get("grad_norms", {}).items()},
            seconds=float(d.get("seconds", 0.0)),
            config=dict(d.get("config", {})),
            steps=int(d.get("steps", 0)),
        )

    def __repr__(self) -> str:
        f = self.final
        last = ", ".join(f"{k}={v:.4g}" for k, v in f.items() if isinstance(v, float) and k != "lr") if f else "empty"
        return f"History({len(self.epochs)} epochs, {self.seconds:.1f} s; last: {last})"


class RecipeError(TrainingError, ValueError):
    """Settings that cannot make a :class:`Recipe`; ``problems`` maps each bad setting to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name} {problem}" for name, problem in problems.items()))


# --- gradient norms -------------------------------------------------------------------------------


def weight_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every convolution and linear layer, in depth (definition) order, by module name."""
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
    """How to train: every setting of :func:`fit` that decides the result, and the only way to give them.

    ``fit(model, data, CPU_RECIPE)`` trains with one; ``CPU_RECIPE.replace(epochs=2)`` changes a setting;
    ``Recipe(epochs=10, lr=0.05)`` makes one from the defaults. A setting that cannot train (a negative
    learning rate, an unknown schedule) raises :class:`TrainingError` with every problem in one message.

    Attributes:
        epochs: passes over the training split.
        batch_size, lr, momentum, nesterov, weight_decay: SGD's settings (weight decay on every weight).
        schedule: ``"cosine"`` (to zero), ``"warmup_cosine"`` (linear warm-up over ``warmup_epochs``,
            by default the first quarter of the run, then cosine), ``"step"`` (times ``gamma`` at each
            of ``milestones``, in epochs; default 50 % and 75 % of the run) or ``"constant"``.
        warmup_epochs: a linear warm-up from ``lr / steps`` to ``lr`` (any schedule).
        label_smoothing: the target's share spread over the other classes.
        augment: ``True``: the data set's own augmentation of the training batches (``data.augmentation``:
            crops and flips for CIFAR-10, shifts for digits); ``False``: none; or the name of another
            (``"shift_rotate"``, one of ``data.AUGMENTATIONS``).
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
    augment: bool | str = True
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
        problems = {
            "schedule": f"must be one of {', '.join(SCHEDULES)} (unknown schedule {self.schedule!r})"
            if self.schedule not in SCHEDULES else "",
            "epochs": f"must be at least 1 (a whole number), got {self.epochs!r}" if not _whole(self.epochs, 1) else "",
            "batch_size": f"must be at least 1 (a whole number), got {self.batch_size!r}"
            if not _whole(self.batch_size, 1) else "",
            "lr": f"must be a positive learning rate, e.g. 0.1; got {self.lr!r}" if not self.lr > 0 else "",
            "weight_decay": f"must be 0 or more, e.g. 5e-4; got {self.weight_decay!r}"
            if not self.weight_decay >= 0 else "",
            "momentum": f"must be in [0, 1), e.g. 0.9; got {self.momentum!r}" if not 0 <= self.momentum < 1 else "",
            "label_smoothing": f"must be in [0, 1), e.g. 0.1; got {self.label_smoothing!r}"
            if not 0 <= self.label_smoothing < 1 else "",
            "warmup_epochs": f"must be 0 or more, got {self.warmup_epochs!r}" if not self.warmup_epochs >= 0 else "",
            "ema_decay": f"must be in (0, 1), e.g. 0.999; got {self.ema_decay!r}"
            if self.ema_decay is not None and not 0 < self.ema_decay < 1 else "",
            "augment": f"must be True, False or one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}"
            if not (isinstance(self.augment, bool) or self.augment in AUGMENTATIONS) else "",
        }
        problems = {name: problem for name, problem in problems.items() if problem}
        if problems:
            raise RecipeError(problems)

    def replace(self, **changes) -> Recipe:
        """A copy with ``changes`` (names checked)."""
        settings = [f.name for f in dataclasses.fields(self)]
        unknown = set(changes) - set(settings)
        if unknown:
            raise TrainingError(f"not a recipe setting: {', '.join(sorted(unknown))}; "
                                f"the settings are {', '.join(settings)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain values (for JSON, the cache key, a table)."""
        return dataclasses.asdict(self)


def require_recipe(recipe, caller: str) -> None:
    """One clear error when ``caller`` (``fit``, ``cached_fit``) is given something else than a Recipe."""
    if not isinstance(recipe, Recipe):
        raise TrainingError(
            f"{caller} needs a Recipe, got {type(recipe).__name__}: pass CPU_RECIPE, "
            "Recipe(epochs=10, lr=0.05) or CPU_RECIPE.replace(epochs=2)")


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
#: label smoothing 0.1, shifts then small rotations and scalings of the digits ("shift_rotate": 98.2 % with
#: shifts alone, median of 3 seeds, at the same cost), bf16 autocast where the CPU computes bf16 natively
#: ("auto"; emulated bf16 is slower than fp32), channels_last, and test-time augmentation with one-pixel
#: shifts. ``benchmarks/train_speed.py`` measures it.
CPU_RECIPE = Recipe(epochs=8, batch_size=64, lr=0.1, nesterov=True, weight_decay=5e-4, schedule="warmup_cosine",
                    label_smoothing=0.1, augment="shift_rotate", amp="auto", channels_last=True, tta=True)

RECIPES = {"paper": PAPER_RECIPE, "gpu": GPU_RECIPE, "cpu": CPU_RECIPE}


# --- optimiser and schedules ----------------------------------------------------------------------


def make_optimizer(model, lr, momentum, nesterov, weight_decay, param_groups=None) -> torch.optim.SGD:
    params = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def make_scheduler(optimizer, schedule, epochs, steps_per_epoch, milestones=None, gamma=0.1, warmup_epochs=0.0):
    """A per-step scheduler from ``torch.optim.lr_scheduler`` (see :class:`Recipe` for the schedules):
    ``CosineAnnealingLR``, ``MultiStepLR`` or ``ConstantLR``, after a ``LinearLR`` warm-up (joined by
    ``SequentialLR``) when there is one."""
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


# --- fit: a setup, then one epoch after another -------------------------------------------------------


@dataclass
class Run:
    """What :func:`setup` builds for one training run, and what the loop changes.

    ``raw_model`` is the model being trained, ``model`` what the loop calls: the same
    module, or ``raw_model`` wrapped in DDP (inside ``torchrun``) and compiled
    (``recipe.compile``), as nanoGPT names them.
    """

    recipe: Recipe
    raw_model: nn.Module
    model: nn.Module
    train_loader: object
    test_loader: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    channels_last: bool
    tta_fill: torch.Tensor | None  # a black pixel, normalised: a shifted image's border
    history: History
    ema: nn.Module | None = None  # swa_utils.AveragedModel, when the recipe keeps one
    recorder: GradNormRecorder | None = None  # per-layer gradient norms, when asked for
    rank: int = 0
    start_epoch: int = 0
    steps: int = 0  # optimizer steps taken
    max_steps: int | None = None  # RESNET_TUTORIAL_MAX_STEPS: the smoke run's cap

    @property
    def capped(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    @property
    def trained_model(self) -> nn.Module:
        """The model to evaluate: the weights' average, when the recipe keeps one."""
        return self.raw_model if self.ema is None else self.ema.module


def augmented_as(data, recipe: Recipe):
    """``data`` with the augmentation ``recipe`` trains it with: its own, unless the recipe names another."""
    if not isinstance(recipe.augment, str):
        return data
    if not hasattr(data, "augmentation"):
        raise TrainingError(f"augment={recipe.augment!r} names an augmentation of an ImageData (load_dataset); "
                            f"{type(data).__name__} has its own: use augment=True")
    return dataclasses.replace(data, augmentation=recipe.augment)


def setup(model: nn.Module, data, recipe: Recipe, *, device=None, seed: int = 0,
          param_groups=None, record_grad_norms: bool = False) -> Run:
    """Build what ``fit`` needs: the model on its device, the batches, SGD, the
    schedule, autocast's settings, the weights' average, a gradient-norm recorder."""
    device = pick_device(device)
    rank, world = distributed.rank_and_world()
    amp, amp_dtype = amp_settings(recipe.amp, device)
    channels_last = use_channels_last(recipe.channels_last, device)
    layout = torch.channels_last if channels_last else torch.preserve_format
    model.to(device, memory_format=layout)
    data = augmented_as(data, recipe)
    # Batch norm cannot train on one image: a last batch that would hold one is dropped.
    per_rank = math.ceil(len(data.train) / world)
    drop_last = per_rank > 1 and per_rank % recipe.batch_size == 1
    train_loader = data.loader("train", recipe.batch_size, augment=bool(recipe.augment),
                               device=device, seed=shifted(seed), rank=rank,
                               world_size=world, drop_last=drop_last)
    optimizer = make_optimizer(model, recipe.lr, recipe.momentum, recipe.nesterov,
                               recipe.weight_decay, param_groups)
    scheduler = make_scheduler(optimizer, recipe.schedule, recipe.epochs,
                               len(train_loader), recipe.milestones, recipe.gamma,
                               recipe.warmup_epochs)
    config = dict(dataset=getattr(data, "name", None), **recipe.to_dict(), seed=seed,
                  world_size=world)
    config.update(getattr(data, "run_info", {}))  # a folder's classes and preprocessing
    config.update(amp=amp, amp_dtype=str(amp_dtype), channels_last=channels_last)
    cap = max_steps()
    if cap:
        config["max_steps"] = cap
    zeros = torch.zeros(data.in_chans, 1, 1, dtype=torch.uint8)
    black = data.normalize(zeros).flatten()
    ema = None
    if recipe.ema_decay:
        average = get_ema_multi_avg_fn(recipe.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    fp16 = amp and amp_dtype == torch.float16  # a GradScaler only for float16
    return Run(
        recipe=recipe, raw_model=model, model=model, train_loader=train_loader,
        test_loader=data.loader("test", 512, device=device), optimizer=optimizer,
        scheduler=scheduler, scaler=torch.amp.GradScaler(device.type, enabled=fp16),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        device=device, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
        tta_fill=black if recipe.tta else None, history=History(config=config), ema=ema,
        recorder=GradNormRecorder(model) if record_grad_norms else None, rank=rank,
        max_steps=cap,
    )


def wrap(run: Run, seed: int) -> None:
    """DDP inside ``torchrun`` (then a dropout seed per rank), and ``torch.compile``."""
    if distributed.rank_and_world()[1] > 1:
        run.model = distributed.wrap_ddp(run.raw_model, run.device)
        # the copies are identical now; dropout masks should differ between ranks
        distributed.seed_this_rank(shifted(seed))
    if run.recipe.compile:
        run.model = torch.compile(run.model)


def train_one_epoch(run: Run, epoch: int, bar) -> dict:
    """One pass over the training split, in the order of an iteration.

    Returns the epoch's row of the history; advances the progress ``bar`` at each step.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    run.model.train()
    run.train_loader.set_epoch(epoch)
    lr = run.optimizer.param_groups[0]["lr"]  # the first group's, as the epoch starts
    totals = torch.zeros(3, device=run.device)  # sums of loss, correct answers, images
    for step, (x, y) in enumerate(run.train_loader):
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp):
            logits = run.model(x)
            loss = run.loss_fn(logits.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        record_and_clip(run)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(run.raw_model)
        totals += torch.stack([loss.detach().float() * len(y),
                               (logits.argmax(1) == y).sum().float(),
                               torch.tensor(float(len(y)), device=run.device)])
        run.steps += 1
        if step % 20 == 0 or step == len(run.train_loader) - 1 or run.capped:
            check_finite(totals, epoch, run.recipe.lr, bar)  # the running loss; syncs
        bar.update()
        if run.capped:
            break
    totals = distributed.all_reduce_sum(totals)
    loss, acc = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
    return dict(epoch=epoch + 1, train_loss=loss, train_acc=acc, train_error=1 - acc,
                lr=lr, train_seconds=time.perf_counter() - t0,
                train_cpu_seconds=time.process_time() - cpu0)


def record_and_clip(run: Run) -> None:
    """After ``backward``: unscale the gradients (fp16), record norms, clip."""
    clip = run.recipe.clip_grad_norm
    if run.recorder or clip:
        run.scaler.unscale_(run.optimizer)
    if run.recorder:
        run.recorder.record()
    if clip:
        nn.utils.clip_grad_norm_(run.raw_model.parameters(), clip)


def evaluate_run(run: Run) -> dict:
    """Loss, accuracy and error on the test split, computed as the run trains."""
    loss, acc = loss_and_accuracy(run.trained_model, run.test_loader, amp=run.amp,
                                  amp_dtype=run.amp_dtype, tta_fill=run.tta_fill,
                                  channels_last=run.channels_last)
    return dict(test_loss=loss, test_acc=acc, test_error=1 - acc)


def fit(
    model: nn.Module,
    data,
    recipe: Recipe,
    *,
    device=None,
    seed: int = 0,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    param_groups=None,
    record_grad_norms: bool = False,
    eval_every: int = 1,
) -> History:
    """Train ``model`` on ``data`` (an ``ImageData``) as ``recipe`` says.

    The other arguments say where and what to keep: the ``device``; the ``seed`` of the
    batch order and augmentation; a progress bar; a checkpoint saved after every epoch
    (``resume=True`` continues from it); ``param_groups`` in place of
    ``model.parameters()`` (per-stage learning rates); per-layer gradient norms; how
    often to evaluate. Inside ``torchrun`` each process trains on its share of every
    epoch; rank 0 writes the files and shows the progress.
    """
    require_recipe(recipe, "fit")
    run = setup(model, data, recipe, device=device, seed=seed,
                param_groups=param_groups, record_grad_norms=record_grad_norms)
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        resume_from(run, checkpoint_path)
    wrap(run, seed)
    for epoch in range(run.start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        bar = distributed.progress_bar(len(run.train_loader),
                                       f"epoch {epoch + 1}/{recipe.epochs}",
                                       progress and run.rank == 0)
        row = train_one_epoch(run, epoch, bar)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs or run.capped:
            row.update(evaluate_run(run))
        row["seconds"] = time.perf_counter() - t0
        end_epoch(run, row, bar)
        if checkpoint_path and run.rank == 0:
            checkpoint.save_checkpoint(
                checkpoint_path, run.raw_model, run.optimizer, run.scheduler,
                epoch=epoch + 1, history=run.history.to_dict(),
                config=run.history.config, scaler=run.scaler, ema=run.ema)
        if run.capped:
            _pad_capped(run.history, recipe.epochs)
            break
    if run.ema is not None:  # the average is the trained model
        model.load_state_dict(run.ema.module.state_dict())
    model.eval()
    return run.history


def resume_from(run: Run, path: str | os.PathLike) -> None:
    """Continue ``run`` from the checkpoint at ``path``: weights, optimizer, schedule,
    scaler, EMA, history and random state, as they were at the end of its last epoch."""
    state = checkpoint.load_checkpoint(path, run.raw_model, run.optimizer,
                                       run.scheduler, scaler=run.scaler, ema=run.ema)
    run.history, run.start_epoch = History.from_dict(state["history"]), state["epoch"]
    run.steps = run.history.steps
    if run.recorder:
        run.recorder.history.update(run.history.grad_norms)


def end_epoch(run: Run, row: dict, bar) -> None:
    """Append the epoch's row (and mean gradient norms) to the history; close its bar."""
    run.history.epochs.append(row)
    run.history.seconds += row["seconds"]
    run.history.steps = run.steps
    if run.recorder:
        run.recorder.end_epoch()
        run.history.grad_norms = run.recorder.history
    shown = ("train_loss", "train_acc", "test_acc")
    bar.set_postfix({k: f"{row[k]:.3f}" for k in shown if k in row})
    bar.close()


def _pad_capped(history: History, epochs: int) -> None:
    """A run stopped by ``RESNET_TUTORIAL_MAX_STEPS`` (the smoke run) keeps the shape of a whole one: its last
    row (and gradient norms) repeated for the epochs it did not train, marked ``capped``, so that the code
    reading the history per epoch runs as it would after a whole run."""
    last = history.epochs[-1]
    for epoch in range(len(history.epochs), epochs):
        history.epochs.append({**last, "epoch": epoch + 1, "seconds": 0.0, "capped": True})
    history.grad_norms = {k: v + v[-1:] * (epochs - len(v)) for k, v in history.grad_norms.items()}


def check_finite(totals: torch.Tensor, epoch: int, lr: float, bar) -> None:
    """Show the running loss and accuracy; stop with a clear error when the loss diverged."""
    train_loss = totals[0].item() / totals[2].item()
    if not math.isfinite(train_loss):
        bar.close()
        raise TrainingError(
            f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning "
            f"rate (lr={lr}), add warm-up or gradient clipping (clip_grad_norm=1.0)"
        )
    bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{totals[1].item() / totals[2].item():.3f}", refresh=False)
