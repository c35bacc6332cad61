"""Loading weights: local files (ours, torchvision's, timm's, DataParallel's) and pretrained ImageNet weights."""

from __future__ import annotations

import os
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


class WeightsError(ResnetTutorialError, RuntimeError):
    """A weights file that is missing, unreadable, or made for another model."""


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that ``nn.DataParallel`` and DDP add, and ``_orig_mod.`` of torch.compile."""
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    return cleaned


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights in a file: a bare ``state_dict``, or a checkpoint dict holding one under
    ``"model"`` or ``"state_dict"``. Loaded with ``weights_only=True``: a file cannot run code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path!r}: check the path, or train a model first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, or not a torch file at all
        raise WeightsError(
            f"cannot read {path!r} as PyTorch weights ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "the file is truncated or not a checkpoint: save it again"
        ) from None
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
    """Load ImageNet weights from torchvision (``source="torchvision"``) or timm (``"timm"``) into our model.

    This downloads the weights (or finds them in torch's hub cache); offline and without a cache it fails
    with a message that says how to load a local file instead.
    """
    if name not in TORCHVISION_WEIGHTS:
        raise WeightsError(
            f"no pretrained ImageNet weights for {name!r}: only {sorted(TORCHVISION_WEIGHTS)} have them"
        )
    try:
        if source == "torchvision":
            import torchvision

            weights = getattr(torchvision.models, TORCHVISION_WEIGHTS[name]).DEFAULT
            state = weights.get_state_dict(progress=True)
        elif source == "timm":
            import timm

            state = timm.create_model(name, pretrained=True).state_dict()
        else:
            raise ValueError(f"source must be 'torchvision' or 'timm', got {source!r}")
    except (OSError, RuntimeError) as err:
        raise WeightsError(
            f"could not fetch {source}'s pretrained {name} ({type(err).__name__}); offline, download the "
            "weights elsewhere and pass create_model(..., checkpoint_path=FILE)"
        ) from None
    if getattr(model, "num_classes", 1000) != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        load_weights(model, state, strict=False)
    else:
        load_weights(model, state)
    return model
