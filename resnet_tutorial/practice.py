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

#: The cache tag of the experiment.
MNIST_RESNET20_TAG = "ch5-resnet20-mnist5k"

#: The CPU recipe: the paper's SGD with momentum (here Nesterov's) and weight decay, batches of 64, a one-cycle
#: learning rate (linear warm-up over the first quarter, then cosine decay to zero) so that a few epochs suffice,
#: label smoothing 0.1, and bfloat16 autocast (``amp=True``), which is faster than float32 on recent CPUs. (The
#: time-to-98.5% benchmark in ``benchmarks/train_speed.py`` runs a longer variant of it.)
MNIST_RESNET20_RECIPE = dict(epochs=8, batch_size=64, lr=0.1, schedule="onecycle", nesterov=True, weight_decay=5e-4,
                             label_smoothing=0.1, amp=True, channels_last=False)


def mnist_resnet20(data: ImageData | None = None, device=None, seed: int = 0):
    """ResNet-20 (one input channel) trained on MNIST-5k with :data:`MNIST_RESNET20_RECIPE`.

    Returns ``(model, history)``; the model is in evaluation mode on ``device``. Trains on the first call,
    and loads the cached result afterwards.
    """
    data = load_dataset("mnist5k") if data is None else data
    device = pick_device(device)
    seed_everything(seed)
    model = create_model("resnet20", in_chans=data.in_chans, num_classes=data.num_classes)
    history = cached_fit(model, data, tag=MNIST_RESNET20_TAG, device=device, seed=seed, **MNIST_RESNET20_RECIPE)
    return model.eval(), history
