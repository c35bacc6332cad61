"""fit, its History, schedules, gradient norms, NaN handling, resume equality and cached_fit."""

import json
import math
import os
import threading

import pytest
import torch
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial import checkpoint as ckpt_module
from resnet_tutorial import training
from resnet_tutorial.data import load_dataset
from resnet_tutorial.experiments import cached_fit, experiment_key
from resnet_tutorial.training import History, Recipe, TrainingError, fit, layer_grad_norms, make_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(40, test_per_class=20)


def tiny(seed=0):
    torch.manual_seed(seed)
    return rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16))


def weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_until_killed(monkeypatch, epoch: int, run) -> None:
    """Call ``run()``, which trains with a checkpoint, and "kill" it once the checkpoint of ``epoch`` is written."""
    real_save = ckpt_module.save_checkpoint

    def save_then_die(*args, epoch, **kw):
        real_save(*args, epoch=epoch, **kw)
        if epoch == stop:
            raise KeyboardInterrupt

    stop = epoch
    monkeypatch.setattr(ckpt_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(ckpt_module, "save_checkpoint", real_save)


def test_fit_learns_and_returns_history(digits):
    model = tiny()
    h = fit(model, digits, Recipe(epochs=6, batch_size=32, lr=0.05), progress=False, device="cpu")
    assert [e["epoch"] for e in h.epochs] == list(range(1, 7))
    keys = {"epoch", "train_loss", "train_acc", "train_error", "test_loss", "test_acc", "test_error", "lr", "seconds"}
    assert keys <= set(h.final)
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    assert h.final["test_acc"] > 0.3  # chance is 0.1
    assert h.final["train_error"] == pytest.approx(1 - h.final["train_acc"])
    assert h.seconds == pytest.approx(sum(e["seconds"] for e in h.epochs))
    assert h.as_arrays("test_acc").shape == (6,)
    assert h.config["epochs"] == 6 and h.config["dataset"] == "digits"
    assert not model.training  # fit leaves the model in eval mode


def test_history_round_trips_through_json(digits):
    h = fit(tiny(), digits, Recipe(epochs=2, batch_size=64), progress=False, record_grad_norms=True, eval_every=2)
    assert "test_acc" not in h.epochs[0] and "test_acc" in h.epochs[1]
    assert math.isnan(h.as_arrays("test_acc")[0])
    back = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.epochs == h.epochs and back.grad_norms == h.grad_norms and back.seconds == h.seconds


def test_options_run_together(digits, capsys):
    """Nesterov, label smoothing, clipping, step schedule, warm-up, bf16 autocast on the CPU, channels_last."""
    recipe = Recipe(epochs=2, batch_size=64, nesterov=True, label_smoothing=0.1, clip_grad_norm=1.0,
                    schedule="step", milestones=[1], warmup_epochs=0.5, amp=True, channels_last=True)
    h = fit(tiny(), digits, recipe, progress=True)
    assert all(math.isfinite(e["train_loss"]) for e in h.epochs)
    assert h.config["amp"] is True and h.config["channels_last"] is True
    assert h.epochs[1]["lr"] == pytest.approx(0.01)  # divided by 10 at the milestone
    assert "epoch 2/2" in capsys.readouterr().err  # a progress bar per epoch
    fit(tiny(), digits, Recipe(epochs=1, batch_size=64), progress=False)
    assert capsys.readouterr().err == ""  # silent when asked


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_schedules(schedule):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, schedule, epochs=8, steps_per_epoch=10, milestones=None)
    lrs = []
    for _ in range(80):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if schedule == "constant":
        assert set(lrs) == {1.0}
    elif schedule == "step":  # default milestones: 50% and 75% of the epochs
        assert lrs[39] == 1.0 and lrs[40] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)
    elif schedule == "cosine":
        assert lrs[0] == 1.0 and lrs[40] == pytest.approx(0.5, abs=0.02) and lrs[-1] < 0.01
        assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    else:  # one-cycle: up for 25% of the steps, then down to ~0
        peak = lrs.index(max(lrs))
        assert 15 <= peak <= 21 and lrs[0] < 0.1 and lrs[-1] < 0.01 and max(lrs) == pytest.approx(1.0)


