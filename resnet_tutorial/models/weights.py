"""Loading weights: local files (ours, torchvision's, timm's, DataParallel's) and pretrained ImageNet weights.

Pretrained weights are named by timm-style tags: ``"resnet50.tv_in1k"`` is torchvision's first
recipe (``ResNet50_Weights.IMAGENET1K_V1``, 76.1 % top-1), ``"resnet50.tv2_in1k"`` its second
(``IMAGENET1K_V2``, 80.9 %). Without a tag, ``pretrained=True`` takes torchvision's ``DEFAULT``: V2 for
ResNet-50/101/152, V1 for ResNet-18/34 (the only recipe torchvision has for them). Any other tag
(e.g. ``"resnet50.a1_in1k"``) is timm's and is loaded through timm.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ResnetTutorialError

#: torchvision's weight enums for the ImageNet family (the reader's download path when online).
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
    "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights",
}


#: Our tags for torchvision's weight recipes (timm names its copies of them the same way).
TORCHVISION_TAGS = {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}


class WeightsError(ResnetTutorialError, RuntimeError):
    """A weights file that is missing, unreadable, or made for another model."""


def split_tag(name: str) -> tuple[str, str | None]:
    """``"resnet50.tv_in1k"`` -> ``("resnet50", "tv_in1k")``; ``"resnet50"`` -> ``("resnet50", None)``."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _torchvision_enum(arch: str):
    import torchvision  # here, not at the top: it adds about 1 s to `import resnet_tutorial`

    return getattr(torchvision.models, TORCHVISION_WEIGHTS[arch])


def pretrained_tags(arch: str) -> list[str]:
    """The torchvision tags that ``arch`` has weights for, e.g. ``["tv_in1k", "tv2_in1k"]``."""
    if arch not in TORCHVISION_WEIGHTS:
        return []
    names = {w.name for w in _torchvision_enum(arch)}
    return [tag for tag, recipe in TORCHVISION_TAGS.items() if recipe in names]


def default_tag(arch: str) -> str | None:
    """The tag ``pretrained=True`` loads without one: torchvision's ``DEFAULT`` recipe."""
    if arch not in TORCHVISION_WEIGHTS:
        return None
    default = _torchvision_enum(arch).DEFAULT.name
    return next(tag for tag, recipe in TORCHVISION_TAGS.items() if recipe == default)


def pretrained_cfg(arch: str, tag: str | None = None, family: str | None = None) -> dict:
    """What a model's pretrained weights expect, timm's ``pretrained_cfg``: ``source``, ``url``,
    ``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``, ``num_classes``, ``top1``.

    Without weights (a CIFAR model, or an ImageNet model without a tag) only the architecture,
    family and the input size of its family are known; ``tag=None`` describes no weights at all.
    """
    cfg = {"architecture": arch, "tag": tag, "family": family, "source": None, "first_conv": "conv1",
           "classifier": "fc"}
    if tag is None:
        size = 32 if family is not None and "cifar" in family else 224
        return {**cfg, "input_size": (3, size, size), "mean": None, "std": None}
    if tag not in TORCHVISION_TAGS:  # one of timm's own tags
        try:
            import timm  # an optional dependency (the `timm` extra)

            theirs = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
        except Exception:  # timm missing, or no such tag
            theirs = None
        if theirs is None:
            raise WeightsError(_no_tag_message(arch, tag))
        keep = ("url", "input_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "license")
        return {**cfg, "source": "timm", "hf_hub_id": theirs.hf_hub_id,
                **{k: getattr(theirs, k) for k in keep}}
    if tag not in pretrained_tags(arch):
        raise WeightsError(_no_tag_message(arch, tag))
    weights = getattr(_torchvision_enum(arch), TORCHVISION_TAGS[tag])
    t = weights.transforms()
    crop, resize = t.crop_size[0], t.resize_size[0]
    return {
        **cfg,
        "source": "torchvision",
        "weights": f"{type(weights).__name__}.{weights.name}",
        "url": weights.url,
        "recipe": weights.meta.get("recipe"),
        "num_classes": len(weights.meta["categories"]),
        "input_size": (3, crop, crop),
        "resize_size": resize,
        "crop_pct": round(crop / resize, 4),
        "interpolation": t.interpolation.value,
        "mean": tuple(t.mean),
        "std": tuple(t.std),
        "top1": weights.meta["_metrics"]["ImageNet-1K"]["acc@1"],
        "license": "bsd-3-clause",
    }


def _no_tag_message(arch: str, tag: str) -> str:
    tags = pretrained_tags(arch)
    if not tags:
        return f"{arch!r} has no pretrained weights (only {sorted(TORCHVISION_WEIGHTS)} have them)"
    return (f"no pretrained weights {arch}.{tag}: torchvision's are {', '.join(f'{arch}.{t}' for t in tags)} "
            f"(pretrained=True alone loads {arch}.{default_tag(arch)}); timm's tags load through timm")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the prefixes wrappers add to parameter names.

    ``module.`` comes from ``nn.DataParallel`` and DDP, ``_orig_mod.`` from
    ``torch.compile``.
    """
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    return cleaned


def load_tensors_only(path: str, error: type[Exception], what: str, advice: str):
    """``torch.load(path, weights_only=True)``, so that a file cannot run code; a failure raises one
    ``error`` saying what went wrong: a file holding other Python objects is refused (it could run code when
    loaded), any other unreadable file gets ``advice``. Used for weights files and checkpoints alike."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # a torch file whose pickle holds more than tensors
        if "GLOBAL" in str(err):
            raise error(
                f"refusing {path!r}: it holds Python objects besides tensors, which could run code when "
                "loaded. If you trust its source, load it with torch.load(path, weights_only=False) and save "
                "its state_dict again"
            ) from None
        first = (str(err).splitlines() or [""])[0][:120]
        raise error(f"cannot read {path!r} as {what} (UnpicklingError: {first}); {advice}") from None
    except Exception as err:  # truncated, foreign, or not a torch file at all
        first = (str(err).splitlines() or [""])[0][:120]
        raise error(f"cannot read {path!r} as {what} ({type(err).__name__}: {first}); {advice}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights in a file: a bare ``state_dict``, or a checkpoint dict holding one under
    ``"model"`` or ``"state_dict"``. Loaded with ``weights_only=True``: a file cannot run code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path!r}: check the path, or train a model first")
    obj = load_tensors_only(path, WeightsError, "PyTorch weights", "the file is truncated or not a checkpoint: "
                            "save it again")
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path!r} holds no state_dict of tensors")
    return clean_state_dict(obj)


