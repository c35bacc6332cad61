"""Our ResNets against timm's and torchvision's, timed side by side in one process.

    python benchmarks/compare_speed.py --model resnet50 [--device cuda] [--repeats 9]

Prints the parity table, the speed table (train step and inference, NCHW and channels_last, medians of
interleaved rounds) and one line per library with our train-step speed relative to it. The goal of
the project is a ratio of at least 0.97 against both. Ratios, not absolute times, are the result:
these machines are shared and noisy, and interleaving slows every contestant alike.
"""

from __future__ import annotations

import argparse

from resnet_tutorial.reference import (
    format_parity,
    format_speed,
    parity_report,
    speed_comparison,
    speed_ratios,
)
from resnet_tutorial.runtime import describe_environment, pick_device


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--goal", type=float, default=0.97, help="the least acceptable train-step speed ratio"
    )
    args = parser.parse_args()

    device = pick_device(args.device)
    print(describe_environment(device))
    print(format_parity(parity_report(args.model)))
    print()
    rows = speed_comparison(
        args.model,
        batch_size=args.batch_size,
        image_size=args.image_size,
        repeats=args.repeats,
        device=device,
    )
    print(format_speed(rows))
    print()
    for fmt in ("nchw", "channels_last"):
        for library in ("timm", "torchvision"):
            ratio = speed_ratios(rows)[f"{library} ({fmt})"]
            verdict = "meets" if ratio >= args.goal else "BELOW"
            print(
                f"train step, {fmt:<13}: our speed / {library:<11} = {ratio:.3f}  ({verdict} the goal {args.goal})"
            )


if __name__ == "__main__":
    main()
