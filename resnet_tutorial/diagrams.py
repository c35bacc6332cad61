"""Drawings of the blocks and networks, made from the modules themselves, so that a figure cannot drift
from the code.

:func:`trace_layers` traces a block (or a whole network) with ``torch.fx`` and returns what its ``forward``
runs, in order: each convolution with its kernel, channels and stride, each norm and ReLU, each addition,
and which layers sit on a shortcut. :func:`draw_block` draws a block as He et al. (2016a) draw theirs
(Figs. 2 and 5): the branch as a column of boxes, the shortcut beside it, joining at the addition.
:func:`draw_shortcut_options` draws the options A, B and C of the paper on the blocks a network builds, and
:func:`draw_networks` lays networks side by side in the manner of the paper's Fig. 3.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from dataclasses import replace as _replace

import matplotlib.pyplot as plt
import torch
import torch.fx
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from torch import nn

from .models import PadShortcut, create_model
from .models.resnet import GlobalPool
from .plots import label

ADDS = (operator.add, operator.iadd, torch.add)
SKIPPED = ("check_image_batch",)  # functions that check the input and compute nothing


@dataclass(frozen=True)
class Layer:
    """One step of a forward pass, as a diagram draws it."""

    name: str  # the module's qualified name ("conv1", "downsample.0"), "add" or "x" (the input)
    kind: str  # "input", "conv", "norm", "relu", "pad", "pool", "linear", "add", else the class or function
    text: str  # the words in its box
    channels: int | None = None  # the channels it outputs, where it has a module that says so
    stride: int = 1
    reshapes: bool = False  # it changes the shape (stride, channels); an addition: its shortcut does
    joins: int | None = None  # a shortcut layer: the index of the addition it leads into
    fork: int | None = None  # an addition: the index of the layer whose output its shortcut carries

    @property
    def shortcut(self) -> bool:
        return self.joins is not None


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, which records PyTorch's own modules as single calls and traces into the others;
    ``PadShortcut`` and ``GlobalPool`` are one layer each too."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, PadShortcut | GlobalPool) or super().is_leaf_module(m, qualname)


def _strided(stride: int) -> str:
    """What a box adds to its text for a stride: ", /2" (nothing for stride 1)."""
    return label(", /{s}", s=stride) if stride > 1 else ""


def _describe(node: torch.fx.Node, module: nn.Module | None) -> Layer | None:
    """The layer a traced call is, or ``None`` for one that computes nothing (``nn.Identity``, the check)."""
    m = module
    if node.op == "call_function" and node.target in ADDS:
        return Layer("add", "add", "+")
    if node.op in ("call_function", "call_method"):
        name = getattr(node.target, "__name__", str(node.target))
        return None if name in SKIPPED else Layer(name, name, name)
    name = str(node.target)
    if isinstance(m, nn.Identity):
        return None
    if isinstance(m, nn.Conv2d):
        k, s = m.kernel_size[0], m.stride[0]
        text = label("{k}x{k} conv, {c}", k=k, c=m.out_channels) + _strided(s)
        if m.groups > 1:
            text += label(", {g} groups", g=m.groups)
        reshapes = s > 1 or m.in_channels != m.out_channels
        return Layer(name, "conv", text, m.out_channels, s, reshapes)
    if isinstance(m, nn.ReLU):
        return Layer(name, "relu", "ReLU")
    if "Norm" in type(m).__name__:
        text = "BN" if "BatchNorm" in type(m).__name__ else type(m).__name__
        return Layer(name, "norm", text, getattr(m, "num_features", getattr(m, "num_channels", None)))
    if isinstance(m, PadShortcut):
        text = label("zero-padding +{c}", c=m.extra) + _strided(m.stride)
        return Layer(name, "pad", text, stride=m.stride, reshapes=m.stride > 1 or m.extra > 0)
    if isinstance(m, GlobalPool):
        text = label("global avg pool") if m.pool_type == "avg" else label("global {p} pool", p=m.pool_type)
        return Layer(name, "pool", text)
    if isinstance(m, nn.MaxPool2d):
        text = label("{k}x{k} max pool", k=m.kernel_size) + _strided(m.stride)
        return Layer(name, "pool", text, stride=m.stride, reshapes=m.stride > 1)
    if isinstance(m, nn.Linear):
        return Layer(name, "linear", label("fc, {n}", n=m.out_features), m.out_features)
    return Layer(name, type(m).__name__.lower(), type(m).__name__)


def _ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def trace_layers(module: nn.Module) -> list[Layer]:
    """What ``module.forward`` runs, in order, traced with ``torch.fx``: the input first, then every call.

    At each addition, the input with fewer layers of its own is the shortcut: those layers get
    ``joins`` (the addition's index), the addition gets ``fork`` (where its shortcut leaves the
    branch) and ``reshapes`` (whether its shortcut changes the shape). Works on a block and on a
    whole network alike; the module may be on the ``meta`` device (nothing is computed).
    """
    graph = _Tracer().trace(module)
    modules = dict(module.named_modules())
    nodes = list(graph.nodes)
    found: dict[torch.fx.Node, Layer] = {}
    for node in nodes:
        if node.op == "placeholder":
            found[node] = Layer(node.name, "input", "x")
        elif node.op != "output":
            layer = _describe(node, modules.get(node.target) if node.op == "call_module" else None)
            if layer is not None:
                found[node] = layer
    # Where a call was left out, its consumers read what it was given.
    shown = {n: n if n in found else None for n in nodes}
    for n in nodes:
        if shown[n] is None and n.all_input_nodes:
            shown[n] = shown[n.all_input_nodes[0]]
    order = [n for n in nodes if n in found]
    index = {n: i for i, n in enumerate(order)}
    result = [found[n] for n in order]
    for node in order:
        inputs = [arg for arg in node.args if isinstance(arg, torch.fx.Node)]
        if found[node].kind != "add" or len(inputs) != 2:  # not the sum of two paths
            continue
        a, b = inputs
        own_a, own_b = _ancestors(a) - _ancestors(b), _ancestors(b) - _ancestors(a)
        if len(own_b) > len(own_a):
            a, b, own_a, own_b = b, a, own_b, own_a
        if own_b:  # the shortcut has layers: it leaves the branch where they take their input
            starts = {i for n in own_b for i in n.all_input_nodes if i not in own_b}
            fork = max((shown[i] for i in starts), key=index.get)
        else:
            fork = shown[b]
        own = [n for n in order if n in own_b]
        for n in own:
            result[index[n]] = _replace(result[index[n]], joins=index[node])
        result[index[node]] = _replace(result[index[node]], fork=index[fork],
                                       reshapes=any(found[n].reshapes for n in own))
    first = next((modules.get(n.target) for n in nodes if n.op == "call_module"), None)
    channels = getattr(first, "in_channels", getattr(first, "num_features", None))
    if channels is not None:
        result[0] = _replace(result[0], text=label("x, {c} channels", c=channels), channels=channels)
    return result


# --- drawing ----------------------------------------------------------------------------------------

WIDTH, HEIGHT, STEP = 1.9, 0.3, 0.5  # a box of the branch, and the distance between rows (inches)
SIDE = WIDTH / 2 + 0.35 + 0.85  # the shortcut's column, right of the branch
COLOURS = {"conv": "#cfe2f3", "norm": "#fff2cc", "relu": "#d9ead3", "pad": "#f4cccc", "pool": "#ead1dc",
           "linear": "#ead1dc"}


def _box(ax, x, y, text, kind, width=WIDTH, height=HEIGHT, rotation=0, fontsize=8):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0,rounding_size=0.06", lw=0.8, ec="0.25",
                                fc=COLOURS.get(kind, "0.92"), zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, rotation=rotation, zorder=4)


def _arrow(ax, start, end, **kwargs):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, lw=0.9, color="0.2",
                                 shrinkA=0, shrinkB=0, **kwargs))


def draw_block(block: nn.Module, ax=None, title: str | None = None):
    """A block as the paper draws it: its branch top to bottom, its shortcut on the right, joining the
    branch at the addition (dashed where it changes the shape). Every box is a layer of
    :func:`trace_layers`, so the drawing is the block's ``forward``. Returns the Axes."""
    steps = trace_layers(block)
    main = [i for i, s in enumerate(steps) if not s.shortcut]
    ys = {i: -row * STEP for row, i in enumerate(main)}
    if ax is None:
        _, ax = plt.subplots(figsize=(SIDE + 1.8 + WIDTH / 2, STEP * len(main) + 0.5))
    half = {i: (0.17 if steps[i].kind == "add" else 0.1 if steps[i].kind == "input" else HEIGHT / 2)
            for i in main}
    for i in main:
        s = steps[i]
        if s.kind == "input":
            ax.text(0, ys[i], s.text, ha="center", va="center", fontsize=8)
        elif s.kind == "add":
            ax.add_patch(Circle((0, ys[i]), half[i], fc="white", ec="0.2", lw=0.9, zorder=3))
            ax.text(0, ys[i], "+", ha="center", va="center", fontsize=10)
        else:
            _box(ax, 0, ys[i], s.text, s.kind)
    for above, below in zip(main, main[1:], strict=False):
        _arrow(ax, (0, ys[above] - half[above]), (0, ys[below] + half[below]))
    _arrow(ax, (0, ys[main[-1]] - half[main[-1]]), (0, ys[main[-1]] - STEP + 0.1))
    for j in (i for i in main if steps[i].fork is not None):
        _draw_shortcut(ax, steps, j, ys, half)
    ax.set_xlim(-WIDTH / 2 - 0.1, SIDE + 1.7)
    ax.set_ylim(ys[main[-1]] - STEP, 0.25)
    ax.set_aspect("equal")
    ax.set_anchor("N")  # blocks of different lengths side by side start at the same height
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _draw_shortcut(ax, steps, j, ys, half):
    add, own = steps[j], [i for i, s in enumerate(steps) if s.joins == j]
    top = ys[add.fork] - half[add.fork] - 0.08  # just below the layer it leaves from
    style = dict(ls=(0, (4, 2.5)) if add.reshapes else "-", color="0.2", lw=0.9)
    ax.plot([0, SIDE, SIDE], [top, top, ys[j] + 0.0], **style)
    _arrow(ax, (SIDE, ys[j]), (half[j], ys[j]), linestyle=style["ls"])
    rows = [top + (ys[j] - top) * (k + 1) / (len(own) + 1) for k in range(len(own))]
    for i, y in zip(own, rows, strict=True):
        _box(ax, SIDE, y, steps[i].text, steps[i].kind, width=1.7)
    word = (label("projection") if any(steps[i].kind == "conv" for i in own)
            else label("identity") if not own else None)
    if word:
        x = SIDE + (0.85 + 0.08 if own else 0.08)
        ax.text(x, (top + ys[j]) / 2, word, ha="left", va="center", fontsize=8, style="italic")


