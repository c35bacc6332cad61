"""The smoke run of the gpu and paper profiles (scripts/smoke.py): the cap on the training steps, the stand-ins
for the downloads, and that a real error fails the run while a false claim is only reported."""

import json
import sys
from pathlib import Path

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial import testing
from resnet_tutorial.data import load_dataset
from resnet_tutorial.errors import ConfigError
from resnet_tutorial.experiments import experiment_key
from resnet_tutorial.runtime import MAX_STEPS_ENV, max_steps
from resnet_tutorial.training import Recipe, fit
from resnet_tutorial.transfer import imagenet_finetune, imagenet_weights

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import smoke  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(10, test_per_class=5)  # 100 training images


def tiny():
    torch.manual_seed(0)
    return rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16))


def count_steps(model):
    """A list that grows by one at every optimizer step (a training-mode forward pass)."""
    steps = []
    model.register_forward_hook(lambda m, i, o: steps.append(1) if m.training else None)
    return steps


def test_max_steps_setting(monkeypatch):
    monkeypatch.delenv(MAX_STEPS_ENV, raising=False)
    assert max_steps() is None
    monkeypatch.setenv(MAX_STEPS_ENV, "0")
    assert max_steps() is None
    monkeypatch.setenv(MAX_STEPS_ENV, "7")
    assert max_steps() == 7
    for bad in ("-1", "two"):
        monkeypatch.setenv(MAX_STEPS_ENV, bad)
        with pytest.raises(ConfigError, match=MAX_STEPS_ENV):
            max_steps()


def test_fit_stops_after_max_steps_and_keeps_the_history_whole(digits, monkeypatch):
    monkeypatch.setenv(MAX_STEPS_ENV, "3")
    model = tiny()
    steps = count_steps(model)
    h = fit(model, digits, Recipe(epochs=5, batch_size=50), progress=False, device="cpu", record_grad_norms=True)
    assert len(steps) == 3  # 2 steps per epoch: epoch 1, and the first step of epoch 2
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3, 4, 5]
    assert "test_acc" in h.epochs[1] and not h.epochs[1].get("capped")  # evaluated where it stopped
    assert all(e["capped"] and e["test_acc"] == h.epochs[1]["test_acc"] for e in h.epochs[2:])
    assert all(len(v) == 5 for v in h.grad_norms.values())
    assert h.config["max_steps"] == 3 and not model.training
    monkeypatch.delenv(MAX_STEPS_ENV)
    model = tiny()
    steps = count_steps(model)
    fit(model, digits, Recipe(epochs=2, batch_size=50), progress=False, device="cpu")
    assert len(steps) == 4  # no cap


def test_max_steps_is_part_of_the_cache_key(digits, monkeypatch):
    monkeypatch.delenv(MAX_STEPS_ENV, raising=False)
    model, recipe = tiny(), Recipe(epochs=2, batch_size=50)
    full = experiment_key(model, digits, recipe, tag="t")
    monkeypatch.setenv(MAX_STEPS_ENV, "2")
    assert experiment_key(model, digits, recipe, tag="t") != full


def test_smoke_sizes_shrink_the_speed_comparison(monkeypatch):
    from resnet_tutorial.reference import speed_comparison

    monkeypatch.setenv("RESNET_TUTORIAL_SMOKE", "1")
    rows = speed_comparison("resnet18", libraries=("torchvision",), batch_size=64, image_size=224, repeats=7,
                            modes=("infer",), memory_formats=("nchw",), progress=False, device="cpu")
    assert {(r["batch_size"], r["image_size"], r["repeats"]) for r in rows} == {(2, 64, 2)}


def test_imagenet_finetune_stops_after_max_steps(monkeypatch):
    from test_transfer import cifar_like, random_imagenet_state

    monkeypatch.setenv(MAX_STEPS_ENV, "1")
    transform = imagenet_weights("resnet18").transforms(crop_size=32, resize_size=36)
    _, record = imagenet_finetune(cifar_like(), state_dict=random_imagenet_state(), transform=transform,
                                  epochs=2, batch_size=20, device="cpu", amp=False)
    assert record["steps"] == 1 and 0.0 <= record["test_acc"] <= 1.0


def test_stand_in_weights_are_found_in_the_hub_cache(tmp_path, monkeypatch):
    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        [path] = testing.write_torchvision_weights(tmp_path, ["ResNet18_Weights.IMAGENET1K_V1"])
        weights = imagenet_weights("resnet18", "IMAGENET1K_V1")
        assert Path(path).name == Path(weights.url).name
        state = weights.get_state_dict(progress=False)
        assert torch.equal(state["conv1.weight"], torch.load(path, weights_only=True)["conv1.weight"])
        rt.create_model("resnet18.tv_in1k", pretrained=True)  # the package's loader finds it too
    finally:
        torch.hub.set_dir(old)


