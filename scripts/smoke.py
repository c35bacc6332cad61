"""Execute every chapter in the ``gpu`` and ``paper`` profiles on the CPU, on stand-in data, and fail on any error.

    python scripts/smoke.py                                # what `make smoke` runs: chapters/NN_*.ipynb
    python scripts/smoke.py --profiles gpu chapters/08_fine_tuning.ipynb

The ``gpu`` profile is what a Colab reader on a T4 runs and ``paper`` what a reader with hours runs; CI has no
GPU, so without this neither code path would ever run before a reader's does. Each chapter is executed top to
bottom (nbclient, each kernel on one thread, ``--workers`` at a time) in each profile, with the exception of
a chapter whose code is the same in both (:func:`paper_runs_other_code`; ``--every-profile`` runs it twice
anyway), which runs in ``gpu`` only, and with:

* **CIFAR-10** from a fixture in the official python-version format (``resnet_tutorial.testing``), in the
  folder ``RESNET_TUTORIAL_DATA`` names; a first cell added to the notebook registers the fixture's MD5s in
  torchvision's place of the official ones, so torchvision's integrity check runs and nothing is downloaded;
* **torchvision's ImageNet weights** as random-valued files in torch's hub cache (``TORCH_HOME``), under the
  file names torchvision downloads them to (:data:`TORCHVISION_WEIGHTS`); that cell also makes any download
  an error naming the URL;
* ``RESNET_TUTORIAL_ONLINE=1``, so that the cells that only run online run too, on those stand-ins;
* ``RESNET_TUTORIAL_MAX_STEPS`` (``--max-steps``) capping every training run, ``RESNET_TUTORIAL_SMOKE=1``
  shrinking the appendix's timing loop (``resnet_tutorial.runtime``), a few sizes in the chapters' code that
  neither bounds (:data:`SHRINK`), and its own experiment cache;
* ``RESNET_TUTORIAL_CHECKS=report``: a chapter's claim that does not hold on the fixture (random pixels and
  labels, a few steps) is printed and logged (``RESNET_TUTORIAL_CHECK_LOG``) instead of raised. Every other
  error fails the run.

It prints one line per execution with its time and the claims reported false, keeps the executed notebooks in
``--workdir``/executed/PROFILE, and exits 1 when an execution fails.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager

from resnet_tutorial.book import read_check_log

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("gpu", "paper")
#: torchvision's weights entries that the chapters load in the gpu and paper profiles (chapter 8 fine-tunes
#: ResNet-18's; the appendix draws CAMs with ResNet-50's default, V2, where RESNET_TUTORIAL_ONLINE=1).
TORCHVISION_WEIGHTS = ("ResNet18_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2")
#: The fixture's size: images in each of the five training batches and in the test batch (one of each class).
#: The chapters size their batches and evaluations from the data, so a small fixture keeps the run short.
N_PER_BATCH = 10
SETUP_ID = "smoke-setup"
#: Sizes the smoke run shrinks in a chapter's code, like the cap on training steps: the work of these cells is
#: bounded neither by the steps nor by the fixture's size, and on a CPU at a GPU's sizes it would be most of
#: the run (chapter 6's slopes along lines alone took a minute per profile). Each replacement must match its
#: chapter's code exactly once, or the run stops: a chapter edit has to update it here.
SHRINK: dict[str, list[tuple[str, str]]] = {
    "06_gradient_measurements": [
        ("STEPS = 256\n", "STEPS = 32\n"),
        ("FIT_DEPTHS = (20, 32, 44, 56, 80, 110)", "FIT_DEPTHS = (20, 56, 110)"),
    ],
    "07_practice": [("for _ in range(choose(cpu=8, gpu=20, paper=20))",
                     "for _ in range(choose(cpu=8, gpu=2, paper=2))")],
    "10_tools_summary_faq": [("x = torch.randn(choose(cpu=8, gpu=64, paper=64), 3, 112, 112)",
                              "x = torch.randn(choose(cpu=8, gpu=2, paper=2), 3, 112, 112)")],
}
#: The chapters that take longest here, started first (then the others in order), so that the two workers
#: finish together.
SLOW_FIRST = ("06_gradient_measurements", "08_fine_tuning", "07_practice", "04_from_scratch")


def paper_runs_other_code(notebook: dict) -> bool:
    """Whether a chapter executes other code in the ``paper`` profile than in ``gpu``.

    A chapter tells the profiles apart only in its own code: ``choose(cpu=..., gpu=..., paper=...)`` and
    ``ch.profile`` (the package never reads the profile; ``chapter_setup`` does, for the chapter). The code is the
    same when every ``choose`` has the same ``gpu=`` and ``paper=`` expressions and ``ch.profile`` is only compared
    with ``"cpu"`` or tested against ``("gpu", "paper")`` together. Anything else (another use of the profile, a
    cell that is not plain Python) counts as other code.
    """
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:  # IPython's syntax (the install cell's !pip) as the kernel turns it into Python
            tree = ast.parse(TransformerManager().transform_cell("".join(cell["source"])))
        except SyntaxError:
            return True
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "choose":
                values = {k.arg: ast.dump(k.value) for k in node.keywords}
                if "gpu" not in values or values.get("gpu") != values.get("paper"):
                    return True
            elif isinstance(node, ast.Attribute) and node.attr == "profile":
                if not _gpu_and_paper_alike(parents.get(node)):
                    return True
            elif isinstance(node, ast.Name) and node.id in ("PROFILE", "get_profile"):
                parent = parents.get(node)
                if not (isinstance(node.ctx, ast.Store) or (isinstance(parent, ast.keyword) and parent.arg == "profile")):
                    return True
    return False


def _gpu_and_paper_alike(test) -> bool:
    """``profile == "cpu"``, ``!= "cpu"``, ``in ("gpu", "paper")`` or ``not in`` them: true or false for both;
    or the profile printed (``print(..., ch.profile)``, an f-string): other text, the same code."""
    if isinstance(test, ast.FormattedValue) or (isinstance(test, ast.Call) and getattr(test.func, "id", "") == "print"):
        return True
    if not isinstance(test, ast.Compare) or len(test.ops) != 1:
        return False
    op, other = test.ops[0], test.comparators[0]
    if isinstance(op, (ast.Eq, ast.NotEq)):
        return isinstance(other, ast.Constant) and other.value == "cpu"
    if isinstance(op, (ast.In, ast.NotIn)) and isinstance(other, (ast.Tuple, ast.List, ast.Set)):
        names = {e.value for e in other.elts if isinstance(e, ast.Constant)}
        return len(names) == len(other.elts) and ({"gpu", "paper"} <= names or not {"gpu", "paper"} & names)
    return False


def setup_cell(md5: dict) -> str:
    """The code of the cell added before a chapter's first cell (see the module doc)."""
    return "\n".join([
        "# smoke: CIFAR-10 from the fixture (its MD5s), and no downloads",
        "import torch",
        "from resnet_tutorial.testing import register_cifar10_fixture",
        f"register_cifar10_fixture({md5!r})",
        "",
        "def _no_download(url, *args, **kwargs):",
        "    raise RuntimeError(f'smoke: a download of {url}: add its file to the stand-ins of scripts/smoke.py')",
        "",
        "torch.hub.download_url_to_file = _no_download",
        "torch.set_num_threads(1)",
    ])


