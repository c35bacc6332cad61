"""Checkpoints: round trip, atomic writes, RNG states, and every bad file."""

import os
import pickle

import pytest
import torch
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial import checkpoint as ck
from resnet_tutorial.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from resnet_tutorial.training import make_optimizer, make_scheduler


def tiny(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return rt.create_model("resnet20", in_chans=1, num_classes=num_classes, channels=(4, 8, 16))


def trained_setup():
    model = tiny()
    opt = make_optimizer(model, 0.1, 0.9, True, 5e-4)
    sched = make_scheduler(opt, "cosine", epochs=3, steps_per_epoch=2)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = trained_setup()
    path = tmp_path / "c.pt"
    history = {"epochs": [{"epoch": 1, "train_loss": 1.5}], "grad_norms": {}, "seconds": 2.0}
    torch.manual_seed(42)
    save_checkpoint(path, model, opt, sched, epoch=3, history=history, config={"lr": 0.1})
    expected_draw = torch.rand(3)
    assert [f for f in os.listdir(tmp_path)] == ["c.pt"]

    model2 = tiny(seed=5)
    opt2 = make_optimizer(model2, 0.1, 0.9, True, 5e-4)
    sched2 = make_scheduler(opt2, "cosine", epochs=3, steps_per_epoch=2)
    torch.manual_seed(0)
    state = load_checkpoint(path, model2, opt2, sched2)
    assert torch.equal(torch.rand(3), expected_draw)  # RNG state restored
    assert state["epoch"] == 3 and state["history"] == history and state["config"] == {"lr": 0.1}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True))
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    m0 = opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"]
    assert torch.equal(opt2.state[opt2.param_groups[0]["params"][0]]["momentum_buffer"], m0)


def test_model_from_checkpoint_rebuilds_the_architecture(tmp_path):
    model = tiny(num_classes=7)
    save_checkpoint(tmp_path / "c.pt", model, epoch=1)
    rebuilt, state = model_from_checkpoint(tmp_path / "c.pt")
    assert rebuilt.num_classes == 7 and rebuilt.in_chans == 1 and state["model_config"]["architecture"] == "resnet20"
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))


def test_model_from_checkpoint_keeps_the_pooling_and_asks_for_a_foreign_norm_layer(tmp_path):
    from functools import partial

    model = rt.create_model("resnet20", in_chans=1, num_classes=5, global_pool="max")
    save_checkpoint(tmp_path / "max.pt", model, epoch=1)
    rebuilt, _ = model_from_checkpoint(tmp_path / "max.pt")
    assert rebuilt.global_pool.pool_type == "max"  # average pooling would load the same weights silently
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))

    group_norm = partial(nn.GroupNorm, 4)
    gn = rt.create_model("resnet20", in_chans=1, num_classes=5, norm_layer=group_norm)
    save_checkpoint(tmp_path / "gn.pt", gn, epoch=1)
    with pytest.raises(CheckpointError, match="torch.nn.modules.normalization.GroupNorm, not batch norm"):
        model_from_checkpoint(tmp_path / "gn.pt")
    rebuilt, _ = model_from_checkpoint(tmp_path / "gn.pt", norm_layer=group_norm)
    assert torch.equal(gn.eval()(x), rebuilt.eval()(x))


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny(), epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny(seed=3), epoch=2)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.pt"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train first"):
        load_checkpoint(tmp_path / "nope.pt", tiny())


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny(), epoch=1)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path, tiny())


def test_a_file_that_could_run_code_is_refused(tmp_path):
    """A pickle holding a Python object besides tensors could run code when loaded: refused by name, for
    checkpoints and weights files alike, and nothing is executed."""
    from fractions import Fraction

    from resnet_tutorial.models import WeightsError, load_weights

    path = tmp_path / "odd.pt"
    torch.save({"format": ck.FORMAT, "model": tiny().state_dict(), "extra": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="refusing .*holds Python objects besides tensors"):
        load_checkpoint(path, tiny())
    with pytest.raises(WeightsError, match="refusing .*weights_only=False"):
        load_weights(tiny(), path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or not"):
        load_checkpoint(text)
    bare = tmp_path / "bare.pt"
    torch.save(tiny().state_dict(), bare)  # a bare state_dict is not our checkpoint
    with pytest.raises(CheckpointError, match="not a resnet_tutorial checkpoint"):
        load_checkpoint(bare)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": ck.FORMAT, "model": {}, "x": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_checkpoint_for_another_number_of_classes(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny(num_classes=5), epoch=1)
    with pytest.raises(CheckpointError, match="trained for 5 classes but the model has 10.*num_classes=5"):
        load_checkpoint(path, tiny(num_classes=10))


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny(), epoch=1)
    with pytest.raises(CheckpointError, match="resnet20"):
        load_checkpoint(path, rt.create_model("resnet32", in_chans=1, channels=(4, 8, 16)))


# --- what the mutation run (make mutation) found untested -----------------------------------------


@pytest.mark.parametrize("wrap", [nn.DataParallel, lambda m: nn.DataParallel(torch.compile(m))],
                         ids=["DataParallel", "DataParallel-of-compiled"])
def test_a_wrapped_model_is_saved_and_loaded_as_the_bare_model(tmp_path, wrap):
    """DDP/DataParallel (``.module``) and torch.compile (``._orig_mod``): the checkpoint holds the bare
    model, its names and its architecture, and loads into a wrapped model too."""
    model = tiny(num_classes=7)
    save_checkpoint(tmp_path / "c.pt", wrap(model), epoch=1)
    rebuilt, state = model_from_checkpoint(tmp_path / "c.pt")
    assert state["model_config"]["architecture"] == "resnet20" and list(state["model"]) == list(model.state_dict())
    other = tiny(num_classes=7, seed=3)
    load_checkpoint(tmp_path / "c.pt", wrap(other))
    for m in (rebuilt, other):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m.state_dict().values(), strict=True))


