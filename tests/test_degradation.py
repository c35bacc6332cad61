"""The degradation experiment measures what chapter 2 says it measures.

Training error on the clean training images in eval mode after every epoch, the test error of the
trained net at the end, several seeds, and the cache shared with chapter 6.
"""

from __future__ import annotations

import pytest
import torch

from resnet_tutorial.data import load_dataset
from resnet_tutorial.evaluation import loss_and_accuracy
from resnet_tutorial.gradflow import (
    DEGRADATION_SETUP,
    clean_training_view,
    degradation_experiment,
    degradation_seeds,
)
from resnet_tutorial.training import Recipe

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


def test_the_cpu_setup_has_seeds_and_states_its_steps():
    cpu = DEGRADATION_SETUP["cpu"]
    assert len(cpu["seeds"]) >= 3 and len(set(cpu["seeds"])) == len(cpu["seeds"])
    steps = cpu["recipe"].epochs * -(-4000 // cpu["recipe"].batch_size)
    assert steps == 378  # what the comment above DEGRADATION_SETUP and chapter 2 say
