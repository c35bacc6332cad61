"""Where and how the code runs: the profile, the device, seeds.

One setting chooses the profile: the environment variable ``RESNET_TUTORIAL_PROFILE``.

- ``"cpu"``: the small profile that CI and the book build execute on two CPU cores (Fashion-MNIST subsets;
  MNIST-5k for the fine-tuning chapter's source network).
- ``"gpu"``: the default on a GPU: real CIFAR-10, minutes per chapter on a Colab T4.
- ``"paper"``: the papers' recipes, hours on a GPU; only when chosen.

Unset, it is ``"gpu"`` when a CUDA GPU is present and ``"cpu"`` otherwise.

Two more settings exist so that a chapter's claims can be tried under other conditions (``make sweep``):
``RESNET_TUTORIAL_SEED`` shifts every seed the package and the chapters use by a whole number (default 0),
and ``RESNET_TUTORIAL_CPU_BF16`` (``0`` or ``1``) overrides whether this CPU computes bf16 natively, which
decides what ``amp="auto"`` does on a CPU.

One more caps the work, for the smoke run of the ``gpu`` and ``paper`` profiles on a CPU (``make smoke``):
``RESNET_TUTORIAL_MAX_STEPS=N`` stops every training run of the package (``training.fit``,
``transfer.imagenet_finetune``) after ``N`` optimizer steps in total; the run still evaluates and returns its
result, with the epochs it reached. Unset (or 0): no cap. It is part of the experiment cache's key.
``RESNET_TUTORIAL_SMOKE=1`` (the smoke run too) shrinks the one piece of work that neither training nor the
data's size bounds: the appendix's speed comparison (``reference.speed_comparison``) times batches of 2 images
of 64 pixels in 2 rounds, instead of a GPU's sizes on a CPU.
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from .errors import ConfigError

PROFILE_ENV = "RESNET_TUTORIAL_PROFILE"
PROFILES = ("cpu", "gpu", "paper")
SEED_ENV = "RESNET_TUTORIAL_SEED"
CPU_BF16_ENV = "RESNET_TUTORIAL_CPU_BF16"
MAX_STEPS_ENV = "RESNET_TUTORIAL_MAX_STEPS"
SMOKE_ENV = "RESNET_TUTORIAL_SMOKE"


def get_profile() -> str:
    """``"cpu"``, ``"gpu"`` or ``"paper"``, from ``RESNET_TUTORIAL_PROFILE`` (default: ``"gpu"`` on a GPU, else ``"cpu"``)."""
    value = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
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


def seed_offset() -> int:
    """``RESNET_TUTORIAL_SEED``: the whole number added to every seed (default 0)."""
    value = os.environ.get(SEED_ENV, "").strip()
    try:
        return int(value or 0)
    except ValueError:
        raise ConfigError(f"{SEED_ENV} must be a whole number (the offset added to every seed), "
                          f"got {value!r}: set it to 0, 1, 2, ... or unset it") from None


def max_steps() -> int | None:
    """``RESNET_TUTORIAL_MAX_STEPS``: the most optimizer steps a training run takes, or None (no cap)."""
    value = os.environ.get(MAX_STEPS_ENV, "").strip()
    try:
        steps = int(value or 0)
    except ValueError:
        steps = -1
    if steps < 0:
        raise ConfigError(f"{MAX_STEPS_ENV} must be a whole number of steps (0: no cap), got {value!r}: "
                          "unset it to train in full")
    return steps or None


def smoke_sizes() -> bool:
    """``RESNET_TUTORIAL_SMOKE=1``: the smoke run's sizes for timing loops (see the module doc)."""
    return os.environ.get(SMOKE_ENV, "").strip() == "1"


def shifted(seed: int) -> int:
    """``seed`` plus :func:`seed_offset`: the seed that is really used."""
    return int(seed) + seed_offset()


def generator(seed: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``shifted(seed)``."""
    return torch.Generator().manual_seed(shifted(seed))


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) with ``shifted(seed)``; return a CPU generator seeded the
    same way."""
    seed = shifted(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX on x86, as torch's kernels see it).

    On a CPU without it (most cloud and Colab CPUs), bf16 autocast is emulated and slower than fp32, so
    ``amp="auto"`` uses it only where this is true. ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``
    below AVX-512 count as no, and ``RESNET_TUTORIAL_CPU_BF16=0`` (or ``1``) overrides the answer.
    """
    value = os.environ.get(CPU_BF16_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise ConfigError(f"{CPU_BF16_ENV} must be 0 or 1, got {value!r}: unset it to detect the CPU")
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            return False
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return True  # Arm: oneDNN reports bf16 only where the CPU has its bf16 instructions


def amp_settings(amp, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and to which dtype: bf16 where supported, else fp16 (with a GradScaler).

    ``"auto"``: on for CUDA, and on a CPU only where it computes bf16 natively (``cpu_bf16_native``)."""
    if amp == "auto":
        enabled = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_native())
    else:
        enabled = bool(amp)
    if device.type == "cuda":  # bf16 needs Ampere (8.x); a T4 (7.5) only emulates it, slowly: fp16 there
        return enabled, torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return enabled, torch.bfloat16


def use_channels_last(channels_last, device: torch.device) -> bool:
    """Whether to use the ``channels_last`` memory layout: ``"auto"`` is on for CUDA (tensor cores prefer it)."""
    return device.type == "cuda" if channels_last == "auto" else bool(channels_last)


def describe_environment(device: torch.device | None = None) -> str:
    """One line: profile, device (with the GPU's name), torch version, CPU threads."""
    device = pick_device(device)
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    else:
        bf16 = "bf16 native: autocast on" if cpu_bf16_native() else "no native bf16: autocast off"
        where += f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {bf16})"
    line = f"profile={get_profile()} | device={where} | torch {torch.__version__} | Python {platform.python_version()}"
    return line + (f" | seed offset {seed_offset()}" if seed_offset() else "")