def test_unknown_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(TrainingError, match="unknown schedule"):
        make_scheduler(opt, "linear", 2, 2)


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.num_classes = 10

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_nan_loss_is_a_clear_error(digits):
    with pytest.raises(TrainingError, match="lower the learning rate"):
        fit(NaNNet(), digits, Recipe(epochs=1, batch_size=64), progress=False)


def test_grad_norms(digits):
    model = tiny()
    h = fit(model, digits, Recipe(epochs=2, batch_size=64), record_grad_norms=True, progress=False)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert list(h.grad_norms) == convs  # every conv/linear layer, input to output
    assert convs[0] == "conv1" and convs[-1] == "fc" and len(convs) == 20  # ResNet-20: 19 convs + fc
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in h.grad_norms.values())
    x, y = next(iter(digits.loader("train", 64)))
    norms = layer_grad_norms(model, x, y)
    assert list(norms) == convs and all(v > 0 for v in norms.values())
    assert all(p.grad is None for p in model.parameters())
    # the same numbers by hand for one layer
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert norms["layer2.0.conv1"] == pytest.approx(model.layer2[0].conv1.weight.grad.norm().item(), rel=1e-5)


def test_resume_gives_identical_weights(digits, tmp_path, monkeypatch):
    recipe = Recipe(epochs=4, batch_size=32, lr=0.05)
    kwargs = dict(progress=False, device="cpu", seed=5, record_grad_norms=True)
    full_model = tiny(1)
    full = fit(full_model, digits, recipe, **kwargs)

    # The same run, interrupted after epoch 2 (its checkpoint is written, then the process "dies") ...
    path = tmp_path / "run" / "checkpoint.pt"
    run_until_killed(monkeypatch, 2, lambda: fit(tiny(1), digits, recipe, checkpoint_path=path, **kwargs))
    assert os.listdir(tmp_path / "run") == ["checkpoint.pt"]  # no temporary file left behind

    # ... and resumed by a fresh model, with the global RNGs disturbed in between.
    torch.manual_seed(123)
    resumed_model = tiny(99)
    resumed = fit(resumed_model, digits, recipe, checkpoint_path=path, resume=True, **kwargs)
    assert weights_equal(full_model, resumed_model)
    assert [e["train_loss"] for e in resumed.epochs] == [e["train_loss"] for e in full.epochs]
    assert resumed.grad_norms == full.grad_norms
    assert ckpt_module.read_checkpoint(path)["epoch"] == 4


