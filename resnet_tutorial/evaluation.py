"""Evaluation: accuracy, top-k, per-class precision/recall/F1, the confusion matrix, and ``predict``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .runtime import pick_device


def accuracy(logits: torch.Tensor, y: torch.Tensor, topk=(1,)):
    """The fraction of samples whose label is among the ``k`` highest logits, for each ``k`` in ``topk``.

    A float for one ``k`` (``accuracy(logits, y)``), a list of floats for several (``topk=(1, 5)``).
    """
    ks = (topk,) if isinstance(topk, int) else tuple(topk)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == y[:, None]
    result = [hits[:, : min(k, kmax)].any(1).float().mean().item() for k in ks]
    return result[0] if len(result) == 1 else result


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[i, j]``: how many samples of true class ``i`` were predicted as class ``j``."""
    idx = y.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(cm: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class, from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0 * tp)
    return [
        dict(cls=c, precision=p, recall=r, f1=f, support=int(s))
        for c, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), actual.tolist(), strict=True)
    ]


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
        """A text table like scikit-learn's ``classification_report``."""
        width = max(10, *(len(c) for c in self.classes))
        lines = [f"{'class':>{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
        for row in self.per_class:
            lines.append(f"{row['cls']:>{width}} {row['precision']:>9.4f} {row['recall']:>9.4f} "
                         f"{row['f1']:>9.4f} {row['support']:>9d}")
        macro = {k: float(np.mean([r[k] for r in self.per_class])) for k in ("precision", "recall", "f1")}
        lines.append(f"{'macro avg':>{width}} {macro['precision']:>9.4f} {macro['recall']:>9.4f} "
                     f"{macro['f1']:>9.4f} {len(self.labels):>9d}")
        lines.append(f"accuracy {self.accuracy:.4f} | top-5 {self.top5:.4f} | loss {self.loss:.4f} "
                     f"| {len(self.labels)} images")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Metrics(accuracy={self.accuracy:.4f}, top5={self.top5:.4f}, loss={self.loss:.4f}, n={len(self.labels)})"


@torch.no_grad()
def evaluate(model: nn.Module, data, split: str = "test", batch_size: int = 512, device=None) -> Metrics:
    """Run ``model`` over a split of ``data`` (no augmentation) and measure it."""
    device = pick_device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    logits = []
    for x, _ in data.loader(split, batch_size, shuffle=False, augment=False, device=device):
        logits.append(model(x).float().cpu())
    model.train(was_training)
    logits = torch.cat(logits)
    labels = data.split(split).labels.cpu()
    probs = logits.softmax(1)
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, labels, data.num_classes)
    return Metrics(
        accuracy=(pred == labels).float().mean().item(),
        top5=accuracy(logits, labels, topk=5),
        loss=F.cross_entropy(logits, labels).item(),
        confusion=cm,
        per_class=per_class_metrics(cm, data.classes),
        predictions=pred,
        labels=labels,
        probabilities=probs,
        classes=list(data.classes),
    )


def to_image_tensor(image, data) -> torch.Tensor:
    """A PIL image or a ``(C, H, W)`` tensor (uint8 0..255 or float 0..1) as uint8 ``(C, H, W)`` in the
    dataset's channels and size."""
    from .data import resize

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
    was_training = model.training
    model.eval()
    probs = model(x).float().softmax(1)[0].cpu()
    model.train(was_training)
    p, idx = probs.topk(min(topk, len(probs)))
    return [(data.classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist(), strict=True)]
