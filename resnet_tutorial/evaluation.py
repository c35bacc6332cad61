"""Evaluation: one loop over a split (:func:`predict_logits`), the metrics of scikit-learn, ``predict``.

The per-class precision, recall, F1, top-k accuracy and the confusion matrix come from
``sklearn.metrics``; this module only runs the model (in evaluation mode, without gradients, in batches)
and hands the logits over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import resize
from .runtime import amp_settings, pick_device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model): ...`` runs the block in evaluation mode, then restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def shift_views(x: torch.Tensor, fill: torch.Tensor, pixels: int = 1) -> list[torch.Tensor]:
    """A batch and four copies shifted by ``pixels`` up, down, left and right, the uncovered border
    filled with ``fill`` (per channel: a black pixel, normalised), for test-time augmentation."""
    p, (h, w) = pixels, x.shape[-2:]
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    padded = F.pad(x - fill, (p, p, p, p)) + fill
    offsets = [(0, 0), (-p, 0), (p, 0), (0, -p), (0, p)]
    return [padded[..., p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in offsets]


@torch.no_grad()
def predict_logits(model: nn.Module, loader, *, amp: bool = False, amp_dtype=torch.bfloat16,
                   channels_last: bool = False, tta_fill: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of ``model`` for every batch of ``loader``, and the labels, both on the CPU.

    ``tta_fill`` (a black pixel, normalised: ``data.normalize(zeros)``) turns on test-time augmentation:
    the logits are then the log of the mean softmax over the image and its four one-pixel shifts.
    """
    logits, labels = [], []
    with eval_mode(model):
        for x, y in loader:
            views = [x] if tta_fill is None else shift_views(x, tta_fill)
            probs = 0
            for view in views:
                if channels_last:
                    view = view.contiguous(memory_format=torch.channels_last)
                with torch.autocast(view.device.type, dtype=amp_dtype, enabled=amp):
                    out = model(view).float()
                probs = probs + (out.softmax(1) if len(views) > 1 else out)
            logits.append((probs / len(views)).log() if len(views) > 1 else probs)
            labels.append(y)
    if not labels:  # an empty split: no batches
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(logits).cpu(), torch.cat(labels).cpu()


