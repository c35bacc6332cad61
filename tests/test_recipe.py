"""The Recipe: one named object for how to train, taken by fit and cached_fit; EMA."""

import math
import os

import pytest
import torch
from test_training import run_until_killed, tiny  # noqa: E402  (tests/ is on the path, as for conftest.py)

from resnet_tutorial.data import load_dataset
from resnet_tutorial.evaluation import evaluate
from resnet_tutorial.experiments import experiment_key
from resnet_tutorial.training import (
    CPU_RECIPE,
    PAPER_RECIPE,
    RECIPES,
    Recipe,
    TrainingError,
    fit,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(20, test_per_class=10)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_equal_recipes_train_the_same_weights_and_name_the_same_experiment(digits):
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05, nesterov=True, schedule="warmup_cosine", label_smoothing=0.1)
    a, b, c = tiny(), tiny(), tiny()
    ha = fit(a, digits, recipe, progress=False, device="cpu")
    hb = fit(b, digits, recipe=Recipe(**recipe.to_dict()), progress=False, device="cpu")  # rebuilt from its dict
    fit(c, digits, recipe.replace(epochs=1).replace(epochs=2), progress=False, device="cpu")  # replaced back
    assert same(weights(a), weights(b)) and same(weights(a), weights(c))
    assert [e["train_loss"] for e in ha.epochs] == [e["train_loss"] for e in hb.epochs]
    assert ha.config["schedule"] == "warmup_cosine" and ha.config["label_smoothing"] == 0.1
    assert all(e["train_cpu_seconds"] > 0 for e in ha.epochs)
    assert experiment_key(tiny(), digits, recipe, tag="t") == experiment_key(
        tiny(), digits, Recipe(**recipe.to_dict()), tag="t")
    assert experiment_key(tiny(), digits, recipe, tag="t") != experiment_key(
        tiny(), digits, recipe.replace(lr=0.02), tag="t")


def test_bad_settings_are_one_clear_error():
    with pytest.raises(TrainingError, match="unknown schedule 'linear'"):
        Recipe(epochs=1, schedule="linear")
    with pytest.raises(TrainingError, match="epochs must be .*; lr must be a positive"):
        Recipe(epochs=0, lr=-0.1)
    with pytest.raises(TrainingError, match="batch_size"):
        Recipe(epochs=1, batch_size=0)
    with pytest.raises(TrainingError, match="not a recipe setting: lrate"):
        CPU_RECIPE.replace(lrate=0.1)
    with pytest.raises(TypeError, match="lrate"):  # the recipe is the only way to give a setting
        fit(tiny(), None, CPU_RECIPE, lrate=0.1)
    with pytest.raises(TrainingError, match="needs a Recipe, got dict"):
        fit(tiny(), None, {"epochs": 1, "lr": 0.1})
    with pytest.raises(TrainingError, match="ema_decay must be in \\(0, 1\\).*got 1.5"):
        Recipe(epochs=1, ema_decay=1.5)


def test_named_recipes():
    assert set(RECIPES) == {"paper", "gpu", "cpu"} and RECIPES["cpu"] is CPU_RECIPE
    # He et al. (2016a): 64k iterations of 128 images from 50k, lr / 10 at 32k and 48k, weight decay 1e-4
    steps_per_epoch = math.ceil(50_000 / PAPER_RECIPE.batch_size)
    assert PAPER_RECIPE.epochs * steps_per_epoch == pytest.approx(64_000, rel=0.01)
    assert [m * steps_per_epoch for m in PAPER_RECIPE.milestones] == pytest.approx([32_000, 48_000], rel=0.01)
    assert (PAPER_RECIPE.lr, PAPER_RECIPE.momentum, PAPER_RECIPE.weight_decay) == (0.1, 0.9, 1e-4)
    assert Recipe(epochs=4, schedule="onecycle").schedule == "warmup_cosine"  # the old name still works


def test_ema_is_evaluated_and_returned_and_resumes_exactly(digits, tmp_path, monkeypatch):
    recipe = Recipe(epochs=3, batch_size=32, lr=0.05, ema_decay=0.9)
    plain, averaged = tiny(), tiny()
    fit(plain, digits, recipe.replace(ema_decay=None), progress=False, device="cpu")
    h = fit(averaged, digits, recipe=recipe, progress=False, device="cpu")
    assert not same(weights(plain), weights(averaged))  # the average, not the last weights
    m = evaluate(averaged, digits, device="cpu")
    assert m.accuracy == pytest.approx(h.final["test_acc"])  # the returned model is the evaluated one

    path = tmp_path / "ckpt.pt"
    run_until_killed(monkeypatch, 1, lambda: fit(tiny(), digits, recipe=recipe, checkpoint_path=path,
                                                 progress=False, device="cpu"))
    resumed = tiny(5)
    fit(resumed, digits, recipe=recipe, checkpoint_path=path, resume=True, progress=False, device="cpu")
    assert same(weights(resumed), weights(averaged))
    assert os.listdir(tmp_path) == ["ckpt.pt"]
