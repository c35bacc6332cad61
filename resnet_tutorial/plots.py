"""Plots: training curves, confusion matrices, image grids, gradient-norm profiles.

Each function draws on ``ax`` (a new figure when ``None``) and returns the Axes; ``ax.figure`` is the Figure.
Titles, axis labels and legends go through :func:`label`, so that the Chinese edition of the book (built with
``RESNET_TUTORIAL_LANGUAGE=zh_CN``, see CONTRIBUTING.md) draws them in Chinese.
"""

from __future__ import annotations

import math
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import font_manager
from matplotlib.ticker import MaxNLocator

from .training import History

LANGUAGE_VARIABLE = "RESNET_TUTORIAL_LANGUAGE"

# The figure labels of the Chinese edition, in the terms of book/glossary.md. Keys are the English labels as
# the code writes them, with ``{name}`` fields for the parts filled in by ``label(text, name=...)``.
LABELS_ZH = {
    # resnet_tutorial.plots
    ", ": "、",  # between the metrics of one axis label
    "epoch": "轮次",
    "train error": "训练误差",
    "test error": "测试误差",
    "train loss": "训练损失",
    "test loss": "测试损失",
    "train acc": "训练准确率",
    "test acc": "测试准确率",
    "predicted class": "预测类别",
    "true class": "真实类别",
    "confusion matrix": "混淆矩阵",
    "original": "原图",
    "aug {i}": "增强 {i}",
    "layer (input to output)": "层（从输入到输出）",
    "gradient norm": "梯度范数",
    "gradient norm per layer": "各层的梯度范数",
    # chapter 4
    "computed receptive field, {px} px": "计算得到的感受野，{px} 像素",
    "ResNet-18: log10 |dy/dx| (6 decades)": "ResNet-18：log10 |dy/dx|（6 个数量级）",
    "the row through the centre, relative": "穿过中心的一行（相对值）",
    "input column (pixels)": "输入的列（像素）",
    # chapters 5 and 6
    "{kind}, with batch norm": "{kind}，有批量归一化",
    "{kind}, without batch norm": "{kind}，无批量归一化",
    "block (input to output)": "块（从输入到输出）",
    "white noise": "白噪声",
    "brown noise": "布朗噪声",
    "t (line 1)": "t（第 1 条直线）",
    "The slope of the output along a line of inputs, at initialisation (r: lag-1 autocorrelation)":
        "初始化时输出沿一条输入直线的斜率（r：滞后为 1 的自相关系数）",
    "epoch {e}": "第 {e} 轮",
    "deleted block (in depth order; plain nets: only blocks that keep the shape)":
        "被删除的块（按深度排列；普通网络只删除保持形状不变的块）",
    "{name}: mean weight gradient norm per layer": "{name}：各层权重梯度范数的均值",
    "chance": "随机猜测",
    "test accuracy": "测试准确率",
    "Deleting one block of a trained network (dotted: the intact network)":
        "删除已训练网络中的一个块（点线：完整网络）",
}
LABELS_ZH.update({
    # chapter 1
    "parameters (millions, log scale)": "参数量（百万，对数坐标）",
    "compute per image (GMACs, log scale)": "每张图像的计算量（GMAC，对数坐标）",
    "ImageNet top-1 accuracy (%)": "ImageNet top-1 准确率（%）",
    "ImageNet classifiers 2012-2015 (torchvision weights, original recipes)":
        "2012–2015 年的 ImageNet 分类器（torchvision 权重，原始训练方案）",
    # chapter 2
    "plain networks": "普通网络",
    "residual networks": "残差网络",
    "{name} (mean of {n})": "{name}（{n} 次运行的均值）",
    "SGD steps": "SGD 步数",
    "training error (clean images, eval mode)": "训练误差（干净图像，评估模式）",
    "{data}: training error after every epoch, mean and min-max over seeds (the paper's Figs. 1 and 6)":
        "{data}：每个轮次之后的训练误差，各随机种子的均值及最小–最大范围（论文的图 1 和图 6）",
    # chapter 3
    "paper, Table 1": "论文，表 1",
    "ours, v1 (stride on the first 1x1)": "本书，v1（步幅在第一个 1x1 卷积上）",
    "ours, v1.5 (stride on the 3x3)": "本书，v1.5（步幅在 3x3 卷积上）",
    "billion multiply-accumulates": "十亿次乘加运算",
    "Cost of one 224x224 image, counted by torch.utils.flop_counter":
        "一张 224x224 图像的计算代价（由 torch.utils.flop_counter 计数）",
    # chapter 7
    "loss": "损失",
    "error": "误差",
    "true {true}\nsaid {said}\np={p:.2f}": "真实 {true}\n预测 {said}\np={p:.2f}",
    "the {n} most confident of {m} mistakes": "{m} 个错误中置信度最高的 {n} 个",
    # chapter 8
    "source: MNIST": "源：MNIST",
    "target: scikit-learn digits, 8x8 upsampled to 28x28": "目标：scikit-learn digits，8x8 上采样到 28x28",
    "from scratch": "从头训练",
    "linear probe": "线性探测",
    "fine-tune, per-stage LRs": "微调，各阶段学习率",
    "fine-tune, BN statistics frozen": "微调，冻结 BN 统计量",
    "error on the digits, {n} labels per class (dashed: training, solid: test)":
        "digits 上的误差，每类 {n} 个标签（虚线：训练，实线：测试）",
    # chapter 9
    "query": "查询",
    "pixels": "像素",
    "queries, their {k} neighbours in feature space (cosine), and in pixel space":
        "查询图像，以及它们在特征空间（余弦）和像素空间中的 {k} 个近邻",
    "ResNet-20 features": "ResNet-20 特征",
    "PCA of the test split: {title}\n{k} nearest neighbours in the map: {share:.0f}% same class":
        "测试集的 PCA：{title}\n图中 {k} 个最近邻：{share:.0f}% 属于同一类别",
    "first principal component": "第一主成分",
    "second principal component": "第二主成分",
    "class": "类别",
    "CAM of\n'{c}'": "“{c}”\n的类激活图",
    "{name}: {shape}": "{name}：{shape}",
    # chapter 11
    "training step": "一步训练",
    "inference": "推理",
    "ms per batch (median)": "每批毫秒数（中位数）",
    "{name}, batch {batch} at {size}x{size} on {device}": "{name}，批量 {batch}，{size}x{size}，设备 {device}",
    "untrained {stage}\n{side}x{side}, mean of {n} maps": "未训练的 {stage}\n{side}x{side}，{n} 张特征图的均值",
    "ours": "本书",
    "implementation": "实现",
    "astronaut": "宇航员",
    "coffee": "咖啡",
    "chelsea": "猫（chelsea）",
    "{name}: '{c}', p={p:.2f}": "{name}：“{c}”，p={p:.2f}",
    "{name}: {category}": "{name}：{category}",
})
LABELS_ZH.update({
    # resnet_tutorial.diagrams: the drawings of the blocks (chapters 2, 3 and 5)
    "{k}x{k} conv, {c}": "{k}x{k} 卷积，{c}",
    ", {g} groups": "，{g} 组",
    ", /{s}": "，/{s}",
    "zero-padding +{c}": "零填充 +{c}",
    "global avg pool": "全局平均池化",
    "global {p} pool": "全局 {p} 池化",
    "{k}x{k} max pool": "{k}x{k} 最大池化",
    "fc, {n}": "全连接，{n}",
    "x, {c} channels": "x，{c} 个通道",
    "identity": "恒等映射",
    "projection": "投影",
    "option {o}, block {b} of stage {s}": "选项 {o}，第 {s} 阶段的第 {b} 个块",
    "{name}, residual: {n} layers with weights, {k} shortcuts ({d} dashed: they change the shape)":
        "{name}，残差网络：{n} 个带权重的层，{k} 条捷径连接（{d} 条虚线：它们改变形状）",
    "{name}, plain: {n} layers with weights, no shortcuts": "{name}，普通网络：{n} 个带权重的层，没有捷径连接",
    "basic block": "基本块",
    "bottleneck block": "瓶颈块",
    "pre-activation basic block": "预激活基本块",
})
#: The class names of Fashion-MNIST (torchvision's spelling) in Chinese, for figures that show them.
CLASSES_ZH = {
    "T-shirt/top": "T恤/上衣", "Trouser": "裤子", "Pullover": "套头衫", "Dress": "连衣裙", "Coat": "外套",
    "Sandal": "凉鞋", "Shirt": "衬衫", "Sneaker": "运动鞋", "Bag": "包", "Ankle boot": "短靴",
}
LABELS = {"zh_CN": LABELS_ZH}
CLASSES = {"zh_CN": CLASSES_ZH}
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei")