def test_cached_fit_trains_once(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    recipe, kwargs = Recipe(epochs=2, batch_size=64, lr=0.05), dict(progress=False)

    first_model = tiny()
    first = cached_fit(first_model, digits, recipe, tag="demo", **kwargs)
    second_model = tiny()
    second = cached_fit(second_model, digits, recipe, tag="demo", **kwargs)
    assert len(calls) == 1
    assert second.to_dict() == first.to_dict()  # including the original training time
    assert weights_equal(first_model, second_model)

    cached_fit(tiny(), digits, recipe.replace(lr=0.02), tag="demo", **kwargs)  # another setting: trains
    cached_fit(tiny(seed=7), digits, recipe, tag="demo", **kwargs)  # other initial weights: trains
    cached_fit(tiny(), digits.subset(20), recipe, tag="demo", **kwargs)  # other data: trains
    assert len(calls) == 4
    capsys.readouterr()
    loaded = tiny()
    cached_fit(loaded, digits, recipe, tag="demo", progress=True)  # progress does not matter
    assert len(calls) == 4
    assert not loaded.training and weights_equal(loaded, first_model)  # as fit leaves it
    said = capsys.readouterr().out
    assert said.startswith("demo: loaded from the cache (trained in ")
    assert f"final: train_loss {first.final['train_loss']:.4f}, test_acc {first.final['test_acc']:.4f}" in said
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_cached_fit_key_and_damaged_entry(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    one = Recipe(epochs=1)
    k = experiment_key(tiny(), digits, one, tag="a")
    assert k == experiment_key(tiny(), digits, Recipe(epochs=1), tag="a")
    assert k != experiment_key(tiny(), digits, one, tag="b")
    assert k != experiment_key(rt.create_model("plain20", in_chans=1, channels=(4, 8, 16)), digits, one, tag="a")
    cached_fit(tiny(), digits, one, tag="x", progress=False)
    (entry,) = [f for f in os.listdir(tmp_path) if f.endswith(".pt")]
    (tmp_path / entry).write_bytes(b"truncated")
    h = cached_fit(tiny(), digits, one, tag="x", progress=False)  # damaged: trains again, rewrites
    assert len(h.epochs) == 1 and torch.load(tmp_path / entry, weights_only=True)["tag"] == "x"


def test_cached_fit_concurrent_runs(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    results, models, calls = {}, [tiny(), tiny()], []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))

    def run(i):
        results[i] = cached_fit(models[i], digits, Recipe(epochs=1, batch_size=128), tag="race", progress=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One trained while holding the experiment's lock; the other waited, then loaded its result.
    assert len(results) == 2 and len(calls) == 1
    assert results[0].to_dict() == results[1].to_dict() and weights_equal(models[0], models[1])
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".pt")]) == 1
    model = tiny()
    again = cached_fit(model, digits, Recipe(epochs=1, batch_size=128), tag="race", progress=False)
    assert again.to_dict() in (results[0].to_dict(), results[1].to_dict())


def test_cached_fit_says_it_needs_a_recipe():
    with pytest.raises(TrainingError, match="^cached_fit needs a Recipe, got dict"):
        cached_fit(tiny(), None, {"epochs": 1, "lr": 0.1}, tag="t")


def _record_unpickling():
    UNPICKLED.append(1)


UNPICKLED = []


class _RunsCodeWhenLoaded:
    def __reduce__(self):
        return _record_unpickling, ()


def test_cached_fit_passes_the_run_on_and_keys_by_it(digits, tmp_path, monkeypatch, capsys):
    """What cached_fit is asked for reaches fit (seed, gradient norms, evaluation interval, parameter groups,
    progress) and names the experiment: asking for another of them trains again."""
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    recipe = Recipe(epochs=2, batch_size=128, lr=0.05)

    plain_model, reference = tiny(), tiny()
    plain = cached_fit(plain_model, digits, recipe, tag="t", progress=False)
    real_fit(reference, digits, recipe, progress=False)  # fit's defaults: seed 0, every epoch evaluated
    assert weights_equal(plain_model, reference) and not plain.grad_norms
    assert all("test_acc" in row for row in plain.epochs)
    assert "epoch 1/2" not in capsys.readouterr().err

    cached_fit(tiny(), digits, recipe, tag="t")  # a hit, said by default
    assert len(calls) == 1 and capsys.readouterr().out.startswith("t: loaded from the cache")

    asked = cached_fit(tiny(), digits, recipe, tag="t", record_grad_norms=True, eval_every=2, progress=True)
    assert len(calls) == 2 and asked.grad_norms and "epoch 1/2" in capsys.readouterr().err
    assert "test_acc" not in asked.epochs[0] and "test_acc" in asked.epochs[1]

    seeded_model = tiny()
    cached_fit(seeded_model, digits, recipe, tag="t", seed=1, progress=False)
    assert len(calls) == 3 and not weights_equal(seeded_model, plain_model)

    for tag in ("a b", "a_b"):  # one file name, two experiments
        cached_fit(tiny(), digits, recipe, tag=tag, progress=False)
    assert len(calls) == 5

    grouped, start = tiny(), tiny()
    head = [p for n, p in grouped.named_parameters() if n.startswith("fc.")]
    rest = [p for n, p in grouped.named_parameters() if not n.startswith("fc.")]
    cached_fit(grouped, digits, recipe, tag="t", param_groups=[{"params": head}, {"params": rest, "lr": 0.0}],
               progress=False)
    assert len(calls) == 6
    changed = {n for (n, p), q in zip(grouped.named_parameters(), start.parameters(), strict=True)
               if not torch.equal(p, q)}
    assert changed == {"fc.weight", "fc.bias"}  # only the head learns: the rest has learning rate 0


