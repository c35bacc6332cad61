"""Fine-tuning helpers: freeze/unfreeze, frozen BN statistics, per-stage learning rates, loading weights."""

import pytest
import torch
import torchvision

import resnet_tutorial as rt
from resnet_tutorial.checkpoint import save_checkpoint
from resnet_tutorial.data import load_dataset
from resnet_tutorial.finetune import (
    FinetuneError,
    freeze,
    freeze_bn_stats,
    load_for_finetuning,
    model_parts,
    stage_lrs,
    stage_param_groups,
    trainable_parameters,
    unfreeze,
)
from resnet_tutorial.training import Recipe, fit

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return rt.create_model("resnet20", in_chans=1, num_classes=num_classes, channels=(4, 8, 16))


def test_parts_and_freeze_unfreeze():
    model = tiny()
    assert list(model_parts(model)) == ["stem", "layer1", "layer2", "layer3", "head"]
    freeze(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    unfreeze(model, ["layer3"])
    assert trainable_parameters(model) == sum(p.numel() for p in model.layer3.parameters()) + 170
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(FinetuneError, match="unknown part.*layer4"):
        freeze(model, ["layer4"])


def test_frozen_bn_keeps_running_statistics_in_train_mode():
    model = tiny()
    freeze(model, ["stem"])
    model.train()
    before = model.bn1.running_mean.clone(), model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(8, 1, 8, 8) * 3 + 1)
    assert torch.equal(model.bn1.running_mean, before[0])  # frozen: unchanged
    assert not torch.equal(model.layer1[0].bn1.running_mean, before[1])  # trainable: updated
    unfreeze(model, ["stem"])
    model.train()
    model(torch.randn(8, 1, 8, 8) * 3 + 1)
    assert not torch.equal(model.bn1.running_mean, before[0])
    freeze_bn_stats(model)
    model.train()
    frozen = model.layer3[2].bn2.running_var.clone()
    model(torch.randn(8, 1, 8, 8))
    assert torch.equal(model.layer3[2].bn2.running_var, frozen)


