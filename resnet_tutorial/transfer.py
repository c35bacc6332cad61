"""Fine-tuning torchvision's ImageNet weights on a new dataset, with their own
preprocessing.

``imagenet_finetune(cifar10)`` builds our ``resnet18``, loads torchvision's ImageNet
weights into it (downloaded on first use, or a ``state_dict`` you pass), gives it a new
head, and trains the whole network on the dataset's uint8 images, each batch passed
through ``weights.transforms()``: the resize, centre crop and ImageNet normalisation the
weights were trained with. The tests pass a random ``state_dict`` and a small crop, so
that the code path runs offline in seconds.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn
from torchvision.models import get_model_weights

from .data import ImageData
from .models import create_model
from .runtime import seed_everything
from .training import Recipe, fit


def imagenet_weights(name: str = "resnet18", tag: str = "IMAGENET1K_V1"):
    """torchvision's weights entry for ``name`` (its URL, metadata and transforms;
    nothing is downloaded).
    """
    return get_model_weights(name)[tag]


def imagenet_backbone(name: str, state_dict: dict, num_classes: int) -> nn.Module:
    """Our ``name`` with an ImageNet ``state_dict`` loaded (strict: every key must
    match) and a new head.
    """
    model = create_model(name)
    model.load_state_dict(state_dict, strict=True)
    model.reset_classifier(num_classes)
    return model


def imagenet_finetune(
    data: ImageData,
    name: str = "resnet18",
    tag: str = "IMAGENET1K_V1",
    state_dict: dict | None = None,
    transform=None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    device=None,
    seed: int = 0,
    amp="auto",
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Fine-tune ImageNet weights on ``data`` (RGB uint8 images) with their transforms.

    ``state_dict`` is the ImageNet weights to start from; ``None`` downloads
    torchvision's ``tag``. ``transform`` defaults to the weights' ``transforms()`` (see
    ``imagenet_weights``). Every layer trains with ``training.fit``,
    SGD (Nesterov momentum 0.9) and a cosine learning rate, on ``data`` seen through the
    transform: each training batch flipped at random, then transformed on the device.
    Returns ``(model, record)``, the record holding the test accuracy, the number of
    steps and the seconds taken.
    """
    weights = imagenet_weights(name, tag)
    if state_dict is None:
        state_dict = weights.get_state_dict(progress=True)
    transform = weights.transforms() if transform is None else transform
    view = replace(data, augmentation="flip", transform=transform)
    seed_everything(seed)
    model = imagenet_backbone(name, state_dict, data.num_classes)
    recipe = Recipe(epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9,
                    nesterov=True, weight_decay=weight_decay, schedule="cosine",
                    amp=amp, channels_last="auto")
    history = fit(model, view, recipe, device=device, seed=seed, progress=progress)
    record = {
        "model": name,
        "weights": tag,
        "epochs": epochs,
        "steps": history.steps,
        "test_acc": history.final["test_acc"],
        "seconds": history.seconds,
    }
    return model, record
