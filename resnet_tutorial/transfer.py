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

import math
import time

import torch
from torch import nn

from .data import ImageData, random_flip
from .models import create_model
from .runtime import max_steps, pick_device
from .training import amp_settings


def imagenet_weights(name: str = "resnet18", tag: str = "IMAGENET1K_V1"):
    """torchvision's weights entry for ``name`` (its URL, metadata and transforms;
    nothing is downloaded).
    """
    from torchvision.models import get_model_weights

    return get_model_weights(name)[tag]


def imagenet_backbone(name: str, state_dict: dict, num_classes: int) -> nn.Module:
    """Our ``name`` with an ImageNet ``state_dict`` loaded (strict: every key must
    match) and a new head.
    """
    model = create_model(name)
    model.load_state_dict(state_dict, strict=True)
    model.reset_classifier(num_classes)
    return model


@torch.no_grad()
def transformed_accuracy(
    model: nn.Module,
    data: ImageData,
    transform,
    device,
    batch_size: int = 256,
    amp: bool = False,
    amp_dtype=torch.bfloat16,
) -> float:
    """Accuracy on ``data``'s test split, each batch passed through ``transform`` on
    ``device``.
    """
    model.eval()
    correct = 0
    for start in range(0, len(data.test), batch_size):
        images = data.test.images[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            logits = model(transform(images))
        correct += (
            (logits.argmax(1).cpu() == data.test.labels[start : start + batch_size])
            .sum()
            .item()
        )
    return correct / len(data.test)


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
) -> tuple[nn.Module, dict]:
    """Fine-tune ImageNet weights on ``data`` (RGB uint8 images) with their transforms.

    ``state_dict`` is the ImageNet weights to start from; ``None`` downloads
    torchvision's ``tag``. ``transform`` defaults to the weights' ``transforms()`` (see
    ``imagenet_weights``). Every layer trains, with SGD (Nesterov momentum 0.9) and a
    cosine learning rate; each training batch is flipped at random before the transform.
    Returns ``(model, record)``, the record holding the test accuracy, the number of
    steps and the seconds taken.
    """
    device = pick_device(device)
    weights = imagenet_weights(name, tag)
    if state_dict is None:
        state_dict = weights.get_state_dict(progress=True)
    transform = weights.transforms() if transform is None else transform
    use_amp, amp_dtype = amp_settings(amp, device)
    torch.manual_seed(seed)
    model = imagenet_backbone(name, state_dict, data.num_classes).to(device)
    on_gpu = device.type == "cuda"  # tensor cores prefer NHWC
    memory_format = torch.channels_last if on_gpu else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
    )
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, epochs * steps_per_epoch
    )
    scaler = torch.amp.GradScaler(
        device.type, enabled=use_amp and amp_dtype == torch.float16
    )
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    cap = max_steps()  # RESNET_TUTORIAL_MAX_STEPS: the smoke run's cap on the steps
    start, steps = time.perf_counter(), 0
    for _ in range(epochs):
        if cap is not None and steps >= cap:
            break
        model.train()
        order = torch.randperm(len(data.train), generator=generator)
        for i in range(steps_per_epoch):
            if cap is not None and steps >= cap:
                break
            idx = order[i * batch_size : (i + 1) * batch_size]
            images = random_flip(data.train.images[idx], generator).to(device)
            images = images.contiguous(memory_format=memory_format)
            labels = data.train.labels[idx].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = loss_fn(model(transform(images)).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            steps += 1
    accuracy = transformed_accuracy(
        model, data, transform, device, amp=use_amp, amp_dtype=amp_dtype
    )
    record = {
        "model": name,
        "weights": tag,
        "epochs": epochs,
        "steps": steps,
        "test_acc": accuracy,
        "seconds": time.perf_counter() - start,
    }
    return model.eval(), record
