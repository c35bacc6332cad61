"""RESNET_TUTORIAL_SEED shifts every seed the package uses, so that the sweep can try each claim on other seeds."""

import pytest
import torch

from resnet_tutorial.data import load_dataset
from resnet_tutorial.errors import ConfigError
from resnet_tutorial.experiments import experiment_key
from resnet_tutorial.models import create_model
from resnet_tutorial.runtime import generator, seed_everything, seed_offset, shifted
from resnet_tutorial.training import Recipe


def test_the_offset_shifts_seed_everything_and_generators(monkeypatch):
    monkeypatch.delenv("RESNET_TUTORIAL_SEED", raising=False)
    assert seed_offset() == 0 and shifted(3) == 3
    seed_everything(3)
    at_3 = torch.rand(4)
    monkeypatch.setenv("RESNET_TUTORIAL_SEED", "2")
    assert shifted(1) == 3
    seed_everything(1)
    assert torch.equal(torch.rand(4), at_3)  # seed 1 shifted by 2 is seed 3
    assert torch.equal(torch.rand(4, generator=generator(1)), torch.rand(4, generator=torch.Generator().manual_seed(3)))
    monkeypatch.setenv("RESNET_TUTORIAL_SEED", "two")
    with pytest.raises(ConfigError, match="RESNET_TUTORIAL_SEED must be a whole number"):
        seed_everything(0)


def test_the_offset_shifts_the_subset_fits_batch_order_and_the_cache_key(monkeypatch):
    from resnet_tutorial.training import fit

    monkeypatch.delenv("RESNET_TUTORIAL_SEED", raising=False)
    digits = load_dataset("digits")
    data = digits.subset(n_per_class=5, seed=1)
    torch.manual_seed(0)
    init = create_model("resnet20", channels=(2, 4, 8), in_chans=1, num_classes=10).state_dict()

    def trained(seed):
        model = create_model("resnet20", channels=(2, 4, 8), in_chans=1, num_classes=10)
        model.load_state_dict(init)
        fit(model, data, Recipe(epochs=1, batch_size=16), seed=seed, progress=False)
        return model.state_dict()

    def fresh():
        torch.manual_seed(5)  # the same initial weights every time
        return create_model("resnet20", channels=(2, 4, 8), in_chans=1, num_classes=10)

    at_1 = trained(1)
    key = experiment_key(fresh(), data, Recipe(epochs=1), tag="t", seed=0)
    assert experiment_key(fresh(), data, Recipe(epochs=1), tag="t", seed=0) == key
    monkeypatch.setenv("RESNET_TUTORIAL_SEED", "1")
    assert torch.equal(digits.subset(n_per_class=5, seed=0).train.images, data.train.images)  # 0 + 1 = 1
    shifted_0 = trained(0)  # fit(seed=0) under offset 1: the batch order and augmentation of seed 1
    assert all(torch.equal(shifted_0[k], at_1[k]) for k in at_1)
    # the same experiment under another offset trains differently: another entry in the experiment cache
    assert experiment_key(fresh(), data, Recipe(epochs=1), tag="t", seed=0) != key
