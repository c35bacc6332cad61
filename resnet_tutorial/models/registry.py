"""A registry in timm's style: ``create_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import ModelArgumentError, ResnetTutorialError
from . import weights  # weights.load_pretrained, looked up when called (tests replace it)
from .resnet import FeatureMaps, ResNet

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}
_CLASS: dict[str, type[nn.Module]] = {}


class UnknownModelError(ResnetTutorialError, ValueError):
    """Raised by :func:`create_model` for a name that is not registered."""


def register_model(
    family: str, model_class: type[nn.Module] = ResNet
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory function under its own name, in a family ("imagenet", "cifar", ...).

    A factory that takes ``**kwargs`` passes them on to ``model_class``, whose arguments it then takes.
    """

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = fn
        _FAMILY[fn.__name__] = family
        _CLASS[fn.__name__] = model_class
        return fn

    return register


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, in registration order, filtered by a shell-style ``pattern`` or ``family``."""
    names = [n for n in _MODELS if family is None or _FAMILY[n] == family]
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Every ``name.tag`` with torchvision weights, e.g. ``["resnet18.tv_in1k", ..., "resnet50.tv2_in1k"]``,
    filtered by a shell-style ``pattern`` (``"resnet50.*"``), as timm's ``list_pretrained``."""
    names = [f"{n}.{t}" for n in _MODELS for t in weights.pretrained_tags(n)]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


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


def model_arguments(name: str) -> list[str]:
    """The keyword arguments that :func:`create_model` passes on to the model ``name``."""
    _check_name(name)
    params = inspect.signature(_MODELS[name]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # the zoo: everything goes to the class
        params = {**inspect.signature(_CLASS[name].__init__).parameters, **params}
    fixed = ("self", "block", "layers")
    return [n for n, p in params.items() if n not in fixed and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _check_kwargs(name: str, kwargs: dict) -> None:
    valid = model_arguments(name)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        close = [c for k in unknown for c in difflib.get_close_matches(k, valid, n=1, cutoff=0.6)]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelArgumentError(
            f"{name} takes no argument {', '.join(repr(k) for k in unknown)}.{hint} "
            f"Its arguments: {', '.join(valid)}, and pretrained, checkpoint_path, features_only, out_indices."
        )


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"resnet50"`` or ``"resnet20"``, optionally with a
            pretrained tag in timm's style: ``"resnet50.tv_in1k"`` (torchvision's V1 weights) or
            ``"resnet50.tv2_in1k"`` (V2).
        pretrained: load ImageNet weights (ImageNet family only; downloads them, or takes them from
            torch's hub cache when present): the tag's, or without a tag torchvision's ``DEFAULT`` (V2
            for ResNet-50/101/152, V1 for ResNet-18/34).
        checkpoint_path: load weights from a local file instead: a ``state_dict``, or a checkpoint of
            this package, or one saved from ``nn.DataParallel`` (its ``module.`` prefixes are removed).
        features_only: return a ``FeatureMaps`` model whose forward gives a list of feature maps (stem
            and stages) and whose ``feature_info`` has their channels and reductions, as timm's.
        out_indices: which feature maps, with ``features_only`` (default: all, 0 = stem).
        **kwargs: passed to the model, e.g. ``num_classes=10``, ``in_chans=1``, ``zero_init_last=True``,
            ``norm_layer=torchvision.ops.FrozenBatchNorm2d``, ``global_pool="max"``.

    The model's ``pretrained_cfg`` says what its weights expect (mean, std, input size, source).
    """
    arch, tag = weights.split_tag(name)
    _check_name(arch)
    _check_kwargs(arch, kwargs)
    if pretrained and checkpoint_path:
        raise ModelArgumentError("give either pretrained=True or checkpoint_path, not both")
    if out_indices is not None and not features_only:
        raise ModelArgumentError("out_indices selects feature maps: pass features_only=True with it")
    cfg = weights.pretrained_cfg(arch, tag, _FAMILY[arch])  # an unknown tag fails here, before building
    model = _MODELS[arch](**kwargs)
    model.pretrained_cfg = cfg
    if pretrained:
        weights.load_pretrained(model, name)
        if tag is None:  # say which weights the default was
            model.pretrained_cfg = weights.pretrained_cfg(arch, weights.default_tag(arch), _FAMILY[arch])
    elif checkpoint_path:
        weights.load_weights(model, checkpoint_path)
    if features_only:
        model = FeatureMaps(model, out_indices)
    return model
