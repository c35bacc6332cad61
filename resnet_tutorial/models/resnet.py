"""The networks: ``ResNet`` for the blocks of He et al. (2016a), ``PreActResNet`` for the
pre-activation blocks of He et al. (2016b), each assembled from a table of stages.

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
    PREACT_BLOCKS,
    BasicBlock,
    Bottleneck,
    NormLayer,
    changes_shape,
    conv1x1,
    make_shortcut,
)

GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax")
STEMS = ("imagenet", "cifar")


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


def stem_conv(stem: str, in_chans: int, width: int) -> nn.Conv2d:
    """The first convolution: 7x7 with stride 2 for ``"imagenet"``, 3x3 with stride 1 for ``"cifar"``."""
    if stem == "imagenet":
        return nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
    return nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)


def stem_pool(stem: str) -> nn.Module:
    """The 3x3 max-pool with stride 2 after an ImageNet stem; none after a CIFAR stem."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()


class ResNetBase(nn.Module):
    """What ``ResNet`` and ``PreActResNet`` share: the stages built from a table, the head (global pooling,
    dropout, a linear classifier), the initialisation and the model face of timm.

    Its children, in the order they are registered, are the forward pass up to the head: ``FeatureMaps``
    runs them as a chain.
    """

    def __init__(self, in_chans: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.pretrained_cfg: dict = {}  # create_model fills it in
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate

    def _make_block(self, block, inplanes: int, planes: int, stride: int, **block_args) -> nn.Module:
        """One block of a stage, with its shortcut: each subclass says how."""
        raise NotImplementedError

    def _add_stages(self, block, layers: Sequence[int], channels: Sequence[int], reduction: int,
                    **block_args) -> None:
        """``layer1``, ``layer2``, ...: the first keeps the resolution, each later one halves it. Called
        after the stem, whose ``feature_info`` entry (at ``reduction``) they follow."""
        inplanes = channels[0]
        self.stage_names: list[str] = []
        for i, (planes, blocks) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage = []
            for j in range(blocks):
                stage.append(self._make_block(block, inplanes, planes, stride if j == 0 else 1, **block_args))
                inplanes = planes * block.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*stage))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=name))
        self.num_features = inplanes

    def _add_head(self, num_classes: int, global_pool: str) -> None:
        self.global_pool = GlobalPool(global_pool)
        self.fc = self._classifier(num_classes)

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
        """Stem and stages: the feature map before pooling (each subclass has its own stem)."""
        raise NotImplementedError

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


