"""The experiment-cache key: built from explicit inputs, it changes with each of them and with nothing else."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from test_training import UNPICKLED, _RunsCodeWhenLoaded  # tests/ is on the path, as for conftest.py
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial import experiments, training
from resnet_tutorial.data import load_digits
from resnet_tutorial.evaluation import loss_and_accuracy
from resnet_tutorial.runtime import cpu_bf16_native
from resnet_tutorial.training import CPU_RECIPE, GPU_RECIPE, Recipe

BASE = Recipe(epochs=1, lr=0.1)


def key_for(recipe=BASE, model=None, data=None, **run):
    torch.manual_seed(0)
    model = model or rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    return experiments.experiment_key(model, data or load_digits(), recipe, **{"tag": "t", **run})


@pytest.mark.parametrize("change", [{"lr": 0.05}, {"weight_decay": 0.0}, {"epochs": 2}, {"augment": False},
                                    {"schedule": "step"}, {"label_smoothing": 0.1}, {"amp": False},
                                    {"tta": True}, {"ema_decay": 0.9}])
def test_key_changes_with_any_recipe_setting(change):
    assert key_for(BASE.replace(**change)) != key_for(BASE)


def test_key_follows_the_recipe():
    assert key_for(CPU_RECIPE) != key_for(GPU_RECIPE)
    assert key_for(CPU_RECIPE) == key_for(Recipe(**CPU_RECIPE.to_dict()))  # equal recipes: one experiment


def test_key_changes_with_each_other_input(monkeypatch):
    base = key_for()
    assert key_for() == base  # deterministic
    assert key_for(tag="u") != base
    assert key_for(seed=1) != base
    assert key_for(record_grad_norms=True) != base
    assert key_for(eval_every=2) != base
    assert key_for(data=load_digits().subset(20)) != base
    torch.manual_seed(1)
    assert key_for(model=rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))) != base  # initial weights
    assert key_for(model=rt.create_model("plain20", in_chans=1, channels=(4, 8, 16))) != base  # architecture
    frozen = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    frozen.conv1.weight.requires_grad_(False)
    assert key_for(model=frozen) != base
    monkeypatch.setattr(experiments, "TRAINING_VERSION", training.TRAINING_VERSION + 1)
    assert key_for() != base  # a change to the training code that changes results bumps the version
    monkeypatch.undo()
    monkeypatch.setenv("RESNET_TUTORIAL_SEED", "1")
    assert key_for() != base
    monkeypatch.delenv("RESNET_TUTORIAL_SEED")
    monkeypatch.setenv("RESNET_TUTORIAL_MAX_STEPS", "3")
    assert key_for() != base


KEY_SCRIPT = textwrap.dedent("""
    import torch, resnet_tutorial as rt
    from resnet_tutorial.data import load_digits
    from resnet_tutorial.experiments import experiment_key
    from resnet_tutorial.training import Recipe
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    print(experiment_key(model, load_digits(), Recipe(epochs=1), tag="t"), rt.__file__)
""")


def test_a_docstring_edit_keeps_the_key(tmp_path):
    """The key hashes what decides a result, not the package's source: editing a docstring or a comment in
    any module (here data.py, training.py and a model file) names the same experiment."""
    copy = tmp_path / "resnet_tutorial"
    shutil.copytree(os.path.dirname(rt.__file__), copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def key_of_copy() -> str:
        out = subprocess.run([sys.executable, "-c", KEY_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[1].startswith(str(copy))  # the copy was imported, not the installed package
        return out[0]

    before = key_of_copy()
    for path, old, new in [("data.py", '"""Datasets as tensors', '"""Datasets held as tensors'),
                           ("training.py", "# the first group's", "# the first parameter group's"),
                           ("models/resnet.py", '"""', '"""(edited) ')]:
        text = (copy / path).read_text()
        assert old in text, path
        (copy / path).write_text(text.replace(old, new, 1))
    assert key_of_copy() == before


def test_param_groups_enter_the_key_by_parameter_name_and_setting():
    def groups(model, lr_head):
        head = list(model.fc.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
        return [{"params": rest, "lr": 0.01}, {"params": head, "lr": lr_head}]

    torch.manual_seed(0)
    a = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    torch.manual_seed(0)
    b = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    key = lambda m, lr: experiments.experiment_key(m, load_digits(), BASE, tag="t", param_groups=groups(m, lr))  # noqa: E731
    assert key(a, 0.1) == key(b, 0.1)  # another model object, the same parameters by name
    assert key(a, 0.1) != key(a, 0.2)
    assert key(a, 0.1) != experiments.experiment_key(a, load_digits(), BASE, tag="t")


def test_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(experiments.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert experiments.cache_dir() == str(tmp_path / ".cache" / "resnet_tutorial" / "experiments")
    monkeypatch.setenv(experiments.CACHE_ENV, str(tmp_path / "here"))
    assert experiments.cache_dir() == str(tmp_path / "here")


def test_a_tag_becomes_a_safe_file_name():
    assert experiments._safe("ch2/plain 20:seed=1") == "ch2_plain_20_seed_1"
    assert experiments._safe("a-b_c.d") == "a-b_c.d" and experiments._safe("") == "experiment"
    assert len(experiments._safe("x" * 100)) == 60


def test_param_groups_enter_the_key_by_which_parameters_they_hold():
    """Groups that hold different parameters are different experiments, even where those parameters have the
    same values (both batch-norm weights start as ones); the order of a group's settings does not matter, and
    a setting that is no plain number (a tensor learning rate) enters by its value."""
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, channels=(4, 8, 16))
    params = dict(model.named_parameters())
    bn1, bn2 = params["layer1.0.bn1.weight"], params["layer1.0.bn2.weight"]
    assert torch.equal(bn1, bn2)
    key = lambda groups: experiments.experiment_key(model, load_digits(), BASE, tag="t", param_groups=groups)  # noqa: E731
    assert key([{"params": [bn1], "lr": 0.1}]) != key([{"params": [bn2], "lr": 0.1}])
    assert key([{"params": [bn1], "lr": 0.1}]) == key([{"lr": 0.1, "params": [bn1]}])
    tensor_lr = lambda lr: key([{"params": [bn1], "lr": torch.tensor(lr)}])  # noqa: E731
    assert tensor_lr(0.1) == tensor_lr(0.1) != tensor_lr(0.2)


def _net_class(module: str, qualname: str):
    """A model class with one linear layer; its name is always "Net", its module and qualified name as given."""
    def init(self):
        nn.Module.__init__(self)
        self.fc = nn.Linear(4, 2)
    return type("Net", (nn.Module,), {"__init__": init, "forward": lambda self, x: self.fc(x),
                                      "__module__": module, "__qualname__": qualname})


def test_the_model_class_enters_the_key():
    """Two classes that print the same (``Net((fc): Linear(...))``) may compute differently: their module and
    qualified name tell them apart."""
    keys = set()
    for module, qualname in [("notebook_a", "Net"), ("notebook_b", "Net"), ("notebook_a", "Other.Net")]:
        torch.manual_seed(0)
        model = _net_class(module, qualname)()
        keys.add(key_for(model=model))
    assert len(keys) == 3


class _Scaled(nn.Module):
    def __init__(self, shape, dtype):
        super().__init__()
        self.register_buffer("scale", torch.zeros(shape, dtype=dtype))


def test_weights_enter_the_key_with_their_shape_and_dtype():
    """Zeros of another shape or type are the same bytes, and a buffer does not show in the model's repr."""
    base = key_for(model=_Scaled((2, 3), torch.float32))
    assert key_for(model=_Scaled((2, 3), torch.float32)) == base
    assert key_for(model=_Scaled((3, 2), torch.float32)) != base
    assert key_for(model=_Scaled((2, 3), torch.int32)) != base


