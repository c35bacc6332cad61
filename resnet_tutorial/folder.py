"""A folder of images as a dataset, in torchvision's ``ImageFolder`` layout.

``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/...``, or one ``DIR/<class>/...`` split into training
and validation images, stratified by class and seeded (the split is recorded in the run's summary).
Photographs of any size do not fit in memory as one tensor, so they are decoded and augmented in a
``DataLoader`` with workers: a random-resized crop and a flip for training; the weights' own resize,
centre crop and normalisation (``weights.transforms()``, timm's ``pretrained_cfg``) for evaluation.

Two things make it faster than a plain ``ImageFolder``: a JPEG larger than needed is decoded at a
reduced scale (PIL's ``draft``, the DCT scaling of libjpeg; for training, the random crop is drawn from
the header's size first, then decoded at the scale it needs), and the workers hand over uint8 crops that
are normalised in batches on the device. ``benchmarks/folder_speed.py`` measures both side by side.

Files that cannot be used (not an image, corrupt, truncated, smaller than ``MIN_SIDE`` pixels) are
skipped with a warning that names them; a folder that cannot make a classifier (no images, one class,
a class without images) is an error that says what to do.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .data import DataError, ImageData, epoch_order
from .models import model_family
from .models.weights import default_tag, pretrained_cfg
from .runtime import pick_device

#: torchvision's ``IMG_EXTENSIONS``: the files ``ImageFolder`` reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: The smallest side, in pixels, of an image worth training on or classifying.
MIN_SIDE = 8
#: ``RandomResizedCrop``'s smallest share of the image's area.
MIN_CROP_SCALE = 0.08
#: ImageNet's per-channel mean and standard deviation: the default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderWarning(UserWarning):
    """A file of the folder that is skipped (its message names it and says why)."""


# --- preprocessing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """The weights' preprocessing: resize the short side to ``resize_size``, centre-crop ``crop_size``,
    normalise with ``mean`` and ``std`` (0..1 scale). Training crops ``crop_size`` at random instead."""

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(int(d["crop_size"]), int(d["resize_size"]), tuple(d["mean"]), tuple(d["std"]),
                   d.get("interpolation", "bilinear"))

    def resized(self, crop_size: int) -> Preprocessing:
        """The same crop fraction at another size (``--image-size``)."""
        resize = round(crop_size * self.resize_size / self.crop_size)
        return Preprocessing(crop_size, resize, self.mean, self.std, self.interpolation)

    def load(self, path: str, train: bool) -> torch.Tensor:
        """One image file as a uint8 ``(3, crop, crop)`` tensor (normalisation happens on the device).

        Training: torchvision's ``RandomResizedCrop`` (its ``get_params``, areas 8 % to 100 %) and a
        horizontal flip; evaluation: ``Resize`` and ``CenterCrop``. A JPEG is decoded at the smallest scale
        (PIL's ``draft``: libjpeg's DCT scaling, 1/2, 1/4 or 1/8) that still gives the crop at least as many
        pixels as it will have, which saves most of the decoding of a large photograph.
        """
        # Lazy, for start-up time: torchvision takes seconds to import, and the command line imports this
        # module for every command; only decoding a folder's images needs it.
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms import v2 as T

        if not train:
            mode = InterpolationMode(self.interpolation)
            resize = T.Resize(self.resize_size, interpolation=mode, antialias=True)
            return T.PILToTensor()(T.CenterCrop(self.crop_size)(resize(open_rgb(path, self.resize_size))))
        with Image.open(path) as im:  # reads the header only: the crop is drawn before decoding
            full = im.size
            top, left, h, w = RandomResizedCrop.get_params(im, [MIN_CROP_SCALE, 1.0], [3 / 4, 4 / 3])
            reduce = min(h, w) // self.crop_size
            if im.format == "JPEG" and reduce >= 2:
                im.draft("RGB", (math.ceil(full[0] / reduce), math.ceil(full[1] / reduce)))
            image = _to_rgb(im)
        size, resample = (self.crop_size, self.crop_size), Image.Resampling[self.interpolation.upper()]
        if image.size == full:  # torchvision's resized_crop on a PIL image
            crop = image.crop((left, top, left + w, top + h)).resize(size, resample)
        else:  # the same box at the reduced scale, in fractions of a pixel
            sx, sy = full[0] / image.size[0], full[1] / image.size[1]
            crop = image.resize(size, resample, box=(left / sx, top / sy, (left + w) / sx, (top + h) / sy))
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return T.PILToTensor()(crop)


def preprocessing_for(arch: str, tag: str | None = None, image_size: int | None = None) -> Preprocessing:
    """The preprocessing of ``arch``'s pretrained weights ``tag`` (torchvision's ``DEFAULT`` when ``tag`` is
    None and the architecture has ImageNet weights; else 224 px, resize 256, ImageNet's statistics, or 32 px
    for a CIFAR network), at ``image_size`` when given."""
    family = model_family(arch)
    tag = tag or default_tag(arch)
    if tag is not None:
        cfg = pretrained_cfg(arch, tag, family)
        crop = cfg["input_size"][-1]
        resize = cfg.get("resize_size") or math.floor(crop / cfg.get("crop_pct", 0.875))
        prep = Preprocessing(crop, resize, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear"))
    elif "cifar" in family:
        prep = Preprocessing(32, 32)
    else:
        prep = Preprocessing()
    return prep if image_size is None else prep.resized(image_size)


# --- files ----------------------------------------------------------------------------------------


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be used as an image, or None. Reads the header and checks the file's
    structure (PIL's ``verify``: chunk checksums for PNG; a JPEG must end with its end-of-image marker)
    without decoding the pixels."""
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
            im.verify()
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Exception as err:  # truncated or corrupt
        return f"corrupt or truncated ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:80]})"
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            if b"\xff\xd9" not in f.read():
                return "truncated (the JPEG has no end-of-image marker)"
    if min(w, h) < MIN_SIDE:
        return f"too small ({w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} needed)"
    return None


