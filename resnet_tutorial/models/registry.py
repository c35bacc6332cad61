"""A registry in timm's style: ``create_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torch import nn

from ..errors import ResnetTutorialError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


class UnknownModelError(ResnetTutorialError, ValueError):
    """Raised by :func:`create_model` for a name that is not registered."""


def register_model(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory function under its own name, in a family ("imagenet", "cifar", ...)."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = fn
        _FAMILY[fn.__name__] = family
        return fn

    return register


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, in registration order, filtered by a shell-style ``pattern`` or ``family``."""
    names = [n for n in _MODELS if family is None or _FAMILY[n] == family]
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def model_family(name: str) -> str:
    """``"imagenet"``, ``"cifar"``, ``"plain-cifar"``, ``"plain-imagenet"`` or ``"preact-cifar"``."""
    _check_name(name)
    return _FAMILY[name]


def _check_name(name: str) -> None:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} resnet_tutorial.list_models() (or `resnet-tutorial models`) "
            f"lists the {len(_MODELS)} registered models."
        )


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"resnet50"`` or ``"resnet20"``.
        pretrained: load torchvision's ImageNet weights (ImageNet family only; downloads them, or takes
            them from torch's hub cache when present).
        checkpoint_path: load weights from a local file instead: a ``state_dict``, or a checkpoint of
            this package, or one saved from ``nn.DataParallel`` (its ``module.`` prefixes are removed).
        **kwargs: passed to the model, e.g. ``num_classes=10``, ``in_chans=1``, ``zero_init_last=True``.
    """
    _check_name(name)
    model = _MODELS[name](**kwargs)
    model.default_cfg = {"architecture": name, "family": _FAMILY[name]}
    if pretrained and checkpoint_path:
        raise ValueError("give either pretrained=True or checkpoint_path, not both")
    if pretrained:
        from .weights import load_pretrained

        load_pretrained(model, name)
    elif checkpoint_path:
        from .weights import load_weights

        load_weights(model, checkpoint_path)
    return model