class Foreign(nn.Module):
    """A model from elsewhere: no registry face, maybe timm's configuration under one of its two names."""

    def __init__(self, **cfg):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        for name, value in cfg.items():
            setattr(self, name, value)


@pytest.mark.parametrize("name", ["pretrained_cfg", "default_cfg"])
def test_model_config_of_a_foreign_model(tmp_path, name):
    cfg = ck.model_config(Foreign(**{name: {"architecture": "resnet20", "num_classes": 2}}))
    assert cfg["architecture"] == "resnet20" and cfg["kwargs"] == {} and "global_pool" not in cfg
    assert ck.model_config(Foreign()) == {"kwargs": {}}
    model = Foreign()
    save_checkpoint(tmp_path / "c.pt", model, epoch=1)
    other = Foreign()
    load_checkpoint(tmp_path / "c.pt", other)  # no num_classes attribute: loads all the same
    assert torch.equal(other.fc.weight, model.fc.weight)


def test_model_config_records_every_argument_that_shapes_the_model(tmp_path):
    model = rt.create_model("resnet20", in_chans=1, num_classes=3, channels=(4, 8, 16), shortcut="B",
                            drop_rate=0.25)
    cfg = ck.model_config(model)
    assert cfg["num_classes"] == 3 and cfg["in_chans"] == 1  # also at the top, as timm's cfg has them
    save_checkpoint(tmp_path / "c.pt", model, epoch=1)
    rebuilt, _ = model_from_checkpoint(tmp_path / "c.pt")
    for key in ("num_classes", "in_chans", "shortcut", "drop_rate", "stride_in_1x1"):
        assert getattr(rebuilt, key) == getattr(model, key), key
    assert [s[0].conv1.out_channels for s in rebuilt.stages()] == [4, 8, 16]
    one_block = rt.models.ResNet(rt.models.BasicBlock, [1, 1], channels=(4, 8), stem="cifar", in_chans=1)
    assert ck.model_config(one_block)["kwargs"]["channels"] == [4, 8]  # stages of a single block
    bottleneck = rt.create_model("resnet50", num_classes=3, channels=(4, 8, 8, 8), stride_in_1x1=True)
    assert ck.model_config(bottleneck)["kwargs"]["stride_in_1x1"] is True


def test_model_from_checkpoint_of_a_preact_net_old_and_new(tmp_path):
    """A pre-activation net records no shortcut option; one saved before PreActResNet recorded the
    shortcut="B" and stride_in_1x1=False it ignored, and still rebuilds."""
    model = rt.create_model("preact_resnet110", num_classes=3, channels=(4, 8, 16), drop_rate=0.1)
    save_checkpoint(tmp_path / "new.pt", model, epoch=1)
    state = ck.read_checkpoint(tmp_path / "new.pt")
    assert state["model_config"]["kwargs"] == {"num_classes": 3, "in_chans": 3, "drop_rate": 0.1,
                                               "channels": [4, 8, 16], "global_pool": "avg"}
    state["model_config"]["kwargs"].update(shortcut="B", stride_in_1x1=False)  # as the old ResNet wrote it
    ck.atomic_torch_save(state, tmp_path / "old.pt")
    for f in ("new.pt", "old.pt"):
        rebuilt, _ = model_from_checkpoint(tmp_path / f)
        assert type(rebuilt) is type(model) and rebuilt.drop_rate == 0.1
        assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values(),
                                                     strict=True))