def shortcut_blocks(model: str = "resnet20", stage: int = 2) -> dict[str, tuple[nn.Module, nn.Module]]:
    """For each of the options ``"A"``, ``"B"``, ``"C"``: the first two blocks of ``stage`` of
    ``create_model(model, shortcut=option)`` (built on the meta device: nothing is allocated). The
    first changes the shape, the second keeps it."""
    blocks = {}
    for option in "ABC":
        with torch.device("meta"):
            net = create_model(model, shortcut=option)
        first, second = getattr(net, f"layer{stage}")[:2]
        blocks[option] = (first, second)
    return blocks


def draw_shortcut_options(model: str = "resnet20", stage: int = 2):
    """The paper's shortcut options on the first two blocks of a stage of ``model``: one row per option,
    the block that changes the shape on the left, the one that keeps it on the right (two columns, so that
    the figure keeps a legible size in a page's column). Returns the Figure."""
    blocks = shortcut_blocks(model, stage)
    rows = 1 + len(trace_layers(blocks["A"][0]))
    fig, axes = plt.subplots(3, 2, figsize=(2 * (SIDE + 1.8 + WIDTH / 2), 3 * STEP * rows),
                             layout="constrained")
    for row, (option, pair) in enumerate(blocks.items()):
        for col, block in enumerate(pair):
            draw_block(block, ax=axes[row, col],
                       title=label("option {o}, block {b} of stage {s}", o=option, b=col + 1, s=stage))
    return fig


