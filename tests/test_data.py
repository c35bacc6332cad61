"""Datasets: MNIST-5k, digits, Fashion-MNIST and CIFAR-10 (on a fixture in the official format), auto, batches, augmentation."""

import gzip
import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from resnet_tutorial import data as rd
from resnet_tutorial import testing
from resnet_tutorial.data import AUGMENTATIONS, DataError, load_dataset, random_crop, random_rotate_scale


def write_cifar10_fixture(root, monkeypatch, n_per_batch=50, seed=0):
    """A tiny CIFAR-10 in the official python-version layout (``resnet_tutorial.testing``), its MD5s registered
    in torchvision's place of the official ones for this test, so the check itself still runs. Returns the
    batches."""
    batches, md5 = testing.write_cifar10_fixture(root, n_per_batch=n_per_batch, seed=seed)
    testing.register_cifar10_fixture(md5, monkeypatch.setattr)
    return batches


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def test_mnist5k_split_is_fixed_stratified_uint8(mnist):
    assert (len(mnist.train), len(mnist.test)) == (4000, 1000)
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.images.shape[1:] == (1, 28, 28)
    assert mnist.train.labels.dtype == torch.int64
    assert torch.bincount(mnist.train.labels).tolist() == [400] * 10
    assert torch.bincount(mnist.test.labels).tolist() == [100] * 10
    again = load_dataset("mnist5k")
    assert torch.equal(again.train.images, mnist.train.images) and torch.equal(again.test.labels, mnist.test.labels)
    assert (mnist.in_chans, mnist.num_classes, mnist.image_size) == (1, 10, 28)
    assert mnist.classes == [str(d) for d in range(10)] and "MNIST-5k" in mnist.source


def test_normalisation_uses_training_split_statistics(mnist):
    x = mnist.train.images.double() / 255
    assert mnist.mean[0] == pytest.approx(x.mean().item(), abs=1e-4)
    assert mnist.std[0] == pytest.approx(x.std().item(), abs=1e-4)
    z = mnist.normalize(mnist.train.images)
    assert abs(z.mean().item()) < 1e-3 and z.std().item() == pytest.approx(1.0, abs=1e-3)
    back = mnist.denormalize(z[:5])
    assert torch.allclose(back, mnist.train.images[:5].float() / 255, atol=1e-5)


def test_digits_scaled_and_resized():
    d = load_dataset("digits")
    assert (len(d.train), len(d.test)) == (1347, 450) and d.image_size == 8
    assert d.train.images.dtype == torch.uint8 and d.train.images.max().item() == 255
    big = load_dataset("digits", image_size=28)
    assert big.train.images.shape[1:] == (1, 28, 28) and torch.equal(big.train.labels, d.train.labels)
    assert big.std != d.std  # statistics recomputed on the resized images