def test_a_cache_entry_that_would_run_code_is_not_loaded(digits, tmp_path, monkeypatch):
    """Entries are read with ``weights_only=True``: one that holds an object which runs code when unpickled
    counts as damaged (trained again), and the code does not run."""
    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    one = Recipe(epochs=1, batch_size=128)
    cached_fit(tiny(), digits, one, tag="x", progress=False)
    (entry,) = [tmp_path / f for f in os.listdir(tmp_path) if f.endswith(".pt")]
    stored = torch.load(entry, weights_only=True)
    torch.save({**stored, "extra": _RunsCodeWhenLoaded()}, entry)
    UNPICKLED.clear()
    cached_fit(tiny(), digits, one, tag="x", progress=False)
    assert not UNPICKLED and len(calls) == 2


def small_bn_net(seed=0):
    """A conv, its batch norm and a classifier: the smallest net with BN statistics to watch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def test_weight_decay_reaches_the_optimizer():
    model = nn.Linear(3, 2)
    opt = training.make_optimizer(model, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.5)
    assert opt.param_groups[0]["weight_decay"] == 0.5
    before = model.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # a zero gradient: only the decay moves the weights, w <- w - lr * wd * w
    torch.testing.assert_close(model.weight.detach(), before * (1 - 0.1 * 0.5))


def test_a_recipe_can_name_another_augmentation(digits):
    """augment="shift_rotate" trains with that augmentation (other weights than the data set's own shifts),
    leaves the data set as it was, and is refused where the data has no augmentation to replace."""
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1)
    a, b = tiny(), tiny()
    fit(a, digits, recipe, progress=False, device="cpu")
    fit(b, digits, recipe.replace(augment="shift_rotate"), progress=False, device="cpu")
    assert not weights_equal(a, b) and digits.augmentation == "shift"
    with pytest.raises(training.RecipeError, match="augment must be True, False or one of"):
        recipe.replace(augment="rotate")

    class Folder:  # a data source without an ImageData's augmentation
        name = "folder"

    with pytest.raises(TrainingError, match="names an augmentation of an ImageData"):
        fit(tiny(), Folder(), recipe.replace(augment="shift_rotate"), progress=False, device="cpu")


def test_two_weight_decays_train_different_weights(digits):
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1, augment=False)
    a, b = small_bn_net(), small_bn_net()
    fit(a, digits, recipe.replace(weight_decay=0.0), progress=False, device="cpu")
    fit(b, digits, recipe.replace(weight_decay=0.05), progress=False, device="cpu")
    # decay pulls the classifier's weights toward zero
    assert b[-1].weight.norm() < a[-1].weight.norm() - 1e-4


def test_a_second_fit_trains_in_training_mode(digits):
    """fit leaves the model in eval mode; a second fit (fine-tuning) must train it in training mode again,
    so that batch norm uses the batch's statistics and updates its running ones."""
    model = small_bn_net()
    recipe, kwargs = Recipe(epochs=1, batch_size=64, lr=0.05), dict(progress=False, device="cpu")
    fit(model, digits, recipe, **kwargs)
    assert not model.training
    modes = []
    model[1].register_forward_pre_hook(lambda m, args: modes.append(m.training))
    bn = model[1]
    mean, batches = bn.running_mean.clone(), bn.num_batches_tracked.item()
    fit(model, digits, recipe, **kwargs)
    steps = len(digits.loader("train", 64))
    assert bn.num_batches_tracked.item() == batches + steps
    assert not torch.allclose(bn.running_mean, mean)
    assert modes[:steps] == [True] * steps and not any(modes[steps:])  # then evaluated in eval mode
    assert not model.training
