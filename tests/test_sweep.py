"""The sweep of conditions (scripts/sweep.py) finds a claim that holds only where it was written."""

import json
import pathlib
import subprocess
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_a_claim_tuned_to_one_condition_fails_the_sweep(tmp_path):
    # A deliberately fragile claim: true with nbval's one thread per kernel, false under make book's two.
    nb = notebook(
        tmp_path / "01_fragile.ipynb",
        "import torch\nfrom resnet_tutorial.book import check\nfrom resnet_tutorial.runtime import shifted",
        "check('this machine runs one thread per kernel', torch.get_num_threads() == 1, "
        "f'{torch.get_num_threads()} threads')",
        "check('a robust claim', shifted(0) >= 0, f'seed {shifted(0)}')",
    )
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), str(nb), "--out", str(out),
                           "--conditions", "base,threads=2,seed+1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["claim"]: r for r in json.loads((out / "sweep.json").read_text())["checks"]}
    fragile = rows["this machine runs one thread per kernel"]
    assert not fragile["holds"]
    assert fragile["conditions"]["base"] == {"holds": True, "detail": "1 threads"}
    assert fragile["conditions"]["threads=2"] == {"holds": False, "detail": "2 threads"}
    robust = rows["a robust claim"]
    assert robust["holds"] and robust["conditions"]["seed+1"]["detail"] == "seed 1"  # the seed was shifted
    table = (out / "sweep.md").read_text()
    assert "✘ 2 threads" in table and "1 hold in every condition, 1 do not" in table
    # A notebook whose cell raises is a failure of its own, not a missing row.
    bad = notebook(tmp_path / "02_broken.ipynb", "raise RuntimeError('broken on purpose')")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), str(bad), "--out", str(out),
                           "--conditions", "base"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "1 cell errors" in proc.stdout
    assert "broken on purpose" in (out / "sweep.md").read_text()


def test_the_default_runs_cover_every_setting_and_combine_them():
    sys.path.insert(0, str(ROOT / "scripts"))
    import sweep

    single = {c.name: c for c in sweep.CONDITIONS if ":" not in c.name}
    runs = [next(c for c in sweep.CONDITIONS if c.name == n) for n in sweep.DEFAULT]
    for name, cond in single.items():  # each setting is in at least one default run
        assert any(cond.env.items() <= run.env.items() and (cond.threads == 1 or run.threads == cond.threads)
                   for run in runs), name
    assert {run.threads for run in runs} == {1, 2}  # one thread per kernel too, as nbval runs
    both = sweep.combined("threads=2", "seed+1")
    assert both.threads == 2 and both.workers == max(1, (sweep.os.cpu_count() or 2) // 2)
    assert both.env == {"RESNET_TUTORIAL_SEED": "1"}
    assert sweep.combined("avx2", "seed+2").env == {**single["avx2"].env, "RESNET_TUTORIAL_SEED": "2"}
