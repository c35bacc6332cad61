"""The ``resnet-tutorial`` command (also ``python -m resnet_tutorial``).

Each sub-command is one small function; errors the user can fix are printed as one line, with a
non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import warnings

import torch

from . import __version__, distributed, training
from .analysis import model_table
from .checkpoint import CheckpointError, atomic_write, model_from_checkpoint, read_checkpoint
from .data import DATASETS, load_dataset
from .errors import ResnetTutorialError
from .evaluation import evaluate, predict_logits
from .finetune import freeze, load_for_finetuning, stage_lrs, stage_param_groups
from .folder import FolderData, Preprocessing, load_folder, preprocessing_for, split_layout, walk_images
from .models import create_model, model_family
from .models.weights import split_tag
from .reference import format_parity, format_ratios, format_speed, parity_report, speed_comparison
from .runtime import pick_device, seed_everything
from .training import SCHEDULE_ALIASES, SCHEDULES, Recipe, RecipeError


class CLIError(ResnetTutorialError):
    """An error whose message tells the user what to do; printed without a traceback."""


# --- models ---------------------------------------------------------------------------------------


def _cmd_models(args: argparse.Namespace) -> int:
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
    p = sub.add_parser("models",
                       help="list every model with its parameters and multiply-accumulates")
    p.add_argument("pattern", nargs="?", default=None,
                   help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_models)


# --- compare --------------------------------------------------------------------------------------


def _cmd_compare(args: argparse.Namespace) -> int:
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
        print()
        print(format_ratios(table))
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare",
                       help="parity and speed of our model against timm and torchvision")
    p.add_argument("--model", default="resnet50",
                   help="an ImageNet-family model, e.g. resnet50")
    p.add_argument("--libraries", nargs="+", default=["timm", "torchvision"], choices=["timm", "torchvision"])
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 64 on a GPU, 8 on the CPU")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: 224 on a GPU, 128 on the CPU")
    p.add_argument("--repeats", type=int, default=7,
                   help="timed rounds per variant; 0 skips the speed table")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar")
    p.set_defaults(func=_cmd_compare)


# --- train ----------------------------------------------------------------------------------------


def _write_json_atomic(obj, path: str) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def _check_device(name: str | None) -> None:
    """An error for a device string torch cannot parse, or a device this machine does not have."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    available = backend is not None and hasattr(backend, "is_available") and backend.is_available()
    count = backend.device_count() if available and hasattr(backend, "device_count") else 1
    if not available or (device.index or 0) >= count:
        have = f"{count} {device.type} device(s)" if available else f"no {device.type} device"
        raise CLIError(f"--device {name}: this machine has {have}; use --device cpu, or leave --device out")


