"""The package's declared dependencies: lower bounds only, the tested set in constraints.txt, and a models-only
install that does not need the book's tools."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BOOK_TOOLS = ("matplotlib", "pandas", "sklearn", "skimage", "mlxtend", "timm", "IPython", "myst_nb")


def test_dependencies_are_lower_bounds_and_the_tested_versions_are_pinned_in_constraints():
    from packaging.requirements import Requirement

    deps = {Requirement(d).name: Requirement(d) for d in PROJECT["dependencies"]}
    for name in ("torch", "torchvision"):
        spec = deps[name].specifier
        assert spec and all(s.operator == ">=" for s in spec), f"{name}: only a lower bound, got {spec}"
    extras = [d for group in PROJECT["optional-dependencies"].values() for d in group]
    assert not [d for d in PROJECT["dependencies"] + extras if "==" in d], "exact pins belong in constraints.txt"
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    for name in ("torch", "torchvision", "timm", "numpy", "jupyter-book"):
        assert name in pins, f"constraints.txt pins no {name}"
    for name, req in deps.items():  # the tested set satisfies the bounds
        assert req.specifier.contains(pins[name]), f"constraints.txt {name}=={pins[name]} violates {req}"


def test_the_models_and_the_engine_work_without_the_books_tools():
    """With matplotlib, pandas, scikit-learn, scikit-image, mlxtend, timm and IPython unimportable, the
    models build, run and train one step, and the CLI lists the models."""
    code = f"""
import sys
for name in {BOOK_TOOLS!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as if it were not installed
import torch
import resnet_tutorial as rt
from resnet_tutorial import checkpoint, cli, training  # noqa: F401
model = rt.create_model("resnet20")
loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean()
loss.backward()
assert cli.main(["models"]) in (0, None)
print("ok", sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in {BOOK_TOOLS!r}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok []"
