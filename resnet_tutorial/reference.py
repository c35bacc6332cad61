"""Our models beside their twins in timm and torchvision: weight parity both ways, and
speed in one run.

``parity_report("resnet50")`` gives our model random weights and non-trivial batch-norm
statistics, loads them into timm's and torchvision's ``resnet50`` (and theirs into
ours), checks that the keys match and every tensor arrives exactly, and compares the
outputs. ``speed_comparison("resnet50")`` times a training step and an inference pass of
all three, in NCHW and channels_last, with the repetitions interleaved so that a noisy
machine slows every contestant alike, and reports medians.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ResnetTutorialError
from .models import create_model, list_models, model_family
from .runtime import pick_device, smoke_sizes

LIBRARIES = ("timm", "torchvision")

#: The project's goal: our training step at least this fast relative to each library's.
SPEED_GOAL = 0.97


def reference_model(name: str, library: str, **kwargs) -> nn.Module:
    """timm's or torchvision's model of the same name, randomly initialised (nothing is
    downloaded).
    """
    if model_family(name) != "imagenet":
        raise ResnetTutorialError(
            f"{name!r} has no twin in timm or torchvision: only the ImageNet family "
            f"({', '.join(list_models(family='imagenet'))}) has"
        )
    if library == "torchvision":
        # Lazy, for start-up time: torchvision takes seconds to import, and the command line imports this module
        # for every command.
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kwargs)
    if library == "timm":
        import timm  # lazy: timm is optional (the `timm` extra); torchvision's twins need only torchvision

        return timm.create_model(name, pretrained=False, **kwargs)
    raise ResnetTutorialError(f"library must be one of {LIBRARIES}, got {library!r}")


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BN layer random affine parameters and running statistics.

    Freshly initialised BN is the identity (weight 1, bias 0, mean 0, var 1); with it, a
    parity test could not see two BN layers swapped or a statistic left unloaded.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            m.running_mean.copy_(
                torch.randn(m.running_mean.shape, generator=generator) * 0.1
            )
            m.running_var.copy_(
                torch.rand(m.running_var.shape, generator=generator) * 0.5 + 0.75
            )
    return model


def _compare(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float, bool]:
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    max_abs = (ya - yb).abs().max().item()
    return max_abs, max_abs / ya.abs().max().item(), torch.equal(ya, yb)


def _load(target: nn.Module, source: nn.Module) -> tuple[bool, bool]:
    """Load ``source``'s state_dict into ``target``; return (every key matched, every
    tensor copied exactly).

    The keys are compared by a non-strict load, so that a mismatch is reported instead
    of raised; the second answer compares every tensor of ``target`` after the load with
    ``source``'s.
    """
    state = source.state_dict()
    incompatible = target.load_state_dict(state, strict=False)
    keys_match = not incompatible.missing_keys and not incompatible.unexpected_keys
    copied = keys_match and all(
        torch.equal(v, state[k]) for k, v in target.state_dict().items()
    )
    return keys_match, copied


def parity_report(
    name: str,
    libraries: Sequence[str] = LIBRARIES,
    batch_size: int = 2,
    image_size: int = 224,
    seed: int = 0,
    tolerance: float = 1e-5,
) -> dict:
    """Load weights ours -> theirs and theirs -> ours; compare the keys, the tensors and
    the outputs.

    Returns ``{"model", "image_size", "tolerance", "results": [...]}`` with one result
    per library and direction: ``strict_load`` (the two state_dicts have the same keys),
    ``tensors_equal`` (every tensor was copied exactly), ``max_abs_diff``, ``rel_diff``
    (relative to the largest logit), ``identical`` (the eval-mode logits are equal bit
    for bit) and ``ok`` (keys, tensors, and ``rel_diff <= tolerance``).
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    results = []
    for library in libraries:
        torch.manual_seed(seed)
        ours = randomize_batchnorm(create_model(name), generator)
        theirs = reference_model(name, library)
        loaded = _load(theirs, ours)
        results.append(
            _result(
                "ours -> " + library,
                library,
                loaded,
                _compare(ours, theirs, x),
                tolerance,
            )
        )

        torch.manual_seed(seed + 1)
        theirs = randomize_batchnorm(reference_model(name, library), generator)
        ours = create_model(name)
        loaded = _load(ours, theirs)
        results.append(
            _result(
                library + " -> ours",
                library,
                loaded,
                _compare(theirs, ours, x),
                tolerance,
            )
        )
    return {
        "model": name,
        "image_size": image_size,
        "tolerance": tolerance,
        "results": results,
    }