def language() -> str:
    """The language figures are drawn in: ``RESNET_TUTORIAL_LANGUAGE`` (``en`` when unset)."""
    return os.environ.get(LANGUAGE_VARIABLE, "en") or "en"


def label(text: str, **fields) -> str:
    """A figure's title, axis label or legend entry in the language of the edition being built.

    ``label("train error")`` is ``"train error"`` in English and ``"训练误差"`` in the Chinese edition;
    ``label("aug {i}", i=3)`` fills the fields after translating. A label the table lacks is an error in a
    translated edition (so that a new English label cannot land untranslated), and the first translated label
    gives matplotlib a CJK font."""
    lang = language()
    if lang != "en":
        if lang not in LABELS:
            raise ValueError(f"{LANGUAGE_VARIABLE}={lang!r}: figure labels exist for en and {', '.join(LABELS)}")
        if text not in LABELS[lang]:
            raise KeyError(f"figure label {text!r} has no {lang} translation: add it to "
                           f"resnet_tutorial.plots.LABELS[{lang!r}]")
        use_language_font()
        text = LABELS[lang][text]
    return text.format(**fields) if fields else text


def class_label(name: str) -> str:
    """A class name in the language of the edition being built: Fashion-MNIST's ``"Coat"`` is ``"外套"`` in
    the Chinese edition; a name the table lacks (a digit, a folder's name) stays as it is."""
    names = CLASSES.get(language(), {})
    if name in names:
        use_language_font()
    return names.get(name, name)


