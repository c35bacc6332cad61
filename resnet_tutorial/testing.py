"""Stand-ins for the downloads, in their official formats and places: for the tests and ``make smoke``.

* :func:`write_cifar10_fixture` writes a tiny CIFAR-10 in the official python-version layout (random pixels
  and labels), and :func:`register_cifar10_fixture` registers its MD5s in torchvision's place of the
  official ones, so that torchvision's integrity check still runs on it.
* :func:`write_fashion_mnist_fixture` writes a tiny Fashion-MNIST as the four gzipped idx files of the
  official release (and of Debian's package ``dataset-fashion-mnist``).
* :func:`write_torchvision_weights` puts random-valued ImageNet weights into torch's hub cache under the
  file names torchvision's weights entries download to, so that ``weights.get_state_dict()`` finds them
  there and downloads nothing.

Nothing here is used by the chapters themselves; a reader's run downloads the real files.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import torch
import torchvision
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5

from .data import CIFAR10_FOLDER, FASHION_MNIST_FILES

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BATCHES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def write_cifar10_fixture(root, n_per_batch: int = 50, seed: int = 0) -> tuple[dict, dict]:
    """A tiny CIFAR-10 in ``root/cifar-10-batches-py/``: protocol-2 pickles of the dicts the official
    (Python 2) files hold, ``n_per_batch`` random images in each of the five training batches and the test
    batch, the ten classes in turn (in a random order), as evenly as ``n_per_batch`` allows. Returns ``(batches, md5)``: each batch's ``(data, labels)``, and each file's MD5 (for
    :func:`register_cifar10_fixture`)."""
    folder = os.path.join(os.fspath(root), CIFAR10_FOLDER)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in CIFAR10_BATCHES:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.permutation(np.arange(n_per_batch) % 10)]  # every class, evenly
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": ["x.png"] * n_per_batch}, f, protocol=2)
        batches[name] = (data, labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, f,
                    protocol=2)
    md5 = {name: calculate_md5(os.path.join(folder, name)) for name in [*batches, "batches.meta"]}
    return batches, md5


def cifar10_md5_lists(md5: dict) -> dict:
    """torchvision's ``CIFAR10`` class attributes (``train_list``, ``test_list``, ``meta``) for these MD5s."""
    return {
        "train_list": [[n, md5[n]] for n in CIFAR10_BATCHES if n != "test_batch"],
        "test_list": [["test_batch", md5["test_batch"]]],
        "meta": {**CIFAR10.meta, "md5": md5["batches.meta"]},
    }


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the idx format of LeCun's MNIST files: a magic number that says "unsigned bytes"
    and the number of dimensions, each dimension as a big-endian int32, then the values."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist_fixture(folder, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """The four files of Fashion-MNIST in ``folder`` as gzipped idx files (``train-images-idx3-ubyte.gz``
    ...), random 28x28 images with labels 0..9. Returns ``{file name: array}`` (names without ``.gz``)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    assert set(arrays) == set(FASHION_MNIST_FILES)
    for name, array in arrays.items():
        with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
            f.write(idx_bytes(array))
    return arrays


def register_cifar10_fixture(md5: dict, patch=None) -> None:
    """Make torchvision's ``CIFAR10`` accept the fixture with these MD5s (and no longer the official files).

    ``patch`` sets the class attributes: pytest's ``monkeypatch.setattr`` (undone after the test), by default
    the built-in ``setattr`` (for the rest of the process).
    """
    patch = patch or setattr
    for name, value in cifar10_md5_lists(md5).items():
        patch(CIFAR10, name, value)


def torchvision_weights_file(weights) -> str:
    """The file name torch's hub cache keeps a torchvision weights entry under (the last part of its URL)."""
    return os.path.basename(weights.url)


def write_torchvision_weights(hub_dir, names, seed: int = 0) -> list[str]:
    """Random-valued weights for torchvision's weights entries ``names`` (``"ResNet18_Weights.IMAGENET1K_V1"``
    or the entry itself) in ``hub_dir/checkpoints/``, the folder of ``torch.hub.get_dir()`` (by default
    ``$TORCH_HOME/hub``) where ``get_state_dict`` looks before it downloads. Each file holds the state_dict
    of torchvision's own model of that architecture, freshly initialised (BN statistics included) with
    ``seed``. Returns the paths written."""
    folder = os.path.join(os.fspath(hub_dir), "checkpoints")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for entry in names:
        weights = torchvision.models.get_weight(entry) if isinstance(entry, str) else entry
        builder = _builder_of(weights)
        torch.manual_seed(seed)
        model = builder(weights=None, num_classes=len(weights.meta["categories"]))
        path = os.path.join(folder, torchvision_weights_file(weights))
        torch.save(model.state_dict(), path)
        paths.append(path)
    return paths


def _builder_of(weights):
    """torchvision's model builder that a weights entry belongs to."""
    for name in torchvision.models.list_models():
        try:
            enum = torchvision.models.get_model_weights(name)
        except (KeyError, ValueError):
            continue
        if type(weights) is enum:
            return torchvision.models.get_model_builder(name)
    raise ValueError(f"no torchvision model has the weights {weights}")
