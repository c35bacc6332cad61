"""Data-parallel training with DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=2 -m resnet_tutorial train ...`` starts one process per
device (or per CPU process with the gloo backend). Each process holds the whole dataset
as tensors and trains on its own share of every epoch's shuffled order (``BatchLoader``
with ``rank``/``world_size``, the equivalent of ``DistributedSampler``) with its own
augmentation draws; DDP broadcasts rank 0's parameters and buffers when it wraps the
model and then averages the gradients, so every process keeps identical weights. Only
rank 0 shows progress and writes files. Multi-node runs are launched the same way
(``--nnodes``, ``--rdzv-endpoint``).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside a run)."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def launched_by_torchrun() -> bool:
    return (
        "RANK" in os.environ
        and "WORLD_SIZE" in os.environ
        and int(os.environ["WORLD_SIZE"]) > 1
    )


def setup(device: str | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment; return
    this process's device.

    NCCL with one GPU per process when CUDA is available, else gloo on the CPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(
        os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1))
    )
    # NCCL needs a GPU per process; with fewer GPUs than processes, every process trains
    # on the CPU.
    use_cuda = (
        device is None or str(device).startswith("cuda")
    ) and torch.cuda.device_count() >= local_world
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel (gradients averaged over processes)."""
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def seed_this_rank(seed: int) -> None:
    """Seed torch's global generator differently on every rank (``seed`` itself outside
    a run).

    Call it after the model is wrapped: DDP has then broadcast rank 0's parameters and
    buffers, so the copies are identical whatever each rank's generator did before; from
    here on, dropout masks and any other draw from the global generator should differ
    between ranks, as their data do.
    """
    rank, world = rank_and_world()
    torch.manual_seed(seed if world == 1 else seed * 1_009 + rank + 1)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all processes (``t`` itself outside a distributed run)."""
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (the notebook widget in Jupyter, when ipywidgets is installed); silent
    when not ``enabled``.
    """
    bar = tqdm
    try:
        # Lazy: ipywidgets is optional (tqdm's notebook widget needs it; without it, plain text bars), and
        # tqdm.auto chooses the widget when it is imported, warning if ipywidgets is missing.
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm as bar
    except ImportError:
        pass

    return bar(
        total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True
    )