def load_weights(
    model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], strict: bool = True
):
    """Load a state_dict (or a file holding one) into ``model``, with one clear message on a mismatch."""
    state = read_state_dict(source) if isinstance(source, str | os.PathLike) else clean_state_dict(source)
    own = model.state_dict()
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong_shape or (strict and (missing or unexpected)):
        details = (
            wrong_shape[:3]
            + [f"missing {k}" for k in missing[:3]]
            + [f"unexpected {k}" for k in unexpected[:3]]
        )
        raise WeightsError(
            "the weights do not fit this model (" + "; ".join(details) + "). "
            "Create the model with the architecture, num_classes and in_chans the weights were made for, "
            "then call model.reset_classifier(n) to change the head."
        )
    return model.load_state_dict(state, strict=strict)


def load_pretrained(model: nn.Module, name: str, source: str = "torchvision") -> nn.Module:
    """Load ImageNet weights into our model: ``name`` is ``"resnet50"`` (torchvision's ``DEFAULT``) or
    carries a tag, ``"resnet50.tv_in1k"`` (V1) or ``"resnet50.tv2_in1k"`` (V2); ``source="timm"`` (or
    a tag of timm's own, e.g. ``"resnet50.a1_in1k"``) takes timm's weights instead.

    This downloads the weights (or finds them in torch's hub cache); offline and without a cache it fails
    with a message that says how to load a local file instead. A model with another ``num_classes``
    gets every weight but the classifier's.
    """
    arch, tag = split_tag(name)
    if arch not in TORCHVISION_WEIGHTS:
        raise WeightsError(
            f"no pretrained ImageNet weights for {arch!r}: only {sorted(TORCHVISION_WEIGHTS)} have them"
        )
    if source not in ("torchvision", "timm"):
        raise WeightsError(f"source must be 'torchvision' or 'timm', got {source!r}")
    if tag is not None and tag not in TORCHVISION_TAGS:
        source = "timm"
    if source == "torchvision":
        tag = tag or default_tag(arch)
        if tag not in pretrained_tags(arch):
            raise WeightsError(_no_tag_message(arch, tag))
    try:
        if source == "torchvision":
            state = getattr(_torchvision_enum(arch), TORCHVISION_TAGS[tag]).get_state_dict(progress=True)
        else:
            import timm  # an optional dependency (the `timm` extra)

            state = timm.create_model(name, pretrained=True).state_dict()
    except (OSError, RuntimeError) as err:
        raise WeightsError(
            f"could not fetch {source}'s pretrained {name} ({type(err).__name__}); offline, download the "
            "weights elsewhere and pass create_model(..., checkpoint_path=FILE) (on the command line, "
            "--pretrained FILE)"
        ) from None
    if getattr(model, "num_classes", 1000) != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        load_weights(model, state, strict=False)
    else:
        load_weights(model, state)
    return model
