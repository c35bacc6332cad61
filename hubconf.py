"""torch.hub entry points: every model of resnet_tutorial's registry, by its registry name.

    model = torch.hub.load("<this repository or its folder>", "resnet20")               # from GitHub
    model = torch.hub.load("/path/to/resnet-tutorial", "resnet20", source="local")      # a local copy
    model = torch.hub.load(..., "resnet50", pretrained=True, tag="tv_in1k")             # torchvision V1

Each entry point takes what ``resnet_tutorial.create_model`` takes: ``pretrained``, ``tag``
(``"tv_in1k"``, ``"tv2_in1k"``), ``num_classes``, ``in_chans``, ``features_only``, ...
"""

from resnet_tutorial.models import registry as _registry

dependencies = ["torch", "torchvision"]


def _entry_point(name: str):
    def entry_point(pretrained: bool = False, tag: str | None = None, **kwargs):
        return _registry.create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = (
        f"{name} ({_registry.model_family(name)} family) from resnet_tutorial: "
        f"create_model({name!r}, pretrained=..., **kwargs); tag selects pretrained weights, "
        f"e.g. tag='tv_in1k' loads '{name}.tv_in1k'."
    )
    return entry_point


for _name in _registry.list_models():
    globals()[_name] = _entry_point(_name)
