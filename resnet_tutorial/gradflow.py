"""Tools for the experiments on how residual networks train (chapters 5 and 6).

* cifar_net builds the 6n+2-layer CIFAR networks of He et al. (2016a, 2016b) at any depth:
  residual or plain, original or pre-activation blocks, with or without batch normalisation;
  remove_batchnorm replaces every BatchNorm2d of a model by nn.Identity.
* gradient_profile records, in one backward pass, the gradient norm of every weight and the
  gradient with respect to the input of every block.
* slopes_along_line and lag_correlation measure shattered gradients (Balduzzi et al. 2017): how
  the gradient with respect to the input changes from one input to a nearby one.
* delete_block (a context manager) replaces one block by what is left of it without its
  residual branch; deletion_study deletes every block in turn (Veit et al. 2016).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from .data import load_dataset
from .evaluation import loss_and_accuracy
from .experiments import cached_fit, cached_loss_and_accuracy
from .models import create_model
from .models.blocks import BasicBlock, Bottleneck, PreActBasicBlock
from .models.blocks import changes_shape as _changes_shape
from .models.resnet import PREACT_BLOCKS, PreActResNet, ResNet
from .runtime import amp_settings, pick_device, seed_everything
from .training import PAPER_RECIPE, Recipe, weight_layers

ORIGINAL_BLOCKS = (BasicBlock, Bottleneck)


def remove_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d in `model` by nn.Identity, in place; return it.

    The convolutions keep their He initialisation and have no bias, as before: the
    network is the same function with its normalisation taken out.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
    return model


def cifar_net(
    depth: int,
    *,
    residual: bool = True,
    preact: bool = False,
    batchnorm: bool = True,
    zero_init_last: bool = False,
    channels: tuple[int, ...] = (16, 32, 64),
    in_chans: int = 3,
    num_classes: int = 10,
) -> ResNet | PreActResNet:
    """The CIFAR network of ``depth = 6n + 2`` layers (He et al. 2016a, Sec. 4.2), in any variant.

    ``residual=False`` gives the plain twin (same layers, no shortcuts); ``preact=True`` the
    pre-activation blocks of He et al. (2016b); ``batchnorm=False`` removes every BN layer.
    ``cifar_net(56)`` has exactly the layers of ``create_model("resnet56")``.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, ...), got depth={depth}")
    if preact and not residual:
        raise ValueError("a pre-activation network without shortcuts is just a plain network: use preact=False")
    n = (depth - 2) // 6
    layers = [n] * len(channels)
    common = dict(channels=channels, stem="cifar", in_chans=in_chans, num_classes=num_classes,
                  zero_init_last=zero_init_last)
    if preact:
        model = PreActResNet(PreActBasicBlock, layers, **common)
    else:
        model = ResNet(BasicBlock, layers, shortcut="A" if residual else None, **common)
    return model if batchnorm else remove_batchnorm(model)


def named_blocks(model: ResNet) -> list[tuple[str, nn.Module]]:
    """Every block of a ``ResNet`` in depth order, named as in its ``state_dict`` (``"layer2.0"``)."""
    return [(f"{stage}.{i}", block) for stage in model.stage_names for i, block in enumerate(getattr(model, stage))]


def changes_shape(block: nn.Module) -> bool:
    """Whether a block's output has another shape than its input (stride or width changes)."""
    convs = [c for c in (getattr(block, n, None) for n in ("conv1", "conv2", "conv3")) if c is not None]
    return _changes_shape(convs[0].in_channels, convs[-1].out_channels, max(c.stride[0] for c in convs))


def is_residual(block: nn.Module) -> bool:
    """Whether a block has a shortcut (every pre-activation block has one)."""
    return isinstance(block, PREACT_BLOCKS) or getattr(block, "residual", True)


