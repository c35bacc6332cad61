"""The experiment-cache key: built from explicit inputs, it changes with each of them and with nothing else."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial import experiments, training
from resnet_tutorial.data import load_digits
from resnet_tutorial.training import CPU_RECIPE, GPU_RECIPE, Recipe

BASE = Recipe(epochs=1, lr=0.1)


def key_for(recipe=BASE, model=None, data=None, **run):
    torch.manual_seed(0)
    model = model or rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    return experiments.experiment_key(model, data or load_digits(), recipe, **{"tag": "t", **run})


@pytest.mark.parametrize("change", [{"lr": 0.05}, {"weight_decay": 0.0}, {"epochs": 2}, {"augment": False},
                                    {"schedule": "step"}, {"label_smoothing": 0.1}, {"amp": False},
                                    {"tta": True}, {"ema_decay": 0.9}])
def test_key_changes_with_any_recipe_setting(change):
    assert key_for(BASE.replace(**change)) != key_for(BASE)


def test_key_follows_the_recipe():
    assert key_for(CPU_RECIPE) != key_for(GPU_RECIPE)
    assert key_for(CPU_RECIPE) == key_for(Recipe(**CPU_RECIPE.to_dict()))  # equal recipes: one experiment


def test_key_changes_with_each_other_input(monkeypatch):
    base = key_for()
    assert key_for() == base  # deterministic
    assert key_for(tag="u") != base
    assert key_for(seed=1) != base
    assert key_for(record_grad_norms=True) != base
    assert key_for(eval_every=2) != base
    assert key_for(data=load_digits().subset(20)) != base
    torch.manual_seed(1)
    assert key_for(model=rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))) != base  # initial weights
    assert key_for(model=rt.create_model("plain20", in_chans=1, channels=(4, 8, 16))) != base  # architecture
    frozen = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    frozen.conv1.weight.requires_grad_(False)
    assert key_for(model=frozen) != base
    monkeypatch.setattr(experiments, "TRAINING_VERSION", training.TRAINING_VERSION + 1)
    assert key_for() != base  # a change to the training code that changes results bumps the version
    monkeypatch.undo()
    monkeypatch.setenv("RESNET_TUTORIAL_SEED", "1")
    assert key_for() != base
    monkeypatch.delenv("RESNET_TUTORIAL_SEED")
    monkeypatch.setenv("RESNET_TUTORIAL_MAX_STEPS", "3")
    assert key_for() != base


KEY_SCRIPT = textwrap.dedent("""
    import torch, resnet_tutorial as rt
    from resnet_tutorial.data import load_digits
    from resnet_tutorial.experiments import experiment_key
    from resnet_tutorial.training import Recipe
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    print(experiment_key(model, load_digits(), Recipe(epochs=1), tag="t"), rt.__file__)
""")


def test_a_docstring_edit_keeps_the_key(tmp_path):
    """The key hashes what decides a result, not the package's source: editing a docstring or a comment in
    any module (here data.py, training.py and a model file) names the same experiment."""
    copy = tmp_path / "resnet_tutorial"
    shutil.copytree(os.path.dirname(rt.__file__), copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def key_of_copy() -> str:
        out = subprocess.run([sys.executable, "-c", KEY_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[1].startswith(str(copy))  # the copy was imported, not the installed package
        return out[0]

    before = key_of_copy()
    for path, old, new in [("data.py", '"""Datasets as tensors', '"""Datasets held as tensors'),
                           ("training.py", "# the first group's", "# the first parameter group's"),
                           ("models/resnet.py", '"""', '"""(edited) ')]:
        text = (copy / path).read_text()
        assert old in text, path
        (copy / path).write_text(text.replace(old, new, 1))
    assert key_of_copy() == before


def test_param_groups_enter_the_key_by_parameter_name_and_setting():
    def groups(model, lr_head):
        head = list(model.fc.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
        return [{"params": rest, "lr": 0.01}, {"params": head, "lr": lr_head}]

    torch.manual_seed(0)
    a = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    torch.manual_seed(0)
    b = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    key = lambda m, lr: experiments.experiment_key(m, load_digits(), BASE, tag="t", param_groups=groups(m, lr))  # noqa: E731
    assert key(a, 0.1) == key(b, 0.1)  # another model object, the same parameters by name
    assert key(a, 0.1) != key(a, 0.2)
    assert key(a, 0.1) != experiments.experiment_key(a, load_digits(), BASE, tag="t")


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
