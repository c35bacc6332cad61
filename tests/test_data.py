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


def test_online_probe_asks_for_the_headers_and_waits_under_three_seconds_by_default(monkeypatch):
    """A reader offline waits for the probe before the data set's message: a few seconds, not a minute."""
    asked = []

    def urlopen(request, timeout):
        asked.append((request.get_method(), request.full_url, timeout))
        raise OSError("offline")

    monkeypatch.setattr(rd.urllib.request, "urlopen", urlopen)
    assert rd._online() is False
    (method, url, timeout), = asked
    assert method == "HEAD" and url == rd.CIFAR10_URL and 0 < timeout <= 3


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
    monkeypatch.setattr(rd, "_online", lambda *a, **k: pytest.fail("download=False must not ask the network"))
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
    d = rd.load_fashion_mnist(str(tmp_path / "home"))  # downloads by default
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


# --- what mutation testing (scripts/mutation.py) showed the tests above left unchecked ----------------------


def test_default_data_dir_is_the_environment_variable_else_a_cache_folder_in_home(tmp_path, monkeypatch):
    monkeypatch.setenv(rd.DATA_ENV, str(tmp_path / "data"))
    assert rd.default_data_dir() == str(tmp_path / "data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (lambda: monkeypatch.setenv(rd.DATA_ENV, ""), lambda: monkeypatch.delenv(rd.DATA_ENV)):
        unset()
        assert rd.default_data_dir() == os.path.join(str(tmp_path / "home"), ".cache", "resnet_tutorial", "data")


def test_online_probe_asks_with_head_and_waits_its_timeout_for_an_answer():
    """True for a server that answers a HEAD request in time (even slowly), False for one that refuses HEAD or
    answers an error."""
    import http.server
    import threading
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            if self.path == "/slow":
                time.sleep(0.6)
            self.send_response(404 if self.path == "/missing" else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert rd._online(url + "/x", timeout=1) is True
        assert rd._online(url + "/slow", timeout=1) is True  # 0.6 s: within the timeout
        assert rd._online(url + "/missing", timeout=1) is False
    finally:
        server.shutdown()
        server.server_close()


def test_online_probe_abandons_a_hanging_lookup_in_a_daemon_thread(monkeypatch):
    """A lookup that hangs (DNS, a proxy) beyond the timeout: the probe says offline after about the timeout and
    leaves the thread behind as a daemon, which cannot keep Python from exiting."""
    import threading
    import time

    release, seen = threading.Event(), {}

    def hanging(request, timeout=None):
        seen.update(daemon=threading.current_thread().daemon, timeout=timeout, method=request.get_method(),
                    url=request.full_url)
        release.wait(5)
        raise OSError("gave up")

    monkeypatch.setattr(rd.urllib.request, "urlopen", hanging)
    start = time.perf_counter()
    try:
        assert rd._online("http://example.invalid/x", timeout=0.3) is False
        assert time.perf_counter() - start < 1.5  # the timeout and half a second
    finally:
        release.set()
    assert seen == dict(daemon=True, timeout=0.3, method="HEAD", url="http://example.invalid/x")


def _three_channel_data(n=4, size=4, transform=None):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    return rd.ImageData("rgb", ["a", "b"], rd.Split(images, labels), rd.Split(images.flip(0), labels),
                        (0.1, 0.5, 0.9), (0.2, 0.3, 0.4), "made up", transform=transform)


def test_normalize_and_denormalize_each_channel_by_its_own_statistics():
    d = _three_channel_data()
    x = d.train.images
    z = d.normalize(x)
    for c in range(3):
        torch.testing.assert_close(z[:, c], (x[:, c].float() / 255 - d.mean[c]) / d.std[c])
    torch.testing.assert_close(d.denormalize(z), x.float() / 255)
    # denormalize gives a picture: values outside 0..1 are clipped
    assert torch.equal(d.denormalize(torch.full((1, 3, 2, 2), 100.0)), torch.ones(1, 3, 2, 2))
    assert torch.equal(d.denormalize(torch.full((1, 3, 2, 2), -100.0)), torch.zeros(1, 3, 2, 2))


def test_batches_stay_on_the_device_asked_for():
    """PyTorch's "meta" device stands in for a GPU (every CPU has it): splits, augmentation, normalisation and
    the loader's batches all stay on the device of the images."""
    d = replace(_three_channel_data(n=6, size=8), augmentation="crop_flip")
    meta = torch.device("meta")
    x = d.train.images.to(meta)
    g = torch.Generator().manual_seed(0)
    for out in (d.normalize(x), d.denormalize(x.float()), rd.random_crop(x, 2, g), rd.random_flip(x, g),
                rd.random_rotate_scale(x, 10, 0.1, g)):
        assert out.device == meta
    on = d.train.on(meta)
    assert on.images.device == meta and on.labels.device == meta
    assert d.train.on(meta) is on and d.on_device("train", meta) is on  # copied once
    assert d.train.on("cpu") is not on and d.train.on("cpu").images.device.type == "cpu"
    for split in ("train", "test"):
        xb, yb = next(iter(d.loader(split, batch_size=4, device=meta)))
        assert xb.device == meta and yb.device == meta and xb.shape == (4, 3, 8, 8)


def test_split_is_the_one_named():
    d = _three_channel_data()
    assert d.split("train") is d.train and d.split("test") is d.test


def test_prepare_uses_the_transform_when_there_is_one():
    d = _three_channel_data(transform=lambda images: images.float() * 2)
    assert torch.equal(d.prepare(d.train.images), d.train.images.float() * 2)
    xb, _ = next(iter(d.loader("test", batch_size=4, device="cpu")))
    assert torch.equal(xb, d.test.images.float() * 2)


def test_loader_defaults_are_the_training_split_shuffled_and_augmented_in_batches_of_128():
    d = load_dataset("digits")
    default = list(d.loader(device="cpu"))
    explicit = list(d.loader("train", 128, shuffle=True, augment=True, device="cpu", seed=0, rank=0))
    assert len(default) == len(explicit) == -(-len(d.train) // 128) and len(default[0][1]) == 128
    for (x1, y1), (x2, y2) in zip(default, explicit, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    plain = list(d.loader("train", 128, augment=False, device="cpu"))
    assert not torch.equal(default[0][0], plain[0][0])  # augmented
    assert torch.equal(default[0][1], plain[0][1])  # the same shuffled order


def test_loader_options_override_the_splits_defaults():
    d = load_dataset("digits")
    ys = torch.cat([y for _, y in d.loader("train", 100, shuffle=False, augment=False, device="cpu")])
    assert torch.equal(ys, d.train.labels)
    x, _ = next(iter(d.loader("test", 64, augment=True, device="cpu")))
    assert not torch.equal(x, d.normalize(d.test.images[:64]))
    dropped = d.loader("train", 100, drop_last=True, device="cpu")
    assert len(dropped) == len(d.train) // 100 and all(len(y) == 100 for _, y in dropped)
    assert len(list(d.loader("test", 1, device="cpu"))) == len(d.test)  # a batch of one image is a batch


def test_each_rank_has_its_share_in_full_batches_and_its_own_augmentation():
    d = load_dataset("digits")
    same = replace(d, train=rd.Split(d.train.images[:1].repeat(100, 1, 1, 1), d.train.labels[:100]))
    loaders = [same.loader("train", 16, rank=r, world_size=2, device="cpu") for r in range(2)]
    batches = [list(loader) for loader in loaders]
    for loader, bs in zip(loaders, batches, strict=True):
        assert len(loader) == len(bs) == 4 and all(len(y) > 0 for _, y in bs)  # 50 images each: 16+16+16+2
        again = list(loader)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(bs, again, strict=True))  # reproducible
    # every image is the same picture: only the augmentation tells the ranks' batches apart
    assert not torch.equal(batches[0][0][0], batches[1][0][0])


def test_the_training_loader_augments_reproducibly():
    d = load_dataset("digits")
    loader = d.loader("train", 64, device="cpu", seed=4)
    first, again = next(iter(loader))[0], next(iter(loader))[0]
    assert torch.equal(first, again)


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_each_augmentation_draws_from_the_generator_it_is_given(augmentation):
    d = replace(load_dataset("digits"), augmentation=augmentation)
    x = d.train.images[:32]
    torch.manual_seed(1)  # the global generator, in two states, must not matter
    a = d.augment(x, torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    b = d.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    if augmentation == "none":
        assert torch.equal(a, x)
    elif augmentation == "flip":  # mirrored or not, never shifted
        mirrored = sum(torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(a, x, strict=True))
        assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(a, x, strict=True)) and 4 < mirrored < 28
    else:
        assert not torch.equal(a, x)


def test_random_crop_draws_every_shift_and_random_flip_both_ways():
    img = torch.randint(0, 256, (1, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    crops = random_crop(img.repeat(400, 1, 1, 1), 2, g)
    shifts = _shifts(img, 2)
    found = {next(k for k, s in enumerate(shifts) if torch.equal(c[None], s)) for c in crops}
    assert found == set(range(25))  # -2..2 in each direction
    flips = rd.random_flip(img.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(flips, rd.random_flip(img.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0)))
    assert 10 < sum(torch.equal(f[None], img.flip(-1)) for f in flips) < 54


def _bar_pose(images):
    """Orientation (degrees) and length (square root of the larger second moment) of the bright bar in each
    image, from its image moments."""
    w = images.double().flatten(1)
    h, wd = images.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(wd, dtype=torch.float64),
                            indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    m = w.sum(1)
    cy, cx = (w * yy).sum(1) / m, (w * xx).sum(1) / m
    dy, dx = yy - cy[:, None], xx - cx[:, None]
    mu20, mu02, mu11 = (w * dx * dx).sum(1) / m, (w * dy * dy).sum(1) / m, (w * dx * dy).sum(1) / m
    angle = 0.5 * torch.atan2(2 * mu11, mu20 - mu02)
    major = (mu20 + mu02) / 2 + (((mu20 - mu02) / 2) ** 2 + mu11**2).sqrt()
    return torch.rad2deg(angle), major.sqrt()


def test_rotate_scale_turns_by_at_most_its_angle_either_way_and_scales_within_its_range():
    bar = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    bar[..., 31:34, 12:52] = 255
    n = 256
    angle0, length0 = _bar_pose(bar)
    assert abs(angle0.item()) < 1e-6
    angles, _ = _bar_pose(random_rotate_scale(bar.repeat(n, 1, 1, 1), 10, 0.1, torch.Generator().manual_seed(0)))
    assert angles.abs().max() < 10.3 and angles.max() > 7 and angles.min() < -7
    _, lengths = _bar_pose(random_rotate_scale(bar.repeat(n, 1, 1, 1), 0, 0.1, torch.Generator().manual_seed(0)))
    ratio = lengths / length0
    assert ratio.min() > 0.88 and ratio.max() < 1.12 and ratio.min() < 0.93 and ratio.max() > 1.07
    # a rotation, not a shear: a vertical bar turns by the same angle as a horizontal one
    vertical = bar.transpose(-1, -2)
    turned_v, _ = _bar_pose(random_rotate_scale(vertical.repeat(n, 1, 1, 1), 10, 0.1, torch.Generator().manual_seed(0)))
    turned_v = (turned_v + 180) % 180 - 90  # vertical: 90 degrees, either sign
    assert (turned_v - angles).abs().max() < 0.5


def test_rotate_scale_keeps_the_dtype_rounds_uint8_and_warns_about_nothing():
    import warnings

    img = load_dataset("digits").train.images[:16]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_uint8 = random_rotate_scale(img, 10, 0.1, torch.Generator().manual_seed(0))
        as_float = random_rotate_scale(img.double(), 10, 0.1, torch.Generator().manual_seed(0))
    assert as_float.dtype == torch.float64 and not torch.equal(as_float, as_float.round())  # not rounded
    assert torch.equal(as_uint8, as_float.float().round().to(torch.uint8))


def test_resize_makes_any_image_square_antialiased_and_keeps_black_and_white():
    tall = torch.zeros(2, 1, 12, 8, dtype=torch.uint8)
    tall[..., 6:, :] = 255
    for size in (8, 12, 4):
        out = rd.resize(tall, size)
        assert out.shape == (2, 1, size, size) and out.dtype == torch.uint8
        assert out[..., 0, :].max() == 0 and out[..., -1, :].min() == 255  # black stays black, white white
    same = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    assert rd.resize(same, 8) is same
    # Shrinking noise 4x averages each 4 x 4 block (antialiasing), not 2 x 2 pixels of it.
    noise = torch.randint(0, 256, (1, 1, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    small = rd.resize(noise, 16).float()
    blocks = noise.float().unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))
    assert (small - blocks).abs()[..., 1:-1, 1:-1].mean() < 12 and small.std() < 0.6 * noise.float().std() / 2
    # A ramp: each pixel of the smaller image is the mean of its block (pixel centres aligned, not corners).
    ramp = torch.arange(64, dtype=torch.float64).mul(4).expand(1, 1, 8, 64).to(torch.uint8)
    out = rd.resize(ramp, 8)[0, 0, 4].double()
    means = ramp[0, 0, 0].double().view(8, 8).mean(1)
    assert (out[1:-1] - means[1:-1]).abs().max() <= 1


def test_digits_are_scikit_learns_scaled_to_0_255_in_its_stratified_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_dataset("digits")
    sk = load_digits()
    _, _, ytr, yte = train_test_split(sk.images, sk.target, test_size=0.25, stratify=sk.target, random_state=0)
    assert torch.equal(d.train.labels, torch.from_numpy(ytr)) and torch.equal(d.test.labels, torch.from_numpy(yte))
    levels = sorted({int(np.rint(v * 255 / 16)) for v in range(17)})  # the 17 grey levels 0..16, scaled
    assert torch.unique(torch.cat([d.train.images, d.test.images])).tolist() == levels
    assert d.name == "digits" and d.classes == [str(i) for i in range(10)] and d.num_classes == 10
    assert "digits" in d.source and "1347 train / 450 test" in d.source
    assert d.augmentation == "shift"


def test_mnist5k_is_shifted_not_flipped():
    mnist = load_dataset("mnist5k")  # loaded here, not in the module's fixture: mutmut maps its calls to this test
    assert mnist.augmentation == "shift" and mnist.name == "mnist5k"


def test_subset_defaults_and_draws_its_test_images_reproducibly():
    d = load_dataset("digits")
    assert torch.equal(d.subset(5).train.images, d.subset(5, seed=0).train.images)
    a, b = d.subset(5, test_per_class=2), d.subset(5, test_per_class=2)
    assert torch.equal(a.test.images, b.test.images) and len(a.test) == 20
    assert a.source.startswith(d.source) and "subset of 5 training images per class" in a.source


def test_fingerprint_tells_apart_what_the_cache_must():
    d = _three_channel_data()
    fp = d.fingerprint()
    assert fp == _three_channel_data().fingerprint()  # the same data: the same fingerprint
    other = [
        replace(d, name="other"),
        replace(d, augmentation="flip"),
        replace(d, mean=(0.2, 0.5, 0.9)),
        replace(d, std=(0.2, 0.3, 0.5)),
        replace(d, transform=torch.nn.Identity()),
        replace(d, train=rd.Split(d.train.images[:3], d.train.labels[:3])),
        replace(d, test=rd.Split(d.test.images[:3], d.test.labels[:3])),
        replace(d, train=rd.Split(d.train.images[:, :, :2, :2].contiguous(), d.train.labels)),
    ]
    changed = d.train.images.clone()
    changed[1, 0, 0, 0] ^= 1  # one pixel of the second image (a small split is hashed whole)
    other.append(replace(d, train=rd.Split(changed, d.train.labels)))
    fps = [o.fingerprint() for o in other]
    assert all(f != fp for f in fps)
    # two transforms, told apart by what they are
    a = replace(d, transform=torch.nn.Upsample(scale_factor=2)).fingerprint()
    b = replace(d, transform=torch.nn.Upsample(scale_factor=3)).fingerprint()
    assert a != b and fps[4] not in (a, b)


def test_epoch_order_alone_is_one_process_in_order():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(rd.epoch_order(10, False, g), torch.arange(10))


def _write_image_folder(root, classes=("cats", "dogs"), n=3):
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (80 * c, 40 * i, 100)).save(root / name / f"{i}.png")
    return root


def test_folder_and_auto_load_an_image_folder_with_its_options(tmp_path, capsys):
    from resnet_tutorial.folder import FolderData

    root = _write_image_folder(tmp_path / "pictures")
    d = load_dataset("folder", data_dir=str(root), val_fraction=1.0)
    assert isinstance(d, FolderData) and d.classes == ["cats", "dogs"] and d.root == str(root)
    assert len(d.train) == 0 and len(d.test) == 6  # val_fraction reached load_folder
    auto = load_dataset("auto", data_dir=str(root), val_fraction=1.0)
    assert isinstance(auto, FolderData) and auto.root == str(root) and len(auto.test) == 6
    out = capsys.readouterr().out
    assert "a folder of images" in out and str(root) in out


def test_auto_with_no_name_and_no_data_dir_reads_the_default_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(rd.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(rd, "load_mnist5k", lambda: "mnist5k")
    assert load_dataset() == "mnist5k"
    assert f"no CIFAR-10 in {tmp_path}" in capsys.readouterr().out


def test_a_resized_dataset_resizes_both_splits_and_recomputes_its_statistics():
    d = load_dataset("digits")
    small = load_dataset("digits", image_size=5)
    assert small.test.images.shape[1:] == (1, 5, 5) and torch.equal(small.test.labels, d.test.labels)
    assert (small.mean, small.std) == rd.channel_stats(small.train.images) and small.mean != d.mean
    assert small.source.startswith(d.source) and "resized to 5px" in small.source
    x, _ = next(iter(small.loader("test", 8, device="cpu")))
    assert x.shape == (8, 1, 5, 5)


def test_cifar10_is_downloaded_by_default_when_absent_or_damaged(tmp_path, monkeypatch):
    """torchvision's download stood in for: it writes the fixture (whose MD5s are registered) where it is asked."""
    from torchvision.datasets import CIFAR10

    write_cifar10_fixture(tmp_path / "mirror", monkeypatch, n_per_batch=2)
    calls = []

    def fake_download(self):
        if not self._check_integrity():
            calls.append(self.root)
            testing.write_cifar10_fixture(self.root, n_per_batch=2)

    monkeypatch.setattr(CIFAR10, "download", fake_download)
    monkeypatch.setattr(rd, "_online", lambda *a, **k: True)
    d = rd.load_cifar10(str(tmp_path / "home"))
    assert calls == [str(tmp_path / "home")] and len(d.test) == 2
    assert "CIFAR-10" in d.source and str(tmp_path / "home" / "cifar-10-batches-py") in d.source
    # data_dir at the batches folder itself, one batch damaged: downloaded again into the folder above it
    folder = tmp_path / "home" / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(b"damaged")
    d = load_dataset("cifar10", data_dir=str(folder))
    assert calls[-1] == str(tmp_path / "home") and len(d.train) == 10


def test_fashion_mnist_label_checks_take_any_class_0_to_9(tmp_path, debian_fashion):
    folder, _ = debian_fashion
    for label, ok in ((3, True), (10, False)):
        home = tmp_path / f"data{label}"
        testing.write_fashion_mnist_fixture(folder, n_train=40, n_test=20)
        with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
            f.write(testing.idx_bytes(np.full(20, label, dtype=np.uint8)))  # one class only, or no class
        if ok:
            d = load_dataset("fashion-mnist", data_dir=str(home))
            assert d.test.labels.unique().tolist() == [3] and d.name == "fashion-mnist"
        else:
            with pytest.raises(DataError, match="label range"):
                load_dataset("fashion-mnist", data_dir=str(home))