def _check_out_dir(out: str) -> None:
    """An error when ``out`` is a file, or cannot be created (its nearest existing parent is not writable)."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise CLIError(f"--out {out!r} is a file, not a folder: choose another --out")
        if not os.access(out, os.W_OK | os.X_OK):
            raise CLIError(f"--out {out!r} is not writable: choose another --out")
        return
    parent = os.path.dirname(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"cannot create --out {out!r}: {parent!r} is not a writable folder; choose another --out")


FINETUNE_MODES = ("head", "all", "stages")


def _resolve_pretrained(args: argparse.Namespace) -> None:
    """Fill in ``--model`` and ``--lr`` from ``--pretrained``; an error for options that do not go together."""
    tag_arch = None
    if args.pretrained and not os.path.isfile(args.pretrained):
        if os.sep in args.pretrained or "/" in args.pretrained or os.path.splitext(args.pretrained)[1] in (
                ".pt", ".pth", ".bin", ".ckpt", ".safetensors"):
            raise CLIError(f"--pretrained {args.pretrained!r}: no such file (looked from {os.getcwd()!r}); pass a "
                           "weights file, or a tag such as resnet50.tv2_in1k")
        tag_arch = split_tag(args.pretrained)[0]
        if args.model not in (None, tag_arch):
            raise CLIError(f"--pretrained {args.pretrained} holds a {tag_arch}, but --model is {args.model}: "
                           f"leave --model out, or pass --pretrained {args.model}.<tag>")
    args.model = args.model or tag_arch or "resnet20"
    if args.finetune and not args.pretrained:
        raise CLIError("--finetune chooses what to train of pretrained weights: add --pretrained TAG|FILE "
                       "(from scratch every layer trains)")
    args.finetune = args.finetune or ("stages" if args.pretrained else None)
    if args.lr is None:
        args.lr = 0.01 if args.pretrained else 0.1
    if args.image_size is not None and args.image_size < 16:
        raise CLIError(f"--image-size must be at least 16 pixels, got {args.image_size}")
    if not 0 < args.val_fraction < 1:
        raise CLIError(f"--val-fraction must be between 0 and 1, e.g. 0.2; got {args.val_fraction}")
    if args.workers is not None and args.workers < 0:
        raise CLIError(f"--workers must be 0 or more, got {args.workers}")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The ``Recipe`` that the training options say; its errors as the options' (``--lr must be ...``)."""
    try:
        return Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing)
    except RecipeError as err:
        problems = (f"--{name.replace('_', '-')} {problem}" for name, problem in err.problems.items())
        raise CLIError("; ".join(problems)) from None


def check_train_args(args: argparse.Namespace) -> None:
    """Every check that needs no data and no model, so a bad argument fails before anything is created."""
    _resolve_pretrained(args)
    args.recipe = recipe_from_args(args)
    model_family(args.model)  # an unknown model name fails here, before any data is read
    _check_device(args.device)
    _check_out_dir(args.out)
    if args.train_per_class is not None and (args.train_per_class < 1 or args.dataset == "folder"):
        raise CLIError("--train-per-class takes a whole number of 1 or more, and a dataset held in memory "
                       f"(not folder): got {args.train_per_class} with --dataset {args.dataset}")