class DeletedBlock(nn.Module):
    """A block with its residual branch F deleted: what remains of ``y = relu(F(x) + shortcut(x))``.

    * original residual block: ``relu(shortcut(x))``, with the block's own shortcut (identity, the
      zero-padded option A, or its projection);
    * pre-activation block: ``x`` (or the projection of ``relu(bn1(x))`` where the shape changes);
    * plain block (no shortcut): the identity, which only exists where the shape does not change.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.preact = isinstance(block, PREACT_BLOCKS)
        self.residual = is_residual(block)
        if not self.residual and changes_shape(block):
            raise ValueError("a plain block that changes the shape cannot be deleted: nothing carries its input on")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        if self.preact:
            return b.downsample(b.relu(b.bn1(x))) if b.downsample is not None else x
        if not self.residual:
            return x
        identity = b.downsample(x) if b.downsample is not None else x
        return torch.relu(identity)


@contextmanager
def delete_block(model: ResNet, name: str):
    """Within the ``with`` statement, block ``name`` (e.g. ``"layer2.3"``) of ``model`` is deleted."""
    stage_name, index = name.split(".")
    stage = getattr(model, stage_name)
    original = stage[int(index)]
    stage[int(index)] = DeletedBlock(original)
    try:
        yield model
    finally:
        stage[int(index)] = original


def evaluate_accuracy(model: nn.Module, data, batch_size: int = 500, device=None) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``data``'s test split."""
    device = pick_device(device)
    model.to(device)
    test = data.loader("test", batch_size=batch_size, device=device)
    return loss_and_accuracy(model, test)[1]


def deletion_study(model: ResNet, data, *, batch_size=500, device=None) -> list[dict]:
    """Delete each block of a trained `model` in turn, measuring the test accuracy.

    Returns one row per block (name, changes_shape, accuracy), the first row being the
    intact model (name "none"). Plain blocks that change the shape cannot be deleted
    and are left out.
    """
    accuracy = evaluate_accuracy(model, data, batch_size, device)
    rows = [{"name": "none", "changes_shape": False, "accuracy": accuracy}]
    for name, block in named_blocks(model):
        if not is_residual(block) and changes_shape(block):
            continue
        with delete_block(model, name):
            accuracy = evaluate_accuracy(model, data, batch_size, device)
        shape = changes_shape(block)
        rows.append({"name": name, "changes_shape": shape, "accuracy": accuracy})
    return rows