def smoke_notebook(notebook: dict, md5: dict, shrink: list[tuple[str, str]] = ()) -> dict:
    """A copy of ``notebook`` with :func:`setup_cell` before its first cell and the replacements ``shrink``
    (see :data:`SHRINK`) made in its code; ValueError if one of them does not match exactly once."""
    nb = json.loads(json.dumps(notebook))
    for c in nb["cells"]:  # nbformat's JSON may split a source into lines
        c["source"] = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for old, new in shrink:
        found = sum(c["source"].count(old) for c in code)
        if found != 1:
            raise ValueError(f"smoke: SHRINK's {old!r} is in the chapter's code {found} times, not once: "
                             "update SHRINK in scripts/smoke.py to the chapter's code")
        for c in code:
            c["source"] = c["source"].replace(old, new)
    cell = {"cell_type": "code", "execution_count": None, "id": SETUP_ID, "metadata": {}, "outputs": [],
            "source": setup_cell(md5)}
    nb["cells"].insert(0, cell)
    return nb


def prepare(workdir: Path) -> dict:
    """The stand-ins in ``workdir``: the CIFAR-10 fixture in data/ and the weights in torch/hub/checkpoints/.
    Returns the fixture's MD5s."""
    from resnet_tutorial.testing import write_cifar10_fixture, write_torchvision_weights

    _, md5 = write_cifar10_fixture(workdir / "data", n_per_batch=N_PER_BATCH)
    write_torchvision_weights(workdir / "torch" / "hub", TORCHVISION_WEIGHTS)
    return md5