def test_stage_param_groups_and_fit_only_moves_trainable_weights():
    data = load_dataset("digits").subset(20, test_per_class=5)
    model = tiny()
    freeze(model, ["stem", "layer1"])
    groups = stage_param_groups(model, {"layer2": 0.001, "layer3": 0.01}, head_lr=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [("layer2", 0.001), ("layer3", 0.01), ("head", 0.1)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = fit(model, data, Recipe(epochs=1, batch_size=50, schedule="constant"), param_groups=groups, progress=False)
    after = {k: v.cpu() for k, v in model.state_dict().items()}
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert h.final["lr"] == 0.001  # the first group's rate
    with pytest.raises(FinetuneError, match="unknown part"):
        stage_param_groups(model, {"layer9": 0.1})


def test_load_torchvision_state_dict_and_replace_head():
    tv = torchvision.models.resnet18()  # built locally: the same keys as the downloaded weights
    model = load_for_finetuning(tv.state_dict(), num_classes=5, model="resnet18", freeze_backbone=True)
    assert model.fc.out_features == 5
    assert torch.equal(model.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, tv.bn1.running_var)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    with pytest.raises(FinetuneError, match="^a state_dict needs the architecture: pass model="):
        load_for_finetuning(tv.state_dict(), num_classes=5)


def test_load_our_checkpoint_for_another_task(tmp_path):
    source = tiny(num_classes=10)
    save_checkpoint(tmp_path / "c.pt", source, epoch=3)
    model = load_for_finetuning(tmp_path / "c.pt", num_classes=4)
    assert model.num_classes == 4 and model.fc.out_features == 4
    assert torch.equal(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    source.eval()
    assert torch.allclose(model.forward_head(model.forward_features(x), pre_logits=True),
                          source.forward_head(source.forward_features(x), pre_logits=True))


def test_timm_state_dict_and_pretrained_download_path(monkeypatch):
    import timm

    import resnet_tutorial.models as models

    tm = timm.create_model("resnet18", pretrained=False)  # timm's keys, built locally
    model = load_for_finetuning(tm.state_dict(), num_classes=3, model="resnet18")
    assert torch.equal(model.layer3[0].downsample[0].weight, tm.layer3[0].downsample[0].weight)
    assert model.fc.out_features == 3

    calls = []  # the online path: load_pretrained(model, name, source) is asked for the weights

    def fake_pretrained(net, name, source="torchvision"):
        calls.append((name, source))
        models.load_weights(net, tm.state_dict())
        return net

    monkeypatch.setattr(models, "load_pretrained", fake_pretrained)
    model = load_for_finetuning("resnet18", num_classes=4, pretrained="timm")
    assert calls == [("resnet18", "timm")] and model.fc.out_features == 4
    assert torch.equal(model.conv1.weight, tm.conv1.weight)


def test_a_weights_file_loads_as_its_state_dict_does(tmp_path):
    """A file and the same weights as a state_dict give the same model: the other head is dropped."""
    source = tiny(num_classes=7)
    torch.save(source.state_dict(), tmp_path / "seven.pt")
    kwargs = dict(model="resnet20", in_chans=1, channels=(4, 8, 16))
    from_file = load_for_finetuning(tmp_path / "seven.pt", num_classes=3, **kwargs)
    from_dict = load_for_finetuning(source.state_dict(), num_classes=3, **kwargs)
    for m in (from_file, from_dict):
        assert m.fc.out_features == 3
        assert torch.equal(m.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert from_file.state_dict().keys() == from_dict.state_dict().keys()
    a, b = from_file.state_dict(), from_dict.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("fc."))
    # Our checkpoint with another head, given an architecture: the same rule.
    save_checkpoint(tmp_path / "c.pt", source, epoch=1)
    m = load_for_finetuning(tmp_path / "c.pt", num_classes=3, **kwargs)
    assert torch.equal(m.conv1.weight, source.conv1.weight) and m.fc.out_features == 3
    # A plain weights file names no architecture: it must be given.
    with pytest.raises(FinetuneError, match="^the weights file '.*seven.pt' needs the architecture"):
        load_for_finetuning(tmp_path / "seven.pt", num_classes=3)
    # Weights of another architecture still fail, with the file named.
    with pytest.raises(rt.models.WeightsError, match="seven.pt.* does not fit this model.*missing"):
        load_for_finetuning(tmp_path / "seven.pt", num_classes=3, model="resnet32", in_chans=1, channels=(4, 8, 16))


def test_a_mistyped_path_is_reported_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for typo in ("x.pt", "runs/model.pth", tmp_path / "missing.pt"):
        with pytest.raises(FinetuneError, match="no weights file at .*check the path"):
            load_for_finetuning(typo, num_classes=3, model="resnet20")
    with pytest.raises(rt.models.UnknownModelError, match="neither a file nor a registered model"):
        load_for_finetuning("resnet19", num_classes=3)


def test_one_part_by_name_and_freezing_again_after_unfreezing():
    model = tiny()
    freeze(model, "layer1")  # one part, named alone
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        f"layer1.{n}" for n, _ in model.layer1.named_parameters()}
    unfreeze(model, "layer1")
    freeze(model, "layer1")  # frozen again: its batch norms keep their statistics again
    model.train()
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(8, 1, 8, 8) * 3 + 1)
    assert torch.equal(model.layer1[0].bn1.running_mean, before)


def test_a_pre_activation_nets_last_batch_norm_belongs_to_its_last_stage():
    torch.manual_seed(0)
    model = rt.create_model("preact_resnet110", in_chans=1, num_classes=10, channels=(4, 8, 16))
    parts = model_parts(model)
    assert parts["layer3"] == [model.layer3, model.final_bn] and parts["layer2"] == [model.layer2]
    freeze(model, ["layer3"])
    assert not any(p.requires_grad for p in model.final_bn.parameters())


def test_parts_not_named_take_the_default_rate_and_nothing_to_train_is_an_error():
    model = tiny()
    groups = stage_param_groups(model, {"layer3": 0.01}, head_lr=0.1, default_lr=0.001)
    assert [(g["name"], g["lr"]) for g in groups] == [("stem", 0.001), ("layer1", 0.001), ("layer2", 0.001),
                                                       ("layer3", 0.01), ("head", 0.1)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["name"] for g in stage_param_groups(model, {"head": 0.1, "stem": 0.2})] == ["stem", "head"]
    freeze(model, ["stem", "layer1", "layer2"])
    assert [g["name"] for g in stage_param_groups(model, {}, default_lr=0.1)] == ["layer3", "head"]
    freeze(model, ["layer3"])
    model.fc.requires_grad_(False)
    with pytest.raises(FinetuneError, match="no trainable parameters"):
        stage_param_groups(model, {}, head_lr=0.1, default_lr=0.1)


def test_stage_lrs_divide_the_heads_rate_counting_back_from_the_last_stage():
    assert stage_lrs(tiny(), 0.05) == pytest.approx({"layer3": 0.01, "layer2": 0.005, "layer1": 0.002,
                                                     "stem": 0.001})
    four = rt.create_model("resnet18", in_chans=1, num_classes=10, channels=(4, 8, 16, 32))
    lrs = stage_lrs(four, 1.0)
    assert list(lrs) == ["layer4", "layer3", "layer2", "layer1", "stem"]
    assert list(lrs.values()) == pytest.approx([1 / 5, 1 / 10, 1 / 25, 1 / 50, 1 / 100])


def test_a_model_given_is_the_one_loaded(tmp_path):
    """model= given as a module: the weights (a state_dict, or our checkpoint, whose own architecture it
    overrides) are loaded into that very module."""
    source = tiny(num_classes=10, seed=1)
    save_checkpoint(tmp_path / "c.pt", source, epoch=1)
    for weights in (source.state_dict(), tmp_path / "c.pt"):
        given = tiny(num_classes=10)
        model = load_for_finetuning(weights, num_classes=4, model=given)
        assert model is given and model.fc.out_features == 4
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert all(p.requires_grad for p in model.parameters())  # nothing frozen unless asked


def test_weights_whose_head_already_fits_keep_it(tmp_path):
    """Every weight is loaded but a classifier of another size: one of the size asked for is kept."""
    source = tiny(num_classes=10, seed=1)
    save_checkpoint(tmp_path / "c.pt", source, epoch=1)
    from_checkpoint = load_for_finetuning(tmp_path / "c.pt", num_classes=10)
    from_dict = load_for_finetuning(source.state_dict(), num_classes=10, model="resnet20", in_chans=1,
                                    channels=(4, 8, 16))
    for model in (from_checkpoint, from_dict):
        assert torch.equal(model.fc.weight, source.fc.weight)


def test_a_state_dict_of_another_architecture_is_refused_by_name():
    other = rt.create_model("resnet32", in_chans=1, num_classes=7, channels=(4, 8, 16)).state_dict()
    with pytest.raises(rt.models.WeightsError, match="^the state_dict does not fit this model"):
        load_for_finetuning(other, num_classes=3, model="resnet20", in_chans=1, channels=(4, 8, 16))


def test_the_architecture_takes_the_model_arguments(tmp_path, monkeypatch):
    """Arguments beyond source and num_classes build the architecture: of a named ImageNet model, and of our
    checkpoint's."""
    import resnet_tutorial.models as models

    asked = []  # offline: the weights are not downloaded, the request recorded
    monkeypatch.setattr(models, "load_pretrained", lambda net, name, source: asked.append((name, source)) or net)
    model = load_for_finetuning("resnet18", num_classes=4, in_chans=1, channels=(4, 8, 16, 32))
    assert asked == [("resnet18", "torchvision")]  # torchvision's weights by default
    assert model.conv1.in_channels == 1 and model.fc.in_features == 32 and model.fc.out_features == 4
    save_checkpoint(tmp_path / "c.pt", tiny(), epoch=1)
    assert load_for_finetuning(tmp_path / "c.pt", num_classes=4, drop_rate=0.25).drop_rate == 0.25


def test_a_windows_path_is_reported_as_a_path(tmp_path, monkeypatch):
    """Either separator makes a name a path, on Windows (faked: os.sep is a backslash there) too."""
    import os

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "sep", "\\")
    for typo in ("runs\\model", "runs/model"):
        with pytest.raises(FinetuneError, match="no weights file at .*check the path"):
            load_for_finetuning(typo, num_classes=3, model="resnet20")


