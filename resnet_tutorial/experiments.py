"""Train once, reuse afterwards: :func:`cached_fit` stores a run's weights and history on disk.

A chapter is executed twice in CI (nbval, then the book build) and again whenever a reader re-runs it;
the second time, the same experiment loads its trained weights instead of training again. "The same"
means: same tag, same architecture and initial weights, same data, same ``fit`` arguments, same source
of the package (models, blocks, training, data: everything but the presentation modules) and same
torch version; anything else trains afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import torch
from filelock import FileLock
from torch import nn

from .runtime import cpu_bf16_native, max_steps, seed_offset

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


#: The package's source that the cache key hashes: all of it (models, blocks, training, data, ...),
#: since any module can change a trained result, except these, which only present results (figures,
#: glued numbers, the command line) and never run inside :func:`cached_fit`.
SOURCE_ROOT = os.path.dirname(os.path.abspath(__file__))
PRESENTATION_ONLY = ("book.py", "plots.py", "cli.py", "__main__.py")


def _source_hash(root: str | None = None) -> str:
    """sha256 of every ``.py`` file of the package (path and content), except :data:`PRESENTATION_ONLY`."""
    root = pathlib.Path(root or SOURCE_ROOT)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel not in PRESENTATION_ONLY:
            h.update(rel.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}:{hashlib.sha256(value.detach().cpu().numpy().tobytes()).hexdigest()}"
    return repr(value)


def _flat_fit_kwargs(fit_kwargs: dict) -> dict:
    """``fit``'s arguments with the recipe spelled out: a recipe and the same settings given one by one
    are the same experiment."""
    from .training import split_recipe

    kwargs = dict(fit_kwargs)
    recipe = kwargs.pop("recipe", None)
    if recipe is None and "epochs" not in kwargs:
        return kwargs
    recipe, run = split_recipe(recipe, kwargs)
    return {**recipe, **run}


def experiment_key(model: nn.Module, data, tag: str, fit_kwargs: dict) -> str:
    """The sha256 that names an experiment in the cache."""
    kwargs = {k: v for k, v in _flat_fit_kwargs(fit_kwargs).items() if k not in ("progress", "device")}
    if "param_groups" in kwargs and kwargs["param_groups"] is not None:  # parameters -> their names and settings
        names = {id(p): n for n, p in model.named_parameters()}
        kwargs["param_groups"] = [
            {k: ([names.get(id(p), "?") for p in v] if k == "params" else v) for k, v in g.items()}
            for g in kwargs["param_groups"]
        ]
    parts = {
        "tag": tag,
        "model": f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}",
        "weights": _state_hash(model),
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
        "data": data.fingerprint(),
        "fit": _jsonable(kwargs),
        "source": _source_hash(),
        "torch": torch.__version__,
        # what the run's environment changes in training: every seed's offset, whether amp="auto"
        # autocasts on this CPU, and the smoke run's cap on the steps
        "runtime": {"seed_offset": seed_offset(), "cpu_bf16": cpu_bf16_native(), "max_steps": max_steps()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def cached_fit(model: nn.Module, data, *, tag: str, **fit_kwargs):
    """``fit(model, data, **fit_kwargs)``, or, when this exact experiment ran before, its stored result.

    On a cache hit the trained weights are loaded into ``model`` and the stored :class:`History` is
    returned (its ``seconds`` are those of the original training). Safe when several notebooks run
    at once: the first trains while it holds a lock on the experiment, the others wait and then load its
    result, which is written to a temporary file and renamed into place.
    """
    from .checkpoint import atomic_torch_save
    from .models.weights import clean_state_dict
    from .training import fit

    key = experiment_key(model, data, tag, fit_kwargs)
    path = os.path.join(cache_dir(), f"{_safe(tag)}-{key[:24]}.pt")
    with cache_lock(os.path.basename(path) + ".lock"):
        history = _load_cached(path, key, model, tag, fit_kwargs)
        if history is None:
            history = fit(model, data, **fit_kwargs)
            state = {k: v.detach().cpu() for k, v in clean_state_dict(model.state_dict()).items()}
            atomic_torch_save({"key": key, "tag": tag, "model": state, "history": json.dumps(history.to_dict())}, path)
    return history


def _load_cached(path: str, key: str, model: nn.Module, tag: str, fit_kwargs: dict):
    """The stored History of experiment ``key`` (its weights loaded into ``model``), or None."""
    from .runtime import pick_device
    from .training import History

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
    model.to(pick_device(fit_kwargs.get("device")))
    model.eval()
    if fit_kwargs.get("progress", True):
        print(f"{tag}: loaded from the cache (trained in {history.seconds:.1f} s); final: {_summary(history)}")
    return history


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:60] or "experiment"


def _summary(history) -> str:
    f = history.final
    return ", ".join(f"{k} {f[k]:.4f}" for k in ("train_loss", "test_acc") if k in f)
