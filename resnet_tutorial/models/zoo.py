"""Every registered model: a line of its stage table each.

ImageNet family (He et al. 2016a, Table 1) with its ResNeXt (Xie et al. 2017) and Wide ResNet
(Zagoruyko & Komodakis 2016) variants, CIFAR family (Sec. 4.2: 6n+2 layers, Table 6), the plain
twins without shortcuts, and the pre-activation nets of He et al. (2016b).
"""

from __future__ import annotations

from ..errors import ModelConfigError
from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .registry import register_model
from .resnet import PreActResNet, ResNet

CIFAR_CHANNELS = (16, 32, 64)


def _imagenet(block, layers, **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


def _cifar(block, n: int, **kwargs) -> ResNet:
    kwargs.setdefault("shortcut", "A")
    return _cifar_net(ResNet, block, n, **kwargs)


def _plain(make, block, layers, **kwargs) -> ResNet:
    """A plain twin: the net ``make`` builds, with ``shortcut=None``; it has no shortcut option to take."""
    if kwargs.pop("shortcut", None) is not None:
        raise ModelConfigError("a plain network has no shortcuts: leave out the shortcut option")
    return make(block, layers, shortcut=None, **kwargs)


def _preact_cifar(block, n: int, **kwargs) -> PreActResNet:
    return _cifar_net(PreActResNet, block, n, **kwargs)


def _cifar_net(cls, block, n: int, **kwargs):
    kwargs.setdefault("channels", CIFAR_CHANNELS)
    kwargs.setdefault("stem", "cifar")
    kwargs.setdefault("num_classes", 10)
    return cls(block, [n] * len(kwargs["channels"]), **kwargs)


# ImageNet: torchvision's and timm's resnet18 ... resnet152 (v1.5 by default).
@register_model("imagenet")
def resnet18(**kwargs) -> ResNet:
    return _imagenet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("imagenet")
def resnet34(**kwargs) -> ResNet:
    return _imagenet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model("imagenet")
def resnet50(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model("imagenet")
def resnet101(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model("imagenet")
def resnet152(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 8, 36, 3], **kwargs)


# ResNeXt (Xie et al. 2017): the bottleneck's 3x3 split into `groups` paths of `width_per_group`
# channels at the first stage. Wide ResNet (Zagoruyko & Komodakis 2016), torchvision's ImageNet
# version: the bottleneck's inner width doubled. Same names and weights as torchvision's and timm's.
@register_model("imagenet")
def resnext50_32x4d(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


@register_model("imagenet")
def resnext101_32x8d(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8, **kwargs)


@register_model("imagenet")
def resnext101_64x4d(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 23, 3], groups=64, width_per_group=4, **kwargs)


@register_model("imagenet")
def wide_resnet50_2(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kwargs)


@register_model("imagenet")
def wide_resnet101_2(**kwargs) -> ResNet:
    return _imagenet(Bottleneck, [3, 4, 23, 3], width_per_group=128, **kwargs)


# CIFAR: 6n + 2 layers, three stages of n basic blocks, 16/32/64 channels, shortcut option A.
@register_model("cifar")
def resnet20(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 3, **kwargs)


@register_model("cifar")
def resnet32(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 5, **kwargs)


@register_model("cifar")
def resnet44(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 7, **kwargs)


@register_model("cifar")
def resnet56(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 9, **kwargs)


@register_model("cifar")
def resnet110(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 18, **kwargs)


@register_model("cifar")
def resnet1202(**kwargs) -> ResNet:
    return _cifar(BasicBlock, 200, **kwargs)


# Plain twins: the same layers without the shortcuts (the paper's degradation experiments).
@register_model("plain-cifar")
def plain20(**kwargs) -> ResNet:
    return _plain(_cifar, BasicBlock, 3, **kwargs)


@register_model("plain-cifar")
def plain32(**kwargs) -> ResNet:
    return _plain(_cifar, BasicBlock, 5, **kwargs)


@register_model("plain-cifar")
def plain44(**kwargs) -> ResNet:
    return _plain(_cifar, BasicBlock, 7, **kwargs)


@register_model("plain-cifar")
def plain56(**kwargs) -> ResNet:
    return _plain(_cifar, BasicBlock, 9, **kwargs)


@register_model("plain-cifar")
def plain110(**kwargs) -> ResNet:
    return _plain(_cifar, BasicBlock, 18, **kwargs)


@register_model("plain-imagenet")
def plain18(**kwargs) -> ResNet:
    return _plain(_imagenet, BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("plain-imagenet")
def plain34(**kwargs) -> ResNet:
    return _plain(_imagenet, BasicBlock, [3, 4, 6, 3], **kwargs)


# Pre-activation ResNets for CIFAR (He et al. 2016b): 110 layers of basic blocks, 164 of bottlenecks.
@register_model("preact-cifar", PreActResNet)
def preact_resnet110(**kwargs) -> PreActResNet:
    return _preact_cifar(PreActBasicBlock, 18, **kwargs)


@register_model("preact-cifar", PreActResNet)
def preact_resnet164(**kwargs) -> PreActResNet:
    return _preact_cifar(PreActBottleneck, 18, **kwargs)