def test_cifar10_fixture_in_official_format_loads(tmp_path, monkeypatch):
    batches = write_cifar10_fixture(tmp_path, monkeypatch)
    d = load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert (len(d.train), len(d.test)) == (250, 50)
    assert d.train.images.shape[1:] == (3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"
    row, labels = batches["data_batch_2"]
    # row-major: 1024 red values, then green, then blue, each 32x32
    assert torch.equal(d.train.images[50].flatten(), torch.from_numpy(row[0]))
    assert d.train.labels[50:100].tolist() == labels
    assert d.augmentation == "crop_flip" and len(d.mean) == 3
    # data_dir may also point at the cifar-10-batches-py folder itself
    assert len(load_dataset("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), download=False).test) == 50


def test_damaged_cifar10_gives_one_data_error_saying_what_to_do(tmp_path, monkeypatch):
    write_cifar10_fixture(tmp_path, monkeypatch, n_per_batch=4)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_3", "wb") as f:  # well-formed, but not the file whose MD5 is known
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3 has the wrong MD5.*download it again") as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert "data_batch_1" not in str(err.value) and "\n" not in str(err.value)
    (folder / "data_batch_4").write_bytes(b"\x80\x04garbage")
    os.remove(folder / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3 is missing; data_batch_4 has the wrong MD5"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    monkeypatch.setattr(rd, "_online", lambda *a, **k: False)  # allowed to download, but offline
    with pytest.raises(DataError, match="damaged .data_batch_3 is missing; data_batch_4 has the wrong MD5.*offline"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)
    with pytest.raises(DataError, match="cifar-10-batches-py/ is missing.*offline"):
        load_dataset("cifar10", data_dir=str(tmp_path / "empty"), download=True)


def test_official_cifar10_checksums_are_checked(tmp_path, monkeypatch):
    """Without the fixture's MD5s registered, torchvision's official ones refuse the fixture."""
    from torchvision.datasets import CIFAR10

    official = CIFAR10.train_list[0][1]
    write_cifar10_fixture(tmp_path, monkeypatch, n_per_batch=2)
    monkeypatch.undo()
    assert CIFAR10.train_list[0][1] == official
    with pytest.raises(DataError, match="data_batch_1 has the wrong MD5"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)


def test_missing_cifar10_offline_fails_fast(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    monkeypatch.setattr(rd, "_online", lambda *a, **k: False)
    with pytest.raises(DataError, match="offline"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)


def test_online_probe_fails_fast():
    import socket
    import time

    start = time.perf_counter()
    assert rd._online("http://no-such-host.invalid/x", timeout=1) is False
    with socket.socket() as server:  # a server that accepts but never answers: the probe gives up
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert rd._online(f"http://127.0.0.1:{server.getsockname()[1]}/x", timeout=1) is False
    assert time.perf_counter() - start < 6


def test_auto_prefers_cifar10_copy_else_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rd, "_online", lambda *a, **k: False)
    d = load_dataset("auto", data_dir=str(tmp_path))
    assert d.name == "mnist5k"
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "MNIST-5k" in out[0] and "--dataset cifar10 downloads it" in out[0]
    write_cifar10_fixture(tmp_path, monkeypatch, n_per_batch=4)
    d = load_dataset("auto", data_dir=str(tmp_path))
    assert d.name == "cifar10"
    assert "CIFAR-10" in capsys.readouterr().out


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*mnist5k"):
        load_dataset("imagenet")


def test_loader_batches_cover_split_and_shuffle_per_epoch():
    d = load_dataset("digits")
    loader = d.loader("train", batch_size=100, augment=False, device="cpu", seed=3)
    assert len(loader) == 14
    ys = torch.cat([y for _, y in loader])
    assert sorted(ys.tolist()) == sorted(d.train.labels.tolist())
    again = torch.cat([y for _, y in loader])
    assert torch.equal(ys, again)  # same (seed, epoch): same order
    loader.set_epoch(1)
    assert not torch.equal(ys, torch.cat([y for _, y in loader]))
    x, y = next(iter(d.loader("test", batch_size=64, device="cpu")))
    assert x.dtype == torch.float32 and x.shape == (64, 1, 8, 8)
    assert torch.equal(y, d.test.labels[:64])  # the test split is not shuffled
    assert torch.allclose(x, d.normalize(d.test.images[:64]))


def test_loader_shards_by_rank():
    d = load_dataset("digits")
    shards = [torch.cat([y for _, y in d.loader("train", 50, augment=False, rank=r, world_size=2, seed=1, device="cpu")])
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 674  # ceil(1347 / 2), padded like DistributedSampler
    counts = torch.bincount(torch.cat(shards), minlength=10) - torch.bincount(d.train.labels, minlength=10)
    assert counts.sum().item() == 1 and counts.min().item() == 0


def _shifts(img, p, flips=False):
    padded = torch.nn.functional.pad(img, (p,) * 4)
    h, w = img.shape[-2:]
    out = [padded[..., i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return out + [o.flip(-1) for o in out] if flips else out


def assert_shifts_and_flips(d, padding):
    """``d``'s augmentation turns one image into its shifts by up to ``padding`` pixels, about half of them
    mirrored (64 draws)."""
    img = d.train.images[:1]
    batch = d.augment(img.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    plain, flipped = _shifts(img, padding), [s.flip(-1) for s in _shifts(img, padding)]
    n_flipped = 0
    for x in batch:
        is_plain = any(torch.equal(x[None], s) for s in plain)
        is_flipped = any(torch.equal(x[None], s) for s in flipped)
        assert is_plain or is_flipped
        n_flipped += is_flipped and not is_plain
    assert 10 < n_flipped < 54


def test_digit_augmentation_shifts_but_never_flips():
    d = load_dataset("digits")
    img = d.train.images[:1]  # augmentation comes before normalisation: the padding is black
    g = torch.Generator().manual_seed(0)
    batch = d.augment(img.repeat(64, 1, 1, 1), g)
    shifted = _shifts(img, 2)
    for x in batch:
        assert any(torch.equal(x[None], s) for s in shifted)
    assert len({tuple(x.flatten().tolist()) for x in batch}) > 5  # really random
    x, _ = next(iter(d.loader("train", 512, seed=0, device="cpu")))
    assert torch.isclose(x.min(), d.normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8)).min())  # black border


def test_rotate_scale_without_angle_or_scale_is_the_identity_and_otherwise_turns_the_digit():
    """random_rotate_scale samples its grid at the pixel centres: with 0 degrees and no scaling every pixel is
    itself, exactly. With 10 degrees each image turns by its own angle, its ink stays about where it was (the
    rotation is about the centre), and no image is turned by more than 10 degrees."""
    img = load_dataset("digits").train.images[:64]
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_rotate_scale(img, 0, 0.0, g), img)
    turned = random_rotate_scale(img, 10, 0.1, torch.Generator().manual_seed(0))
    assert turned.dtype == torch.uint8 and turned.shape == img.shape
    assert torch.equal(turned, random_rotate_scale(img, 10, 0.1, torch.Generator().manual_seed(0)))
    assert (turned != img).flatten(1).any(1).float().mean() > 0.9
    ink, ink_turned = img.float().sum((1, 2, 3)), turned.float().sum((1, 2, 3))
    assert ((ink_turned / ink - 1).abs() < 0.3).all()  # a scaling of 0.9-1.1 changes the ink by 0.81-1.21
    a_lot = random_rotate_scale(img, 45, 0.0, torch.Generator().manual_seed(0))
    assert (img.float() - a_lot.float()).abs().mean() > (img.float() - turned.float()).abs().mean()


def test_shift_rotate_shifts_first_then_turns():
    """"shift_rotate" is the shift of "shift", then random_rotate_scale, drawing from one generator."""
    d = load_dataset("digits")
    batch = d.train.images[:32]
    ours = replace(d, augmentation="shift_rotate").augment(batch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(ours, random_rotate_scale(random_crop(batch, 2, g), 10, 0.1, g))
    assert "shift_rotate" in AUGMENTATIONS


def test_cifar_augmentation_crops_and_flips(tmp_path, monkeypatch):
    write_cifar10_fixture(tmp_path, monkeypatch, n_per_batch=2)
    d = load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert_shifts_and_flips(d, padding=4)


# --- Fashion-MNIST: Debian's package offline, torchvision's download online -----------------------------


@pytest.fixture
def debian_fashion(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST where Debian's package puts the real one (gzipped idx files)."""
    folder = tmp_path / "debian"
    arrays = testing.write_fashion_mnist_fixture(folder, n_train=40, n_test=20)
    monkeypatch.setattr(rd, "DEBIAN_FASHION_MNIST", str(folder))
    monkeypatch.setattr(rd, "_online", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    return folder, arrays


def test_fashion_mnist_from_debians_files_is_unpacked_once_and_read_by_torchvision(tmp_path, debian_fashion):
    folder, arrays = debian_fashion
    home = tmp_path / "data"
    d = load_dataset("fashion-mnist", data_dir=str(home))
    assert (len(d.train), len(d.test), d.in_chans, d.image_size) == (40, 20, 1, 28)
    assert d.train.images.dtype == torch.uint8 and d.train.labels.dtype == torch.int64
    assert torch.equal(d.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(d.test.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot" and d.num_classes == 10
    assert d.augmentation == "shift_flip" and str(folder) in d.source
    raw = home / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(rd.FASHION_MNIST_FILES)  # torchvision's layout, no leftovers
    for name in rd.FASHION_MNIST_FILES:  # the debian copy gone: the unpacked files are read
        os.remove(folder / (name + ".gz"))
    again = load_dataset("fashion-mnist", data_dir=str(home), download=False)
    assert torch.equal(again.train.images, d.train.images) and str(raw) in again.source


def test_fashion_mnist_missing_offline_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "DEBIAN_FASHION_MNIST", str(tmp_path / "not-installed"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False)
    assert "download=True" in str(err.value) and "mnist5k" in str(err.value)
    monkeypatch.setattr(rd, "_online", lambda *a, **k: False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))  # download allowed, but offline
    assert "offline" in str(err.value)
    assert not (tmp_path / "FashionMNIST" / "raw").exists() or not os.listdir(tmp_path / "FashionMNIST" / "raw")


def test_fashion_mnist_online_is_downloaded_by_torchvision(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "DEBIAN_FASHION_MNIST", str(tmp_path / "not-installed"))
    monkeypatch.setattr(rd, "_online", lambda url, *a, **k: url == rd.FASHION_MNIST_URL)
    calls = []

    def fake_download(self):  # torchvision's download, without the network: the official files appear
        calls.append(self.root)
        source = tmp_path / "mirror"
        testing.write_fashion_mnist_fixture(source, n_train=10, n_test=10)
        rd.unpack_fashion_mnist(str(source), self.raw_folder)

    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "download", fake_download)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path / "home"))
    assert calls == [str(tmp_path / "home")] and len(d.train) == 10 and rd.FASHION_MNIST_URL in d.source


def test_damaged_fashion_mnist_gives_one_data_error_and_leaves_no_half_file(tmp_path, debian_fashion):
    folder, _ = debian_fashion
    gz = folder / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])  # truncated
    home = tmp_path / "data"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*damaged"):
        load_dataset("fashion-mnist", data_dir=str(home))
    raw = home / "FashionMNIST" / "raw"
    assert "t10k-images-idx3-ubyte" not in os.listdir(raw) and not any(".part" in f for f in os.listdir(raw))
    # an unpacked file that is cut short (the header says 20 images, fewer follow): torchvision refuses it
    testing.write_fashion_mnist_fixture(folder, n_train=40, n_test=20)
    load_dataset("fashion-mnist", data_dir=str(home))
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(DataError, match="cannot read the Fashion-MNIST files"):
        load_dataset("fashion-mnist", data_dir=str(home))
    # labels that are no class (a foreign file in the official format)
    testing.write_fashion_mnist_fixture(folder, n_train=40, n_test=20)
    for name in rd.FASHION_MNIST_FILES:
        os.remove(raw / name)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(testing.idx_bytes(np.full(40, 12, dtype=np.uint8)))
    with pytest.raises(DataError, match="label range"):
        load_dataset("fashion-mnist", data_dir=str(home))


@pytest.mark.skipif(not os.path.isdir(rd.DEBIAN_FASHION_MNIST), reason="Debian's dataset-fashion-mnist is not "
                    "installed (make unit installs it as root)")
def test_real_fashion_mnist_from_debians_package(tmp_path):
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert (len(d.train), len(d.test)) == (60000, 10000)
    assert torch.bincount(d.train.labels).tolist() == [6000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert d.mean == (0.286,) and d.std == (0.353,)  # the statistics published with the data set


def test_fashion_augmentation_shifts_and_flips(tmp_path, debian_fashion):
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path / "data"))
    assert_shifts_and_flips(d, padding=2)


def test_subset_is_stratified():
    d = load_dataset("digits")
    s = d.subset(n_per_class=7, seed=1, test_per_class=3)
    assert torch.bincount(s.train.labels).tolist() == [7] * 10
    assert torch.bincount(s.test.labels).tolist() == [3] * 10
    assert s.mean == d.mean and s.fingerprint() != d.fingerprint()
    assert torch.equal(d.subset(7, seed=1).train.images, s.train.images)
