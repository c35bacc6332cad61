"""ResNet models: blocks, the network, and the registry of named models."""

from . import zoo  # noqa: F401  (registers the models)
from .blocks import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    conv1x1,
    conv3x3,
    make_shortcut,
)
from .registry import UnknownModelError, create_model, list_models, model_family, register_model
from .resnet import ResNet
from .weights import WeightsError, clean_state_dict, load_pretrained, load_weights, read_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "UnknownModelError",
    "WeightsError",
    "clean_state_dict",
    "conv1x1",
    "conv3x3",
    "create_model",
    "list_models",
    "load_pretrained",
    "load_weights",
    "make_shortcut",
    "model_family",
    "read_state_dict",
    "register_model",
]