def _skip(path: str, why: str) -> None:
    warnings.warn(f"skipping {path}: {why}", FolderWarning, stacklevel=3)


def usable_images(paths, check: bool = True) -> list[str]:
    """The image files among ``paths`` (sorted), each other file skipped with a warning (hidden files,
    such as ``.DS_Store``, silently)."""
    keep = []
    for path in sorted(paths):
        name = os.path.basename(path)
        if name.startswith("."):
            continue
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            _skip(path, f"not an image file (the extensions read are {', '.join(IMAGE_EXTENSIONS)})")
            continue
        why = image_problem(path) if check else None
        if why:
            _skip(path, why)
        else:
            keep.append(path)
    return keep


def walk_images(inputs) -> list[str]:
    """Image files from files and folders (walked recursively, sorted), each unusable file skipped with a
    warning. An input that does not exist is an error."""
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths += usable_images(os.path.join(d, f) for d, _, files in os.walk(item) for f in files)
        elif os.path.isfile(item):
            paths += usable_images([item])
        else:
            raise DataError(f"no file or folder {item!r}: check the path")
    return paths


def scan_classes(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """The class folders of ``root`` (sorted, as ``ImageFolder``) and its ``(path, class index)`` samples.

    An error when ``root`` holds no class folder, when a class folder has no usable image, or when there
    are fewer than two classes."""
    layout = "DIR/<class>/*.jpg (or DIR/train/<class>/... and DIR/val/<class>/...)"
    if not os.path.isdir(root):
        raise DataError(f"no folder {root!r}: --data-dir needs a folder of images, {layout}")
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"no class folders in {root!r}: put the images in one folder per class, {layout}")
    samples = []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = usable_images(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)
        if not files:
            raise DataError(f"the class folder {folder!r} holds no usable image: add images to it or remove it")
        samples += [(path, index) for path in files]
    if len(classes) < 2:
        raise DataError(f"{root!r} has one class ({classes[0]!r}): a classifier needs at least two class folders")
    return classes, samples


def split_layout(root: str) -> tuple[str, str] | None:
    """``(root/train, root/val)`` when ``root`` has both (``val`` may be called ``test``), else None."""
    for val in ("val", "test"):
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, val)):
            return os.path.join(root, "train"), os.path.join(root, val)
    return None


def is_image_folder(root: str) -> bool:
    """Whether ``root`` looks like an image folder: train/val, or a sub-folder holding an image file."""
    if not root or not os.path.isdir(root):
        return False
    if split_layout(root):
        return True
    with os.scandir(root) as entries:
        folders = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
    return any(f.lower().endswith(IMAGE_EXTENSIONS) for d in folders for _, _, fs in os.walk(d) for f in fs)


def stratified_split(samples, classes: list[str], val_fraction: float, seed: int):
    """Split ``samples`` per class: ``round(val_fraction * n)`` of each class's ``n`` (at least one, and at
    least one left for training) for validation, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c, name in enumerate(classes):
        mine = [s for s in samples if s[1] == c]
        if len(mine) < 2:
            raise DataError(f"the class {name!r} has one usable image: splitting off validation images needs at "
                            "least two per class (or give DIR/train/ and DIR/val/)")
        n_val = min(max(1, round(val_fraction * len(mine))), len(mine) - 1)
        order = torch.randperm(len(mine), generator=g).tolist()
        val += [mine[i] for i in sorted(order[:n_val])]
        train += [mine[i] for i in sorted(order[n_val:])]
    return train, val


# --- decoding -------------------------------------------------------------------------------------


def _to_rgb(im):
    """An opened PIL image as RGB (decoding it), transparency composed onto white."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str, min_side: int | None = None):
    """An RGB PIL image of ``path``; a JPEG at least twice ``min_side`` is decoded at a reduced scale that
    keeps its short side at least ``min_side``; transparency is composed onto white."""
    with Image.open(path) as im:
        if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
            im.draft("RGB", (min_side, min_side))
        return _to_rgb(im)