def environment(workdir: Path, profile: str, max_steps: int, log: Path) -> dict:
    """The environment of one execution (the kernel inherits it)."""
    env = dict(os.environ)
    env.update({
        "RESNET_TUTORIAL_PROFILE": profile,
        "RESNET_TUTORIAL_DATA": str(workdir / "data"),
        "TORCH_HOME": str(workdir / "torch"),
        "RESNET_TUTORIAL_CACHE": str(workdir / "experiments"),
        "RESNET_TUTORIAL_MAX_STEPS": str(max_steps),
        "RESNET_TUTORIAL_CHECKS": "report",
        "RESNET_TUTORIAL_CHECK_LOG": str(log),
        "RESNET_TUTORIAL_SMOKE": "1",  # the speed comparison's timing at small sizes
        "RESNET_TUTORIAL_ONLINE": "1",  # the cells that would download: the stand-ins are in place
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "MPLBACKEND": "agg",
        # this checkout's package, also where another copy is installed
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    })
    return env


def execute(notebook: Path, md5_file: Path, out: Path, timeout: int) -> None:
    """Execute one notebook in an empty temporary folder (the environment is this process's); write the
    executed copy to ``out``."""
    import nbformat
    from nbclient import NotebookClient

    md5 = json.loads(md5_file.read_text())
    source = json.loads(notebook.read_text(encoding="utf-8"))
    nb = nbformat.from_dict(smoke_notebook(source, md5, SHRINK.get(notebook.stem, [])))
    with tempfile.TemporaryDirectory(prefix="smoke-") as folder:
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": folder}})
        try:
            client.execute()
        except Exception as err:  # the cell's code and the kernel's traceback, without nbclient's own
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
            sys.stderr.write("\n".join(message[-40:]) + "\n")
            raise SystemExit(1) from None
        finally:
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out)


def reported(log: Path) -> list[str]:
    """The claims a check log holds as not holding."""
    return [r["claim"] for r in read_check_log(log) if not r["holds"]]


def run_one(args, notebook: Path, profile: str, md5_file: Path) -> tuple[str, float, str, list[str]]:
    """Execute ``notebook`` in ``profile`` in a child process; ``(name, seconds, error tail, false claims)``."""
    name = f"{profile}/{notebook.name}"
    out = args.workdir / "executed" / profile / notebook.name
    log = args.workdir / "checks" / profile / f"{notebook.stem}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    env = environment(args.workdir, profile, args.max_steps, log)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--execute-one", str(notebook), "--md5", str(md5_file),
                           "--out", str(out), "--timeout", str(args.timeout)],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if "[IPKernelApp]" not in line]
    error = "" if proc.returncode == 0 else "\n".join(lines[-40:])
    return name, seconds, error, reported(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter .ipynb files (default: chapters/NN_*.ipynb)")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    parser.add_argument("--workdir", type=Path, default=ROOT / "_build" / "smoke")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=1, help="RESNET_TUTORIAL_MAX_STEPS (default 1)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--every-profile", action="store_true",
                        help="execute the paper profile of a chapter whose code is the same as in gpu, too")
    parser.add_argument("--execute-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--md5", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        execute(args.execute_one, args.md5, args.out, args.timeout)
        return 0

    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    args.workdir = args.workdir.resolve()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    start = time.perf_counter()
    md5_file = args.workdir / "cifar10-md5.json"
    md5_file.write_text(json.dumps(prepare(args.workdir)))
    notebooks = sorted(notebooks, key=lambda nb: SLOW_FIRST.index(nb.stem) if nb.stem in SLOW_FIRST else len(SLOW_FIRST))
    same = set() if args.every_profile or not {"gpu", "paper"} <= set(args.profiles) else {
        nb for nb in notebooks if not paper_runs_other_code(json.loads(nb.read_text()))}
    jobs = [(nb, profile) for nb in notebooks for profile in args.profiles
            if not (profile == "paper" and nb in same)]
    for nb in sorted(same):
        print(f"same paper/{nb.name:<34} its code is the gpu profile's (paper_runs_other_code): executed once",
              flush=True)
    failed, claims = [], []
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, args, nb, profile, md5_file) for nb, profile in jobs]
        for future in futures:
            name, seconds, error, false_claims = future.result()
            print(f"{'ok  ' if not error else 'FAIL'} {name:<40} {seconds:6.1f} s  "
                  f"{len(false_claims)} claim(s) reported false", flush=True)
            if error:
                failed.append(name)
                print("     " + error.replace("\n", "\n     "), flush=True)
            claims += [f"{name}: {c}" for c in false_claims]
    print(f"smoke: {len(jobs)} executions in {time.perf_counter() - start:.0f} s, {len(failed)} failed")
    if claims:
        print("claims reported false (expected on the fixture's random data and capped training):")
        for c in claims:
            print(f"  \u2718 {c}")
    if failed:
        print(f"failed: {', '.join(failed)} (executed notebooks in {args.workdir / 'executed'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
