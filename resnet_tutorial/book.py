"""Helpers the chapters call: set a chapter up, show the package's own source, check a claim, report times.

A chapter begins with ``ch = chapter_setup("Residual connections", profile=PROFILE, expected={...})``
(selects the profile, prints it with the device, the versions and the chapter's expected time, seeds
everything), shows code with ``show_source(obj)``, times its experiments with
``with ch.timed("degradation experiment"): ...``, checks each claim with ``check(...)``, and ends with
``ch.report()``.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import tempfile
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .runtime import PROFILE_ENV, PROFILES, describe_environment, get_profile, pick_device, seed_everything


def glue(name: str, value: Any, display: bool = True) -> None:
    """Glue ``value`` into the chapter's prose as ``{glue:text}`name```, or, without myst-nb, show it.

    In the book build (myst-nb installed) this is ``myst_nb.glue``. In a plain Jupyter or Colab session the
    prose cannot be filled in, so the value is printed instead, as ``name = value``: the Colab notebooks
    point to that output where the book shows the number.
    """
    try:
        from myst_nb import glue as myst_glue  # lazy: myst-nb is optional (the `book` extra)
    except ImportError:
        print(f"{name} = {value}")
        return None
    myst_glue(name, value, display=display)
    return None


#: The folders :func:`scratch_dir` made in this process and not yet deleted.
_SCRATCH: list[str] = []


def scratch_dir(prefix: str) -> str:
    """A new, empty folder for a chapter's files (checkpoints, runs), deleted at the chapter's end by
    :meth:`Chapter.report`, or when the kernel exits, so that executing the book again and again does not fill
    the temporary folder (nbval kills its kernels, which then run no exit handler)."""
    path = tempfile.mkdtemp(prefix=prefix)
    _SCRATCH.append(path)
    return path


@atexit.register
def remove_scratch_dirs() -> None:
    """Delete every folder :func:`scratch_dir` made in this process (also run when it exits)."""
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def choose(*, cpu: Any, gpu: Any, paper: Any) -> Any:
    """The value for the current profile: ``choose(cpu=3, gpu=30, paper=164)`` epochs, say."""
    return {"cpu": cpu, "gpu": gpu, "paper": paper}[get_profile()]


@dataclass
class Chapter:
    """What a chapter ran on, and how long each of its experiments took."""

    title: str
    device: torch.device
    profile: str
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def timed(self, label: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - start

    def report(self) -> None:
        """Print the chapter's timings and its total wall-clock time; delete the chapter's scratch folders."""
        remove_scratch_dirs()
        total = time.perf_counter() - self.started
        print(f"{self.title}: ran on {describe_environment(self.device)}")
        for label, seconds in self.timings.items():
            print(f"  {label:<50} {seconds:8.1f} s")
        print(f"  {'whole chapter':<50} {total:8.1f} s")


def set_profile(profile: str | None) -> str:
    """Select the profile for this process (``None``: keep ``RESNET_TUTORIAL_PROFILE``'s); return the active one.

    The choice is stored in ``RESNET_TUTORIAL_PROFILE``, so :func:`choose`, the package and any process the
    chapter starts (``torchrun``) all follow it.
    """
    if profile is not None:
        value = str(profile).strip().lower()
        if value not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES} or None, got {profile!r}")
        os.environ[PROFILE_ENV] = value
    return get_profile()


def chapter_setup(
    title: str,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    profile: str | None = None,
    expected: dict[str, str] | None = None,
) -> Chapter:
    """Select the profile, seed everything, pick the device, print where the chapter runs and how long it takes.

    ``profile`` is ``"cpu"``, ``"gpu"``, ``"paper"`` or ``None`` (``RESNET_TUTORIAL_PROFILE``, else ``"gpu"`` on
    a GPU and ``"cpu"`` elsewhere). ``expected`` maps each profile to the chapter's expected run time
    (``{"cpu": "1 min", "gpu": "8 min", "paper": "9 h"}``); the line for the active profile is printed
    before anything trains. Also prints NumPy scalars as plain numbers (``4.7``, not ``np.float64(4.7)``),
    in outputs and in values glued into the prose with :func:`glue` (whose ``{glue:text}`x:.1f``` formatting
    parses that text).
    """
    active = set_profile(profile)
    np.set_printoptions(legacy="1.25")
    seed_everything(seed)
    chapter = Chapter(title=title, device=pick_device(device), profile=active, seed=seed)
    print(describe_environment(chapter.device))
    if expected:
        print(expected_time_line(active, expected, chapter.device))
    return chapter


def expected_time_line(profile: str, expected: dict[str, str], device: torch.device | None = None) -> str:
    """One line: the chapter's expected time in the active profile, and in the others."""
    unknown = set(expected) - set(PROFILES)
    if unknown:
        raise ValueError(f"expected times for unknown profiles {sorted(unknown)}: use {PROFILES}")
    here = expected.get(profile, "not measured")
    others = ", ".join(f"{p}: {expected[p]}" for p in PROFILES if p != profile and p in expected)
    line = f"expected time in the {profile} profile: {here}" + (f" (other profiles: {others})" if others else "")
    if device is not None and profile != "cpu" and torch.device(device).type == "cpu":
        line += f"\nwarning: the {profile} profile is meant for a GPU; on this CPU it takes far longer"
    return line


def source_of(obj: Any) -> str:
    """The source code of a class, function or method of the package, dedented."""
    return textwrap.dedent(inspect.getsource(obj))


def show_source(obj: Any):
    """Display the package's own source of ``obj`` (highlighted in a notebook, plain text elsewhere).

    The book shows the code its tests run, instead of a retyped copy.
    """
    code = source_of(obj)
    try:
        # Lazy: IPython is optional (installed with the book and Jupyter, not with the package).
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:  # pragma: no cover - IPython is installed with the book
        print(code)
        return None
    if get_ipython() is None:
        print(code)
        return None
    display(Code(code, language="python"))
    return None


#: The width of the book's code column: printed lines longer than this are cut off on the page.
COLUMN = 88


#: ``RESNET_TUTORIAL_CHECKS=report``: a claim that does not hold is printed and logged instead of raised. Only
#: the sweep of conditions and the smoke run of the gpu and paper profiles on fixture data set it.
CHECKS_ENV = "RESNET_TUTORIAL_CHECKS"
#: ``RESNET_TUTORIAL_CHECK_LOG=FILE``: every check appends one JSON line (claim, holds, detail) to FILE.
CHECK_LOG_ENV = "RESNET_TUTORIAL_CHECK_LOG"


def read_check_log(path: str | os.PathLike) -> list[dict]:
    """The checks recorded in a ``RESNET_TUTORIAL_CHECK_LOG`` file, in order: ``{claim, holds, detail}`` each
    (``[]`` when there is no file). The sweep of conditions and the smoke run read their logs with it."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check(claim: str, condition: bool, detail: str = "") -> None:
    """Assert a claim of the chapter, and print it so the reader sees what was checked.

    Raises ``AssertionError`` (and so fails the book build and nbval) when ``condition`` is false.
    The printed line starts with a check mark and is wrapped at ``COLUMN`` characters, the
    continuation lines indented by two spaces. With ``RESNET_TUTORIAL_CHECK_LOG`` set, each check is
    also recorded there; with ``RESNET_TUTORIAL_CHECKS=report``, a false claim is printed with a cross
    and recorded instead of raised (``make sweep`` and ``make smoke`` use these).
    """
    holds = bool(condition)
    suffix = f" ({detail})" if detail else ""
    log = os.environ.get(CHECK_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"claim": claim, "holds": holds, "detail": detail}, ensure_ascii=False) + "\n")
    mode = os.environ.get(CHECKS_ENV, "raise").strip().lower() or "raise"
    if mode not in ("raise", "report"):
        raise ValueError(f"{CHECKS_ENV} must be 'raise' or 'report', got {mode!r}")
    if not holds and mode == "raise":
        raise AssertionError(f"claim does not hold: {claim}{suffix}")
    mark = "\u2714" if holds else "\u2718 claim does not hold:"
    text = f"{mark} {claim}{suffix}"
    print(textwrap.fill(text, width=COLUMN, subsequent_indent="  ", break_on_hyphens=False))