class ImageFiles(torch.utils.data.Dataset):
    """``(uint8 image tensor, label)`` for each ``(path, label)``, by ``preprocessing.load``. With ``seed`` set
    (training), sample ``i`` of epoch ``e`` is augmented with its own random numbers, seeded by ``(seed, e, i)``:
    the same crops whatever the number of workers, and an epoch the same whether the run was resumed before
    it or not."""

    def __init__(self, samples, preprocessing: Preprocessing, train: bool, seed: int | None = None):
        self.samples, self.preprocessing, self.train, self.seed = list(samples), preprocessing, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            if not self.train:
                return self.preprocessing.load(path, train=False), label
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 100_003 + self.epoch) * 1_000_003 + i)
                return self.preprocessing.load(path, train=True), label
        except Exception as err:  # passed the scan, but its pixels do not decode
            first = (str(err).splitlines() or [""])[0][:120]
            raise DataError(f"cannot decode {path} ({type(err).__name__}: {first}): remove or replace it") from None


class FolderLoader:
    """Batches ``(x, y)`` on ``device``, ``x`` normalised floats, from a ``DataLoader`` over image files.

    The order is drawn from ``(seed, epoch)`` (call :meth:`set_epoch`, as with ``DistributedSampler``);
    in a data-parallel run each rank takes its share of the same order."""

    def __init__(self, data: FolderData, dataset: ImageFiles, *, batch_size, shuffle, device, seed, drop_last,
                 rank, world_size, num_workers):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data, self.dataset, self.batch_size, self.shuffle = data, dataset, batch_size, shuffle
        self.device, self.seed, self.drop_last = device, seed, drop_last
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = math.ceil(len(self.dataset) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.dataset.epoch = self.epoch
        order = epoch_order(len(self.dataset), self.shuffle, generator, self.rank, self.world_size)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=order.tolist(),
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
            generator=generator,  # the workers' seeds; the global random state is left alone
        )
        batches = iter(loader)
        while True:
            try:
                x, y = next(batches)
            except StopIteration:
                return
            except DataError as err:
                if not str(err).startswith("Caught "):
                    raise
                # raised in a worker: the message is the last line of the worker's traceback
                raise DataError(str(err).strip().splitlines()[-1].split(": ", 1)[-1]) from None
            x = x.to(self.device, non_blocking=True)
            yield self.data.normalize(x), y.to(self.device, non_blocking=True)


# --- the dataset ----------------------------------------------------------------------------------


