"""The drawings of the blocks follow the code: their layers are what ``forward`` runs, in order."""

from __future__ import annotations

import subprocess

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.patches import FancyArrowPatch
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial import diagrams, plots
from resnet_tutorial.diagrams import trace_layers
from resnet_tutorial.models import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    conv1x1,
    make_shortcut,
)


@pytest.fixture(autouse=True)
def english(monkeypatch):
    monkeypatch.delenv(plots.LANGUAGE_VARIABLE, raising=False)
    yield
    plt.close("all")


def called_modules(block: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the modules ``block`` calls on ``x``, in order, recorded by forward hooks: what the
    diagram must show, found without torch.fx."""
    calls, handles = [], []
    for name, m in block.named_modules():
        if name and (not list(m.children()) or isinstance(m, PadShortcut)) and not isinstance(m, nn.Identity):
            handles.append(m.register_forward_hook(lambda mod, args, out, name=name: calls.append(name)))
    with torch.no_grad():
        block.eval()(x)
    for h in handles:
        h.remove()
    return calls


def figure_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts + [ax.title]]


BLOCKS = {
    "basic": lambda: BasicBlock(16, 16),
    "basic, option A": lambda: BasicBlock(16, 32, 2, make_shortcut("A", 16, 32, 2)),
    "basic, option B": lambda: BasicBlock(16, 32, 2, make_shortcut("B", 16, 32, 2)),
    "bottleneck, option B": lambda: Bottleneck(64, 32, 2, make_shortcut("B", 64, 128, 2)),
    "pre-activation basic": lambda: PreActBasicBlock(16, 16),
    "pre-activation bottleneck, projection": lambda: PreActBottleneck(16, 8, 2, conv1x1(16, 32, 2)),
}


@pytest.mark.parametrize("make", BLOCKS.values(), ids=BLOCKS.keys())
def test_layers_are_the_modules_forward_calls_in_order(make):
    block = make()
    steps = trace_layers(block)
    inplanes = next(m for m in block.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d))
    x = torch.randn(2, getattr(inplanes, "in_channels", getattr(inplanes, "num_features", 0)), 8, 8)
    assert [s.name for s in steps if s.kind not in ("input", "add")] == called_modules(block, x)
    assert steps[0].kind == "input" and [s.kind for s in steps].count("add") == 1


def test_basic_block_layers_and_labels():
    steps = trace_layers(BasicBlock(16, 32, 2, make_shortcut("B", 16, 32, 2)))
    branch = [s for s in steps if not s.shortcut]
    assert [s.name for s in branch] == ["x", "conv1", "bn1", "relu", "conv2", "bn2", "add", "relu"]
    assert [s.text for s in branch] == ["x, 16 channels", "3x3 conv, 32, /2", "BN", "ReLU", "3x3 conv, 32",
                                        "BN", "+", "ReLU"]
    add = steps.index(next(s for s in steps if s.kind == "add"))
    shortcut = [s for s in steps if s.shortcut]
    assert [(s.name, s.text) for s in shortcut] == [("downsample.0", "1x1 conv, 32, /2"), ("downsample.1", "BN")]
    assert all(s.joins == add for s in shortcut)
    assert steps[add].fork == 0 and steps[add].reshapes  # from the input, and dashed


def test_identity_shortcut_has_no_layers_and_keeps_the_shape():
    steps = trace_layers(BasicBlock(16, 16))
    add = next(s for s in steps if s.kind == "add")
    assert not any(s.shortcut for s in steps)
    assert steps[add.fork].kind == "input" and not add.reshapes


def test_plain_block_has_no_addition():
    steps = trace_layers(BasicBlock(16, 16, residual=False))
    assert [s.name for s in steps] == ["x", "conv1", "bn1", "relu", "conv2", "bn2", "relu"]


def test_bottleneck_v1_and_v1_5_put_the_stride_where_the_code_does():
    def strided(stride_in_1x1):
        block = Bottleneck(64, 32, 2, make_shortcut("B", 64, 128, 2), stride_in_1x1=stride_in_1x1)
        return [s.name for s in trace_layers(block) if s.kind == "conv" and s.stride == 2 and not s.shortcut]

    assert strided(True) == ["conv1"]
    assert strided(False) == ["conv2"]


def test_pre_activation_projection_leaves_after_the_first_relu():
    steps = trace_layers(PreActBasicBlock(16, 32, 2, conv1x1(16, 32, 2)))
    add = next(s for s in steps if s.kind == "add")
    assert [s.name for s in steps[:3]] == ["x", "bn1", "relu"]
    assert steps[add.fork].name == "relu" and steps.index(steps[add.fork]) == 2  # not the input
    assert steps[-1].kind == "add"  # nothing after the addition


def test_the_layers_follow_a_change_to_the_code():
    """A subclass that swaps BN and ReLU and adds a dropout: the layer list changes with it."""

    class Changed(BasicBlock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            out = self.bn1(self.relu(self.conv1(x)))
            out = self.drop(self.bn2(self.conv2(out)))
            return self.relu(out + x)

    before = [s.name for s in trace_layers(BasicBlock(16, 16))]
    after = [s.name for s in trace_layers(Changed(16, 16))]
    assert before == ["x", "conv1", "bn1", "relu", "conv2", "bn2", "add", "relu"]
    assert after == ["x", "conv1", "relu", "bn1", "conv2", "bn2", "drop", "add", "relu"]
    ax = diagrams.draw_block(Changed(16, 16))
    assert "Dropout" in figure_texts(ax.figure)


def test_drawing_shows_every_layer_of_the_block():
    block = Bottleneck(64, 32, 2, make_shortcut("B", 64, 128, 2))
    ax = diagrams.draw_block(block, title="bottleneck")
    texts = figure_texts(ax.figure)
    for step in trace_layers(block):
        assert step.text in texts
    assert texts.count("BN") == 4 and texts.count("ReLU") == 3 and "bottleneck" in texts
    assert plots.label("projection") in texts and plots.label("identity") not in texts
    dashed = [ln for ln in ax.lines if ln.get_linestyle() != "-"]
    assert len(dashed) == 1  # the shortcut changes the shape


def test_drawing_of_an_identity_shortcut_says_identity_and_is_solid():
    ax = diagrams.draw_block(BasicBlock(16, 16))
    assert "identity" in figure_texts(ax.figure)
    assert all(ln.get_linestyle() == "-" for ln in ax.lines)


def test_shortcut_options_a_b_c():
    blocks = diagrams.shortcut_blocks("resnet20", stage=2)
    shortcut = {o: [[s.kind for s in trace_layers(b) if s.shortcut] for b in pair] for o, pair in blocks.items()}
    assert shortcut == {
        "A": [["pad"], []],  # zero-padding where the shape changes, identity elsewhere
        "B": [["conv", "norm"], []],  # projection where the shape changes
        "C": [["conv", "norm"], ["conv", "norm"]],  # projection on every block
    }
    assert isinstance(blocks["A"][0].downsample, PadShortcut)
    fig = diagrams.draw_shortcut_options("resnet20", stage=2)
    texts = figure_texts(fig)
    assert len(fig.axes) == 6
    assert "zero-padding +16, /2" in texts
    assert texts.count("1x1 conv, 32, /2") == 2 and texts.count("1x1 conv, 32") == 1
    assert texts.count("identity") == 2 and texts.count("projection") == 3
    assert "option C, block 2 of stage 2" in texts


def test_networks_plain_and_residual():
    with torch.device("meta"):
        nets = {"plain-20": rt.create_model("plain20"), "ResNet-20": rt.create_model("resnet20")}
    traced = {name: trace_layers(m) for name, m in nets.items()}
    weights = {name: [s.text for s in t if s.kind in ("conv", "linear") and not s.shortcut]
               for name, t in traced.items()}
    assert weights["plain-20"] == weights["ResNet-20"] and len(weights["plain-20"]) == 20
    adds = [s for s in traced["ResNet-20"] if s.kind == "add"]
    assert len(adds) == 9 and sum(s.reshapes for s in adds) == 2
    assert not any(s.kind == "add" for s in traced["plain-20"])
    # The CIFAR stem's max-pool is an nn.Identity: not drawn, and the first shortcut leaves the stem's ReLU.
    resnet = traced["ResNet-20"]
    assert "maxpool" not in [s.name for s in resnet] and resnet[adds[0].fork].name == "relu"
    ax = diagrams.draw_networks(nets)
    texts = figure_texts(ax.figure)
    assert texts.count("3x3 conv, 32, /2") == 2 and "fc, 10" in texts and "global avg pool" in texts
    arcs = [p for p in ax.patches if isinstance(p, FancyArrowPatch)
            and getattr(p.get_connectionstyle(), "rad", 0) != 0]
    assert len(arcs) == 9 and sum(p.get_linestyle() not in ("-", "solid") for p in arcs) == 2


def _cjk_font_installed() -> bool:
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    return "CJK" in out or "Hei" in out


def test_chinese_labels(monkeypatch):
    if not _cjk_font_installed():
        pytest.skip("no CJK font: apt-get install fonts-noto-cjk")
    monkeypatch.setenv(plots.LANGUAGE_VARIABLE, "zh_CN")
    steps = trace_layers(BasicBlock(16, 32, 2, make_shortcut("A", 16, 32, 2)))
    assert [s.text for s in steps if s.kind in ("input", "conv", "pad")] == [
        "x，16 个通道", "3x3 卷积，32，/2", "3x3 卷积，32", "零填充 +16，/2"]
    ax = diagrams.draw_block(BasicBlock(16, 16), title=plots.label("basic block"))
    texts = figure_texts(ax.figure)
    assert "恒等映射" in texts and "基本块" in texts
    fig = diagrams.draw_shortcut_options()
    assert "投影" in figure_texts(fig) and "选项 C，第 2 阶段的第 2 个块" in figure_texts(fig)


def test_adding_a_constant_is_not_a_shortcut():
    class Shifted(BasicBlock):
        def forward(self, x):
            return super().forward(x) + 1.0

    steps = trace_layers(Shifted(16, 16))
    adds = [s for s in steps if s.kind == "add"]
    assert len(adds) == 2 and adds[0].fork == 0 and adds[1].fork is None
    diagrams.draw_block(Shifted(16, 16))  # draws the constant's addition without a shortcut