def test_freezing_batch_norm_leaves_the_rest_in_training_mode():
    """freeze_bn_stats puts only the batch norms in eval mode: dropout still drops, the model still trains."""
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16), drop_rate=0.5)
    freeze_bn_stats(model).train()
    x = torch.randn(4, 1, 8, 8)
    assert not torch.equal(model(x), model(x))  # two dropout masks
    assert model.training and model.layer1.training and not model.layer1[0].bn1.training


def test_freezing_twice_then_unfreezing_trains_the_batch_norm_again():
    model = tiny()
    freeze(model, "stem")
    freeze(model, "stem")
    unfreeze(model, "stem")
    model.train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(8, 1, 8, 8) * 3 + 1)
    assert not torch.equal(model.bn1.running_mean, before)


def test_a_checkpoint_that_names_no_architecture_needs_one(tmp_path):
    """A checkpoint of a model this package does not register, or one without its model_config (an older one),
    names no architecture: model= must be given, and then it loads."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    save_checkpoint(tmp_path / "custom.pt", net, epoch=1)
    with pytest.raises(FinetuneError, match="needs the architecture"):
        load_for_finetuning(tmp_path / "custom.pt", num_classes=3)
    source = tiny()
    save_checkpoint(tmp_path / "old.pt", source, epoch=1)
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    del state["model_config"]
    torch.save(state, tmp_path / "old.pt")
    model = load_for_finetuning(tmp_path / "old.pt", num_classes=3, model="resnet20", in_chans=1, channels=(4, 8, 16))
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 3
