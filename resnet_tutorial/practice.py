"""The book's running example: a ResNet-20 trained on 4,000 Fashion-MNIST images.

The practice chapter trains it; the applications chapter and the appendix reuse it. All of them call
:func:`fashion_resnet20`, so they ask :func:`~resnet_tutorial.experiments.cached_fit` for the very same
experiment (same seed, initial weights, data and arguments): whichever chapter runs first trains it, and
the others load the trained weights from the experiment cache.

:func:`mnist_resnet20` is the same network trained on MNIST-5k with the book's CPU recipe: the source network
of the fine-tuning chapter, whose new task is another set of handwritten digits.
"""

from __future__ import annotations

from .data import ImageData, load_dataset
from .experiments import cached_fit
from .models import create_model
from .runtime import pick_device, seed_everything
from .training import CPU_RECIPE

#: Training images of each class in the running example: 4,000 of Fashion-MNIST's 60,000, the same ones for
#: every run (``ImageData.subset``, seed 0); the test split is all 10,000 images.
FASHION_PER_CLASS = 400

#: The cache tag of the running example.
FASHION_RESNET20_TAG = "resnet20-fashion4k"

#: The running example's recipe: the book's CPU recipe with two changes. Fashion-MNIST's own augmentation, a
#: shift of up to two pixels then a horizontal flip (a mirrored shoe is still a shoe), instead of the digits'
#: turns and scalings; and no test-time augmentation: five views of each of the 10,000 test images after every
#: epoch would cost more than the training itself, for nothing here (seed 0, evaluated in float32 on one
#: thread: 86.70 % in 8.2 s without, 86.64 % in 35.3 s with; 2026-12-07).
FASHION_RESNET20_RECIPE = CPU_RECIPE.replace(augment="shift_flip", tta=False)

#: The cache tag of the fine-tuning chapter's source network.
MNIST_RESNET20_TAG = "resnet20-mnist5k"

#: Its recipe: :data:`~resnet_tutorial.training.CPU_RECIPE`, the book's CPU recipe (its time to accuracy
#: on MNIST-5k is measured by ``benchmarks/train_speed.py``).
MNIST_RESNET20_RECIPE = CPU_RECIPE


def fashion_data() -> ImageData:
    """The running example's data: :data:`FASHION_PER_CLASS` training images of each Fashion-MNIST class
    (the same ones on every call) and the whole test split."""
    return load_dataset("fashion-mnist").subset(FASHION_PER_CLASS)


def train_resnet20(data: ImageData, recipe, tag: str, device=None, seed: int = 0):
    """A ResNet-20 for ``data`` (its channels and classes) trained with ``recipe``
    through the experiment cache under ``tag``. The random generators are seeded
    first, so every call builds the same initial weights and asks for the same
    experiment. Returns ``(model in evaluation mode, history)``."""
    device = pick_device(device)
    seed_everything(seed)
    model = create_model("resnet20", in_chans=data.in_chans,
                         num_classes=data.num_classes)
    history = cached_fit(model, data, recipe, tag=tag, device=device, seed=seed)
    return model.eval(), history


def fashion_resnet20(data: ImageData | None = None, device=None, seed: int = 0):
    """The running example: ResNet-20 (one input channel) trained on
    ``fashion_data()`` with ``FASHION_RESNET20_RECIPE``.

    Returns ``(model, history)``; the model is in evaluation mode on ``device``.
    Trains on the first call, and loads the cached result afterwards.
    """
    data = fashion_data() if data is None else data
    return train_resnet20(data, FASHION_RESNET20_RECIPE, FASHION_RESNET20_TAG,
                          device, seed)


def mnist_resnet20(data: ImageData | None = None, device=None, seed: int = 0):
    """ResNet-20 (one input channel) trained on MNIST-5k with the book's CPU_RECIPE.

    Returns ``(model, history)``; the model is in evaluation mode on ``device``.
    Trains on the first call, and loads the cached result afterwards.
    """
    data = load_dataset("mnist5k") if data is None else data
    return train_resnet20(data, MNIST_RESNET20_RECIPE, MNIST_RESNET20_TAG,
                          device, seed)
