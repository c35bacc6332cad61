"""Train once, reuse afterwards: :func:`cached_fit` stores a run's weights and history on disk.

A chapter is executed twice in CI (nbval, then the book build) and again whenever a reader re-runs it;
the second time, the same experiment loads its trained weights instead of training again. "The same"
means: same tag, architecture and initial weights, data, recipe, seed and run arguments, torch version and
``training.TRAINING_VERSION`` (:func:`experiment_key` lists them); anything else trains afresh.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from filelock import FileLock
from torch import nn

from . import evaluation, training  # evaluation.loss_and_accuracy, training.fit: looked up at each call
from .checkpoint import atomic_torch_save
from .models.weights import clean_state_dict
from .runtime import cpu_bf16_native, max_steps, pick_device, seed_offset
from .training import TRAINING_VERSION, History, Recipe, require_recipe

CACHE_ENV = "RESNET_TUTORIAL_CACHE"


def cache_dir() -> str:
    """``$RESNET_TUTORIAL_CACHE``, else ``~/.cache/resnet_tutorial/experiments``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "resnet_tutorial", "experiments"
    )


def cache_lock(name: str) -> FileLock:
    """An exclusive lock on the file ``name`` in the cache folder (``filelock.FileLock``, any OS).

    Chapters executed in parallel (nbval with two workers) that ask for the same experiment then train it
    once: the first holds the lock while it trains, the others wait and find the result in the cache.
    """
    os.makedirs(cache_dir(), exist_ok=True)
    return FileLock(os.path.join(cache_dir(), name))


def _state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _param_group_names(model: nn.Module, param_groups) -> list[dict] | None:
    """Parameter groups by parameter name and setting (the tensors themselves are the model's)."""
    if param_groups is None:
        return None
    names = {id(p): n for n, p in model.named_parameters()}
    return [{k: ([names.get(id(p), "?") for p in v] if k == "params" else v) for k, v in g.items()}
            for g in param_groups]


def experiment_key(model: nn.Module, data, recipe: Recipe, *, tag: str, seed: int = 0,
                   param_groups=None, record_grad_norms: bool = False, eval_every: int = 1) -> str:
    """The sha256 that names an experiment in the cache, from what decides its result and nothing else.

    The inputs: the ``tag``; the model (its class, its architecture as ``repr`` prints it, its initial
    weights, its frozen parameters); the ``recipe``; the data's ``fingerprint()``; the ``seed``; the run's
    arguments that change what is trained or recorded; the torch version; what the environment changes
    (``RESNET_TUTORIAL_SEED``'s offset, whether ``amp="auto"`` autocasts on this CPU, the smoke run's cap);
    and :data:`~resnet_tutorial.training.TRAINING_VERSION`, which a change to the training code that changes
    its results bumps. The package's source is not an input: a docstring edit keeps every cached result.
    """
    parts = {
        "version": TRAINING_VERSION,
        "tag": tag,
        "model": f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}",
        "weights": _state_hash(model),
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
        "recipe": recipe.to_dict(),
        "data": data.fingerprint(),
        "seed": seed,
        "run": {"param_groups": _param_group_names(model, param_groups),
                "record_grad_norms": record_grad_norms, "eval_every": eval_every},
        "torch": torch.__version__,
        "runtime": {"seed_offset": seed_offset(), "cpu_bf16": cpu_bf16_native(), "max_steps": max_steps()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def cached_fit(model: nn.Module, data, recipe: Recipe, *, tag: str, seed: int = 0, device=None,
               progress: bool = True, param_groups=None, record_grad_norms: bool = False,
               eval_every: int = 1) -> History:
    """``fit(model, data, recipe, ...)``, or, when this exact experiment ran before, its stored result.

    On a cache hit the trained weights are loaded into ``model`` and the stored :class:`History` is
    returned (its ``seconds`` are those of the original training). Safe when several notebooks run
    at once: the first trains while it holds a lock on the experiment, the others wait and then load its
    result, which is written to a temporary file and renamed into place.
    """
    require_recipe(recipe, "cached_fit")
    run = dict(param_groups=param_groups, record_grad_norms=record_grad_norms, eval_every=eval_every)
    key = experiment_key(model, data, recipe, tag=tag, seed=seed, **run)
    path = os.path.join(cache_dir(), f"{_safe(tag)}-{key[:24]}.pt")
    with cache_lock(os.path.basename(path) + ".lock"):
        history = _load_cached(path, key, model, tag, device, progress)
        if history is None:
            history = training.fit(model, data, recipe, seed=seed, device=device, progress=progress, **run)
            state = {k: v.detach().cpu() for k, v in clean_state_dict(model.state_dict()).items()}
            atomic_torch_save({"key": key, "tag": tag, "model": state, "history": json.dumps(history.to_dict())}, path)
    return history


def _load_cached(path: str, key: str, model: nn.Module, tag: str, device, progress: bool):
    """The stored History of experiment ``key`` (its weights loaded into ``model``), or None."""
    if not os.path.isfile(path):
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("key") != key:
            return None
        model.load_state_dict(stored["model"])
        history = History.from_dict(json.loads(stored["history"]))
    except Exception:  # a damaged cache entry: train again and overwrite it
        return None
    model.to(pick_device(device))
    model.eval()
    if progress:
        print(f"{tag}: loaded from the cache (trained in {history.seconds:.1f} s); final: {_summary(history)}")
    return history


def cached_loss_and_accuracy(model: nn.Module, data, split: str = "test", *, batch_size: int = 512,
                             amp: bool = False, amp_dtype=torch.bfloat16, device=None) -> tuple[float, float]:
    """``evaluation.loss_and_accuracy`` of ``model`` on ``data``'s ``split``, or, when these exact weights were
    measured on these images before, the stored result.

    A trained network that :func:`cached_fit` loads gives the same numbers every time it is measured, and
    measuring a split of 10,000 images costs more than loading the network (chapter 2 measures twelve). The
    key: the model's class, architecture and weights (after training), the data's ``fingerprint()``, the split,
    the batch size, the precision, the device type, the torch version and whether this CPU computes bf16
    natively (its kernels round otherwise).
    """
    device = pick_device(device)
    parts = {
        "model": f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}",
        "weights": _state_hash(model),
        "data": data.fingerprint(),
        "split": split,
        "batch_size": batch_size,
        "amp": [amp, str(amp_dtype)],
        "device": device.type,
        "torch": torch.__version__,
        "cpu_bf16": cpu_bf16_native(),
    }
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    path = os.path.join(cache_dir(), f"measured-{key[:24]}.pt")
    try:
        stored = torch.load(path, weights_only=True)  # two floats: an entry cannot run code
        if stored.get("key") == key:
            return stored["loss"], stored["acc"]
    except Exception:  # none yet, or a damaged entry: measure again and overwrite it
        pass
    loader = data.loader(split, batch_size, device=device)
    loss, acc = evaluation.loss_and_accuracy(model, loader, amp=amp, amp_dtype=amp_dtype)
    os.makedirs(cache_dir(), exist_ok=True)
    atomic_torch_save({"key": key, "loss": loss, "acc": acc}, path)
    return loss, acc


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:60] or "experiment"


def _summary(history) -> str:
    f = history.final
    return ", ".join(f"{k} {f[k]:.4f}" for k in ("train_loss", "test_acc") if k in f)