def notebook(path: Path, *cells: str) -> Path:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_smoke_fails_on_an_error_and_reports_a_false_claim(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smoke, "TORCHVISION_WEIGHTS", ())
    monkeypatch.setattr(smoke, "N_PER_BATCH", 4)
    claim = notebook(tmp_path / "01_claim.ipynb", (
        "import os\n"
        "from resnet_tutorial.book import check\n"
        "from resnet_tutorial.data import load_dataset\n"
        "data = load_dataset('cifar10')  # the fixture, accepted by torchvision's MD5 check\n"
        "assert len(data.train) == 20 and os.environ['RESNET_TUTORIAL_PROFILE'] == 'gpu'\n"
        "check('a false claim', False)\n"
        "check('a true claim', True)"))
    error = notebook(tmp_path / "02_error.ipynb", "x = 1", "raise ValueError('a real bug')")
    code = smoke.main([str(claim), str(error), "--profiles", "gpu", "--workdir", str(tmp_path / "work"),
                       "--timeout", "120"])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok   gpu/01_claim.ipynb" in out and "FAIL gpu/02_error.ipynb" in out
    assert "ValueError: a real bug" in out
    assert "gpu/01_claim.ipynb: a false claim" in out and "a true claim" not in out
    assert "failed: gpu/02_error.ipynb" in out


@pytest.mark.parametrize("stem", sorted(smoke.SHRINK))
def test_each_shrunk_size_is_in_its_chapter_once(stem):
    notebook = json.loads((ROOT / "chapters" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    nb = smoke.smoke_notebook(notebook, md5={}, shrink=smoke.SHRINK[stem])
    code = "".join(c["source"] for c in nb["cells"] if c["cell_type"] == "code")
    for old, new in smoke.SHRINK[stem]:
        assert old not in code and code.count(new) == 1


def test_a_shrink_that_no_longer_matches_stops_the_run():
    notebook = {"cells": [{"cell_type": "code", "source": ["STEPS = 128\n", "print(STEPS)"], "metadata": {},
                           "outputs": [], "execution_count": None}], "metadata": {}, "nbformat": 4,
                "nbformat_minor": 5}
    with pytest.raises(ValueError, match="update SHRINK"):
        smoke.smoke_notebook(notebook, md5={}, shrink=[("STEPS = 256\n", "STEPS = 32\n")])
    nb = smoke.smoke_notebook(notebook, md5={}, shrink=[("STEPS = 128\n", "STEPS = 32\n")])
    assert nb["cells"][1]["source"] == "STEPS = 32\nprint(STEPS)"


SAME_CODE = [
    'x = choose(cpu=1, gpu=dict(a=2), paper=dict(a=2))',
    'if ch.profile == "cpu":\n    pass',
    'y = 1 if ch.profile != "cpu" else 2',
    'if ch.profile in ("gpu", "paper"):\n    pass',
    'print("profile:", ch.profile)\nprint(f"{ch.profile} profile")',
    'PROFILE = None\nch = chapter_setup("t", profile=PROFILE)',
    'import sys\nif "google.colab" in sys.modules:\n    !pip install -q resnet-tutorial',
]
OTHER_CODE = [
    'x = choose(cpu=1, gpu=2, paper=3)',
    'x = choose(cpu=1, gpu=2, paper=2.0)',
    'if ch.profile == "gpu":\n    pass',
    'if ch.profile == "paper":\n    pass',
    'setup = SETUP[ch.profile]',
    'if ch.profile in ("gpu",):\n    pass',
    'p = get_profile()',
    'run(profile=ch.profile)',
    'f(PROFILE)',
    'x = (',
]


def cells(*sources, markdown=""):
    return {"cells": [{"cell_type": "markdown", "source": markdown}]
            + [{"cell_type": "code", "source": src} for src in sources]}


@pytest.mark.parametrize("code", SAME_CODE)
def test_code_that_does_the_same_in_gpu_and_paper(code):
    assert not smoke.paper_runs_other_code(cells("import torch", code, markdown='choose(gpu=1, paper=2)'))


@pytest.mark.parametrize("code", OTHER_CODE)
def test_code_that_does_something_else_in_paper(code):
    assert smoke.paper_runs_other_code(cells("import torch", code))


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_a_chapter_with_a_paper_or_gpu_only_branch_runs_in_both_profiles(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    if any(s in code for s in ('profile == "paper"', 'profile == "gpu"', "[ch.profile]")):
        assert smoke.paper_runs_other_code(nb)


def test_a_chapter_whose_code_is_the_same_runs_in_gpu_only(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(smoke, "prepare", lambda workdir: {})
    monkeypatch.setattr(smoke, "run_one", lambda args, nb, profile, md5: ran.append((nb.stem, profile))
                        or (f"{profile}/{nb.name}", 0.0, "", []))
    same = notebook(tmp_path / "01_same.ipynb", 'x = choose(cpu=1, gpu=2, paper=2)')
    other = notebook(tmp_path / "02_other.ipynb", 'x = choose(cpu=1, gpu=2, paper=3)')
    work = ["--workdir", str(tmp_path / "work")]
    assert smoke.main([str(same), str(other), *work]) == 0
    assert sorted(ran) == [("01_same", "gpu"), ("02_other", "gpu"), ("02_other", "paper")]
    assert "same paper/01_same.ipynb" in capsys.readouterr().out
    ran.clear()
    assert smoke.main([str(same), str(other), "--every-profile", *work]) == 0
    assert len(ran) == 4
    ran.clear()
    assert smoke.main([str(same), "--profiles", "paper", *work]) == 0  # asked for paper alone: it runs
    assert ran == [("01_same", "paper")]
