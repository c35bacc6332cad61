"""ResNet models: blocks, the network, and the registry of named models."""

from . import zoo  # noqa: F401  (registers the models)
from .blocks import (
    PREACT_BLOCKS,
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    conv1x1,
    conv3x3,
    make_shortcut,
)
from .registry import (
    UnknownModelError,
    create_model,
    list_models,
    list_pretrained,
    model_arguments,
    model_family,
    register_model,
)
from .resnet import FeatureInfo, FeatureMaps, GlobalPool, PreActResNet, ResNet, ResNetBase
from .weights import (
    WeightsError,
    clean_state_dict,
    default_tag,
    load_pretrained,
    load_weights,
    pretrained_cfg,
    pretrained_tags,
    read_state_dict,
    split_tag,
)

__all__ = [
    "BasicBlock",
    "FeatureInfo",
    "FeatureMaps",
    "GlobalPool",
    "Bottleneck",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PREACT_BLOCKS",
    "PreActResNet",
    "ResNet",
    "ResNetBase",
    "UnknownModelError",
    "WeightsError",
    "clean_state_dict",
    "conv1x1",
    "conv3x3",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "load_weights",
    "make_shortcut",
    "default_tag",
    "model_arguments",
    "model_family",
    "pretrained_cfg",
    "pretrained_tags",
    "split_tag",
    "read_state_dict",
    "register_model",
]