def _cmd_train(args: argparse.Namespace) -> int:
    check_train_args(args)
    device = distributed.setup(args.device) if distributed.launched_by_torchrun() else None
    rank, world = distributed.rank_and_world()
    ckpt = os.path.join(args.out, "checkpoint.pt")
    summary_path = os.path.join(args.out, "summary.json")
    if args.resume:
        read_checkpoint(ckpt)  # missing, truncated or foreign: one clear error before training
    elif os.path.exists(ckpt):
        raise CLIError(f"{args.out!r} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    created_dir = not os.path.isdir(args.out)
    existed = {p for p in (ckpt, summary_path) if os.path.exists(p)}
    try:
        folder = _folder_options(args)
        if rank == 0:
            data = load_dataset(args.dataset, args.data_dir, download=not args.no_download, **folder)
        distributed.barrier()  # rank 0 downloads; the others then read its copy
        if rank != 0:
            data = load_dataset(args.dataset, args.data_dir, download=False, **folder)
        if args.train_per_class is not None:  # a stratified subset of the training split, chosen by --split-seed
            data = data.subset(args.train_per_class, seed=args.split_seed)
        seed_everything(args.seed)  # the initial weights too: same command and seed, same weights
        model, param_groups = _train_model(args, data)
        if rank == 0:
            os.makedirs(args.out, exist_ok=True)
            start = f" from {args.pretrained} ({args.finetune})" if args.pretrained else ""
            print(f"training {args.model}{start} on {data.source} | {world} process(es)", flush=True)
        # training.fit, looked up when called (not imported by name): a test replaces it in its module
        history = training.fit(model, data, args.recipe, device=device or args.device, seed=args.seed,
                               progress=not args.quiet, checkpoint_path=ckpt, resume=args.resume,
                               param_groups=param_groups)
        if rank == 0:
            summary = {"model": args.model, "dataset": data.name, "data_source": data.source,
                       "classes": data.classes, "mean": data.mean, "std": data.std, "world_size": world,
                       "train_per_class": args.train_per_class,
                       "pretrained": args.pretrained, "finetune": args.finetune,
                       **getattr(data, "run_info", {}),
                       "final": history.final, "seconds": history.seconds, "history": history.to_dict(),
                       "checkpoint": os.path.abspath(ckpt)}
            _write_json_atomic(summary, summary_path)
            f = history.final
            print(f"test accuracy {f.get('test_acc', float('nan')):.4f} after {f['epoch']} epochs "
                  f"({history.seconds:.1f} s); wrote {ckpt} and {summary_path}")
    except KeyboardInterrupt:  # the checkpoint of the last finished epoch stays, to be resumed
        if rank == 0 and os.path.exists(ckpt):
            print(f"interrupted; continue with the same command and --resume ({ckpt})", file=sys.stderr)
        raise
    except Exception as err:  # any failure is a failed run: remove what this run created
        if rank == 0:
            if created_dir:
                shutil.rmtree(args.out, ignore_errors=True)
            else:
                for path in {ckpt, summary_path} - existed:
                    if os.path.exists(path):
                        os.remove(path)
        if isinstance(err, ResnetTutorialError):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise CLIError(f"training failed ({type(err).__name__}: {first})") from err
    finally:
        distributed.cleanup()
    return 0


def _folder_options(args: argparse.Namespace) -> dict:
    """``load_dataset``'s options for a folder of images: the preprocessing of the weights (or of the
    architecture), at ``--image-size``; how to split; how many workers decode."""
    tag = split_tag(args.pretrained)[1] if args.pretrained and not os.path.isfile(args.pretrained) else None
    return {"preprocessing": preprocessing_for(args.model, tag, args.image_size), "val_fraction": args.val_fraction,
            "split_seed": args.split_seed, "num_workers": args.workers}


def _train_model(args: argparse.Namespace, data):
    """The model to train and its parameter groups: fresh, or ``--pretrained`` weights with a new head for
    the data's classes, trained as ``--finetune`` says (``stages``: the chapter's per-stage learning rates)."""
    folder_only = [o for o, v in (("--pretrained", args.pretrained), ("--image-size", args.image_size)) if v]
    if folder_only and not isinstance(data, FolderData):
        raise CLIError(f"{' and '.join(folder_only)} need a folder of images: pass --data-dir FOLDER "
                       "(FOLDER/<class>/*.jpg, one folder per class)")
    if not args.pretrained:
        return create_model(args.model, in_chans=data.in_chans, num_classes=data.num_classes), None
    is_file = os.path.isfile(args.pretrained)
    model = load_for_finetuning(args.pretrained, data.num_classes, model=args.model if is_file else None)
    if args.finetune == "head":
        freeze(model, "all")
        return model, None
    if args.finetune == "stages":
        return model, stage_param_groups(model, stage_lrs(model, args.lr), head_lr=args.lr)
    return model, None


def _add_train(sub) -> None:
    p = sub.add_parser("train",
                       help="train a model; writes checkpoint.pt and summary.json under --out",
                       description="Train a model with resnet_tutorial.training.fit. Under torchrun "
                       "(torchrun --nproc_per_node=N -m resnet_tutorial train ...) it trains data-parallel.")
    p.add_argument("--model", default=None,
                   help="a registered model (see `resnet-tutorial models`); default: the --pretrained tag's, else resnet20")
    p.add_argument("--dataset", default="auto", choices=DATASETS,
                   help="auto: a local CIFAR-10 copy in --data-dir, else a folder of images there, else MNIST-5k "
                   "(never downloads)")
    p.add_argument("--data-dir", default=None,
                   help="where cifar-10-batches-py/ is (or is downloaded to), or a folder of images: "
                   "DIR/<class>/*.jpg, or DIR/train/<class>/... and DIR/val/<class>/...")
    p.add_argument("--pretrained", default=None, metavar="TAG|FILE",
                   help="start from ImageNet weights (a tag such as resnet50.tv2_in1k, downloaded by torchvision) "
                   "or a weights file, with a new classifier for the folder's classes")
    p.add_argument("--finetune", default=None, choices=FINETUNE_MODES,
                   help="with --pretrained: train the new head only, all layers at --lr, or all layers with "
                   "per-stage learning rates (head --lr, the last stage 5x smaller, ... the stem smallest; default)")
    p.add_argument("--image-size", type=int, default=None,
                   help="a folder's crop size (default: the weights' own, 224 for ImageNet ResNets)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="a folder without train/ and val/: the share of each class kept for validation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seeds that split (recorded in summary.json)")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N",
                   help="train on N images per class of the training split (stratified, chosen by --split-seed), "
                   "e.g. a Fashion-MNIST run sized for a CPU; the test split stays whole")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers decoding a folder's images (default: one per CPU core, at most 8)")
    p.add_argument("--no-download", action="store_true",
                   help="never download CIFAR-10 or Fashion-MNIST (--dataset cifar10, fashion-mnist)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True,
                   help="output folder: checkpoint.pt and summary.json")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the data order and augmentation")
    p.add_argument("--resume", action="store_true",
                   help="continue from --out/checkpoint.pt")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None,
                   help="default: 0.1, or 0.01 with --pretrained")
    p.add_argument("--schedule", default="cosine", choices=[*SCHEDULES, *SCHEDULE_ALIASES])
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--device", default=None,
                   help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars")
    p.set_defaults(func=_cmd_train)


