"""Checkpoints: model, optimiser, scheduler, RNG states, epoch and history in one file.

Written atomically (a temporary file in the same folder, then ``os.replace``), so a crash never leaves a
half-written checkpoint; read with ``torch.load(weights_only=True)``, so a file cannot run code.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO

import numpy as np
import torch
from torch import nn

from .errors import ResnetTutorialError
from .models import create_model, model_arguments, model_family
from .models.weights import WeightsError, clean_state_dict, load_tensors_only, load_weights

FORMAT = "resnet_tutorial.checkpoint/1"


class CheckpointError(ResnetTutorialError):
    """A checkpoint that is missing, truncated, foreign, or made for another model."""


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_write(path) as f: ...`` writes to a temporary file beside ``path`` and renames it into
    place when the block succeeds; when it fails, the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def rng_state() -> dict:
    """The random states of Python, NumPy and torch (CPU and CUDA), as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):  # DDP, DataParallel, torch.compile
        # not `module or _orig_mod`: a compiled model's truth value is its len(), which a ResNet lacks
        model = model.module if hasattr(model, "module") else model._orig_mod
    return model


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def model_config(model: nn.Module) -> dict:
    """What is needed to build the model again: its registry name and the arguments of ``create_model``."""
    model = _unwrap(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", {}) or {})
    kwargs = {key: getattr(model, key) for key in ("num_classes", "in_chans", "shortcut", "stride_in_1x1", "drop_rate")
              if hasattr(model, key)}
    if hasattr(model, "stages"):
        kwargs["channels"] = [stage[0].conv1.out_channels for stage in model.stages()]
    if hasattr(getattr(model, "global_pool", None), "pool_type"):
        kwargs["global_pool"] = model.global_pool.pool_type
    # A normalisation other than batch norm (norm_layer=...) is a callable, which a file cannot hold: its
    # class is recorded, so that model_from_checkpoint can say what to pass instead of building the wrong net.
    norms = {type(m) for m in model.modules() if isinstance(m, _NORMS)}
    if norms - {nn.BatchNorm2d}:
        cfg["norm_layer"] = sorted(f"{t.__module__}.{t.__qualname__}" for t in norms)
    cfg["kwargs"] = kwargs
    cfg.update({k: kwargs[k] for k in ("num_classes", "in_chans") if k in kwargs})
    return cfg


def model_from_checkpoint(path, **overrides) -> tuple[nn.Module, dict]:
    """Build the model a checkpoint was saved from, load its weights; return ``(model, checkpoint)``."""
    state = read_checkpoint(path)
    cfg = state.get("model_config", {})
    if "architecture" not in cfg:
        raise CheckpointError(f"{path!r} does not say which architecture it holds; create the model yourself "
                              "and call load_checkpoint(path, model)")
    if cfg.get("norm_layer") and "norm_layer" not in overrides:
        raise CheckpointError(
            f"{path!r} holds a model normalised with {', '.join(cfg['norm_layer'])}, not batch norm: pass the "
            "same norm_layer (model_from_checkpoint(path, norm_layer=...)), or create the model yourself and "
            "call load_checkpoint(path, model)")
    model = model_from_config(cfg, **overrides)
    load_model_state(model, state, path)
    return model, state


def model_from_config(cfg: Mapping, **overrides) -> nn.Module:
    """A fresh model of the architecture a :func:`model_config` describes (``overrides`` win)."""
    kwargs = dict(cfg.get("kwargs", {}))
    # Checkpoints of pre-activation nets from before PreActResNet record a shortcut and stride_in_1x1 that
    # those nets ignored, and that PreActResNet does not take.
    for key in ("shortcut", "stride_in_1x1"):
        if key in kwargs and key not in model_arguments(cfg["architecture"]):
            del kwargs[key]
    # A plain net records shortcut=None; before shortcut=None existed, it recorded the option it did not use.
    if model_family(cfg["architecture"]).startswith("plain"):
        kwargs.pop("shortcut", None)
    if "channels" in kwargs:  # JSON and torch.save give back the tuple as a list
        kwargs["channels"] = tuple(kwargs["channels"])
    return create_model(cfg["architecture"], **{**kwargs, **overrides})


def save_checkpoint(path, model, optimizer=None, scheduler=None, *, epoch: int,
                    history=None, config=None, scaler=None, ema=None) -> None:
    """Save everything needed to resume (or just to evaluate) a run, atomically."""
    state = {
        "format": FORMAT,
        "model": clean_state_dict(_unwrap(model).state_dict()),
        "model_config": model_config(model),
        "epoch": int(epoch),
        "history": history or {},
        "config": config or {},
        "rng": rng_state(),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    if ema is not None:  # a torch.optim.swa_utils.AveragedModel
        state["ema"] = ema.state_dict()
    atomic_torch_save(state, path)


def read_checkpoint(path) -> dict:
    """The checkpoint dict in ``path`` (loaded with ``weights_only=True``), with clear errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}: check the path, or train first (resnet-tutorial train)")
    state = load_tensors_only(path, CheckpointError, "a checkpoint", "the file is truncated or not a PyTorch "
                              "checkpoint: train again or point to another file")
    if not isinstance(state, Mapping) or state.get("format") != FORMAT or not isinstance(state.get("model"), Mapping):
        raise CheckpointError(
            f"{path!r} is not a resnet_tutorial checkpoint (a bare state_dict? load it with "
            "resnet_tutorial.models.load_weights instead)"
        )
    return dict(state)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, scaler=None, restore_rng: bool = True,
                    ema=None) -> dict:
    """Read a checkpoint and restore it into whatever is given (model, optimiser, scheduler, scaler, the
    average of the weights, RNGs).

    Returns the checkpoint dict (``epoch``, ``history``, ``config``, ``model_config``, ...).
    """
    state = read_checkpoint(path)
    if model is not None:
        load_model_state(_unwrap(model), state, path)
    try:
        if optimizer is not None and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise KeyError("it has no average of the weights (ema_decay)")
            ema.load_state_dict(state["ema"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"the optimiser state in {path!r} does not fit this run ({err}); start a new run") from None
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


def load_model_state(model: nn.Module, state: Mapping, path="checkpoint") -> None:
    """Load a checkpoint's weights into ``model``, explaining a mismatch of classes or architecture."""
    cfg = state.get("model_config", {})
    fc = state["model"].get("fc.weight")
    own_classes = getattr(model, "num_classes", None)
    if fc is not None and own_classes is not None and fc.shape[0] != own_classes:
        raise CheckpointError(
            f"{path!r} was trained for {fc.shape[0]} classes but the model has {own_classes}: create the model "
            f"with num_classes={fc.shape[0]}, or use resnet_tutorial.finetune.load_for_finetuning to replace the head"
        )
    try:
        load_weights(model, state["model"])
    except WeightsError as err:
        arch = cfg.get("architecture", "another model")
        raise CheckpointError(f"{path!r} holds weights of {arch}: {err}") from None
