"""The ``resnet-tutorial`` command (also ``python -m resnet_tutorial``).

Each sub-command is one small function; errors the user can fix are printed as one line, with a
non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ResnetTutorialError


class CLIError(ResnetTutorialError):
    """An error whose message tells the user what to do; printed without a traceback."""


# --- models ---------------------------------------------------------------------------------------


def _cmd_models(args: argparse.Namespace) -> int:
    from .analysis import model_table

    rows = model_table(args.pattern)
    if not rows:
        raise CLIError(f"no registered model matches {args.pattern!r}")
    header = f"{'model':<18} {'family':<15} {'input':>9} {'params':>12} {'GMACs':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<18} {r['family']:<15} {r['input']:>9} {r['params']:>12,} {r['macs'] / 1e9:>9.3f}"
        )
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list every model with its parameters and multiply-accumulates")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_models)


# --- compare --------------------------------------------------------------------------------------


def _cmd_compare(args: argparse.Namespace) -> int:
    from .reference import format_parity, format_speed, parity_report, speed_comparison

    print(format_parity(parity_report(args.model, libraries=args.libraries)))
    if args.repeats > 0:
        print()
        table = speed_comparison(
            args.model,
            libraries=args.libraries,
            batch_size=args.batch_size,
            image_size=args.image_size,
            repeats=args.repeats,
            device=args.device,
            progress=not args.quiet,
        )
        print(format_speed(table))
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="parity and speed of our model against timm and torchvision")
    p.add_argument("--model", default="resnet50", help="an ImageNet-family model, e.g. resnet50")
    p.add_argument("--libraries", nargs="+", default=["timm", "torchvision"], choices=["timm", "torchvision"])
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 on a GPU, 8 on the CPU")
    p.add_argument("--image-size", type=int, default=None, help="default: 224 on a GPU, 128 on the CPU")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per variant; 0 skips the speed table")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="resnet-tutorial",
        description="Build, compare, train and evaluate the ResNets of the resnet-tutorial book.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_models(sub)
    _add_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ResnetTutorialError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
