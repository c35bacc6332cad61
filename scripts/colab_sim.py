"""Run every chapter's Colab notebook the way a Colab reader does, and fail on any error.

    python scripts/colab_sim.py chapters/*.ipynb                 # what `make colab-sim` runs
    python scripts/colab_sim.py --workers 1 chapters/01_background.ipynb

What it simulates, step by step:

1. **A fresh Colab runtime.** A new virtual environment (``--workdir``/venv) in which torch and torchvision are
   preinstalled, as Colab has them: they (and what they require, numpy included) are made visible from the
   environment running this script, at the versions of constraints.txt, through a ``.pth`` file. That is how
   Colab's preinstalled packages look to pip: installed, and kept by an install that only needs
   ``torch>=...``. ``--torch install`` installs them with pip from constraints.txt instead (slower: gigabytes).
   The Jupyter kernel (ipykernel) is installed too: Colab runs one. Nothing else of the book's is there.
2. **The chapter's own install cell.** The notebook runs its first cell unchanged except for one string: the
   package source ``git+https://github.com/resnet-tutorial/resnet-tutorial`` becomes a wheel built from this
   checkout (:func:`local_install_cell`); the cell's ``if "google.colab" in sys.modules`` is made true by a
   stub module registered just before it and removed just after it. pip installs what the cell names, with
   constraints.txt as ``PIP_CONSTRAINT`` so that the run is reproducible (``--unconstrained``: Colab's newest).
   All chapters of one run share the runtime: the first runs alone and its install cell installs, the
   others' install cells then find everything installed. That each chapter's cell names all that its
   chapter imports is checked statically, chapter by chapter, by tests/test_colab_sim.py.
3. **Only the notebook.** Each ``.ipynb`` is copied alone into an empty temporary folder outside the
   repository and executed there top to bottom (nbclient), in the CPU profile, with ``RESNET_TUTORIAL_CACHE``
   pointing at the shared cache of trained models (so what nbval trained is reused). ``PYTHONPATH`` is cleared:
   the kernel imports the installed package, not the checkout.

It prints one line per chapter with its time, keeps the executed notebooks in ``--workdir``/executed, and
exits 1 when a chapter fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
#: What every chapter's install cell installs from; replaced by the local wheel in the simulation.
GITHUB_SOURCE = "git+https://github.com/resnet-tutorial/resnet-tutorial"
COLAB_MARKER = '"google.colab" in sys.modules'
PREINSTALLED = ("torch", "torchvision")  # with their requirements: Colab's own
KERNEL = "colab-sim"
STUB_ON = 'import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")  # colab-sim'
STUB_OFF = 'del sys.modules["google.colab"]  # colab-sim'


def local_install_cell(source: str, wheel: str | os.PathLike) -> str:
    """The install cell ``source`` with the GitHub package source replaced by a local ``wheel``; nothing else.

    Raises ``ValueError`` when the cell is not a Colab install cell naming that source exactly once.
    """
    if COLAB_MARKER not in source or "pip install" not in source:
        raise ValueError(f"not a Colab install cell (no {COLAB_MARKER} and pip install):\n{source}")
    if source.count(GITHUB_SOURCE) != 1:
        raise ValueError(f"the install cell must name {GITHUB_SOURCE!r} exactly once:\n{source}")
    return source.replace(GITHUB_SOURCE, Path(wheel).resolve().as_uri())


def colab_notebook(notebook: dict, wheel: str | os.PathLike) -> dict:
    """A copy of ``notebook`` whose install cell installs ``wheel`` and runs as in Colab (see the module doc)."""
    nb = json.loads(json.dumps(notebook))
    cells = nb["cells"]
    for c in cells:  # nbformat's JSON may split a source into lines
        c["source"] = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    index = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), None)
    if index is None:
        raise ValueError("the notebook has no code cell")
    cell = cells[index]
    cell["source"] = local_install_cell(cell["source"], wheel)

    def stub(code: str, n: int) -> dict:
        return {"cell_type": "code", "execution_count": None, "id": f"colab-sim-{n}", "metadata": {},
                "outputs": [], "source": code}

    cells[index + 1 : index + 1] = [stub(STUB_OFF, 2)]
    cells[index:index] = [stub(STUB_ON, 1)]
    return nb


# --- the simulated runtime ------------------------------------------------------------------------------


def _requirement_closure(names) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (markers evaluated, no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo, found = set(), list(names), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement that is not installed here
        found.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _check_constrained(dists) -> None:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", CONSTRAINTS.read_text(), re.M))
    for name in PREINSTALLED:
        version = next(d.version for d in dists if d.metadata["Name"].lower() == name)
        if pins.get(name) and pins[name] != version:
            raise SystemExit(f"error: {name} {version} is installed here but constraints.txt pins {pins[name]}: "
                             "run `make setup` first")


def link_preinstalled(site: Path) -> list[str]:
    """Make torch and torchvision (and their requirements) of this environment visible in ``site``."""
    dists = _requirement_closure(PREINSTALLED)
    _check_constrained(dists)
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if top == "__pycache__" or (site / top).exists() or not (base / top).exists():
                continue
            (site / top).symlink_to(base / top)
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)


def site_packages(venv: Path) -> Path:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def create_runtime(workdir: Path, torch_mode: str) -> Path:
    """The fresh 'Colab' environment: venv, preinstalled torch/torchvision, a Jupyter kernel. Returns the venv."""
    venv = workdir / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS)]
    if torch_mode == "link":
        preinstalled = workdir / "colab-preinstalled"
        linked = link_preinstalled(preinstalled)
        (site_packages(venv) / "colab_preinstalled.pth").write_text(f"{preinstalled}\n")
        print(f"preinstalled (linked from {sys.prefix}): {', '.join(n for n in linked if n.split('==')[0] in PREINSTALLED)}"
              f" and {len(linked) - len(PREINSTALLED)} requirements")
    else:
        subprocess.run([*pip, *PREINSTALLED], check=True)
    subprocess.run([*pip, "ipykernel"], check=True)
    return venv


def build_wheel(workdir: Path) -> Path:
    """A wheel of this checkout, built from a copy (setuptools would leave build/ in the checkout)."""
    dist, src = workdir / "dist", workdir / "src"
    for folder in (dist, src):
        shutil.rmtree(folder, ignore_errors=True)
    skip = shutil.ignore_patterns(".git", ".venv", "_build", "node_modules", "_mathjax", "build", "dist",
                                  "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, src, ignore=skip, symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(src)],
                   check=True)
    (wheel,) = dist.glob("resnet_tutorial-*.whl")
    return wheel


def write_kernelspec(workdir: Path, venv: Path, constrained: bool) -> Path:
    """A Jupyter kernel running in ``venv`` with Colab's view of the world (and the CPU profile)."""
    spec_dir = workdir / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "RESNET_TUTORIAL_PROFILE": "cpu",
        "RESNET_TUTORIAL_CACHE": os.environ.get("RESNET_TUTORIAL_CACHE", str(ROOT / "_build" / ".experiments")),
        "OMP_NUM_THREADS": os.environ.get("COLAB_SIM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("COLAB_SIM_THREADS", "1"),
        "PYTHONPATH": "",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "MPLBACKEND": "Agg",
    }
    if constrained:
        env["PIP_CONSTRAINT"] = str(CONSTRAINTS)
    spec = {"argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab simulation", "language": "python", "env": env}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir.parent.parent


