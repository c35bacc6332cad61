"""Weights files (models/weights.py): what a file may hold and still load, where its tensors land, and the one
message a file that cannot load gets."""

import sys

import pytest
import timm
import torch
import torch.serialization
import torchvision
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial.models import WeightsError, load_pretrained, load_weights, read_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(seed=0):
    torch.manual_seed(seed)
    return rt.create_model("resnet20", channels=(4, 8, 16), num_classes=3)


def same_weights(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict"])
def test_a_checkpoint_dict_holding_the_weights_under_any_usual_key_loads(tmp_path, key):
    """Our checkpoints ("model"), Lightning's ("state_dict") and the common tutorial layout
    ("model_state_dict"), beside other entries."""
    source = tiny().state_dict()
    torch.save({"epoch": 3, key: source}, tmp_path / "ckpt.pt")
    assert same_weights(read_state_dict(tmp_path / "ckpt.pt"), source)
    loaded = rt.create_model("resnet20", channels=(4, 8, 16), num_classes=3, checkpoint_path=str(tmp_path / "ckpt.pt"))
    assert same_weights(loaded.state_dict(), source)


class Compiled(nn.Module):
    """What torch.compile wraps a model in (its OptimizedModule), without compiling anything: the model as
    ``_orig_mod``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


def test_the_prefixes_of_data_parallel_and_torch_compile_are_removed(tmp_path):
    model = tiny()
    wrapped = nn.DataParallel(nn.DataParallel(Compiled(model)))  # module.module._orig_mod.conv1.weight
    assert next(iter(wrapped.state_dict())).startswith("module.module._orig_mod.")
    torch.save(wrapped.state_dict(), tmp_path / "wrapped.pt")
    assert same_weights(read_state_dict(tmp_path / "wrapped.pt"), model.state_dict())


@pytest.mark.parametrize("content", [{"epoch": 3, "model": "resnet20"}, [torch.zeros(1)], torch.zeros(3)])
def test_a_file_of_tensors_that_is_no_state_dict_is_refused_by_name(tmp_path, content):
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="holds no state_dict of tensors"):
        read_state_dict(tmp_path / "other.pt")


def _torch_error(path) -> Exception:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        return err
    raise AssertionError(f"torch loaded {path}")


@pytest.mark.parametrize("content", [
    b"",  # an empty file (a failed download): torch's error has no text
    b"not a checkpoint",  # refused by the weights-only unpickler, whose message runs over many lines
    "truncated",  # the first 200 bytes of a real file: torch's zip reader gives up, in a long first line
])
def test_an_unreadable_file_gets_torchs_reason_in_one_line_and_the_advice(tmp_path, content):
    if content == "truncated":
        torch.save(tiny().state_dict(), tmp_path / "whole.pt")
        content = (tmp_path / "whole.pt").read_bytes()[:200]
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    err = _torch_error(path)
    first = (str(err).splitlines() or [""])[0]
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    reason = f"({type(err).__name__}: {first[:120]})"  # the first line of torch's message, at most 120 characters
    assert str(info.value) == (f"cannot read {str(path)!r} as PyTorch weights {reason}; the file is truncated or "
                               "not a checkpoint: save it again")


def test_weights_saved_on_a_gpu_load_onto_the_cpu(tmp_path, monkeypatch):
    """A file written on a GPU names the GPU as its tensors' place; it loads on a machine without one (and on one
    with a GPU, onto the CPU, where the model is built)."""
    source = tiny().state_dict()
    with monkeypatch.context() as patch:  # torch.save records every tensor as stored on cuda:0
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(source, tmp_path / "gpu.pt")
    state = read_state_dict(tmp_path / "gpu.pt")
    assert same_weights(state, source) and {t.device.type for t in state.values()} == {"cpu"}


def test_no_pretrained_tag_names_the_ones_there_are_and_the_default():
    with pytest.raises(WeightsError, match=r"no pretrained weights resnet50\.tv3_in1k: torchvision's are "
                       r"resnet50\.tv_in1k, resnet50\.tv2_in1k \(pretrained=True alone loads resnet50\.tv2_in1k\)"):
        rt.create_model("resnet50.tv3_in1k")


def test_pretrained_weights_download_with_a_progress_bar_and_load_into_any_model(tmp_path, monkeypatch):
    """The first use downloads torchvision's file, showing progress (it is tens of megabytes), into torch's hub
    cache; a model without a ``num_classes`` (torchvision's own) takes every weight, one of another
    ``num_classes`` every weight but the classifier's."""
    torch.manual_seed(0)
    published = torchvision.models.resnet18().state_dict()
    downloads = []

    def download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, progress))
        torch.save(published, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    theirs = load_pretrained(torchvision.models.resnet18(), "resnet18")
    assert same_weights(theirs.state_dict(), published)
    assert downloads == [(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, True)]
    ours = rt.create_model("resnet18", pretrained=True, num_classes=10)  # from the cache now
    assert len(downloads) == 1 and ours.fc.out_features == 10
    assert same_weights({k: v for k, v in ours.state_dict().items() if not k.startswith("fc.")},
                        {k: v for k, v in published.items() if not k.startswith("fc.")})


def _cifar_net(depth: int, **kwargs):
    return rt.create_model(f"resnet{depth}", channels=(4, 8, 16), num_classes=3, **kwargs)


@pytest.mark.parametrize("file, model, what", [
    (20, 32, "missing"),  # a shallower net's weights: the extra blocks' weights are missing
    (32, 20, "unexpected"),  # a deeper net's: the file has blocks the model lacks
])
def test_weights_of_another_depth_are_refused_naming_the_first_three_keys(tmp_path, file, model, what):
    torch.save(_cifar_net(file).state_dict(), tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="do not fit this model") as info:
        _cifar_net(model, checkpoint_path=str(tmp_path / "other.pt"))  # strict, as load_weights is by default
    assert str(info.value).count(f"; {what} ") + str(info.value).count(f"({what} ") == 3


def test_weights_of_other_widths_are_refused_naming_the_first_three_shapes(tmp_path):
    """A file for other channel widths has every key, in other shapes, and does not load even when missing and
    unexpected keys are allowed."""
    torch.save(rt.create_model("resnet20", channels=(4, 8, 32), num_classes=3).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(WeightsError) as info:
        load_weights(_cifar_net(20), str(tmp_path / "wide.pt"), strict=False)
    assert str(info.value).startswith("the weights do not fit this model (layer3.0.conv1.weight: file (32, 8, 3, 3) "
                                      "vs model (16, 8, 3, 3); ")
    assert str(info.value).count(" vs model ") == 3 and "missing" not in str(info.value)


def test_load_weights_without_strict_loads_what_fits_and_says_what_it_left_out():
    deeper = _cifar_net(32)
    result = load_weights(deeper, _cifar_net(20).state_dict(), strict=False)
    assert "layer1.4.conv1.weight" in result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("name", ["resnet18.tv_in1k", "resnet20", "preact_resnet110"])
def test_a_pretrained_cfg_names_the_model_and_its_first_and_last_layers(name):
    """As timm's: what adapting the weights to other input channels or classes needs."""
    model = rt.create_model(name)
    cfg = model.pretrained_cfg
    assert (cfg["architecture"], cfg["tag"]) == (name.split(".")[0], name.partition(".")[2] or None)
    assert isinstance(getattr(model, cfg["first_conv"]), nn.Conv2d) and cfg["first_conv"] == "conv1"
    assert getattr(model, cfg["classifier"]) is model.get_classifier()


def test_a_timm_tag_without_timm_installed_is_a_weights_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # the optional dependency missing: importing it fails
    with pytest.raises(WeightsError, match=r"no pretrained weights resnet50\.a1_in1k"):
        rt.create_model("resnet50.a1_in1k")


@pytest.mark.parametrize("name, source", [("resnet18", "torchvision"), ("resnet50.a1_in1k", "timm")])
def test_offline_a_pretrained_download_fails_with_one_message_that_names_the_source(tmp_path, monkeypatch, name,
                                                                                      source):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache: torchvision downloads
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=rf"could not fetch {source}'s pretrained {name} \(OSError\); offline"):
        load_pretrained(rt.create_model(name.split(".")[0]), name)
