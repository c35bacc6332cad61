"""A weights file or checkpoint cannot run code: a real torch.save file whose pickle would create a
marker file is refused, and the marker is never created."""

import os

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial.checkpoint import FORMAT, CheckpointError, load_checkpoint
from resnet_tutorial.finetune import load_for_finetuning
from resnet_tutorial.models import WeightsError, read_state_dict


class MakesMarker:
    """Unpickling this calls os.system(f"touch {marker}")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = rt.create_model("resnet20").state_dict()
    torch.save({"format": FORMAT, "model": state, "model_config": {"architecture": "resnet20"},
                "payload": MakesMarker(marker)}, path)
    assert not marker.exists()
    with open(path, "rb") as f:
        assert f.read(2) == b"PK"  # torch.save's zip format, not a bare pickle
    return path, marker


def test_the_marker_works_when_loaded_unsafely(evil):
    # The fixture is a real attack: loading with weights_only=False runs it.
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("load, needle", [
    (lambda p: load_checkpoint(p), "could run code"),  # refused by name, not called a foreign file
    (lambda p: read_state_dict(p), "could run code"),
    (lambda p: rt.create_model("resnet20", checkpoint_path=str(p)), "could run code"),
    (lambda p: load_for_finetuning(p, num_classes=3, model="resnet20"), "could run code"),
])
@pytest.mark.parametrize("torch_default", ["weights_only=True", "weights_only=False"])
def test_refused_and_the_code_never_runs(evil, load, needle, torch_default, monkeypatch):
    """Whatever torch.load's default: True since torch 2.6, False in 2.3 to 2.5, which the package supports."""
    if torch_default == "weights_only=False":
        load_as_in_2_6 = torch.load
        monkeypatch.setattr(torch, "load", lambda *args, weights_only=None, **kwargs: load_as_in_2_6(
            *args, weights_only=bool(weights_only), **kwargs))
    path, marker = evil
    with pytest.raises((CheckpointError, WeightsError), match=needle):
        load(path)
    assert not marker.exists()
