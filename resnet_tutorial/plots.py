"""Plots: training curves, confusion matrices, image grids, gradient-norm profiles.

Each function draws on ``ax`` (a new figure when ``None``) and returns the Axes; ``ax.figure`` is the Figure.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_history(histories, metrics=("train_error", "test_error"), ax=None, title=None):
    """Curves of ``metrics`` over the epochs, one colour per run (``{"ResNet-20": history, ...}``);
    training metrics dashed, test metrics solid, as in the paper's Figure 1."""
    from .training import History

    if isinstance(histories, History):
        histories = {"run": histories}
    from matplotlib.ticker import MaxNLocator

    ax = _axes(ax)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for i, (label, history) in enumerate(histories.items()):
        for metric in metrics:
            values = history.as_arrays(metric)
            epochs = np.array([e["epoch"] for e in history.epochs])
            ok = ~np.isnan(values)
            style = "--" if metric.startswith("train") else "-"
            ax.plot(epochs[ok], values[ok], style, color=f"C{i}", label=f"{label} {metric.replace('_', ' ')}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(", ".join(m.replace("_", " ") for m in metrics))
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
    ax = _axes(ax, figsize=(1.2 + 0.45 * n, 1 + 0.45 * n))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45 if max(len(c) for c in classes) > 2 else 0, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
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
    grid = np.ones((rows * (h + pad), cols * (w + pad), 3))
    for k, img in enumerate(images):
        r, q = divmod(k, nrow)
        arr = img.clamp(0, 1).permute(1, 2, 0).numpy()
        grid[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = arr if c == 3 else arr[..., :1]
        if labels is not None:
            lab = labels[k]
            lab = lab.item() if isinstance(lab, torch.Tensor) else lab
            text = classes[lab] if classes is not None and isinstance(lab, int) else str(lab)
            ax.text(q * (w + pad) + w / 2, r * (h + pad) - 0.5, text, ha="center", va="bottom", fontsize=7)
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
    captions = ["original"] + [f"aug {i}" for i in range(1, n)]
    return show_images(x, labels=captions, nrow=n, ax=ax)


def plot_grad_norms(norms, log: bool = True, ax=None, title="gradient norm per layer"):
    """Gradient norm against layer depth, one line per model: ``{"ResNet-56": {"conv1": 0.3, ...}, ...}``
    (from :func:`~resnet_tutorial.training.layer_grad_norms`). A ``History.grad_norms`` (lists per
    epoch) is drawn at its last epoch."""
    ax = _axes(ax)
    for i, (label, layers) in enumerate(norms.items()):
        values = [v[-1] if isinstance(v, list | tuple) else float(v) for v in layers.values()]
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, color=f"C{i}", label=label)
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("gradient norm")
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)
    return ax