def _result(
    direction: str, library: str, loaded: tuple[bool, bool], compared, tolerance: float
) -> dict:
    (keys_match, copied), (max_abs, rel, identical) = loaded, compared
    return {
        "library": library,
        "direction": direction,
        "strict_load": keys_match,  # the same keys on both sides: strict=True would succeed
        "tensors_equal": copied,  # every tensor arrived bit for bit
        "max_abs_diff": max_abs,
        "rel_diff": rel,
        "identical": identical,  # torch.equal on the logits
        "ok": keys_match and copied and rel <= tolerance,
    }


def format_parity(report: dict) -> str:
    lines = [
        f"Parity of {report['model']} (eval mode, float32, {report['image_size']}x{report['image_size']}, "
        f"random weights and BN statistics; tolerance {report['tolerance']:g} of the largest logit)",
        f"  {'direction':<24} {'strict load':<12} {'max |diff|':>12} {'relative':>10}  verdict",
    ]
    for r in report["results"]:
        identical = r.get("identical", r["max_abs_diff"] == 0)
        verdict = (
            "identical"
            if identical and r["ok"]
            else ("equal" if r["ok"] else "DIFFERENT")
        )
        strict = "yes" if r.get("strict_load", True) else "NO"
        lines.append(
            f"  {r['direction']:<24} {strict:<12} {r['max_abs_diff']:>12.3g} {r['rel_diff']:>10.3g}  {verdict}"
        )
    return "\n".join(lines)


