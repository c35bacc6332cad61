"""The Recipe: one named object for how to train, taken by fit and cached_fit; EMA."""

import math
import os

import pytest
import torch
from test_training import each_step, run_until_killed, small_bn_net, tiny  # noqa: E402  (tests/ is on the path, as for conftest.py)

from resnet_tutorial.data import load_dataset
from resnet_tutorial.evaluation import evaluate
from resnet_tutorial.experiments import experiment_key
from resnet_tutorial.training import (
    CPU_RECIPE,
    PAPER_RECIPE,
    RECIPES,
    Recipe,
    RecipeError,
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
    with pytest.raises(TrainingError, match="^fit needs a Recipe, got dict"):
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


def test_each_setting_is_checked_at_the_edges_of_its_range():
    """The values at the edge of each range make a recipe; those just outside are refused, naming the setting."""
    for settings in (dict(batch_size=1), dict(weight_decay=0.0), dict(momentum=0.0), dict(label_smoothing=0.0),
                     dict(warmup_epochs=0.0), dict(ema_decay=0.5), dict(augment=False), dict(augment="none")):
        Recipe(epochs=1, **settings)
    bad = {"epochs": [0, True, 2.0, "3"], "batch_size": [0, True, 64.0], "lr": [0.0, -0.1, math.nan],
           "weight_decay": [-1e-4, math.nan], "momentum": [-0.1, 1.0], "label_smoothing": [-0.1, 1.0],
           "warmup_epochs": [-1.0, math.nan], "ema_decay": [0.0, 1.0], "augment": ["rotate", None]}
    for name, values in bad.items():
        for value in values:
            with pytest.raises(RecipeError) as refused:
                Recipe(**{"epochs": 1, name: value})
            assert list(refused.value.problems) == [name], (name, value)
            assert isinstance(refused.value, ValueError) and str(refused.value).startswith(f"{name} must be")
    with pytest.raises(RecipeError, match="schedule must be one of cosine, warmup_cosine, step, constant"):
        Recipe(epochs=1, schedule="linear")
    with pytest.raises(RecipeError, match="augment must be True, False or one of crop_flip, shift,"):
        Recipe(epochs=1, augment="rotate")


def test_milestones_are_kept_as_a_tuple():
    """A list of milestones is stored as a tuple: the recipe stays frozen and hashable, equal to one given a tuple."""
    listed, tupled = Recipe(epochs=4, schedule="step", milestones=[2, 3]), Recipe(epochs=4, schedule="step",
                                                                                   milestones=(2, 3))
    assert listed.milestones == (2, 3) and listed == tupled and hash(listed) == hash(tupled)
    assert Recipe(epochs=4).milestones is None


def test_the_average_is_an_ema_of_each_steps_weights_and_batch_norm_statistics(digits):
    """ema_decay=d: the returned model is the exponential moving average with decay d of the weights and the
    batch-norm statistics after each step (the first step's as they are), computed here by hand from a plain run."""
    recipe = Recipe(epochs=1, batch_size=32, lr=0.05, augment=False, amp=False)
    plain, snapshots = small_bn_net(), []
    with each_step(after=lambda opt: snapshots.append(weights(plain))):
        fit(plain, digits, recipe, progress=False, device="cpu")
    assert len(snapshots) == 7  # 200 images in batches of 32
    expected = dict(snapshots[0])
    for snapshot in snapshots[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * v if v.is_floating_point() else v for k, v in snapshot.items()}
    averaged = small_bn_net()
    fit(averaged, digits, recipe.replace(ema_decay=0.8), progress=False, device="cpu")
    got = averaged.state_dict()
    for k, v in expected.items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(got["1.running_mean"], snapshots[-1]["1.running_mean"])  # averaged too, not the last
