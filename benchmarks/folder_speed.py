"""Images per second of the folder pipeline against a plain ``ImageFolder`` + ``DataLoader``, side by side.

Run:  .venv/bin/python benchmarks/folder_speed.py [--data-dir FOLDER] [--workers 2] [--rounds 3]

Both pipelines read the same files with the same transforms, batch size and workers:
``RandomResizedCrop(224)`` and a flip for training, ``Resize(256)`` and ``CenterCrop(224)`` for
evaluation (torchvision's ImageNet preprocessing), ImageNet's normalisation. The plain one is
torchvision's ``ImageFolder`` with those transforms (PIL images, ``ToImage``, ``ToDtype``, ``Normalize``
in the workers); ours is ``resnet_tutorial.folder``'s loader (JPEGs decoded at a reduced scale when they
are large enough, uint8 crops from the workers, normalised in batches). Without ``--data-dir`` the script
writes a folder of 192 photographs (JPEG, 1024x768 and 800x600, cut and resized from scikit-image's sample
images, four classes) to a temporary folder. The pipelines take turns, round after round, so that a
change in the machine's load hits both; the table shows each one's median and the ratio: in wall-clock
time with the workers, then in CPU time without workers (the decoding cost itself, which a shared
machine's load does not change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def write_photos(root: str, per_class: int = 48) -> str:
    """Four classes of real photographs, cut from scikit-image's samples and saved as camera-sized JPEGs."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)())
        os.makedirs(os.path.join(root, name), exist_ok=True)
        w, h = photo.size
        for i in range(per_class):
            s = rng.uniform(0.5, 0.9)
            x, y = rng.uniform(0, 1 - s) * w, rng.uniform(0, 1 - s) * h
            size = (1024, 768) if i % 2 else (800, 600)
            crop = photo.crop((int(x), int(y), int(x + s * w), int(y + s * h))).resize(size, Image.BICUBIC)
            crop.save(os.path.join(root, name, f"{i:03d}.jpg"), quality=90)
    return root


def plain_loader(root: str, train: bool, batch_size: int, workers: int):
    """torchvision's ImageFolder with the same transforms, normalised in the workers: the usual pipeline."""
    from torchvision import datasets
    from torchvision.transforms import v2 as T

    from resnet_tutorial.folder import IMAGENET_MEAN, IMAGENET_STD

    steps = ([T.RandomResizedCrop(224, antialias=True), T.RandomHorizontalFlip()] if train
             else [T.Resize(256, antialias=True), T.CenterCrop(224)])
    transform = T.Compose([*steps, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    data = datasets.ImageFolder(root, transform=transform)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=train, num_workers=workers)


def our_loader(root: str, train: bool, batch_size: int, workers: int):
    import warnings

    from resnet_tutorial.folder import Preprocessing, load_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # every image in one split, as ImageFolder reads them
        data = load_folder(root, Preprocessing(224, 256), val_fraction=1.0, num_workers=workers)
    data.train = data.test
    return data.loader("train" if train else "test", batch_size, augment=train, device="cpu")


def images_per_second(loader, clock=time.perf_counter) -> float:
    start, n = clock(), 0
    for x, _ in loader:
        n += len(x)
    return n / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="a folder of images (DIR/<class>/*.jpg)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        args.data_dir = write_photos(os.path.join(tmp.name, "photos"))
    n = sum(len(files) for _, _, files in os.walk(args.data_dir))
    print(f"{n} files in {args.data_dir} | {args.workers} workers | batch {args.batch_size} | "
          f"load average {os.getloadavg()[0]:.1f}")
    for train in (True, False):
        what = "training (RandomResizedCrop 224, flip)" if train else "evaluation (Resize 256, CenterCrop 224)"
        # wall clock with the workers; and CPU time in the main process alone (no workers), which a
        # shared machine's load does not change
        for workers, clock, unit in ((args.workers, time.perf_counter, "images per second"),
                                     (0, time.process_time, "images per CPU second, no workers")):
            results = {"ImageFolder + DataLoader": [], "resnet_tutorial.folder": []}
            for _ in range(args.rounds):
                results["ImageFolder + DataLoader"].append(images_per_second(
                    plain_loader(args.data_dir, train, args.batch_size, workers), clock))
                results["resnet_tutorial.folder"].append(images_per_second(
                    our_loader(args.data_dir, train, args.batch_size, workers), clock))
            print(f"\n{what}: {unit}, median of {args.rounds} rounds taken in turns")
            for name, values in results.items():
                print(f"  {name:<26} {statistics.median(values):8.1f}   ({', '.join(f'{v:.0f}' for v in values)})")
            ratio = statistics.median(results["resnet_tutorial.folder"]) / statistics.median(
                results["ImageFolder + DataLoader"])
            print(f"  ratio ours / plain          {ratio:8.2f}x")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