# --- speed ----------------------------------------------------------------------------
# -------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor):
    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)

        return step

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def speed_comparison(
    name: str,
    libraries: Sequence[str] = LIBRARIES,
    batch_size: int | None = None,
    image_size: int | None = None,
    repeats: int = 7,
    steps_per_repeat: int | None = None,
    modes: Sequence[str] = ("train", "infer"),
    memory_formats: Sequence[str] = ("nchw", "channels_last"),
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Time ours against timm and torchvision: one row per (implementation, mode, memory
    format).

    All contestants get the same weights. After a warm-up, each of ``repeats`` rounds
    times every contestant once, in a shuffled order; a row reports the median of its
    rounds, its throughput, and ``vs_ours`` (our speed divided by the contestant's:
    above 1 means we are faster).
    """
    device = pick_device(device)
    on_gpu = device.type == "cuda"
    batch_size = batch_size or (64 if on_gpu else 8)
    image_size = image_size or (224 if on_gpu else 128)
    steps = steps_per_repeat or (10 if on_gpu else 1)
    if smoke_sizes():  # RESNET_TUTORIAL_SMOKE=1: the code path, not the machine
        batch_size, image_size, repeats, steps = min(batch_size, 2), min(image_size, 64), min(repeats, 2), 1
    generator = torch.Generator().manual_seed(seed)
    x_cpu = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    y = torch.randint(0, 1000, (batch_size,), generator=generator).to(device)

    torch.manual_seed(seed)
    ours = create_model(name)
    state = ours.state_dict()
    impls = {"ours": ours}
    for library in libraries:
        model = reference_model(name, library)
        model.load_state_dict(state, strict=True)
        impls[library] = model

    contestants = []
    for impl, base in impls.items():
        for fmt in memory_formats:
            mf = (
                torch.channels_last
                if fmt == "channels_last"
                else torch.contiguous_format
            )
            x = x_cpu.to(device).contiguous(memory_format=mf)
            for mode in modes:
                model = copy.deepcopy(base).to(device).to(memory_format=mf)
                contestants.append(
                    {
                        "impl": impl,
                        "mode": mode,
                        "format": fmt,
                        "step": _make_step(model, mode, x, y),
                    }
                )

    def run(c) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            c["step"]()
        _sync(device)
        return (time.perf_counter() - start) / steps

    for c in contestants:  # warm-up: allocator, cuDNN autotuning, first-call overheads
        run(c)
        c["times"] = []
    rng = random.Random(seed)
    rounds = range(repeats)
    if progress:
        # Lazy: tqdm.auto chooses the notebook widget when it is imported and warns there if the optional
        # ipywidgets is missing, so it is imported only when a bar is asked for.
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=f"timing {name}", unit="round")
    for _ in rounds:
        order = contestants[:]
        rng.shuffle(order)
        for c in order:
            c["times"].append(run(c))

    rows = []
    for c in contestants:
        median = statistics.median(c["times"])
        rows.append(
            {
                "impl": c["impl"],
                "mode": c["mode"],
                "format": c["format"],
                "median_ms": median * 1e3,
                "images_per_s": batch_size / median,
                "device": str(device),
                "batch_size": batch_size,
                "image_size": image_size,
                "repeats": repeats,
                "times_ms": [t * 1e3 for t in c["times"]],
            }
        )
    ours_ms = {
        (r["mode"], r["format"]): r["median_ms"] for r in rows if r["impl"] == "ours"
    }
    for r in rows:
        r["vs_ours"] = r["median_ms"] / ours_ms[(r["mode"], r["format"])]
    return rows


def speed_ratios(rows: list[dict], mode: str = "train") -> dict[str, float]:
    """Our speed relative to each library (their median time / ours), for ``mode``, per
    memory format.
    """
    return {
        f"{r['impl']} ({r['format']})": r["vs_ours"]
        for r in rows
        if r["mode"] == mode and r["impl"] != "ours"
    }


def paired_speed_ratios(rows: list[dict]) -> dict[str, float]:
    """Per library: the median, over every round, mode and memory format, of its time /
    ours in that round.

    The rounds are interleaved, so a contestant and ours timed in the same round saw
    about the same load on the machine; the ratio of such a pair cancels most of it, and
    the median ignores the rounds that a burst of load hit between the two. 1 means the
    same speed; above 1, ours is faster.
    """
    ours = {
        (r["mode"], r["format"]): r["times_ms"] for r in rows if r["impl"] == "ours"
    }
    pairs: dict[str, list[float]] = {}
    for r in rows:
        if r["impl"] != "ours":
            mine = ours[(r["mode"], r["format"])]
            pairs.setdefault(r["impl"], []).extend(
                t / o for t, o in zip(r["times_ms"], mine, strict=True)
            )
    return {impl: statistics.median(values) for impl, values in pairs.items()}


def format_speed(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [
        f"Speed on {r0['device']}, batch {r0['batch_size']} at {r0['image_size']}x{r0['image_size']}, "
        f"float32, median of {r0['repeats']} interleaved rounds",
        f"  {'implementation':<13} {'mode':<6} {'format':<14} {'ms/step':>10} {'images/s':>10} {'our speed x':>12}",
    ]
    for r in sorted(
        rows, key=lambda r: (r["mode"], r["format"], r["impl"] != "ours", r["impl"])
    ):
        lines.append(
            f"  {r['impl']:<13} {r['mode']:<6} {r['format']:<14} {r['median_ms']:>10.1f} "
            f"{r['images_per_s']:>10.1f} {r['vs_ours']:>12.3f}"
        )
    lines.append(
        "  'our speed x' = the row's time / our time in the same mode and format (>= 1: we are as fast or faster)"
    )
    return "\n".join(lines)


def format_ratios(rows: list[dict], goal: float = SPEED_GOAL) -> str:
    """One line per library and memory format: our train-step speed relative to it,
    against ``goal``.
    """
    lines = []
    for name, ratio in speed_ratios(rows, "train").items():
        verdict = "meets" if ratio >= goal else "BELOW"
        lines.append(
            f"train step: our speed / {name:<27} = {ratio:.3f}  ({verdict} the goal {goal})"
        )
    return "\n".join(lines)
