"""Fine-tuning: start from trained weights, replace the head, freeze and unfreeze stages, and give each
stage its own learning rate.

A ResNet is a stem (``conv1``, ``bn1``), stages (``layer1`` ...) and a head (``fc``). Fine-tuning on a new,
small dataset usually trains the new head first with the rest frozen, then unfreezes the last stages with
smaller learning rates than the head's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from . import models
from .checkpoint import CheckpointError, model_from_config, read_checkpoint
from .errors import ResnetTutorialError
from .models import WeightsError, create_model, list_models, load_weights
from .models.registry import UnknownModelError
from .models.weights import clean_state_dict, read_state_dict, split_tag

STEM = "stem"
HEAD = "head"


class FinetuneError(ResnetTutorialError):
    """A fine-tuning request that does not fit the model (an unknown part, a weights source)."""


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The model's parts in order: ``{"stem": [...], "layer1": [...], ..., "head": [fc]}``."""
    parts = {STEM: [m for m in (getattr(model, "conv1", None), getattr(model, "bn1", None)) if m is not None]}
    for name in model.stage_names:
        parts[name] = [getattr(model, name)]
    if getattr(model, "final_bn", None) is not None:  # pre-activation nets: the last BN belongs to the last stage
        parts[model.stage_names[-1]].append(model.final_bn)
    parts[HEAD] = [model.get_classifier()]
    return parts


def _select(model: nn.Module, stages) -> list[nn.Module]:
    parts = model_parts(model)
    if stages == "all":  # everything except the head: the "backbone"
        names = [n for n in parts if n != HEAD]
    else:
        names = [stages] if isinstance(stages, str) else list(stages)
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise FinetuneError(f"unknown part(s) {unknown}; the model's parts are {list(parts)}")
    return [m for n in names for m in parts[n]]


def freeze(model: nn.Module, stages="all") -> nn.Module:
    """Stop training the given parts.

    ``stages`` is ``"all"`` (everything but the head) or names such as
    ``["stem", "layer1"]``. Their parameters get ``requires_grad=False`` and their
    BatchNorm layers keep their running statistics (see ``freeze_bn_stats``).
    """
    for module in _select(model, stages):
        for p in module.parameters():
            p.requires_grad_(False)
        freeze_bn_stats(module)
    return model


def unfreeze(model: nn.Module, stages="all") -> nn.Module:
    """Train the given parts again (the inverse of :func:`freeze`)."""
    for module in _select(model, stages):
        for p in module.parameters():
            p.requires_grad_(True)
        for m in module.modules():
            handle = getattr(m, "_frozen_bn_hook", None)
            if handle is not None:
                handle.remove()
                del m._frozen_bn_hook
    return model


def _eval_mode(module: nn.Module, inputs) -> None:
    module.train(False)


