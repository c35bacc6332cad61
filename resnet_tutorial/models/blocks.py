"""The residual blocks of He et al. (2016a, 2016b), one class per idea.

Each ``forward`` reads like the paper's figure. The attribute names (``conv1``, ``bn1``, ...,
``downsample.0``, ``downsample.1``) are torchvision's and timm's, so their ``state_dict`` loads into ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError

#: What ``norm_layer`` takes: a class or function of the channel count, e.g. ``nn.BatchNorm2d``,
#: ``torchvision.ops.FrozenBatchNorm2d``, ``lambda c: nn.GroupNorm(8, c)``, or ``nn.Identity`` (no norm).
NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (the batch norm that follows has one).

    ``groups > 1`` splits the channels into that many groups, each convolved on its own.
    """
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Shortcut option A of He et al. (2016a): identity, subsampled by ``stride``, with
    zero-padded channels.

    It has no parameters: where the number of channels grows, the new channels are
    zeros.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ModelConfigError(
                f"option A can only add channels, not go from {in_planes} to "
                f"{out_planes}: use shortcut='B'"
            )
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # Pad the channels: (W_left, W_right, H_top, H_bottom, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def changes_shape(in_planes: int, out_planes: int, stride: int) -> bool:
    """Whether a block's output has another shape than its input (stride or width changes)."""
    return stride != 1 or in_planes != out_planes


def make_shortcut(
    option: str,
    in_planes: int,
    out_planes: int,
    stride: int,
    norm_layer: NormLayer | None = None,
) -> nn.Module | None:
    """The shortcut of a block, by the paper's options.

    * ``"A"``: identity; zero-padded, strided identity where the shape changes
      (no parameters).
    * ``"B"``: identity; 1x1 projection (conv + BN) where the shape changes
      (torchvision, timm).
    * ``"C"``: 1x1 projection on every block.

    ``None`` means a plain identity. ``norm_layer`` (default: BN) follows a projection.
    """
    reshapes = changes_shape(in_planes, out_planes, stride)
    option = option.upper()
    if option not in ("A", "B", "C"):
        raise ModelConfigError(f"shortcut must be 'A', 'B' or 'C', got {option!r}")
    if option == "A":
        return PadShortcut(in_planes, out_planes, stride) if reshapes else None
    if option == "B" and not reshapes:
        return None
    norm_layer = norm_layer or nn.BatchNorm2d
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), norm_layer(out_planes))


def _check_basic(block: str, groups: int, width_per_group: int) -> None:
    if groups != 1 or width_per_group != 64:
        raise ValueError(
            f"{block} only supports groups=1 and width_per_group=64, got groups={groups} and "
            f"width_per_group={width_per_group}; ResNeXt and Wide ResNet are built from the "
            "bottleneck block (as in torchvision)"
        )


def bottleneck_width(planes: int, groups: int = 1, width_per_group: int = 64) -> int:
    """Channels of a bottleneck's 3x3 convolution, torchvision's rule: planes * width_per_group / 64
    per group, times the groups. ResNet-50: planes; ResNeXt-50 32x4d: 2 * planes; Wide ResNet-50-2:
    2 * planes."""
    return int(planes * (width_per_group / 64.0)) * groups


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: y = relu(F(x) + x).

    The building block of Fig. 2 in He et al. (2016a). With ``residual=False`` the
    shortcut is dropped and the block is a plain two-layer stack, the paper's "plain"
    baseline with exactly the same layers. ``stride_in_1x1``, ``groups`` and
    ``width_per_group`` exist so that every block takes the bottleneck's keywords: the
    stride is on the first 3x3 either way (the paper's v1 and v1.5 differ only in the
    bottleneck), and only 1 and 64 are allowed for the others, as in torchvision.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        *,
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        _check_basic("BasicBlock", groups, width_per_group)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
        out = self.relu(out)
        return out

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: the block starts as the identity.

        As in Goyal et al. (2017).
        """
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), and a shortcut.

    The bottleneck block of Fig. 5 (right) in He et al. (2016a).

    ``stride_in_1x1=False`` puts the stride on the 3x3 convolution: "ResNet v1.5", as
    torchvision and timm do. ``stride_in_1x1=True`` is the paper's original v1, which
    strides the first 1x1 and so throws away three quarters of its input before
    looking at it.

    ``groups`` and ``width_per_group`` set the inner width
    ``bottleneck_width(planes, ...)``: with ``groups=32, width_per_group=4`` the 3x3 is
    a grouped convolution of cardinality 32 (ResNeXt, Xie et al. 2017);
    ``width_per_group=128`` doubles the inner width (Wide ResNet-50-2).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        stride_in_1x1: bool = False,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = bottleneck_width(planes, groups, width_per_group)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, stride_1x1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
        out = self.relu(out)
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block, Fig. 4(e) of He et al. (2016b):

        y = x + conv(relu(bn(conv(relu(bn(x))))))

    Nothing follows the addition: the shortcut path from block to block is a pure
    identity. The net ends with the BN-ReLU the last block leaves out
    (``PreActResNet.final_bn``, ``PreActResNet.final_relu``).
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        _check_basic("PreActBasicBlock", groups, width_per_group)
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        # Not in place: without normalisation (norm_layer=nn.Identity) bn1(x) is x
        # itself, which the shortcut still adds.
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # A projection shortcut sees the pre-activated input, as in the authors' code.
        identity = self.downsample(out) if self.downsample is not None else x

        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1), He et al. (2016b)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = bottleneck_width(planes, groups, width_per_group)
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv1x1(inplanes, width)
        self.bn2 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        # Not in place: without normalisation (norm_layer=nn.Identity) bn1(x) is x
        # itself, which the shortcut still adds.
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        identity = self.downsample(out) if self.downsample is not None else x

        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


#: The pre-activation blocks: they build a ``PreActResNet``, the others a ``ResNet``.
PREACT_BLOCKS = (PreActBasicBlock, PreActBottleneck)
