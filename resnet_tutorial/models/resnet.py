"""One ``ResNet`` class, assembled from a table of stages.

The ImageNet models (``resnet18`` ... ``resnet152``) have exactly the ``state_dict`` of torchvision's and
timm's, so their weights load with ``strict=True`` and give the same outputs. The CIFAR models of
He et al. (2016a, Sec. 4.2) use the same class with a 3x3 stem, three stages of 16/32/64 channels and
shortcut option A.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import (
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    changes_shape,
    conv1x1,
    make_shortcut,
)

PREACT_BLOCKS = (PreActBasicBlock, PreActBottleneck)


class ResNet(nn.Module):
    """A residual network: a stem, a table of stages, global average pooling and a linear classifier.

    Args:
        block: the block class of every stage (``BasicBlock``, ``Bottleneck``, or a pre-activation block).
        layers: number of blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        channels: the ``planes`` of each stage (a block outputs ``planes * block.expansion`` channels).
        stem: ``"imagenet"`` (7x7 stride-2 convolution and 3x3 max-pool) or ``"cifar"`` (one 3x3 convolution).
        shortcut: the paper's option ``"A"`` (zero-padded identity), ``"B"`` (projection where the shape
            changes) or ``"C"`` (projection on every block). Pre-activation nets always use ``"B"``.
        residual: ``False`` removes every shortcut: the "plain" network of the paper, same layers.
        stride_in_1x1: ``True`` gives the paper's ResNet v1 bottleneck; ``False`` (default) gives v1.5,
            which strides the 3x3 convolution (torchvision, timm).
        in_chans: channels of the input image.
        num_classes: outputs of the classifier; 0 makes ``forward`` return the pooled features.
        zero_init_last: zero the last BN (or convolution) of each residual branch, so every block starts
            as the identity. timm does this by default; torchvision and the paper do not, and nor do we.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        *,
        channels: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        shortcut: str = "B",
        residual: bool = True,
        stride_in_1x1: bool = False,
        in_chans: int = 3,
        num_classes: int = 1000,
        zero_init_last: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != len(channels):
            raise ValueError(
                f"one channel width per stage: got {len(layers)} stages and {len(channels)} widths"
            )
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.preact = block in PREACT_BLOCKS
        self.shortcut = "B" if self.preact else shortcut.upper()
        self.residual = residual
        self.stride_in_1x1 = stride_in_1x1
        self.drop_rate = drop_rate

        # Stem. A pre-activation net has no BN-ReLU here: every block begins with one.
        self.inplanes = channels[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            reduction = 4
        else:
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
            reduction = 1
        self.bn1 = nn.Identity() if self.preact else nn.BatchNorm2d(self.inplanes)
        self.relu = nn.Identity() if self.preact else nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=self.inplanes, reduction=reduction // 2 or 1, module="relu")]

        # Stages: the first keeps the resolution, each later one halves it.
        self.stage_names: list[str] = []
        for i, (planes, blocks) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            name = f"layer{i + 1}"
            self.add_module(name, self._make_layer(block, planes, blocks, stride))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=self.inplanes, reduction=reduction, module=name))

        # A pre-activation net ends with the BN-ReLU that its last block left out.
        self.final_bn = nn.BatchNorm2d(self.inplanes) if self.preact else None
        self.num_features = self.inplanes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self.init_weights(zero_init_last=zero_init_last)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        layers = []
        for i in range(blocks):
            block_stride = stride if i == 0 else 1
            if self.preact:
                reshapes = changes_shape(self.inplanes, out_planes, block_stride)
                downsample = conv1x1(self.inplanes, out_planes, block_stride) if reshapes else None
                layers.append(block(self.inplanes, planes, block_stride, downsample))
            else:
                downsample = None
                if self.residual:
                    downsample = make_shortcut(self.shortcut, self.inplanes, out_planes, block_stride)
                kwargs = {"stride_in_1x1": self.stride_in_1x1} if block is Bottleneck else {}
                layers.append(block(self.inplanes, planes, block_stride, downsample, self.residual, **kwargs))
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def init_weights(self, zero_init_last: bool = False) -> None:
        """He initialisation for convolutions, BN as the identity (torchvision's and timm's scheme)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last") and getattr(m, "residual", True):
                    m.zero_init_last()

    # --- the model face of timm -------------------------------------------------------------------

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the feature map before pooling, shape (N, num_features, H/32, W/32) on ImageNet."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a batch of images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"add a batch dimension with x.unsqueeze(0), or create the model with in_chans={x.shape[-3]}"
                if x.ndim >= 3
                else f"expected a batch of images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        if self.final_bn is not None:
            x = torch.relu(self.final_bn(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout and the classifier; ``pre_logits=True`` stops before it."""
        x = self.global_pool(x).flatten(1)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier with ``num_classes`` outputs (0 removes it)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.fc = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()
