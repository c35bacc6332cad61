"""Where and how the code runs: the profile, the device, seeds.

One setting chooses the profile: the environment variable ``RESNET_TUTORIAL_PROFILE``.

- ``"cpu"``: the small profile that CI and the book build execute on two CPU cores (MNIST-5k).
- ``"gpu"``: the default on a GPU: real CIFAR-10, minutes per chapter on a Colab T4.
- ``"paper"``: the papers' recipes, hours on a GPU; only when chosen.

Unset, it is ``"gpu"`` when a CUDA GPU is present and ``"cpu"`` otherwise.
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

PROFILE_ENV = "RESNET_TUTORIAL_PROFILE"
PROFILES = ("cpu", "gpu", "paper")


def get_profile() -> str:
    """``"cpu"``, ``"gpu"`` or ``"paper"``, from ``RESNET_TUTORIAL_PROFILE`` (default: ``"gpu"`` on a GPU, else ``"cpu"``)."""
    value = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        from .errors import ConfigError

        raise ConfigError(
            f"{PROFILE_ENV} must be one of {', '.join(PROFILES)}, got {value!r}: "
            f"set it to one of them (export {PROFILE_ENV}=cpu) or unset it"
        )
    return value


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else Apple's MPS, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe_environment(device: torch.device | None = None) -> str:
    """One line: profile, device (with the GPU's name), torch version, CPU threads."""
    device = pick_device(device)
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    else:
        where += f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"profile={get_profile()} | device={where} | torch {torch.__version__} | Python {platform.python_version()}"