def loss_and_accuracy(model: nn.Module, loader, *, amp: bool = False, amp_dtype=torch.bfloat16,
                      channels_last: bool = False, tta_fill: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` over ``loader`` (``(0.0, 0.0)`` for an empty one),
    from :func:`predict_logits`: what ``fit`` reports after each epoch."""
    logits, labels = predict_logits(model, loader, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
                                    tta_fill=tta_fill)
    if not len(labels):
        return 0.0, 0.0
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def accuracy(logits: torch.Tensor, y: torch.Tensor, topk=(1,)):
    """The fraction of samples whose label is among the ``k`` highest logits, for each ``k`` in ``topk``
    (``sklearn.metrics.top_k_accuracy_score``; a ``k`` of at least the number of classes gives 1).

    A float for one ``k`` (``accuracy(logits, y)``), a list of floats for several (``topk=(1, 5)``).
    """
    from sklearn import metrics as skm  # lazy: scikit-learn is optional (the `data` extra); fit needs none

    ks = (topk,) if isinstance(topk, int) else tuple(topk)
    scores, y, n = logits.float().cpu().numpy(), y.cpu().numpy(), logits.shape[1]

    def top(k: int) -> float:
        if k >= n:
            return 1.0
        if n == 2:  # k == 1; scikit-learn's binary case would threshold at 0.5 when all scores lie in 0..1
            return float((scores.argmax(1) == y).mean())
        return float(skm.top_k_accuracy_score(y, scores, k=k, labels=range(n)))

    result = [top(k) for k in ks]
    return result[0] if len(result) == 1 else result


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[i, j]``: how many samples of true class ``i`` were predicted as class ``j``."""
    from sklearn import metrics as skm  # lazy: scikit-learn is optional (the `data` extra)

    cm = skm.confusion_matrix(y.cpu().numpy(), pred.cpu().numpy(), labels=range(num_classes))
    return torch.from_numpy(cm.astype(np.int64))


def per_class_metrics(pred: torch.Tensor, y: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class
    (``sklearn.metrics.precision_recall_fscore_support``; 0 where a class is never predicted)."""
    from sklearn import metrics as skm  # lazy: scikit-learn is optional (the `data` extra)

    p, r, f, s = skm.precision_recall_fscore_support(y.cpu().numpy(), pred.cpu().numpy(),
                                                      labels=range(len(classes)), zero_division=0)
    return [dict(cls=c, precision=float(p[i]), recall=float(r[i]), f1=float(f[i]), support=int(s[i]))
            for i, c in enumerate(classes)]


@dataclass
class Metrics:
    """The evaluation of a model on one split."""

    accuracy: float
    top5: float
    loss: float
    confusion: torch.Tensor
    per_class: list[dict]
    predictions: torch.Tensor
    labels: torch.Tensor
    probabilities: torch.Tensor
    classes: list[str]

    @property
    def error(self) -> float:
        return 1 - self.accuracy

    def to_dict(self) -> dict:
        """Plain values (for JSON): accuracy, top-5, loss, per-class metrics, confusion matrix."""
        return dict(accuracy=self.accuracy, top5=self.top5, loss=self.loss, per_class=self.per_class,
                    confusion=self.confusion.tolist(), classes=list(self.classes))

    def report(self) -> str:
        """scikit-learn's ``classification_report``, then accuracy, top-5 and loss."""
        from sklearn import metrics as skm  # lazy: scikit-learn is optional (the `data` extra)

        table = skm.classification_report(self.labels.numpy(), self.predictions.numpy(),
                                          labels=range(len(self.classes)), target_names=self.classes,
                                          digits=4, zero_division=0)
        return (f"{table.rstrip()}\naccuracy {self.accuracy:.4f} | top-5 {self.top5:.4f} "
                f"| loss {self.loss:.4f} | {len(self.labels)} images")

    def __repr__(self) -> str:
        return (f"Metrics(accuracy={self.accuracy:.4f}, top5={self.top5:.4f}, loss={self.loss:.4f}, "
                f"n={len(self.labels)})")


def evaluate(model: nn.Module, data, split: str = "test", batch_size: int = 512, device=None,
             tta: bool = False, amp: bool | str = False) -> Metrics:
    """Run ``model`` over a split of ``data`` (no augmentation) and measure it.

    ``tta=True`` averages the predicted probabilities over each image and its four one-pixel shifts.
    By default it computes in float32; ``amp`` autocasts as ``fit`` does (``True``, or ``"auto"``: see
    ``runtime.amp_settings``), which reproduces the accuracy ``fit`` recorded with that setting exactly.
    """
    device = pick_device(device)
    model.to(device)
    loader = data.loader(split, batch_size, shuffle=False, augment=False, device=device)
    black = data.normalize(torch.zeros(data.in_chans, 1, 1, dtype=torch.uint8, device=device)).flatten()
    use_amp, amp_dtype = amp_settings(amp, device)
    logits, labels = predict_logits(model, loader, amp=use_amp, amp_dtype=amp_dtype,
                                    tta_fill=black if tta else None)
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, labels, data.num_classes)
    return Metrics(
        accuracy=float((pred == labels).float().mean()),
        top5=accuracy(logits, labels, topk=5),
        loss=F.cross_entropy(logits, labels).item(),
        confusion=cm,
        per_class=per_class_metrics(pred, labels, data.classes),
        predictions=pred,
        labels=labels,
        probabilities=logits.softmax(1),
        classes=list(data.classes),
    )


def to_image_tensor(image, data) -> torch.Tensor:
    """A PIL image or a ``(C, H, W)`` tensor (uint8 0..255 or float 0..1) as uint8 ``(C, H, W)`` in the
    dataset's channels and size."""
    if not isinstance(image, torch.Tensor):  # a PIL image (or anything numpy can read)
        arr = np.asarray(image.convert("L" if data.in_chans == 1 else "RGB") if hasattr(image, "convert") else image)
        image = torch.from_numpy(arr.copy())
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] != data.in_chans:
        if data.in_chans == 1:
            image = image.float().mean(0, keepdim=True).round().to(torch.uint8)
        elif image.shape[0] == 1:
            image = image.expand(data.in_chans, -1, -1)
    return resize(image[None], data.image_size)[0]


@torch.no_grad()
def predict(model: nn.Module, image, data, topk: int = 3) -> list[tuple[str, float]]:
    """The ``topk`` most probable classes of one image, as ``[(class_name, probability), ...]``."""
    device = next(model.parameters()).device
    x = data.normalize(to_image_tensor(image, data)[None].to(device))
    with eval_mode(model):
        probs = model(x).float().softmax(1)[0].cpu()
    p, idx = probs.topk(min(topk, len(probs)))
    return [(data.classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist(), strict=True)]
