"""A trained ResNet as a backbone: features, nearest neighbours, a 2-D projection, feature maps and CAMs.

Every function takes a model with the timm face of :class:`resnet_tutorial.models.ResNet`
(``forward_features``, ``forward_head(pre_logits=True)``, ``stage_names``, ``fc``) and batches of
normalised float images, shape (N, C, H, W).

* :func:`extract_features`: the pooled feature vector of each image (what a detector or a retrieval
  system builds on), in evaluation mode, without gradients, in batches.
* :func:`nearest_neighbours`: the k most similar rows of a feature bank (cosine similarity by default).
* :func:`neighbour_precision`: how often the neighbours share the query's label.
* :func:`project_2d`: a PCA projection to two dimensions for a scatter plot.
* :func:`stage_outputs`: the feature map after the stem and after each stage.
* :func:`class_activation_map`: where the image supports a class, Zhou et al. (2016): the classifier's
  weights for that class applied to the last feature map, before the global average pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import eval_mode


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - every ResNet has parameters
        return torch.device("cpu")


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Pooled features, shape (N, model.num_features), on the CPU.

    ``forward_features`` then ``forward_head(pre_logits=True)``: global average pooling, no classifier.
    The model is put in evaluation mode (BN uses its running statistics) and restored afterwards.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    device = _device_of(model)
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, dtype=torch.float32)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out) if out else torch.empty(0, getattr(model, "num_features", 0))


def nearest_neighbours(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 5,
    metric: str = "cosine",
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``bank`` most similar to each row of ``queries``.

    Args:
        queries: (Q, D) features.
        bank: (N, D) features to search.
        k: neighbours per query.
        metric: ``"cosine"`` (similarity of the directions; returned scores are cosines, higher is
            closer) or ``"euclidean"`` (returned scores are negative distances, higher is closer).
        exclude_self: ``queries`` is ``bank`` itself: skip each query's own row.

    Returns:
        ``(indices, scores)``, each (Q, k), best first.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"expected (Q, D) and (N, D) features, got {tuple(queries.shape)} and {tuple(bank.shape)}")
    if exclude_self and queries.shape[0] != bank.shape[0]:
        raise ValueError("exclude_self=True needs queries and bank to be the same rows")
    if not 0 < k <= bank.shape[0] - int(exclude_self):
        raise ValueError(f"k must be between 1 and {bank.shape[0] - int(exclude_self)}, got {k}")
    q, b = queries.float(), bank.float()
    if metric == "cosine":
        scores = F.normalize(q, dim=1) @ F.normalize(b, dim=1).T
    elif metric == "euclidean":
        scores = -torch.cdist(q, b)
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if exclude_self:
        scores.fill_diagonal_(float("-inf"))
    top = scores.topk(k, dim=1)
    return top.indices, top.values


def neighbour_precision(query_labels: torch.Tensor, bank_labels: torch.Tensor, indices: torch.Tensor) -> float:
    """The fraction of retrieved neighbours (all k of every query) whose label is the query's."""
    same = bank_labels[indices] == query_labels[:, None]
    return same.float().mean().item()


def project_2d(features: torch.Tensor) -> torch.Tensor:
    """PCA to two dimensions: the centred features projected on their two principal directions, (N, 2)."""
    x = features.float() - features.float().mean(dim=0, keepdim=True)
    # The right singular vectors are the principal directions; fix their signs for reproducible plots.
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    directions = vh[:2]
    signs = torch.sign(directions[torch.arange(2), directions.abs().argmax(dim=1)])
    return x @ (directions * signs[:, None]).T


@torch.no_grad()
def stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The feature map after the stem (``"stem"``) and after each stage (``"layer1"`` ...), in eval mode.

    Recorded by forward hooks while the model's own ``forward_features`` runs; the last map is what
    ``forward_features`` returns, so a pre-activation net's final BN-ReLU is part of it.
    """
    maps: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda module, inputs, output: maps.__setitem__(name, output.cpu())

    modules = {"stem": model.maxpool, **dict(zip(model.stage_names, model.stages(), strict=True))}
    hooks = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    try:
        with eval_mode(model):
            maps[model.stage_names[-1]] = model.forward_features(x.to(_device_of(model), dtype=torch.float32)).cpu()
    finally:
        for hook in hooks:
            hook.remove()
    return maps


@torch.no_grad()
def class_activation_map(
    model: nn.Module,
    x: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    upsample: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation maps (Zhou et al. 2016) of a batch of images.

    A ResNet ends with global average pooling and one linear layer, so its logit for
    class c is the spatial mean of ``M_c(i, j) = sum_k w_ck f_k(i, j) + b_c``, where
    ``f`` is the last feature map. ``M_c`` is the class activation map: the logit,
    position by position, before the averaging.

    Args:
        model: a ResNet with a linear classifier ``fc``.
        x: normalised images (N, C, H, W).
        class_idx: the class of each map; ``None`` takes each image's predicted class.
        upsample: resize the maps bilinearly to the input's height and width.

    Returns:
        ``(maps, classes)``: maps (N, h, w) on the CPU, in logit units (their spatial
        mean is the logit, before upsampling); classes (N,).
    """
    fc = model.get_classifier() if hasattr(model, "get_classifier") else model.fc
    if not isinstance(fc, nn.Linear):
        raise ValueError(
            "a class activation map needs a linear classifier after global average "
            "pooling"
        )
    with eval_mode(model):
        x = x.to(_device_of(model), dtype=torch.float32)
        feats = model.forward_features(x)  # (N, K, h, w)
        bias = fc.bias[None, :, None, None]
        maps_all = torch.einsum("ck,nkhw->nchw", fc.weight, feats) + bias
        if class_idx is None:
            classes = maps_all.mean(dim=(2, 3)).argmax(dim=1)
        else:
            classes = torch.as_tensor(class_idx, device=maps_all.device)
            classes = classes.long().expand(len(x))
        maps = maps_all[torch.arange(len(x), device=maps_all.device), classes]
        if upsample:
            maps = F.interpolate(
                maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
    return maps.cpu(), classes.cpu()
