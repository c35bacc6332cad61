"""The degradation experiment measures what chapter 2 says it measures.

Training error on the clean training images in eval mode after every epoch, the test error of the
trained net at the end, several seeds, and the cache shared with chapter 6.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from resnet_tutorial import create_model, evaluation
from resnet_tutorial.data import load_dataset
from resnet_tutorial.evaluation import loss_and_accuracy
from resnet_tutorial.gradflow import (
    DEGRADATION_SETUP,
    clean_training_view,
    degradation_data,
    degradation_experiment,
    degradation_seeds,
)
from resnet_tutorial.runtime import seed_everything
from resnet_tutorial.training import Recipe

ROOT = Path(__file__).resolve().parent.parent
KWARGS = dict(channels=(2, 4, 8), recipe=Recipe(epochs=2, batch_size=32), progress=False)


@pytest.fixture
def data():
    return load_dataset("digits").subset(n_per_class=8, test_per_class=4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    return tmp_path


def test_clean_training_view_tests_on_the_training_split(data):
    view = clean_training_view(data)
    assert torch.equal(view.test.images, data.train.images)
    assert torch.equal(view.test.labels, data.train.labels)
    assert len(data.test) == 40 and data.test is not data.train  # the original is untouched
    assert view.fingerprint() != data.fingerprint()  # and is cached apart from it
    assert data.name in view.name and "clean train" in view.name  # and says what it is


def test_clean_training_view_of_a_few_per_class_keeps_the_training_split(data):
    view = clean_training_view(data, n_per_class=3)
    assert torch.equal(view.train.images, data.train.images)  # training is unchanged
    assert torch.bincount(view.test.labels).tolist() == [3] * 10
    # the measured images are training images, and the same ones every time
    train_rows = {tuple(img.flatten().tolist()) for img in data.train.images}
    assert all(tuple(img.flatten().tolist()) in train_rows for img in view.test.images)
    assert torch.equal(clean_training_view(data, n_per_class=3).test.images, view.test.images)
    assert view.fingerprint() != clean_training_view(data).fingerprint()


def test_a_clean_subset_changes_the_measurement_not_the_training(data, one_thread):
    full = degradation_experiment(data, ("plain20",), **KWARGS)["plain20"]
    part = degradation_experiment(data, ("plain20",), clean_per_class=3, **KWARGS)["plain20"]
    assert torch.equal(full[0].conv1.weight, part[0].conv1.weight)  # the same run, measured twice
    view = clean_training_view(data, n_per_class=3)
    clean = view.loader("test", 64, device="cpu")
    assert part[1].final["clean_train_error"] == pytest.approx(1 - loss_and_accuracy(part[0], clean)[1])
    assert part[1].final["test_error"] == pytest.approx(full[1].final["test_error"])


def test_errors_are_measured_in_eval_mode_on_clean_images(data, one_thread):
    model, history = degradation_experiment(data, ("resnet20",), **KWARGS)["resnet20"]
    assert len(history.epochs) == 2
    assert all("clean_train_error" in row and "test_acc" not in row for row in history.epochs[:-1])
    final = history.final
    # What the book calls the training error: the clean training split, eval mode.
    clean = data.loader("train", 64, shuffle=False, augment=False, device="cpu")
    assert final["clean_train_error"] == pytest.approx(1 - loss_and_accuracy(model, clean)[1])
    test = data.loader("test", 64, device="cpu")
    assert final["test_error"] == pytest.approx(1 - loss_and_accuracy(model, test)[1])
    assert final["test_error"] == pytest.approx(1 - final["test_acc"])
    # fit's running error of augmented batches in train mode is a different number, kept apart
    assert "train_error" in final


def test_seeds_differ_and_share_the_cache_with_a_single_seed_run(data, cache, one_thread):
    runs = degradation_seeds(data, ("plain20",), seeds=(1, 0), **KWARGS)
    assert list(runs) == [0, 1]
    w0, w1 = (runs[s]["plain20"][0].conv1.weight for s in (0, 1))
    assert not torch.equal(w0, w1)
    assert len(list(cache.glob("degradation-plain20-*.pt"))) == 2
    again = degradation_experiment(data, ("plain20",), seed=0, **KWARGS)["plain20"]  # chapter 6's call
    assert len(list(cache.glob("degradation-plain20-*.pt"))) == 2  # loaded, not trained again
    assert again[1].to_dict() == runs[0]["plain20"][1].to_dict()
    assert torch.equal(again[0].conv1.weight, w0)
    # only the first seed records gradient norms (chapter 6 plots seed 0's)
    assert runs[0]["plain20"][1].grad_norms and not runs[1]["plain20"][1].grad_norms


def test_start_from_continues_a_copy_of_the_trained_net(data, cache, one_thread):
    first = degradation_experiment(data, ("plain20",), **KWARGS)["plain20"][0]
    before = {k: v.clone() for k, v in first.state_dict().items()}
    # a learning rate of 1e-9: the parameters stay where they start, so they show where that was
    still = KWARGS["recipe"].replace(lr=1e-9)
    kwargs = {**KWARGS, "recipe": still}
    again, history = degradation_experiment(data, ("plain20",), start_from={"plain20": first}, **kwargs)["plain20"]
    assert again is not first
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in before.items())  # the given net is untouched
    assert torch.allclose(again.conv1.weight, first.conv1.weight, atol=1e-6)  # started from its weights
    fresh = degradation_experiment(data, ("plain20",), **kwargs)["plain20"][0]
    assert not torch.allclose(fresh.conv1.weight, first.conv1.weight, atol=1e-3)  # a new net starts elsewhere
    assert len(history.epochs) == 2 and "clean_train_error" in history.final
    assert len(list(cache.glob("degradation-plain20-restart-*.pt"))) == 1  # cached under its own name


def test_the_cpu_setup_has_seeds_and_states_its_steps():
    cpu = DEGRADATION_SETUP["cpu"]
    assert len(cpu["seeds"]) >= 3 and len(set(cpu["seeds"])) == len(cpu["seeds"])
    assert cpu["dataset"] == "fashion-mnist" and cpu["per_class"] == 400  # 4,000 training images
    steps = cpu["recipe"].epochs * -(-10 * cpu["per_class"] // cpu["recipe"].batch_size)
    assert steps == 378  # what the comment above DEGRADATION_SETUP and chapter 2 say
    assert cpu["image_size"] == 24 and all(DEGRADATION_SETUP[p]["image_size"] is None for p in ("gpu", "paper"))
    assert all(DEGRADATION_SETUP[p]["per_class"] is None for p in ("gpu", "paper"))  # all of CIFAR-10


def test_chapters_2_5_and_6_load_the_same_data():
    # every chapter that uses these nets loads the data the same way (chapter 2 trains them; 5 and 6 measure them)
    for chapter in ("02_residual_connections", "05_gradient_flow", "06_gradient_measurements"):
        source = (ROOT / "chapters" / f"{chapter}.md").read_text()
        assert "data = degradation_data(setup)" in source, chapter


def test_degradation_data_takes_the_profiles_images_per_class_and_the_whole_test_split(monkeypatch):
    from resnet_tutorial import gradflow
    from resnet_tutorial.data import load_dataset

    asked = []

    def fake_load(name, image_size=None):
        asked.append((name, image_size))
        return load_dataset("digits")

    monkeypatch.setattr(gradflow, "load_dataset", fake_load)
    full = load_dataset("digits")
    sub = degradation_data({"dataset": "x", "image_size": 24, "per_class": 3})
    assert asked == [("x", 24)]
    assert len(sub.train) == 3 * full.num_classes and len(sub.test) == len(full.test)
    assert torch.equal(sub.train.images, full.subset(3).train.images)  # the same images as a subset of seed 0
    whole = degradation_data({"dataset": "y", "image_size": None, "per_class": None})
    assert len(whole.train) == len(full.train) and asked[-1] == ("y", None)
    assert whole.source == full.source  # all of it, not "a subset of None images per class"


def test_the_clean_view_measures_the_same_training_images_for_every_net(data, monkeypatch):
    """clean_training_view takes the training images of a subset of seed 0, as its docstring says; and
    degradation_experiment hands fit that view with the number of images per class it was given."""
    from resnet_tutorial import gradflow
    from resnet_tutorial.training import History

    view = clean_training_view(data, 2)
    assert torch.equal(view.test.images, data.subset(2, seed=0).train.images)
    assert not torch.equal(view.test.images, data.subset(2, seed=1).train.images)
    assert torch.equal(view.train.images, data.train.images)  # the training split is unchanged
    views = []
    monkeypatch.setattr(gradflow, "cached_fit", lambda model, v, recipe, **kw: views.append(v) or History(
        epochs=[{"test_loss": 1.0, "test_error": 0.5, "test_acc": 0.5}]))
    degradation_experiment(data, ("plain20",), clean_per_class=2, **KWARGS)
    assert torch.equal(views[-1].test.images, view.test.images) and len(views[-1].test) == 2 * data.num_classes


def test_what_each_net_is_trained_and_measured_with(data, monkeypatch):
    """Each net is built for the data (its classes and channels) from the seed, trained by cached_fit with the
    seed, gradient norms, device and progress asked for, on the clean training view; fit's test metrics become
    the clean training ones, and the final test is measured with the recipe's autocast (fit stood in for)."""
    from resnet_tutorial import gradflow
    from resnet_tutorial.data import Split
    from resnet_tutorial.training import History

    three = torch.isin(data.train.labels, torch.tensor([0, 1, 2]))
    test3 = torch.isin(data.test.labels, torch.tensor([0, 1, 2]))
    data = replace(data, classes=["0", "1", "2"], train=Split(data.train.images[three], data.train.labels[three]),
                   test=Split(data.test.images[test3], data.test.labels[test3]))
    fits, measured = [], []

    def fake_fit(model, view, recipe, **kwargs):
        fits.append((model, view, recipe, kwargs))
        return History(epochs=[{"loss": 2.0, "test_loss": 1.5, "test_error": 0.5, "test_acc": 0.5},
                               {"loss": 1.0, "test_loss": 0.7, "test_error": 0.2, "test_acc": 0.8}])

    def spy(model, loader, **kwargs):
        measured.append(kwargs)
        return loss_and_accuracy(model, loader, **kwargs)

    monkeypatch.setattr(gradflow, "cached_fit", fake_fit)
    monkeypatch.setattr(evaluation, "loss_and_accuracy", spy)
    recipe = Recipe(epochs=2, batch_size=32, amp=True)
    runs = degradation_experiment(data, ("plain20", "resnet20"), channels=(2, 4, 8), recipe=recipe, seed=5,
                                  device="cpu", progress=False)
    assert list(runs) == ["plain20", "resnet20"] and len(fits) == 2
    for (model, view, fitted_recipe, kwargs), name in zip(fits, runs, strict=True):
        assert model is runs[name][0] and model.num_classes == 3 and model.conv1.in_channels == 1
        assert model.fc.out_features == 3 and model.layer3[0].conv1.out_channels == 8
        assert torch.equal(view.test.images, data.train.images) and fitted_recipe is recipe
        assert kwargs == dict(tag=f"degradation-{name}", seed=5, record_grad_norms=True,
                              device=torch.device("cpu"), progress=False)
    seed_everything(5)  # the seed shifted as every run's is (RESNET_TUTORIAL_SEED)
    assert torch.equal(runs["plain20"][0].conv1.weight, create_model("plain20", channels=(2, 4, 8), in_chans=1,
                                                                     num_classes=3).conv1.weight)
    history = runs["resnet20"][1]
    assert history.epochs[0] == {"loss": 2.0, "clean_train_loss": 1.5, "clean_train_error": 0.5}
    # bf16 autocast on a CPU, as the recipe trains; the last row gets the test split's loss and accuracy
    assert measured[-1] == dict(amp=True, amp_dtype=torch.bfloat16)
    test = data.loader("test", 512, device="cpu")
    loss, acc = loss_and_accuracy(runs["resnet20"][0], test, amp=True, amp_dtype=torch.bfloat16)
    final = history.final
    assert final["clean_train_loss"] == 0.7 and "test_acc" in final
    assert final["test_loss"] == pytest.approx(loss, rel=1e-5) and final["test_acc"] == acc
    assert final["test_error"] == 1 - acc
    degradation_experiment(data, ("resnet20",), channels=(2, 4, 8), recipe=replace(recipe, amp=False))
    assert fits[-1][3]["seed"] == 0 and fits[-1][3]["progress"] is True  # the defaults: chapter 6's call
    assert measured[-1] == dict(amp=False, amp_dtype=torch.bfloat16)


def test_degradation_seeds_trains_the_last_seed_first(data, monkeypatch):
    """A notebook that needs only seed 0 (chapter 6) finds it trained by a notebook running all seeds at the
    same time no sooner than at the end; the result is in the seeds' order and passes everything on."""
    from resnet_tutorial import gradflow

    calls = []
    monkeypatch.setattr(gradflow, "degradation_experiment",
                        lambda data, names, **kw: calls.append((names, kw)) or {"seed": kw["seed"]})
    runs = degradation_seeds(data, ("plain20",), seeds=(0, 2, 1), recipe="r")
    assert [kw["seed"] for _, kw in calls] == [2, 1, 0]
    assert list(runs) == [0, 1, 2] and all(runs[s] == {"seed": s} for s in runs)
    assert all(names == ("plain20",) and kw["recipe"] == "r" for names, kw in calls)
