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


def test_param_groups_enter_the_key_by_parameter_name_and_setting():
    def groups(model, lr_head):
        head = list(model.fc.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
        return [{"params": rest, "lr": 0.01}, {"params": head, "lr": lr_head}]

    torch.manual_seed(0)
    a = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    torch.manual_seed(0)
    b = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    key = lambda m, lr: experiments.experiment_key(m, load_digits(), "t", {"epochs": 1, "param_groups": groups(m, lr)})  # noqa: E731
    assert key(a, 0.1) == key(b, 0.1)  # another model object, the same parameters by name
    assert key(a, 0.1) != key(a, 0.2)
    assert key(a, 0.1) != experiments.experiment_key(a, load_digits(), "t", {"epochs": 1})


def test_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(experiments.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert experiments.cache_dir() == str(tmp_path / ".cache" / "resnet_tutorial" / "experiments")
    monkeypatch.setenv(experiments.CACHE_ENV, str(tmp_path / "here"))
    assert experiments.cache_dir() == str(tmp_path / "here")


def test_a_tag_becomes_a_safe_file_name():
    assert experiments._safe("ch2/plain 20:seed=1") == "ch2_plain_20_seed_1"
    assert experiments._safe("a-b_c.d") == "a-b_c.d" and experiments._safe("") == "experiment"
    assert len(experiments._safe("x" * 100)) == 60