def draw_networks(models: dict[str, nn.Module], ax=None):
    """Networks laid on their side, one row each, in the manner of the paper's Fig. 3: every layer with
    weights and every pooling as a box, input on the left; shortcuts as arcs over the layers they skip,
    dashed where they change the shape. Returns the Axes."""
    traced = {name: trace_layers(m) for name, m in models.items()}
    boxed = {name: [i for i, s in enumerate(steps) if not s.shortcut and s.kind in ("conv", "linear", "pool")]
             for name, steps in traced.items()}
    step, width, height, gap = 0.42, 0.3, 1.25, 2.3
    longest = max(len(b) for b in boxed.values())
    if ax is None:
        _, ax = plt.subplots(figsize=(step * longest + 0.4, gap * len(models)))
    for row, (name, steps) in enumerate(traced.items()):
        y = -row * gap
        xs = {i: k * step for k, i in enumerate(boxed[name])}
        for i, x in xs.items():
            _box(ax, x, y, steps[i].text, steps[i].kind, width=width, height=height, rotation=90,
                 fontsize=6.5)
        for a, b in zip(boxed[name], boxed[name][1:], strict=False):
            _arrow(ax, (xs[a] + width / 2, y), (xs[b] - width / 2, y))
        adds = [s for s in steps if s.fork is not None]
        for j, s in enumerate(steps):
            if s.fork is not None:
                start, end = _gap_after(xs, s.fork, step), _gap_after(xs, j, step)
                ax.add_patch(FancyArrowPatch((start, y + height / 2), (end, y + height / 2),
                                             connectionstyle="arc3,rad=-0.45", arrowstyle="-|>",
                                             mutation_scale=7, lw=0.8, color="0.2", shrinkA=0, shrinkB=0,
                                             linestyle=(0, (3, 2)) if s.reshapes else "-"))
        weights = sum(steps[i].kind in ("conv", "linear") for i in boxed[name])
        if adds:
            text = label("{name}, residual: {n} layers with weights, {k} shortcuts ({d} dashed: they "
                         "change the shape)", name=name, n=weights, k=len(adds),
                         d=sum(s.reshapes for s in adds))
        else:
            text = label("{name}, plain: {n} layers with weights, no shortcuts", name=name, n=weights)
        ax.text(-width / 2, y + height / 2 + 0.45, text, ha="left", va="bottom", fontsize=9)
    ax.set_xlim(-width / 2 - 0.1, step * (longest - 1) + width / 2 + 0.1)
    ax.set_ylim(-(len(models) - 1) * gap - height / 2 - 0.15, height / 2 + 0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


def _gap_after(xs: dict[int, float], i: int, step: float) -> float:
    """The x between the last box at or before layer ``i`` and the next box."""
    last = max((k for k in xs if k <= i), default=None)
    return xs[last] + step / 2 if last is not None else -step / 2
