"""The experiment-cache key changes with everything that can change a trained result."""

import shutil

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial import experiments
from resnet_tutorial.data import load_digits
from resnet_tutorial.training import CPU_RECIPE, GPU_RECIPE


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "resnet_tutorial"
    shutil.copytree(experiments.SOURCE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(experiments, "SOURCE_ROOT", str(copy))
    return copy


def key():
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    return experiments.experiment_key(model, load_digits(), "t", {"epochs": 1, "lr": 0.1})


def test_key_changes_when_a_model_file_changes(package_copy):
    before = key()
    assert key() == before  # deterministic
    blocks = package_copy / "models" / "blocks.py"
    blocks.write_text(blocks.read_text().replace("out += identity", "out = out + 0.5 * identity"))
    assert key() != before


@pytest.mark.parametrize("path", ["training.py", "data.py", "models/resnet.py", "models/zoo.py", "gradflow.py"])
def test_key_changes_with_any_module_that_can_change_a_result(package_copy, path):
    before = key()
    with open(package_copy / path, "a") as f:
        f.write("\n# changed\n")
    assert key() != before


def test_presentation_modules_do_not_invalidate_the_cache(package_copy):
    before = key()
    for path in experiments.PRESENTATION_ONLY:
        with open(package_copy / path, "a") as f:
            f.write("\n# a new figure colour\n")
    assert key() == before
    (package_copy / "models" / "new_block.py").write_text("X = 1\n")  # a new module counts
    assert key() != before


def key_for(fit_kwargs):
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    return experiments.experiment_key(model, load_digits(), "t", fit_kwargs)


@pytest.mark.parametrize("change", [{"lr": 0.05}, {"weight_decay": 0.0}, {"epochs": 2}, {"augment": False},
                                    {"schedule": "step"}, {"label_smoothing": 0.1}, {"seed": 1}])
def test_key_changes_with_any_training_setting(change):
    base = {"epochs": 1, "lr": 0.1}
    assert key_for({**base, **change}) != key_for(base)


def test_key_follows_the_recipe():
    cpu = CPU_RECIPE
    assert key_for({"recipe": cpu}) != key_for({"recipe": GPU_RECIPE})
    assert key_for({"recipe": cpu}) != key_for({"recipe": cpu.replace(weight_decay=0.0)})
    assert key_for({"recipe": cpu}) != key_for({"recipe": cpu, "epochs": 1})  # an override counts
    # a recipe and the same settings given one by one are the same experiment
    assert key_for({"recipe": cpu}) == key_for(dict(**cpu))
    assert key_for({"recipe": cpu, "lr": 0.05}) == key_for({"recipe": cpu.replace(lr=0.05)})