def test_model_from_checkpoint_of_a_plain_net_old_and_new(tmp_path):
    """A plain net records shortcut=None; one saved before shortcut=None existed recorded the option "A" it
    did not use, and still rebuilds as the plain net (not as a ResNet with option A shortcuts)."""
    model = rt.create_model("plain20", num_classes=3, channels=(4, 8, 16), in_chans=1)
    save_checkpoint(tmp_path / "new.pt", model, epoch=1)
    state = ck.read_checkpoint(tmp_path / "new.pt")
    assert state["model_config"]["kwargs"]["shortcut"] is None
    state["model_config"]["kwargs"]["shortcut"] = "A"  # as the old ResNet wrote it
    ck.atomic_torch_save(state, tmp_path / "old.pt")
    del state["model_config"]["kwargs"]["shortcut"]  # a hand-made configuration that leaves it out
    ck.atomic_torch_save(state, tmp_path / "none.pt")
    x = torch.randn(2, 1, 8, 8)
    for f in ("new.pt", "old.pt", "none.pt"):
        rebuilt, _ = model_from_checkpoint(tmp_path / f)
        assert rebuilt.shortcut is None and torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_model_from_checkpoint_of_a_hand_made_file(tmp_path):
    """A checkpoint with no model_config says so; one with only the architecture builds its defaults."""
    model = tiny()
    state = {"format": ck.FORMAT, "model": model.state_dict()}
    ck.atomic_torch_save(state, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="does not say which architecture"):
        model_from_checkpoint(tmp_path / "bare.pt")
    default = rt.create_model("resnet20")
    ck.atomic_torch_save({**state, "model": default.state_dict(), "model_config": {"architecture": "resnet20"}},
                         tmp_path / "arch.pt")
    rebuilt, _ = model_from_checkpoint(tmp_path / "arch.pt")
    assert rebuilt.num_classes == 10 and rebuilt.in_chans == 3
    with pytest.raises(CheckpointError, match="holds weights of another model"):  # no model_config to name it
        load_checkpoint(tmp_path / "bare.pt", rt.create_model("resnet32", in_chans=1, channels=(4, 8, 16)))


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "named.pt"
    save_checkpoint(path, tiny(num_classes=5), epoch=1)
    with pytest.raises(CheckpointError, match="named.pt"):
        model_from_checkpoint(path, channels=(4, 8, 32))
    with pytest.raises(CheckpointError, match="named.pt.* holds weights of resnet20"):
        load_checkpoint(path, rt.create_model("resnet32", in_chans=1, num_classes=5, channels=(4, 8, 16)))


def test_a_truncated_checkpoint_says_what_to_do(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"cannot read '.*c\.pt' as a checkpoint \(.*\); the file is truncated "
                                              "or not a PyTorch checkpoint: train again or point to another file"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [[torch.zeros(1)], {"format": ck.FORMAT, "model": torch.zeros(1)},
                                     {"format": "other/1", "model": {}}], ids=["list", "model", "format"])
def test_files_that_are_not_checkpoints(tmp_path, content):
    torch.save(content, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="not a resnet_tutorial checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


def test_load_restores_only_what_it_is_given(tmp_path):
    model, opt, sched = trained_setup()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, opt, sched, epoch=3)
    evaluated = tiny(seed=5)
    torch.manual_seed(7)
    expected = torch.get_rng_state()
    state = load_checkpoint(path, evaluated, restore_rng=False)  # the weights only, for evaluation
    assert torch.equal(torch.get_rng_state(), expected)  # restore_rng=False: the caller's RNG untouched
    assert "optimizer" in state and "scheduler" in state
    assert torch.equal(evaluated.fc.weight, model.fc.weight)


def test_scaler_and_average_round_trip(tmp_path):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = tiny()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update_parameters(model)
    ema.update_parameters(model)
    save_checkpoint(tmp_path / "c.pt", model, epoch=1, scaler=scaler, ema=ema)

    scaler2 = torch.amp.GradScaler("cpu", init_scale=2.0)
    ema2 = AveragedModel(tiny(seed=4), multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    load_checkpoint(tmp_path / "c.pt", tiny(), scaler=scaler2, ema=ema2)
    assert scaler2.get_scale() == 1024.0
    assert ema2.n_averaged.item() == 2 and torch.equal(ema2.module.fc.weight, ema.module.fc.weight)

    save_checkpoint(tmp_path / "plain.pt", model, epoch=1)  # no scaler, no average
    load_checkpoint(tmp_path / "plain.pt", tiny(), scaler=scaler2)  # a scaler is fine, its state kept
    assert scaler2.get_scale() == 1024.0
    with pytest.raises(CheckpointError, match="no average of the weights"):
        load_checkpoint(tmp_path / "plain.pt", tiny(), ema=ema2)


def test_a_gpu_checkpoint_resumes_on_a_machine_without_that_gpu():
    """A checkpoint written on GPUs (its RNG state has a "cuda" entry) resumes where they are missing."""
    state = ck.rng_state()
    expected = torch.rand(2)
    state["cuda"] = [torch.zeros(1, dtype=torch.uint8)] * (torch.cuda.device_count() + 1)  # one GPU too many
    ck.set_rng_state(state)  # no error: the CPU generator is restored, the CUDA ones left alone
    assert torch.equal(torch.rand(2), expected)


def test_load_model_state_names_a_checkpoint_by_default():
    state = {"model": tiny(num_classes=5).state_dict()}
    with pytest.raises(CheckpointError, match="^'checkpoint' was trained for 5 classes"):
        ck.load_model_state(tiny(num_classes=10), state)
