"""The running example asks the experiment cache for one and the same experiment from every chapter."""

import pytest
import torch

from resnet_tutorial import practice
from resnet_tutorial.data import load_dataset
from resnet_tutorial.experiments import cache_lock, experiment_key


@pytest.mark.parametrize("name", ["fashion_resnet20", "mnist_resnet20"])
def test_each_trained_resnet20_is_the_same_experiment_on_every_call(monkeypatch, tmp_path, name):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))  # the lock file goes there
    calls = []

    def fake_cached_fit(model, data, recipe, *, tag, device=None, progress=True, **kwargs):
        calls.append((experiment_key(model, data, recipe, tag=tag, **kwargs),
                      {k: v.clone() for k, v in model.state_dict().items()}, data, recipe, tag))
        return "history"

    monkeypatch.setattr(practice, "cached_fit", fake_cached_fit)
    data = practice.fashion_data() if name == "fashion_resnet20" else load_dataset("mnist5k")
    torch.manual_seed(123)  # whatever ran before must not change the experiment
    model, history = getattr(practice, name)(data, device="cpu")
    torch.manual_seed(456)
    getattr(practice, name)(device="cpu")  # its own data when none is given: the same experiment
    assert history == "history" and not model.training
    assert model.conv1.in_channels == 1 and model.num_classes == 10
    (key1, w1, data1, recipe, tag), (key2, w2, *_) = calls
    assert key1 == key2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    expected = {"fashion_resnet20": (practice.FASHION_RESNET20_RECIPE, practice.FASHION_RESNET20_TAG),
                "mnist_resnet20": (practice.MNIST_RESNET20_RECIPE, practice.MNIST_RESNET20_TAG)}[name]
    assert (recipe, tag) == expected and data1 is data


def test_the_running_examples_data_are_400_fashion_images_per_class_and_the_whole_test_split():
    data = practice.fashion_data()
    full = load_dataset("fashion-mnist")
    assert data.name == "fashion-mnist" and len(data.test) == len(full.test) == 10_000
    assert torch.equal(data.test.images, full.test.images)
    assert torch.bincount(data.train.labels).tolist() == [practice.FASHION_PER_CLASS] * 10 == [400] * 10
    assert torch.equal(data.train.images, practice.fashion_data().train.images)  # the same on every call
    assert data.mean == full.mean and data.std == full.std  # the statistics of the whole training split


def test_the_running_examples_recipe_is_the_cpu_recipe_with_fashion_augmentation_and_no_tta():
    from resnet_tutorial.training import CPU_RECIPE

    assert practice.FASHION_RESNET20_RECIPE == CPU_RECIPE.replace(augment="shift_flip", tta=False)
    assert CPU_RECIPE.augment == "shift_rotate" and CPU_RECIPE.tta


def test_the_recipe_is_the_books_cpu_recipe_and_not_a_dict():
    from resnet_tutorial.training import CPU_RECIPE, Recipe

    recipe = practice.MNIST_RESNET20_RECIPE
    assert recipe is CPU_RECIPE and isinstance(recipe, Recipe)
    as_dict = recipe.to_dict()
    assert Recipe(**{**as_dict, "augment": False}) == recipe.replace(augment=False) and as_dict["epochs"] == recipe.epochs
    with pytest.raises(TypeError):  # one way to say how to train: a Recipe, not a dict of its settings
        dict(**recipe)


def test_the_lock_serialises_two_holders(tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    events = []

    def hold(label):
        with cache_lock("demo.lock"):
            events.append(f"{label} in")
            time.sleep(0.2)
            events.append(f"{label} out")

    threads = [threading.Thread(target=hold, args=(x,)) for x in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events[0].endswith("in") and events[1].endswith("out") and events[1][0] == events[0][0]
    assert (tmp_path / "demo.lock").exists()