# --- evaluate -------------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    _check_device(args.device)
    model, state = model_from_checkpoint(args.checkpoint)
    trained_on = state.get("config", {}).get("dataset")
    if (args.dataset or trained_on) == "folder":
        data = _checkpoint_folder(args, state)
    else:
        data = load_dataset(args.dataset or trained_on or "auto", args.data_dir, download=not args.no_download)
    if data.num_classes != model.num_classes or data.in_chans != model.in_chans:
        raise CheckpointError(
            f"{args.checkpoint!r} holds a model for {model.num_classes} classes and {model.in_chans} channel(s), "
            f"but {data.name} has {data.num_classes} classes and {data.in_chans} channel(s): evaluate it on the "
            f"dataset it was trained on ({trained_on or 'see its summary.json'})"
        )
    # in the precision it was trained and measured in (bf16 autocast on a CPU that computes bf16 natively):
    # the accuracy then matches the one the run recorded
    amp = bool(state.get("config", {}).get("amp", False))
    metrics = evaluate(model, data, split=args.split, batch_size=args.batch_size, device=args.device, amp=amp)
    print(f"{state['model_config'].get('architecture', 'model')} on {data.source} ({args.split} split)")
    print(metrics.report())
    out = args.metrics or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"metrics_{data.name}.json")
    _write_json_atomic({"checkpoint": os.path.abspath(args.checkpoint), "dataset": data.name, "split": args.split,
                        **metrics.to_dict()}, out)
    print(f"wrote {out}")
    return 0


def _folder_preprocessing(path: str, state: dict):
    """The class names and preprocessing a checkpoint trained on a folder records, or one clear error."""
    config = state.get("config", {})
    classes, prep = config.get("classes"), config.get("preprocessing")
    if not classes or not prep:
        raise CheckpointError(
            f"{path!r} records no class names and preprocessing (it was trained on "
            f"{config.get('dataset') or 'unknown data'}): use a checkpoint of `resnet-tutorial train --data-dir FOLDER`")
    n = state["model_config"].get("num_classes")
    if n is not None and n != len(classes):
        raise CheckpointError(f"{path!r} holds a model for {n} classes but names {len(classes)}: the file was "
                              "edited or mixed up; train again")
    return list(classes), Preprocessing.from_dict(prep)


