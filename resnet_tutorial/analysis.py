"""What a model costs: parameters, multiply-accumulates, and the shape of its output stage by stage.

Multiply-accumulates are counted by PyTorch's own ``torch.utils.flop_counter`` (FLOPs / 2) on the
``meta`` device, so no memory is allocated and no arithmetic is done: counting ResNet-152 takes well
under a second. Like the paper's Table 1, only convolutions and the classifier are counted (BN, ReLU,
pooling and the additions are a rounding error).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import create_model, list_models, model_family

#: The input each family is counted at: ImageNet 224x224, CIFAR 32x32.
DEFAULT_INPUT = {"imagenet": (1, 3, 224, 224), "cifar": (1, 3, 32, 32)}


def default_input_size(name: str) -> tuple[int, int, int, int]:
    """The input size the paper counts a registered model at."""
    return DEFAULT_INPUT["imagenet" if model_family(name).endswith("imagenet") else "cifar"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _on_meta(model: nn.Module) -> nn.Module:
    if all(p.device.type == "meta" for p in model.parameters()):
        return model
    return copy.deepcopy(model).to("meta")


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass at ``input_size``.

    FLOPs / 2, as the paper counts them.
    """
    meta_model = _on_meta(model).eval()
    x = torch.empty(*input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(x)
    return counter.get_total_flops() // 2


def stage_table(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> list[dict]:
    """One row per top-level part (stem, each stage, pooling, classifier): output shape, parameters, MACs."""
    meta_model = _on_meta(model).eval()
    rows: list[dict] = []
    handles = []
    for name, module in meta_model.named_children():
        if isinstance(module, nn.Identity) or module is None:
            continue

        def hook(mod, inputs, output, name=name):
            rows.append({"name": name, "output_shape": tuple(output.shape), "params": count_params(mod)})

        handles.append(module.register_forward_hook(hook))
    x = torch.empty(*input_size, device="meta")
    try:
        with torch.no_grad():
            meta_model(x)
    finally:
        for h in handles:
            h.remove()
    for row in rows:
        module = getattr(meta_model, row["name"])
        row["macs"] = _module_macs(meta_model, module, x) if row["params"] else 0
    return rows


def _module_macs(model: nn.Module, module: nn.Module, x: torch.Tensor) -> int:
    """MACs of one child module, measured on the input it receives inside ``model``."""
    captured: dict = {}

    def grab(mod, inputs):
        captured["x"] = inputs[0]

    handle = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(captured["x"])
    return counter.get_total_flops() // 2


def format_stage_table(rows: list[dict]) -> str:
    """A text table of :func:`stage_table`'s rows, with totals."""
    lines = [f"{'part':<12} {'output shape':<22} {'params':>12} {'MMACs':>10}", "-" * 59]
    for r in rows:
        shape = "x".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['name']:<12} {shape:<22} {r['params']:>12,} {r['macs'] / 1e6:>10.1f}")
    lines.append("-" * 59)
    total_params = sum(r["params"] for r in rows)
    total_macs = sum(r["macs"] for r in rows)
    lines.append(f"{'total':<12} {'':<22} {total_params:>12,} {total_macs / 1e6:>10.1f}")
    return "\n".join(lines)


def model_table(pattern: str | None = None, **kwargs) -> list[dict]:
    """Every registered model (matching ``pattern``): family, input size, parameters, MACs."""
    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):
            model = create_model(name, **kwargs)
        size = default_input_size(name)
        rows.append(
            {
                "model": name,
                "family": model_family(name),
                "input": f"{size[2]}x{size[3]}",
                "params": count_params(model),
                "macs": count_macs(model, size),
            }
        )
    return rows