#: The degradation experiment of the book (chapters 2, 5 and 6) in each profile: the data and its image size
#: (None: as stored), ``per_class`` training images of each class (None: all; the whole test split either way),
#: the stage widths, the seeds, one training recipe for every net, and ``clean_per_class``: how many training
#: images per class the clean training error is measured on after every epoch (None: all).
#: "paper" is the paper's CIFAR-10 recipe (Sec. 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k
#: iterations of 64k, i.e. epochs 82 and 123 of 164; weight decay 1e-4, momentum 0.9). "cpu" is sized for CI
#: (issue 9): 4,000 Fashion-MNIST training images (400 per class) at half width, three seeds, batch 64 so that
#: 6 epochs are 378 SGD steps (63 per epoch), bf16 autocast where the CPU computes bf16 natively ("auto") and
#: channels_last. Measured at one thread on an AMD EPYC with AVX-512 BF16, one epoch of plain-56:
#: channels_last 8.3 s of training against 11.2 s without; bf16 no faster than fp32 at these widths. The clean
#: error on 200 images per class (2,000 of the 4,000) instead of all of them saves about 1 s of plain-56's 11 s
#: per epoch. The images resized from 28 to 24 pixels a side: every convolution computes (24/28)^2 = 73 % as
#: many outputs (an epoch of plain-56 took 0.79 and 0.83 of its time at 28 pixels, two pairs side by side),
#: and at 28 pixels ResNet-20 and plain-20 ended within 1.5 points of their errors at 24 (seed 0, 2026-12-07:
#: clean training error 20.6 and 21.2 % against 20.5 and 22.6 %).
#: A profile without "seeds" runs seed 0 only.
DEGRADATION_SETUP = {
    "cpu": dict(
        dataset="fashion-mnist",
        image_size=24,
        per_class=400,
        channels=(8, 16, 32),
        seeds=(0, 1, 2),
        clean_per_class=200,
        recipe=Recipe(epochs=6, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine",
                      amp="auto", channels_last=True),
    ),
    # "gpu": the paper's networks and data, 5 epochs with a cosine schedule, so that a chapter training the four
    # nets fits in 10 minutes on a Colab T4. Estimated, not measured on a T4 (none was available): about 7 s
    # per CIFAR-10 epoch for a 20-layer net and 18 s for a 56-layer one with fp16 autocast and channels_last,
    # i.e. 5 x (2 x 7 + 2 x 18) = 250 s for the four (README, "Profiles", says how this was scaled).
    "gpu": dict(
        dataset="cifar10",
        image_size=None,
        per_class=None,
        channels=(16, 32, 64),
        clean_per_class=1000,  # 10,000 of the 50,000 training images
        recipe=Recipe(epochs=5, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine"),
    ),
    "paper": dict(
        dataset="cifar10",
        image_size=None,
        per_class=None,
        channels=(16, 32, 64),
        clean_per_class=None,  # all 50,000, as the paper's Fig. 1
        recipe=PAPER_RECIPE,
    ),
}


def degradation_data(setup: dict):
    """The data of one profile of ``DEGRADATION_SETUP``: its data set at its image size, with
    ``per_class`` training images of each class (the same ones for every run, seed 0) or all
    of them, and the whole test split."""
    data = load_dataset(setup["dataset"], image_size=setup["image_size"])
    return data if setup["per_class"] is None else data.subset(setup["per_class"])


def clean_training_view(data, n_per_class: int | None = None):
    """``data`` with its test split replaced by its own training images (a copy): all of
    them, or ``n_per_class`` of each class, the same ones for every run (seed 0).

    ``fit`` measures the test split after every epoch, in eval mode and without
    augmentation. Given this view, that is the error on the clean training images: the
    paper's training error, not the running error of augmented batches in train mode
    that ``fit`` reports as ``train_error``. The training split is unchanged.
    """
    if n_per_class is None:
        clean = data.train
    else:
        clean = data.subset(n_per_class, seed=0).train
    return replace(data, name=f"{data.name} (test = clean train)", test=clean)


def degradation_experiment(
    data,
    names=("plain20", "plain56", "resnet20", "resnet56"),
    *,
    recipe: Recipe,
    channels: tuple[int, ...] = (16, 32, 64),
    seed: int = 0,
    clean_per_class: int | None = None,
    record_grad_norms: bool = True,
    start_from: dict | None = None,
    device=None,
    progress: bool = True,
) -> dict:
    """Train each CIFAR-style net of ``names`` on ``data`` with one recipe (Figs. 1, 6).

    Every net starts from ``seed`` (weights, batch order, augmentation) and is trained
    by ``experiments.cached_fit``: a second run, or another chapter asking for the same
    nets, loads them. Per-layer gradient norms are recorded on the way unless
    ``record_grad_norms=False``. After every epoch the net is measured in eval mode on
    the clean training images, all of them or ``clean_per_class`` of each class
    (``clean_train_error``, ``clean_train_loss``); the last epoch also gets the
    ``test_error``, ``test_loss`` and ``test_acc`` of the trained net, measured once
    (``experiments.cached_loss_and_accuracy``: a second run reads them from the cache).
    ``start_from`` (``{name: trained model}``) continues copies of those nets instead of
    new ones: the recipe runs again from its first epoch, so a cosine schedule starts
    again at its full learning rate (a warm restart, as in SGDR).
    Returns ``{name: (trained model, History)}``.
    """
    device = pick_device(device)
    amp, amp_dtype = amp_settings(recipe.amp, device)
    view = clean_training_view(data, clean_per_class)
    results = {}
    for name in names:
        seed_everything(seed)
        if start_from is None:
            model = create_model(name, channels=channels, in_chans=data.in_chans,
                                 num_classes=data.num_classes)
            tag = f"degradation-{name}"
        else:  # a warm restart: a copy of the trained net
            model, tag = copy.deepcopy(start_from[name]), f"degradation-{name}-restart"
        history = cached_fit(
            model, view, recipe, tag=tag, seed=seed,
            record_grad_norms=record_grad_norms, device=device, progress=progress,
        )
        for row in history.epochs:  # fit's "test" split was the clean training split
            for key in ("loss", "error"):
                if f"test_{key}" in row:
                    row[f"clean_train_{key}"] = row.pop(f"test_{key}")
            row.pop("test_acc", None)
        loss, acc = cached_loss_and_accuracy(model, data, "test", amp=amp,
                                             amp_dtype=amp_dtype, device=device)
        history.final.update(test_loss=loss, test_acc=acc, test_error=1 - acc)
        results[name] = (model, history)
    return results


def degradation_seeds(
    data,
    names=("plain20", "plain56", "resnet20", "resnet56"),
    *,
    seeds=(0, 1, 2),
    **kwargs,
) -> dict:
    """``degradation_experiment`` once per seed: ``{seed: {name: (model, History)}}``.

    Only the first seed records per-layer gradient norms (chapter 6 plots those of
    seed 0; recording them costs about a tenth of the training time). The seeds train
    from the last to the first: another notebook running at the same time that needs
    only seed 0 (chapter 6) trains it meanwhile. The cache lock makes each net train
    once, and the results do not depend on the order.
    """
    first, runs = min(seeds), {}
    for seed in sorted(seeds, reverse=True):
        runs[seed] = degradation_experiment(data, names, seed=seed, record_grad_norms=seed == first,
                                            **kwargs)
    return {seed: runs[seed] for seed in sorted(seeds)}


def gradient_profile(
    model: ResNet, x: torch.Tensor, y: torch.Tensor, loss_fn=None
) -> dict:
    """Where the gradient of one batch goes, from one backward pass.

    Returns {"weights": {layer: gradient norm}, "blocks": {block: dL/dx_l}}: the
    gradient norm of every conv/linear weight in depth order, and the gradient of the
    loss with respect to the input x_l of every block ("layer1.0" receives the stem's
    output), plus "features" for the last block's output. Leaves .grad untouched.
    """
    blocks = named_blocks(model)
    seen = {}  # the tensor each block received, by name, then the last output

    def keep(name):
        def hook(module, args, output=None):
            seen[name] = args[0] if output is None else output

        return hook

    hooks = [block.register_forward_pre_hook(keep(name)) for name, block in blocks]
    hooks.append(blocks[-1][1].register_forward_hook(keep("features")))
    try:
        loss = (loss_fn or nn.CrossEntropyLoss())(model(x), y)
    finally:
        for hook in hooks:
            hook.remove()
    weights = {k: w for k, w in weight_layers(model).items() if w.requires_grad}
    wanted = [*seen.values(), *weights.values()]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    block_grads, weight_grads = grads[: len(seen)], grads[len(seen) :]
    norms = zip(weights, weight_grads, strict=True)
    return {
        "weights": {k: g.norm().item() for k, g in norms if g is not None},
        "blocks": dict(zip(seen, block_grads, strict=True)),
    }


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BN layer's running statistics to the exact mean and variance of the
    batch `x`, and return the model in eval mode.

    In eval mode each input's output depends on that input alone, as a gradient with
    respect to one input needs; with these statistics the BN layers normalise as they
    do in training mode on `x` (a fresh BN's running statistics are 0 and 1).
    """
    norms = _batchnorms(model)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: after one batch, that batch's
    model.train()(x)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    return model.eval()


def slopes_along_line(model, start, end, *, steps=256, output=0, chunk=64):
    """The slope df/dt of f(t) = model(start + t (end - start))[output], at `steps`
    points t from 0 to 1.

    Balduzzi et al. (2017, Fig. 1) plot this slope for networks with a one-dimensional
    input. Here the input is an image (`start` and `end` of shape C x H x W) and t walks
    along a line through input space. Each point is one input on its own, so batch norm
    must use fixed statistics: put the model in eval mode (see calibrate_batchnorm).
    """
    if model.training and _batchnorms(model):
        raise ValueError(
            "call model.eval() first (see calibrate_batchnorm): in training mode, "
            "batch norm mixes the points of the line, so the slope at one point "
            "depends on all the others"
        )
    direction = end - start
    t = torch.linspace(0, 1, steps, device=start.device).view(-1, *[1] * start.dim())
    slopes = []
    for points in (start + t * direction).split(chunk):
        points.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(points)[:, output].sum(), points)
        slopes.append((grad * direction).flatten(1).sum(1))  # df/dt = grad f . dx/dt
    return torch.cat(slopes).detach()


def lag_correlation(signal: torch.Tensor, lag: int = 1) -> float:
    """The sample autocorrelation of a 1-D signal at `lag` steps: how well the signal
    predicts itself `lag` steps later. About 0 for white noise; close to 1 for a smooth
    function, or for brown noise (a random walk)."""
    s = signal - signal.mean()
    return float((s[:-lag] * s[lag:]).sum() / (s * s).sum())
