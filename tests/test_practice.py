"""The running example asks the experiment cache for one and the same experiment from every chapter."""

import pytest
import torch

from resnet_tutorial import practice
from resnet_tutorial.data import load_dataset
from resnet_tutorial.experiments import cache_lock, experiment_key


def test_mnist_resnet20_is_the_same_experiment_on_every_call(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))  # the lock file goes there
    calls = []

    def fake_cached_fit(model, data, recipe, *, tag, device=None, progress=True, **kwargs):
        calls.append((experiment_key(model, data, recipe, tag=tag, **kwargs),
                      {k: v.clone() for k, v in model.state_dict().items()}))
        return "history"

    monkeypatch.setattr(practice, "cached_fit", fake_cached_fit)
    data = load_dataset("mnist5k")
    torch.manual_seed(123)  # whatever ran before must not change the experiment
    model, history = practice.mnist_resnet20(data, device="cpu")
    torch.manual_seed(456)
    practice.mnist_resnet20(data, device="cpu")
    assert history == "history" and not model.training
    assert model.conv1.in_channels == 1 and model.num_classes == 10
    (key1, w1), (key2, w2) = calls
    assert key1 == key2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


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
