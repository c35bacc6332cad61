"""One ``ResNet`` class, assembled from a table of stages.

The ImageNet models (``resnet18`` ... ``resnet152``) have exactly the ``state_dict`` of torchvision's and
timm's, so their weights load with ``strict=True`` and give the same outputs. The CIFAR models of
He et al. (2016a, Sec. 4.2) use the same class with a 3x3 stem, three stages of 16/32/64 channels and
shortcut option A.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx
from torch import nn

from ..errors import ModelConfigError
from .blocks import (
    Bottleneck,
    NormLayer,
    PreActBasicBlock,
    PreActBottleneck,
    changes_shape,
    conv1x1,
    make_shortcut,
)

PREACT_BLOCKS = (PreActBasicBlock, PreActBottleneck)
GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax")


def check_image_batch(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``x`` itself, or a clear error when it is not a batch of ``in_chans``-channel images."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        hint = (
            f"; add a batch dimension with x.unsqueeze(0), or create the model with in_chans={x.shape[-3]}"
            if x.ndim >= 3
            else ""
        )
        raise ValueError(f"expected a batch of images of shape (N, {in_chans}, H, W), got {tuple(x.shape)}{hint}")
    return x


# FX (torchvision's create_feature_extractor, torch.fx.symbolic_trace) records the check as one call in
# the graph instead of tracing into its `if`: the traced model checks its input too.
torch.fx.wrap("check_image_batch")


class GlobalPool(nn.Module):
    """Global pooling to one vector per image: ``"avg"``, ``"max"``, ``"avgmax"`` (their mean) or
    ``"catavgmax"`` (both, concatenated: twice the features), as timm's ``global_pool``."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in GLOBAL_POOLS:
            raise ModelConfigError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        avg, mx = x.mean((2, 3)), x.amax((2, 3))
        return 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat([avg, mx], 1)

    def feat_mult(self) -> int:
        return 2 if self.pool_type == "catavgmax" else 1

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


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
        groups: groups of each bottleneck's 3x3 convolution, the cardinality of ResNeXt (32 or 64).
        width_per_group: channels per group of that 3x3 at ``planes=64``; 64 is ResNet, 4 with
            ``groups=32`` is ResNeXt 32x4d, 128 is Wide ResNet-50-2. Basic blocks allow only 1 and 64.
        norm_layer: the normalisation after each convolution, a function of the channel count (default
            ``nn.BatchNorm2d``; ``torchvision.ops.FrozenBatchNorm2d`` for frozen statistics,
            ``nn.Identity`` for a net without normalisation), as torchvision's ``norm_layer``.
        global_pool: ``"avg"`` (default), ``"max"``, ``"avgmax"`` or ``"catavgmax"``, as timm's.
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
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_arguments(block, layers, channels, stem, shortcut, in_chans, num_classes, drop_rate)
        norm_layer = norm_layer or nn.BatchNorm2d
        self.pretrained_cfg: dict = {}  # create_model fills it in
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.preact = block in PREACT_BLOCKS
        self.shortcut = "B" if self.preact else shortcut.upper()
        self.residual = residual
        self.stride_in_1x1 = stride_in_1x1
        self.drop_rate = drop_rate
        self.groups = groups
        self.width_per_group = width_per_group
        self._norm_layer = norm_layer  # for _make_layer; not kept (a lambda would not pickle)

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
        self.bn1 = nn.Identity() if self.preact else norm_layer(self.inplanes)
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
        self.final_bn = norm_layer(self.inplanes) if self.preact else None
        self.final_relu = nn.ReLU(inplace=True) if self.preact else None
        if self.preact:  # its last feature map is the one after them, as timm's ResNetV2 ("norm")
            self.feature_info[-1]["module"] = "final_relu"
        self.num_features = self.inplanes
        self.global_pool = GlobalPool(global_pool)
        self.fc = self._classifier(num_classes)

        del self._norm_layer
        self.init_weights(zero_init_last=zero_init_last)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        width = {"groups": self.groups, "width_per_group": self.width_per_group}
        norm = {"norm_layer": self._norm_layer}
        layers = []
        for i in range(blocks):
            block_stride = stride if i == 0 else 1
            if self.preact:
                reshapes = changes_shape(self.inplanes, out_planes, block_stride)
                downsample = conv1x1(self.inplanes, out_planes, block_stride) if reshapes else None
                layers.append(block(self.inplanes, planes, block_stride, downsample, **width, **norm))
            else:
                downsample = None
                if self.residual:
                    downsample = make_shortcut(self.shortcut, self.inplanes, out_planes, block_stride, **norm)
                kwargs = {"stride_in_1x1": self.stride_in_1x1} if block is Bottleneck else {}
                kwargs.update(width)
                layers.append(
                    block(self.inplanes, planes, block_stride, downsample, self.residual, **kwargs, **norm)
                )
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def _classifier(self, num_classes: int) -> nn.Module:
        in_features = self.num_features * self.global_pool.feat_mult()
        return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self, zero_init_last: bool = False) -> None:
        """He initialisation for convolutions, BN as the identity (torchvision's and timm's scheme)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last") and getattr(m, "residual", True):
                    try:
                        m.zero_init_last()
                    except AttributeError:  # e.g. norm_layer=nn.Identity: nothing with a weight to zero
                        raise ModelConfigError(
                            "zero_init_last zeroes the weight of each branch's last norm layer; this "
                            "norm_layer has none: use zero_init_last=False"
                        ) from None

    # --- the model face of timm -------------------------------------------------------------------

    @property
    def default_cfg(self) -> dict:
        """The old name of :attr:`pretrained_cfg` (timm keeps it as an alias too)."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: the feature map before pooling.

        Its shape is (N, num_features, H/32, W/32) on ImageNet.
        """
        x = check_image_batch(x, self.in_chans)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        if self.final_bn is not None:
            x = self.final_relu(self.final_bn(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling, dropout and the classifier; ``pre_logits=True`` stops before
        the classifier."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier with ``num_classes`` outputs (0 removes it), and
        optionally another ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"``, ``"catavgmax"``)."""
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.fc = self._classifier(num_classes).to(device)


