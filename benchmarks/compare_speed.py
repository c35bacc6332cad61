"""Our ResNets against timm's and torchvision's, timed side by side in one process.

    python benchmarks/compare_speed.py --model resnet50 [--device cuda] [--repeats 9]

Prints where it runs, then what `resnet-tutorial compare` prints: the parity table, the speed table (train
step and inference, NCHW and channels_last, medians of interleaved rounds) and one line per library with our
train-step speed relative to it, against the project's goal of 0.97. Ratios, not absolute times, are the
result: these machines are shared and noisy, and interleaving slows every contestant alike.
"""

from __future__ import annotations

import sys

from resnet_tutorial.cli import main
from resnet_tutorial.runtime import describe_environment, pick_device


def device_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__":
    argv = sys.argv[1:]
    print(describe_environment(pick_device(device_argument(argv))))
    raise SystemExit(main(["compare", *argv]))