# --- running one notebook ---------------------------------------------------------------------------------


def execute(notebook_path: Path, wheel: Path, jupyter_path: Path, out: Path, timeout: int) -> None:
    """Execute one notebook alone in an empty temporary folder; write the executed copy to ``out``."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["JUPYTER_PATH"] = str(jupyter_path)
    os.environ.pop("PYTHONPATH", None)
    nb = nbformat.from_dict(colab_notebook(json.loads(notebook_path.read_text(encoding="utf-8")), wheel))
    with tempfile.TemporaryDirectory(prefix="colab-sim-") as folder:
        shutil.copy(notebook_path, Path(folder) / notebook_path.name)  # the notebook alone, nothing else
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": folder}})
        try:
            client.execute()
        finally:
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out)


def run_one(args, notebook: Path, wheel: Path, jupyter_path: Path) -> tuple[str, float, str]:
    name = notebook.name if notebook.parent.name == "chapters" else f"{notebook.parent.name}/{notebook.name}"
    out = args.workdir / "executed" / name  # chapters/zh_CN/NN.ipynb: executed/zh_CN/NN.ipynb
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--execute-one", str(notebook), "--wheel", str(wheel),
                           "--jupyter-path", str(jupyter_path), "--out", str(out), "--timeout", str(args.timeout)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return name, seconds, ""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
    return name, seconds, "\n".join(tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter .ipynb files (default: chapters/*.ipynb)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "_build" / "colab-sim")
    parser.add_argument("--workers", type=int, default=2, help="notebooks executed at a time")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--torch", choices=("link", "install"), default="link",
                        help="preinstall torch/torchvision by linking this environment's (default) or with pip")
    parser.add_argument("--unconstrained", action="store_true", help="let the install cells take the newest releases")
    parser.add_argument("--execute-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--wheel", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--jupyter-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        execute(args.execute_one, args.wheel, args.jupyter_path, args.out, args.timeout)
        return 0

    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wheel = build_wheel(args.workdir)
    venv = create_runtime(args.workdir, args.torch)
    jupyter_path = write_kernelspec(args.workdir, venv, constrained=not args.unconstrained)
    setup_seconds = time.perf_counter() - t0
    print(f"colab-sim: runtime ready in {setup_seconds:.0f} s ({wheel.name}); "
          f"{len(notebooks)} notebooks, {args.workers} at a time")
    # The first notebook runs alone: its install cell installs into the fresh runtime. The others then run
    # their own install cells (which find everything installed) side by side, never two pips at once.
    def report(result: tuple[str, float, str]) -> tuple[str, float, str]:
        name, seconds, error = result
        print(f"  {'FAILED' if error else 'ok':<6} {name:<40} {seconds:7.1f} s", flush=True)
        if error:
            print("    " + error.replace("\n", "\n    "), flush=True)
        return result

    results = [report(run_one(args, notebooks[0], wheel, jupyter_path))]
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = [pool.submit(run_one, args, nb, wheel, jupyter_path) for nb in notebooks[1:]]
        results += [report(f.result()) for f in as_completed(futures)]
    failed = [r for r in results if r[2]]
    print(f"colab-sim: {len(results) - len(failed)} passed, {len(failed)} failed "
          f"in {time.perf_counter() - t0:.0f} s (executed notebooks in {args.workdir / 'executed'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