class ResNet(ResNetBase):
    """A residual network: a stem, a table of stages, global average pooling and a linear classifier.

    Args:
        block: the block class of every stage, ``BasicBlock`` or ``Bottleneck`` (pre-activation blocks
            make a :class:`PreActResNet`).
        layers: number of blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        channels: the ``planes`` of each stage (a block outputs ``planes * block.expansion`` channels).
        stem: ``"imagenet"`` (7x7 stride-2 convolution and 3x3 max-pool) or ``"cifar"`` (one 3x3 convolution).
        shortcut: the paper's option ``"A"`` (zero-padded identity), ``"B"`` (projection where the shape
            changes) or ``"C"`` (projection on every block); ``None``: no shortcut at all, the "plain"
            network of the paper, with the same layers.
        stride_in_1x1: ``True`` gives the paper's ResNet v1 bottleneck; ``False`` (default) gives v1.5,
            which strides the 3x3 convolution (torchvision, timm). A basic block is the same either way.
        in_chans: channels of the input image.
        num_classes: outputs of the classifier; 0 makes ``forward`` return the pooled features.
        zero_init_last: zero the last BN of each residual branch, so every block starts
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
        shortcut: str | None = "B",
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
        _check_arguments(block, layers, channels, stem, in_chans, num_classes, drop_rate)
        if block in PREACT_BLOCKS:
            raise ModelConfigError(
                f"{block.__name__} is a pre-activation block: build the net with PreActResNet(block, layers, ...)"
            )
        if shortcut is not None and (not isinstance(shortcut, str) or shortcut.upper() not in ("A", "B", "C")):
            raise ModelConfigError(f"shortcut must be 'A', 'B' or 'C' (the paper's options), or None for a plain "
                                   f"network, got {shortcut!r}")
        super().__init__(in_chans, num_classes, drop_rate)
        norm_layer = norm_layer or nn.BatchNorm2d
        self.shortcut = shortcut and shortcut.upper()
        self.stride_in_1x1 = stride_in_1x1

        # Stem: a convolution, BN-ReLU (the first feature map) and, for ImageNet, a max-pool.
        self.conv1 = stem_conv(stem, in_chans, channels[0])
        self.bn1 = norm_layer(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = stem_pool(stem)
        self.feature_info = [dict(num_chs=channels[0], reduction=2 if stem == "imagenet" else 1, module="relu")]

        self._add_stages(block, layers, channels, reduction=4 if stem == "imagenet" else 1,
                         stride_in_1x1=stride_in_1x1, groups=groups, width_per_group=width_per_group,
                         norm_layer=norm_layer)
        self._add_head(num_classes, global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    def _make_block(self, block, inplanes: int, planes: int, stride: int, *, norm_layer: NormLayer,
                    **block_args) -> nn.Module:
        """One block, with the shortcut of option ``self.shortcut`` (none in a plain net)."""
        if self.shortcut is None:
            return block(inplanes, planes, stride, None, residual=False, norm_layer=norm_layer, **block_args)
        downsample = make_shortcut(self.shortcut, inplanes, planes * block.expansion, stride, norm_layer)
        return block(inplanes, planes, stride, downsample, norm_layer=norm_layer, **block_args)

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
        return x


class PreActResNet(ResNetBase):
    """A pre-activation residual network (He et al. 2016b), timm's ``ResNetV2``: every block begins with
    BN-ReLU, so the stem is a convolution alone, and the net ends with the BN-ReLU that its last block
    left out (``final_bn``, ``final_relu``), before pooling. Where the shape changes, the shortcut is a
    1x1 projection of the block's pre-activated input (option B, as in the authors' code).

    Args:
        block: ``PreActBasicBlock`` or ``PreActBottleneck``.
        layers, channels, stem, in_chans, num_classes, zero_init_last, drop_rate, groups, width_per_group,
            norm_layer, global_pool: as for :class:`ResNet`. ``zero_init_last`` zeroes each branch's
            last convolution.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        *,
        channels: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        in_chans: int = 3,
        num_classes: int = 1000,
        zero_init_last: bool = False,
        drop_rate: float = 0.0,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
        global_pool: str = "avg",
    ) -> None:
        _check_arguments(block, layers, channels, stem, in_chans, num_classes, drop_rate)
        if block in (BasicBlock, Bottleneck):
            raise ModelConfigError(
                f"{block.__name__} is not a pre-activation block: build the net with ResNet(block, layers, "
                "...), or pass PreActBasicBlock or PreActBottleneck"
            )
        super().__init__(in_chans, num_classes, drop_rate)
        norm_layer = norm_layer or nn.BatchNorm2d

        # Stem: a convolution (the first feature map) and, for ImageNet, a max-pool. No BN-ReLU: every
        # block begins with one.
        self.conv1 = stem_conv(stem, in_chans, channels[0])
        self.maxpool = stem_pool(stem)
        self.feature_info = [dict(num_chs=channels[0], reduction=2 if stem == "imagenet" else 1, module="conv1")]

        self._add_stages(block, layers, channels, reduction=4 if stem == "imagenet" else 1,
                         groups=groups, width_per_group=width_per_group, norm_layer=norm_layer)
        self.final_bn = norm_layer(self.num_features)
        self.final_relu = nn.ReLU()  # not in place: without normalisation final_bn(x) is the last block's output
        self.feature_info[-1]["module"] = "final_relu"  # the last feature map is after them, as timm's ("norm")
        self._add_head(num_classes, global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    def _make_block(self, block, inplanes: int, planes: int, stride: int, **block_args) -> nn.Module:
        """One block, with a 1x1 projection (no BN: the block's own BN-ReLU precedes it) where the shape
        changes."""
        out_planes = planes * block.expansion
        downsample = conv1x1(inplanes, out_planes, stride) if changes_shape(inplanes, out_planes, stride) else None
        return block(inplanes, planes, stride, downsample, **block_args)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and the final BN-ReLU: the feature map before pooling."""
        x = check_image_batch(x, self.in_chans)
        x = self.conv1(x)
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        return self.final_relu(self.final_bn(x))


def _check_arguments(block, layers, channels, stem, in_chans, num_classes, drop_rate) -> None:
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
    if stem not in STEMS:
        raise ModelConfigError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
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
    stem (after its ReLU, before the max-pool; a pre-activation net's after its convolution), index ``i``
    the output of stage ``i`` (a pre-activation net's last after its final BN-ReLU), as timm's
    ``create_model(..., features_only=True)``. The head and the stages after the last index are
    dropped; the ``state_dict`` names are the model's, so its weights load.

    It keeps the model's children up to the last feature map, under their names, and runs them in
    order, as timm's ``FeatureListNet``: a model's children in order are its forward pass.
    """

    def __init__(self, model: ResNetBase, out_indices: Sequence[int] | None = None) -> None:
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
        self.return_layers = [model.feature_info[i]["module"] for i in out_indices]
        self.stage_names = model.stage_names[: max(out_indices)]
        for name, module in model.named_children():
            self.add_module(name, module)
            if name == self.return_layers[-1]:
                break

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = check_image_batch(x, self.in_chans)
        features = []
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                features.append(x)
        return features
