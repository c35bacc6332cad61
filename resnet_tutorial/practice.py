"""The book's running example: a ResNet-20 trained on MNIST-5k.

The practice chapter trains it; the fine-tuning and applications chapters reuse it. All three call
:func:`mnist_resnet20`, so they ask :func:`~resnet_tutorial.experiments.cached_fit` for the very same
experiment (same seed, initial weights, data and arguments): whichever chapter runs first trains it, and
the others load the trained weights from the experiment cache.
"""

from __future__ import annotations

from .data import ImageData, load_dataset
from .experiments import cached_fit
from .models import create_model
from .runtime import pick_device, seed_everything
from .training import CPU_RECIPE

#: The cache tag of the experiment.
MNIST_RESNET20_TAG = "resnet20-mnist5k"

#: The recipe of the running example: :data:`~resnet_tutorial.training.CPU_RECIPE`, the book's CPU recipe
#: (its time to accuracy is measured by ``benchmarks/train_speed.py``).
MNIST_RESNET20_RECIPE = CPU_RECIPE


def mnist_resnet20(data: ImageData | None = None, device=None, seed: int = 0):
    """ResNet-20 (one input channel) trained on MNIST-5k with the book's CPU_RECIPE.

    Returns ``(model, history)``; the model is in evaluation mode on ``device``.
    Trains on the first call, and loads the cached result afterwards.
    """
    data = load_dataset("mnist5k") if data is None else data
    device = pick_device(device)
    seed_everything(seed)
    model = create_model("resnet20", in_chans=data.in_chans,
                         num_classes=data.num_classes)
    history = cached_fit(model, data, MNIST_RESNET20_RECIPE, tag=MNIST_RESNET20_TAG,
                         device=device, seed=seed)
    return model.eval(), history