def _checkpoint_folder(args: argparse.Namespace, state: dict):
    """The folder a checkpoint was trained on (``--data-dir`` to use another), split as it was: its
    validation images; another folder in one piece is all validation images."""
    classes, prep = _folder_preprocessing(args.checkpoint, state)
    config = state["config"]
    trained_dir = config.get("data_dir")
    root = args.data_dir or trained_dir
    if not root:
        raise CLIError(f"{args.checkpoint!r} does not say which folder it was trained on: pass --data-dir FOLDER")
    split = config.get("split", {})
    other = trained_dir is None or os.path.abspath(root) != os.path.abspath(trained_dir)
    fraction = 1.0 if other and not split_layout(root) else split.get("val_fraction", 0.2)
    return load_folder(root, prep, val_fraction=fraction, split_seed=split.get("seed", 0), classes=classes,
                       num_workers=args.workers)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate",
                       help="accuracy, per-class metrics and confusion matrix of a checkpoint")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint.pt written by `resnet-tutorial train`")
    p.add_argument("--dataset", default=None,
                   help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default=None)
    p.add_argument("--metrics", default=None,
                   help="where to save the metrics (default: beside the checkpoint)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for a folder of images")
    p.set_defaults(func=_cmd_evaluate)


# --- predict --------------------------------------------------------------------------------------

PREDICTION_FORMATS = (".json", ".csv")


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    if args.output and os.path.splitext(args.output)[1].lower() not in PREDICTION_FORMATS:
        raise CLIError(f"--output {args.output!r}: name a .json or a .csv file")
    _check_device(args.device)
    model, state = model_from_checkpoint(args.checkpoint)
    classes, prep = _folder_preprocessing(args.checkpoint, state)
    paths = walk_images(args.inputs)
    if not paths:
        raise CLIError(f"no images to classify in {', '.join(args.inputs)} (the extensions read are .jpg, .png ...)")
    device = pick_device(args.device)
    images = FolderData("", classes, [], [(p, -1) for p in paths], prep, {"how": "images to classify"},
                        num_workers=args.workers or 0)
    loader = images.loader("test", args.batch_size, device=device)
    logits, _ = predict_logits(model.to(device), loader)
    probs, idx = logits.softmax(1).topk(min(args.topk, len(classes)), dim=1)
    rows = [{"image": path, "top": [{"class": classes[i], "probability": round(p, 6)}
                                    for p, i in zip(ps, ids, strict=True)]}
            for path, ps, ids in zip(paths, probs.tolist(), idx.tolist(), strict=True)]
    table = [["image", *(f"top-{k + 1}" for k in range(len(rows[0]["top"])))]]
    table += [[r["image"], *(f"{t['class']} {t['probability']:.3f}" for t in r["top"])] for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if args.output:
        _write_predictions(rows, args.output)
        print(f"wrote {args.output}")
    return 0


def _write_predictions(rows: list[dict], path: str) -> None:
    """JSON: the rows as they are; CSV: one line per image and rank (image, rank, class, probability)."""
    if path.lower().endswith(".json"):
        _write_json_atomic(rows, path)
        return
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "rank", "class", "probability"])
        for r in rows:
            for k, t in enumerate(r["top"], start=1):
                writer.writerow([r["image"], k, t["class"], t["probability"]])


def _add_predict(sub) -> None:
    p = sub.add_parser("predict",
                       help="the most probable classes of image files, from a checkpoint trained on a folder of "
                       "images")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint.pt of `resnet-tutorial train --data-dir FOLDER`")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR",
                   help="images, or folders walked for images")
    p.add_argument("--topk", type=int, default=5,
                   help="classes per image (at most the number of classes)")
    p.add_argument("--output", default=None,
                   help="also write the predictions to a .json or .csv file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers decoding the images (default 0)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_predict)


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-tutorial",
        description="Build, compare, train and evaluate the ResNets of the resnet-tutorial book.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_models(sub)
    _add_compare(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A skipped file and the like: one line ``warning: ...``, without the source line."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ResnetTutorialError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