def test_the_lock_file_is_in_the_cache_folder(monkeypatch, tmp_path):
    cache, here = tmp_path / "new" / "cache", tmp_path / "notebooks"
    here.mkdir()
    monkeypatch.setenv(experiments.CACHE_ENV, str(cache))
    monkeypatch.chdir(here)
    with experiments.cache_lock("demo.lock") as lock:
        assert lock.is_locked and os.path.exists(cache / "demo.lock")  # the folder made when missing
    assert not os.listdir(here)  # nothing left where the notebook runs



class TestCachedLossAndAccuracy:
    """experiments.cached_loss_and_accuracy: a trained net is measured on a split once; a second call with the
    same weights, images and precision reads the stored numbers (chapter 2 measures twelve nets on 10,000
    images after loading them from the cache)."""

    @pytest.fixture
    def setting(self, monkeypatch, tmp_path):
        monkeypatch.setenv(experiments.CACHE_ENV, str(tmp_path))
        calls = []

        def spy(model, loader, **kwargs):
            calls.append(kwargs)
            return loss_and_accuracy(model, loader, **kwargs)

        monkeypatch.setattr(experiments.evaluation, "loss_and_accuracy", spy)
        torch.manual_seed(0)
        model = rt.create_model("resnet20", channels=(2, 4, 8), in_chans=1, num_classes=10).eval()
        return model, load_digits().subset(n_per_class=4, test_per_class=6), calls, tmp_path

    def test_measured_once_then_read(self, setting):
        model, data, calls, cache = setting
        first = experiments.cached_loss_and_accuracy(model, data, batch_size=16)
        assert first == pytest.approx(loss_and_accuracy(model, data.loader("test", 16))) and len(calls) == 1
        assert [p.name[:9] for p in cache.iterdir()] == ["measured-"]
        assert experiments.cached_loss_and_accuracy(model, data, batch_size=16) == first and len(calls) == 1

    def test_what_can_change_the_result_is_measured_again(self, setting, monkeypatch):
        model, data, calls, _ = setting
        measure = lambda m=model, d=data, split="test", **kw: experiments.cached_loss_and_accuracy(  # noqa: E731
            m, d, split, **{"batch_size": 16, **kw})
        base = measure()
        assert measure(split="train") == pytest.approx(loss_and_accuracy(model, data.loader("train", 16)))
        measure(batch_size=8)
        measure(amp=True)
        assert calls[-1] == dict(amp=True, amp_dtype=torch.bfloat16)
        measure(amp=True, amp_dtype=torch.float16)
        measure(d=data.subset(n_per_class=4, test_per_class=5))
        assert len(calls) == 6
        with monkeypatch.context() as m:
            m.setattr(experiments, "cpu_bf16_native", lambda: not cpu_bf16_native())
            measure()
        with monkeypatch.context() as m:
            m.setattr(torch, "__version__", torch.__version__ + "+other")
            measure()
        assert len(calls) == 8
        measure(m=nn.Sequential(model))  # the same weights in another architecture
        assert len(calls) == 9
        with torch.no_grad():
            model.fc.bias[0] += 1.0  # other weights
        other = measure()
        assert len(calls) == 10 and other == pytest.approx(loss_and_accuracy(model, data.loader("test", 16)))
        assert other != base and measure() == other and len(calls) == 10

    def test_the_default_batch_is_512_images(self, setting):
        model, data, calls, _ = setting
        experiments.cached_loss_and_accuracy(model, data)
        experiments.cached_loss_and_accuracy(model, data, batch_size=512)
        assert len(calls) == 1

    def test_an_entry_that_would_run_code_is_not_loaded(self, setting):
        model, data, calls, cache = setting
        first = experiments.cached_loss_and_accuracy(model, data, batch_size=16)
        (entry,) = cache.iterdir()
        torch.save({**torch.load(entry, weights_only=True), "extra": _RunsCodeWhenLoaded()}, entry)
        assert experiments.cached_loss_and_accuracy(model, data, batch_size=16) == first
        assert not UNPICKLED and len(calls) == 2

    def test_a_damaged_or_foreign_entry_is_measured_again_and_replaced(self, setting):
        model, data, calls, cache = setting
        first = experiments.cached_loss_and_accuracy(model, data, batch_size=16)
        (entry,) = cache.iterdir()
        entry.write_bytes(b"not a checkpoint")
        assert experiments.cached_loss_and_accuracy(model, data, batch_size=16) == first and len(calls) == 2
        torch.save({"key": "another measurement", "loss": 9.0, "acc": 1.0}, entry)  # the same 24-digit prefix
        assert experiments.cached_loss_and_accuracy(model, data, batch_size=16) == first and len(calls) == 3
        assert experiments.cached_loss_and_accuracy(model, data, batch_size=16) == first and len(calls) == 3

