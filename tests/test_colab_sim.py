"""The Colab simulation (scripts/colab_sim.py): the install-cell substitution, and what the install cells name.

The simulation itself runs every chapter (`make colab-sim`, part of `make test`); these tests keep its one
change to a notebook small and exact, and check, chapter by chapter, that the install cell installs every
module the chapter imports (the simulation runs all chapters in one runtime, so it could not tell).
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import colab_sim  # noqa: E402

NOTEBOOKS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
#: What a Colab runtime has before any install cell: the standard library, its torch, and the Jupyter kernel.
COLAB_BASE = {"torch", "torchvision", "IPython", "ipykernel", "numpy"}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _install_cell(path: Path) -> str:
    return "".join(next(c for c in _cells(path) if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_substitution_changes_only_the_package_source(path: Path, tmp_path: Path):
    cell = _install_cell(path)
    wheel = tmp_path / "resnet_tutorial-0.1.0-py3-none-any.whl"
    local = colab_sim.local_install_cell(cell, wheel)
    assert local == cell.replace(colab_sim.GITHUB_SOURCE, wheel.as_uri())
    assert colab_sim.GITHUB_SOURCE not in local and wheel.as_uri() in local


def test_the_substitution_refuses_anything_else():
    with pytest.raises(ValueError, match="not a Colab install cell"):
        colab_sim.local_install_cell("import torch", "/w.whl")
    twice = f'import sys\nif "google.colab" in sys.modules:\n    !pip install {colab_sim.GITHUB_SOURCE} {colab_sim.GITHUB_SOURCE}'
    with pytest.raises(ValueError, match="exactly once"):
        colab_sim.local_install_cell(twice, "/w.whl")


def test_the_simulated_notebook_runs_the_install_cell_as_colab_would():
    original = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    nb = colab_sim.colab_notebook(original, "/tmp/w.whl")
    code = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert code[0] == colab_sim.STUB_ON and code[2] == colab_sim.STUB_OFF
    assert code[1] == colab_sim.local_install_cell(_install_cell(NOTEBOOKS[0]), "/tmp/w.whl")
    before = ["".join(c["source"]) for c in original["cells"]]
    after = [c["source"] for c in nb["cells"] if not c["id"].startswith("colab-sim")]
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [before.index(_install_cell(NOTEBOOKS[0]))]  # only the install cell, only its source
    assert len(nb["cells"]) == len(original["cells"]) + 2


def _imports(path: Path) -> set[str]:
    names = set()
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            m = re.match(r"^\s*(?:import\s+([\w.]+(?:\s*,\s*[\w.]+)*)|from\s+([\w.]+)\s+import\b)", line)
            if m and m.group(1):
                names |= {n.strip().split(".")[0] for n in m.group(1).split(",")}
            elif m and m.group(2) and not m.group(2).startswith("."):
                names.add(m.group(2).split(".")[0])
    return names


def _extras_closure(extras: set[str]) -> set[str]:
    """Distributions (normalised names) that `pip install resnet-tutorial[extras]` installs."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = list(project["dependencies"])
    seen_extras = set()
    while extras - seen_extras:
        extra = (extras - seen_extras).pop()
        seen_extras.add(extra)
        for spec in project["optional-dependencies"][extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "resnet-tutorial":
                extras |= set(req.extras)
            else:
                todo.append(spec)
    found = set()
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        try:
            todo += [r for r in metadata.distribution(name).requires or []
                     if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
        except metadata.PackageNotFoundError:
            pass
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_install_cell_installs_everything_the_chapter_imports(path: Path):
    from packaging.utils import canonicalize_name

    m = re.search(r'"resnet-tutorial(?:\[([\w,\s-]+)\])? @ \{source\}"', _install_cell(path))
    assert m, "the install cell installs resnet-tutorial[...] @ {source}"
    installed = _extras_closure({e.strip() for e in (m.group(1) or "").split(",") if e.strip()})
    providers = metadata.packages_distributions()
    missing = {}
    for module in sorted(_imports(path) - set(sys.stdlib_module_names) - COLAB_BASE - {"resnet_tutorial"}):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{path.name} imports {module!r}, which no installed distribution provides"
        if not dists & installed:
            missing[module] = sorted(dists)
    assert not missing, f"{path.name} imports modules its install cell does not install: {missing}"


def test_the_check_sees_a_missing_dependency():
    assert "matplotlib" in _extras_closure({"notebooks"})
    assert "matplotlib" not in _extras_closure(set())  # the models alone do not need the book's tools
    assert "mlxtend" not in _extras_closure({"timm"})