def freeze_bn_stats(model: nn.Module) -> nn.Module:
    """Make every BatchNorm in ``model`` normalise with its running statistics and stop
    updating them, even inside ``model.train()``.

    A forward pre-hook puts each layer in eval mode before its forward pass.
    """
    for m in model.modules():
        is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
        if is_bn and not hasattr(m, "_frozen_bn_hook"):
            m._frozen_bn_hook = m.register_forward_pre_hook(_eval_mode)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def stage_param_groups(
    model: nn.Module,
    lrs: Mapping[str, float],
    head_lr: float | None = None,
    default_lr: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups, one per part, each with its own learning rate.

    ``lrs`` maps part names (``"stem"``, ``"layer1"``, ...) to learning rates;
    ``head_lr`` is the head's; parts not named use ``default_lr`` (left out when it is
    ``None``). Frozen parameters are left out. Pass the result as
    ``fit(..., param_groups=groups)``.
    """
    parts = model_parts(model)
    unknown = [n for n in lrs if n not in parts]
    if unknown:
        raise FinetuneError(
            f"unknown part(s) {unknown}; the model's parts are {list(parts)}"
        )
    groups = []
    for name, modules in parts.items():
        lr = lrs.get(name, default_lr)
        if name == HEAD and head_lr is not None:
            lr = head_lr
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if lr is not None and params:
            groups.append({"params": params, "lr": lr, "name": name})
    if not groups:
        raise FinetuneError(
            "no trainable parameters in the requested groups; "
            "unfreeze some parts first"
        )
    return groups


#: The chapter's rule: counted back from the last stage, each part trains at the head's learning rate
#: divided by 5, 10, 25, 50, 100, 250, ... (ResNet-20: layer3 0.01, layer2 0.005, layer1 0.002, stem 0.001
#: under a head at 0.05), so that the early, general features move least.
STAGE_LR_DIVISORS = (5, 10, 25)


def stage_lrs(model: nn.Module, head_lr: float) -> dict[str, float]:
    """Per-part learning rates by the chapter's rule (:data:`STAGE_LR_DIVISORS`), for
    ``stage_param_groups(model, stage_lrs(model, lr), head_lr=lr)``."""
    names = [n for n in model_parts(model) if n != HEAD][::-1]  # last stage first, the stem last
    divisors = [STAGE_LR_DIVISORS[i % 3] * 10 ** (i // 3) for i in range(len(names))]
    return {name: head_lr / d for name, d in zip(names, divisors, strict=True)}


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors")


def load_for_finetuning(source, num_classes: int, *, model: str | nn.Module | None = None,
                        pretrained: str = "torchvision", freeze_backbone: bool = False, **model_kwargs) -> nn.Module:
    """A model with trained weights and a fresh head of ``num_classes`` outputs.

    ``source`` is one of: a checkpoint of this package (its architecture is rebuilt, unless ``model``
    names one); a weights file or a state_dict (torchvision's, timm's, ours) for the architecture named
    by ``model``; or the name of an ImageNet model (``"resnet18"``, ``"resnet50.tv_in1k"``), whose
    pretrained ``pretrained`` ("torchvision" or "timm") weights are downloaded when online. Files and
    state_dicts are treated alike: every weight is loaded except a classifier of another size.
    ``freeze_backbone=True`` freezes everything but the new head.
    """
    def architecture(what: str) -> nn.Module:
        if model is None:
            raise FinetuneError(f"{what} needs the architecture: pass model='resnet18' (or a model)")
        return model if isinstance(model, nn.Module) else create_model(model, **model_kwargs)

    if isinstance(source, Mapping):
        net = architecture("a state_dict")
        _load_backbone(net, clean_state_dict(source), "the state_dict")
    elif isinstance(source, str | os.PathLike) and os.path.isfile(source):
        path = os.fspath(source)
        cfg = _package_checkpoint_config(path)
        if cfg is not None and model is None:  # ours: rebuild its architecture, as it was trained
            net = model_from_config(cfg, **model_kwargs)
        else:
            net = architecture(f"the weights file {path!r}")
        _load_backbone(net, read_state_dict(path), repr(path))
    elif isinstance(source, os.PathLike) or (
        isinstance(source, str) and (os.sep in source or "/" in source or source.lower().endswith(WEIGHT_SUFFIXES))
    ):
        raise FinetuneError(
            f"no weights file at {os.fspath(source)!r} (looked from {os.getcwd()!r}): check the path"
        )
    elif isinstance(source, str):
        if split_tag(source)[0] not in list_models():
            raise UnknownModelError(
                f"{source!r} is neither a file nor a registered model: pass a checkpoint path, a state_dict, "
                "or a name from resnet_tutorial.list_models(\"resnet*\") such as 'resnet18'"
            )
        net = create_model(split_tag(source)[0], **model_kwargs)
        models.load_pretrained(net, source, source=pretrained)  # through the package: tests replace it there
    else:
        raise FinetuneError(f"source must be a checkpoint path, a state_dict or a model name, got {source!r}")
    if getattr(net, "num_classes", None) != num_classes:
        net.reset_classifier(num_classes)
    if freeze_backbone:
        freeze(net, "all")
    return net


def _package_checkpoint_config(path: str) -> dict | None:
    """The ``model_config`` of a checkpoint of this package that names its architecture, else None."""
    try:
        cfg = read_checkpoint(path).get("model_config", {})
    except CheckpointError:
        return None
    return cfg if "architecture" in cfg else None


def _load_backbone(net: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``net``; a classifier of another size is left out (the head is replaced
    anyway), every other weight must fit."""
    own = net.state_dict()
    other_head = any(k.startswith("fc.") and (k not in own or own[k].shape != v.shape) for k, v in state.items())
    if not other_head:
        load_weights(net, state)
        return
    result = load_weights(net, {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{what} does not fit this model (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}): "
            "pass the model= the weights were made for"
        )