def _check_arguments(block, layers, channels, stem, shortcut, in_chans, num_classes, drop_rate) -> None:
    """One clear message for arguments that cannot make a ResNet."""
    if not (isinstance(block, type) and issubclass(block, nn.Module) and hasattr(block, "expansion")):
        raise ModelConfigError(
            f"block must be a block class with an `expansion` (BasicBlock, Bottleneck, PreActBasicBlock, "
            f"PreActBottleneck), got {block!r}"
        )
    if len(layers) != len(channels):
        raise ModelConfigError(
            f"one channel width per stage: got {len(layers)} stages and {len(channels)} widths; "
            "pass channels= with one width per entry of layers"
        )
    if len(layers) == 0 or any(int(n) < 1 for n in layers) or any(int(c) < 1 for c in channels):
        raise ModelConfigError(
            f"every stage needs at least one block and one channel, got layers={list(layers)}, "
            f"channels={list(channels)}"
        )
    if stem not in ("imagenet", "cifar"):
        raise ModelConfigError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    if not isinstance(shortcut, str) or shortcut.upper() not in ("A", "B", "C"):
        raise ModelConfigError(f"shortcut must be 'A', 'B' or 'C' (the paper's options), got {shortcut!r}")
    if in_chans < 1:
        raise ModelConfigError(f"in_chans must be at least 1 (3 for RGB, 1 for grey), got {in_chans}")
    if num_classes < 0:
        raise ModelConfigError(f"num_classes must be 0 (no classifier) or more, got {num_classes}")
    if not 0 <= drop_rate < 1:
        raise ModelConfigError(f"drop_rate must be in [0, 1), got {drop_rate}")


# --- features_only: the feature maps of the stem and the stages, as timm's ------------------------


class FeatureInfo:
    """What each returned feature map is: ``channels()``, ``reduction()`` (its stride with respect to
    the input) and ``module_name()``, for the selected ``out_indices`` (timm's ``FeatureInfo``)."""

    def __init__(self, feature_info: list[dict], out_indices: Sequence[int]) -> None:
        self.info = [dict(d, index=i) for i, d in enumerate(feature_info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[self.out_indices[idx]][key]
        return [self.info[self.out_indices[i]][key] for i in idx]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def get_dicts(self) -> list[dict]:
        return [self.info[i] for i in self.out_indices]

    def __len__(self) -> int:
        return len(self.out_indices)

    def __getitem__(self, i: int) -> dict:
        return self.info[self.out_indices[i]]

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


class FeatureMaps(nn.Module):
    """A ResNet that returns a list of feature maps, one per entry of ``out_indices``: index 0 is the
    stem (after its ReLU, before the max-pool), index ``i`` the output of stage ``i``, as timm's
    ``create_model(..., features_only=True)``. The head and the stages after the last index are
    dropped; the ``state_dict`` names are the model's, so its weights load.
    """

    def __init__(self, model: ResNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        if not out_indices or any(not -n <= i < n for i in out_indices):
            raise ModelConfigError(
                f"out_indices must be indices of the {n} feature maps (0 = stem, 1..{n - 1} = stages), "
                f"got {out_indices}"
            )
        out_indices = tuple(sorted({i % n for i in out_indices}))
        self.out_indices = out_indices
        self.in_chans = model.in_chans
        self.pretrained_cfg = model.pretrained_cfg
        self.feature_info = FeatureInfo(model.feature_info, out_indices)
        for name in ("conv1", "bn1", "relu", "maxpool"):
            self.add_module(name, getattr(model, name))
        self.stage_names = model.stage_names[: max(out_indices)]
        for name in self.stage_names:
            self.add_module(name, getattr(model, name))
        last = len(self.stage_names) == len(model.stage_names)
        self.final_bn = model.final_bn if last else None
        self.final_relu = model.final_relu if last else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = check_image_batch(x, self.in_chans)
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, start=1):
            x = getattr(self, name)(x)
            if self.final_bn is not None and i == len(self.stage_names):
                x = self.final_relu(self.final_bn(x))
            if i in self.out_indices:
                features.append(x)
        return features
