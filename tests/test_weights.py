"""Weights files (models/weights.py): what a file may hold and still load, where its tensors land, and the one
message a file that cannot load gets."""

import pytest
import torch
import torch.serialization
import torchvision
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial.models import WeightsError, load_pretrained, read_state_dict

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
