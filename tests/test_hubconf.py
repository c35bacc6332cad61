"""hubconf.py: torch.hub.load from a local copy of the repository, for every registered model."""

import os

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial.models import ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hubconf():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", os.path.join(ROOT, "hubconf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_has_an_entry_point_per_registered_model():
    module = hubconf()
    # What torch.hub.list shows: the public callables of hubconf.py.
    entries = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(rt.list_models())
    assert module.dependencies == ["torch", "torchvision"]
    assert "resnet20" in module.resnet20.__doc__ and "tv_in1k" in module.resnet50.__doc__


def test_hub_load_resnet20_from_a_local_directory():
    torch.manual_seed(0)
    hub = torch.hub.load(ROOT, "resnet20", source="local")
    torch.manual_seed(0)
    ours = rt.create_model("resnet20")
    assert isinstance(hub, ResNet) and hub.pretrained_cfg["architecture"] == "resnet20"
    assert all(torch.equal(a, b) for a, b in zip(hub.state_dict().values(), ours.state_dict().values(), strict=True))
    gray = torch.hub.load(ROOT, "resnet20", source="local", in_chans=1, num_classes=4)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 4)


@pytest.mark.parametrize("name", [n for n in rt.list_models() if n != "resnet1202"])
def test_hub_load_every_registered_name(name):
    model = torch.hub.load(ROOT, name, source="local", num_classes=3)
    assert model.num_classes == 3 and model.pretrained_cfg["architecture"] == name


def test_hub_pretrained_tag(monkeypatch):
    import resnet_tutorial.models.weights as weights

    asked = []
    monkeypatch.setattr(weights, "load_pretrained", lambda model, name, **kw: asked.append(name) or model)
    model = torch.hub.load(ROOT, "resnet50", source="local", pretrained=True, tag="tv_in1k")
    assert asked == ["resnet50.tv_in1k"] and model.pretrained_cfg["tag"] == "tv_in1k"
    torch.hub.load(ROOT, "resnet50", source="local", pretrained=True)
    assert asked[-1] == "resnet50"
    feats = torch.hub.load(ROOT, "resnet18", source="local", features_only=True, out_indices=(2, 4))
    assert feats.feature_info.channels() == [128, 512]