def default_workers() -> int:
    """``DataLoader`` workers: one per CPU core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class FolderData:
    """A folder of images, with the face of :class:`~resnet_tutorial.data.ImageData` that ``fit`` and
    ``evaluate`` use (``loader``, ``normalize``, ``classes``, ``in_chans``): the training and validation
    files, their classes, the preprocessing, and how the split was made."""

    name = "folder"
    in_chans = 3

    def __init__(self, root, classes, train, test, preprocessing: Preprocessing, split: dict, num_workers: int):
        self.root, self.classes, self.train, self.test = root, list(classes), train, test
        self.preprocessing, self.split_info, self.num_workers = preprocessing, split, num_workers
        self.mean, self.std = preprocessing.mean, preprocessing.std
        self.source = (f"the image folder {root} ({len(train)} training / {len(test)} validation images, "
                       f"{len(self.classes)} classes; {split['how']})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.preprocessing.crop_size

    def __repr__(self) -> str:
        return (f"FolderData({self.root!r}: {len(self.train)} train / {len(self.test)} val images, "
                f"{self.num_classes} classes, {self.image_size}px)")

    @property
    def run_info(self) -> dict:
        """What a checkpoint and a summary record: classes, preprocessing, folder, split."""
        return {"classes": list(self.classes), "preprocessing": self.preprocessing.to_dict(),
                "data_dir": os.path.abspath(self.root), "split": self.split_info}

    normalize = ImageData.normalize  # uint8 to floats with the preprocessing's mean and std

    def dataset(self, samples, train: bool, seed: int = 0) -> ImageFiles:
        return ImageFiles(samples, self.preprocessing, train, seed)

    def loader(self, split: str = "train", batch_size: int = 64, shuffle: bool | None = None,
               augment: bool | None = None, device=None, seed: int = 0, drop_last: bool = False, rank: int = 0,
               world_size: int = 1) -> FolderLoader:
        """Normalised (and, for training, augmented) batches ``(x, y)`` on ``device``; the arguments are
        :meth:`ImageData.loader`'s."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        train = split == "train"
        samples = self.train if train else self.test
        augment = train if augment is None else augment
        return FolderLoader(self, self.dataset(samples, augment, seed), batch_size=batch_size,
                            shuffle=train if shuffle is None else shuffle, device=pick_device(device), seed=seed,
                            drop_last=drop_last, rank=rank, world_size=world_size, num_workers=self.num_workers)

    def fingerprint(self) -> dict:
        """What identifies this data for the experiment cache: files, sizes, labels and preprocessing."""
        h = hashlib.sha256()
        for path, label in [*self.train, *self.test]:
            h.update(f"{os.path.relpath(path, self.root)}|{label}|{os.path.getsize(path)}\n".encode())
        return {"name": self.name, "train": len(self.train), "test": len(self.test), "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(), "hash": h.hexdigest()}


def load_folder(root: str, preprocessing: Preprocessing | None = None, *, val_fraction: float = 0.2,
                split_seed: int = 0, num_workers: int | None = None, classes: list[str] | None = None) -> FolderData:
    """A :class:`FolderData` from ``root``: ``root/train`` and ``root/val`` (or ``root/test``) as they are,
    or ``root/<class>/...`` split per class, ``val_fraction`` of each class for validation, drawn with
    ``split_seed`` (``val_fraction=1``: every image for validation). ``classes`` (a checkpoint's) must be the folder's classes."""
    root = os.path.expanduser(os.fspath(root))
    preprocessing = preprocessing or Preprocessing()
    layout = split_layout(root)
    if layout:
        names, train = scan_classes(layout[0])
        val_names, test = scan_classes(layout[1])
        if val_names != names:
            raise DataError(f"{layout[1]!r} has the classes {val_names}, {layout[0]!r} has {names}: give both "
                            "the same class folders")
        split = {"how": "the folder's own train/ and val/", "train_dir": layout[0], "val_dir": layout[1]}
    else:
        if not 0 < val_fraction <= 1:
            raise DataError(f"the validation fraction must be in (0, 1], got {val_fraction}")
        names, samples = scan_classes(root)
        if val_fraction == 1:  # a folder to evaluate on, in one piece
            train, test = [], samples
            split = {"how": "every image for validation", "val_fraction": 1.0}
        else:
            train, test = stratified_split(samples, names, val_fraction, split_seed)
            split = {"how": f"{val_fraction:.0%} of each class for validation, stratified, seed {split_seed}",
                     "val_fraction": val_fraction, "seed": split_seed}
    if classes is not None and list(classes) != names:
        raise DataError(f"the folder {root!r} has {len(names)} classes {names[:8]}, but the checkpoint was trained "
                        f"on {len(classes)} classes {list(classes)[:8]}: use the folder it was trained on")
    split["train_per_class"] = {n: sum(1 for _, c in train if c == i) for i, n in enumerate(names)}
    split["val_per_class"] = {n: sum(1 for _, c in test if c == i) for i, n in enumerate(names)}
    workers = default_workers() if num_workers is None else num_workers
    return FolderData(root, names, train, test, preprocessing, split, workers)


# --- a folder to try it on ------------------------------------------------------------------------

#: scikit-image's photographs of textures (512x512, greyscale) that :func:`sample_photos` cuts up.
SAMPLE_CLASSES = ("brick", "grass", "gravel")


def sample_photos(root: str, train_per_class: int = 40, val_per_class: int = 12, seed: int = 0) -> str:
    """A small folder of real photographs, offline: square tiles of 48 to 128 pixels cut at random from
    scikit-image's photographs of a brick wall, grass and gravel, one class each, saved as JPEG and PNG in
    turn, in ``root/train/<class>/`` (from the left three quarters of each photograph) and
    ``root/val/<class>/`` (from the right quarter: no validation pixel is seen in training)."""
    import skimage.data  # lazy: scikit-image is optional (the `notebooks` extra), for these sample photographs only

    rng = np.random.default_rng(seed)
    for name in SAMPLE_CLASSES:
        photo = getattr(skimage.data, name)()
        width = photo.shape[1]
        for split, n, (left, right) in (("train", train_per_class, (0, width * 3 // 4)),
                                        ("val", val_per_class, (width * 3 // 4, width))):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                size = int(rng.integers(48, min(128, right - left) + 1))
                y, x = int(rng.integers(0, photo.shape[0] - size + 1)), int(rng.integers(left, right - size + 1))
                tile = Image.fromarray(photo[y : y + size, x : x + size])
                tile.save(os.path.join(folder, f"{name}_{i:03d}.{'jpg' if i % 2 else 'png'}"))
    return root