def use_language_font() -> None:
    """Put an installed CJK font behind the default font: matplotlib falls back glyph by glyph along
    ``font.family``, so Latin text keeps its usual font and only the Chinese characters come from the CJK one.
    Called when the package is imported for a translated edition: a figure's title and axis labels take
    their font when its axes are created, before any label is set."""
    family = list(matplotlib.rcParams["font.family"])
    if any(f in family for f in CJK_FONTS):
        return
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not names.intersection(CJK_FONTS):  # a font installed after matplotlib built its font cache
        font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
        names = {f.name for f in font_manager.fontManager.ttflist}
    found = [f for f in CJK_FONTS if f in names]
    if not found:
        raise RuntimeError("no CJK font for the Chinese figure labels: install fonts-noto-cjk "
                           "(sudo apt-get install fonts-noto-cjk; `make book-zh` does it as root)")
    matplotlib.rcParams["font.family"] = family + found[:1]


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_history(histories, metrics=("train_error", "test_error"), ax=None, title=None):
    """Curves of ``metrics`` over the epochs, one colour per run (``{"ResNet-20": history, ...}``);
    training metrics dashed, test metrics solid, as in the paper's Figure 1."""
    if isinstance(histories, History):
        histories = {"run": histories}
    ax = _axes(ax)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for i, (name, history) in enumerate(histories.items()):
        for metric in metrics:
            values = history.as_arrays(metric)
            epochs = np.array([e["epoch"] for e in history.epochs])
            ok = ~np.isnan(values)
            style = "--" if metric.startswith("train") else "-"
            ax.plot(epochs[ok], values[ok], style, color=f"C{i}", label=f"{name} {label(metric.replace('_', ' '))}")
    ax.set_xlabel(label("epoch"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(label(", ").join(label(m.replace("_", " ")) for m in metrics))
    if any(m.endswith("error") or m.endswith("acc") for m in metrics):
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_confusion_matrix(cm, classes, ax=None, normalize: bool = False, title="confusion matrix"):
    """The confusion matrix as an image: rows are true classes, columns predicted ones."""
    cm = torch.as_tensor(cm).double()
    if normalize:
        cm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    classes = [class_label(c) for c in classes]
    ax = _axes(ax, figsize=(1.2 + 0.45 * n, 1 + 0.45 * n))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45 if max(len(c) for c in classes) > 2 else 0, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel(label("predicted class"))
    ax.set_ylabel(label("true class"))
    ax.set_title(label(title) if title == "confusion matrix" else title)
    vmax = cm.max().item() or 1
    for i in range(n):
        for j in range(n):
            v = cm[i, j].item()
            if v:
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if v > vmax / 2 else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    return ax


def show_images(images, labels=None, classes=None, nrow: int = 8, ax=None, data=None, title=None):
    """A grid of images: uint8 ``(N, C, H, W)``, or floats in 0..1, or normalised floats with ``data``
    given (then they are denormalised). ``labels`` (indices or strings) become captions."""
    images = torch.as_tensor(images).detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif data is not None:
        images = data.denormalize(images)
    if classes is None and data is not None:
        classes = data.classes
    n = len(images)
    rows = math.ceil(n / nrow)
    cols = min(n, nrow)
    ax = _axes(ax, figsize=(1.1 * cols, 1.25 * rows))
    c, h, w = images.shape[1:]
    pad = 2
    gap = pad + (max(3, h // 4) if labels is not None else 0)  # between rows: room for the captions
    grid = np.ones((rows * (h + gap), cols * (w + pad), 3))
    for k, img in enumerate(images):
        r, q = divmod(k, nrow)
        arr = img.clamp(0, 1).permute(1, 2, 0).numpy()
        top = r * (h + gap) + gap - pad
        grid[top : top + h, q * (w + pad) : q * (w + pad) + w] = arr if c == 3 else arr[..., :1]
        if labels is not None:
            lab = labels[k]
            lab = lab.item() if isinstance(lab, torch.Tensor) else lab
            text = class_label(classes[lab]) if classes is not None and isinstance(lab, int) else str(lab)
            ax.text(q * (w + pad) + w / 2, top - 0.5, text, ha="center", va="bottom", fontsize=7)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_augmentations(data, index: int = 0, n: int = 8, seed: int = 0, ax=None):
    """One training image and ``n - 1`` random augmentations of it, as the training loop makes them."""
    x = data.train.images[index : index + 1].repeat(n, 1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([x[:1], data.augment(x[1:], g)])
    captions = [label("original")] + [label("aug {i}", i=i) for i in range(1, n)]
    return show_images(x, labels=captions, nrow=n, ax=ax)


def plot_grad_norms(norms, log: bool = True, ax=None, title=None):
    """Gradient norm against layer depth, one line per model: ``{"ResNet-56": {"conv1": 0.3, ...}, ...}``
    (from :func:`~resnet_tutorial.training.layer_grad_norms`). A ``History.grad_norms`` (lists per
    epoch) is drawn at its last epoch."""
    ax = _axes(ax)
    for i, (name, layers) in enumerate(norms.items()):
        values = [v[-1] if isinstance(v, list | tuple) else float(v) for v in layers.values()]
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, color=f"C{i}", label=name)
    ax.set_xlabel(label("layer (input to output)"))
    ax.set_ylabel(label("gradient norm"))
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(label("gradient norm per layer") if title is None else title)
    return ax
