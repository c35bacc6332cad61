"""A folder of images: the dataset, `train --pretrained` on it, `evaluate` and `predict`, and every bad input
(one `error:` line and exit 2, or a warning naming the skipped file; nothing half-written left behind)."""

import csv
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import resnet_tutorial as rt
from resnet_tutorial.checkpoint import read_checkpoint, save_checkpoint
from resnet_tutorial.cli import main
from resnet_tutorial.data import DataError
from resnet_tutorial.evaluation import predict_logits
from resnet_tutorial.finetune import stage_lrs
from resnet_tutorial.folder import (
    FolderWarning,
    Preprocessing,
    load_folder,
    open_rgb,
    preprocessing_for,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("apples", "bricks", "clouds")
SIZE = ["--image-size", "32"]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def picture(c: int, i: int) -> Image.Image:
    """A decodable picture whose colours and stripes depend on its class, in a mode and size of its own."""
    rng = np.random.default_rng(100 * c + i)
    h, w = 24 + 9 * i, 60 - 7 * i
    base = np.zeros((h, w, 3), np.uint8)
    base[..., c] = 200
    base[:, :: 2 + c] = 40
    image = Image.fromarray((base + rng.integers(0, 50, base.shape)).astype(np.uint8))
    return [image, image.convert("L"), image.convert("RGBA"), image.convert("P")][i % 4]


def write_folder(root, classes=CLASSES, n=5):
    for c, name in enumerate(classes):
        os.makedirs(root / name, exist_ok=True)
        for i in range(n):
            image = picture(c, i)
            if i % 2 == 0 and image.mode in ("RGB", "L"):
                image.save(root / name / f"{i}.jpg", quality=90)
            else:
                image.save(root / name / f"{i}.png")
    return root


def bad_files(root):
    """One file of each kind the scan must skip, with the reason it gives."""
    good = (root / "apples" / "0.jpg").read_bytes()
    (root / "apples" / "notes.txt").write_text("not a picture")
    (root / "apples" / ".DS_Store").write_bytes(b"\0\0")  # hidden: skipped silently
    (root / "bricks" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bricks" / "random.png").write_bytes(os.urandom(300))
    Image.new("RGB", (1, 1)).save(root / "clouds" / "dot.png")
    return {"notes.txt": "not an image file", "truncated.jpg": "truncated", "random.png": "not an image PIL can read",
            "dot.png": "too small (1x1 pixels"}


def undecodable_png(path):
    """A PNG whose header and checksums are right but whose pixel data is not zlib: only decoding finds out."""
    raw = b"garbage, not deflate" * 4
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("photos") / "photos")
    return root, bad_files(root)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random values in the shape of torchvision's resnet18 ImageNet weights: the download's stand-in."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet18_random.pth"
    torch.save(rt.create_model("resnet18").state_dict(), path)
    return path


def assert_one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def train(data_dir, out, *extra):
    return main(["train", "--model", "resnet18", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "8",
                 "--out", str(out), "--workers", "0", "--quiet", *SIZE, *extra])


# --- the dataset ----------------------------------------------------------------------------------


def test_folder_reads_mixed_modes_sizes_and_formats_and_splits_stratified(folder):
    root, bad = folder
    with pytest.warns(FolderWarning) as caught:
        data = load_folder(root, preprocessing_for("resnet18", image_size=32), num_workers=0)
    for name, why in bad.items():
        assert any(name in str(w.message) and why in str(w.message) for w in caught), name
    assert data.classes == list(CLASSES) and len(data.train) + len(data.test) == 15
    assert data.split_info["val_per_class"] == {c: 1 for c in CLASSES}  # round(0.2 * 5), every class
    x, y = next(iter(data.loader("train", batch_size=12, seed=0)))
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 3 and x.std().item() > 0.1  # normalised, not raw 0..255
    again = load_folder(root, preprocessing_for("resnet18", image_size=32), num_workers=0)
    assert again.test == data.test  # the split is seeded
    other = load_folder(root, data.preprocessing, split_seed=1, num_workers=0)
    assert other.test != data.test


def test_augmentation_is_the_same_with_and_without_workers(folder):
    """Each image is augmented with random numbers of its own: the workers do not change the batches."""
    data = load_folder(folder[0], preprocessing_for("resnet18", image_size=32), num_workers=0)
    serial = [x for x, _ in data.loader("train", batch_size=4, seed=3)]
    data.num_workers = 2
    loader = data.loader("train", batch_size=4, seed=3)
    parallel = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], parallel[0])  # a new epoch, new crops


def test_large_jpeg_is_decoded_at_a_reduced_scale_but_never_below_what_is_needed(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 1200, 3), np.uint8)).save(tmp_path / "a.jpg")
    assert open_rgb(tmp_path / "a.jpg").size == (1200, 800)
    small = open_rgb(tmp_path / "a.jpg", min_side=150)
    assert 150 <= min(small.size) < 800 and small.mode == "RGB"


def test_crops_are_torchvisions_and_a_large_jpeg_is_decoded_only_as_far_as_the_crop_needs(tmp_path):
    import skimage.data
    from torchvision.transforms import v2 as T

    photo = Image.fromarray(skimage.data.astronaut()).resize((1536, 1024), Image.BICUBIC)
    photo.save(tmp_path / "a.png")
    photo.save(tmp_path / "a.jpg", quality=95)
    p = Preprocessing(64, 73)
    theirs = T.Compose([T.RandomResizedCrop(64, antialias=True), T.RandomHorizontalFlip(), T.PILToTensor()])
    for seed in range(5):  # a PNG is decoded whole: exactly torchvision's crop and flip
        torch.manual_seed(seed)
        ours = p.load(tmp_path / "a.png", train=True)
        torch.manual_seed(seed)
        assert (ours.int() - theirs(open_rgb(tmp_path / "a.png")).int()).abs().max() <= 1
        torch.manual_seed(seed)  # the JPEG at a reduced scale: the same crop, within JPEG's own noise
        reduced = p.load(tmp_path / "a.jpg", train=True)
        torch.manual_seed(seed)
        full = theirs(open_rgb(tmp_path / "a.jpg"))
        assert (reduced.float() - full.float()).abs().mean() < 4  # of 255
    resize = T.Compose([T.Resize(73, antialias=True), T.CenterCrop(64), T.PILToTensor()])
    assert torch.equal(p.load(tmp_path / "a.png", train=False), resize(open_rgb(tmp_path / "a.png")))


def test_preprocessing_is_the_weights_own():
    p = preprocessing_for("resnet50", "tv2_in1k")  # torchvision's V2 recipe evaluates at 232 -> 224
    assert (p.crop_size, p.resize_size) == (224, 232) and p.mean == (0.485, 0.456, 0.406)
    assert preprocessing_for("resnet18").resize_size == 256
    assert preprocessing_for("resnet18", image_size=112) == Preprocessing(112, 128)
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_stage_learning_rates_follow_the_chapters_rule():
    # chapter 8's ResNet-20: head 0.05, STAGE_LRS = stem 0.001, layer1 0.002, layer2 0.005, layer3 0.01
    assert stage_lrs(rt.create_model("resnet20"), 0.05) == pytest.approx(
        {"stem": 0.001, "layer1": 0.002, "layer2": 0.005, "layer3": 0.01})
    lrs = stage_lrs(rt.create_model("resnet18"), 0.01)
    assert lrs == pytest.approx({"layer4": 0.002, "layer3": 0.001, "layer2": 0.0004, "layer1": 0.0002, "stem": 1e-4})


# --- the whole command-line path, as a user runs it ---------------------------------------------------


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "resnet_tutorial", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_pretrained_file_then_evaluate_then_predict(folder, weights, tmp_path):
    root, bad = folder
    run = tmp_path / "run"
    proc = cli("train", "--model", "resnet18", "--pretrained", weights, "--data-dir", root, "--epochs", "2",
               "--out", run, "--batch-size", "8", "--workers", "2", "--quiet", *SIZE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, why in bad.items():  # each skipped file named, with its reason, once
        assert sum(f"warning: skipping {root}" in line and name in line and why in line
                   for line in proc.stderr.splitlines()) == 1, proc.stderr
    assert ".DS_Store" not in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["finetune"] == "stages"
    assert summary["split"]["val_per_class"] == {c: 1 for c in CLASSES} and "seed 0" in summary["split"]["how"]
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["config"]["classes"] == list(CLASSES)
    assert Preprocessing.from_dict(state["config"]["preprocessing"]) == Preprocessing(32, 37)
    # stages: the head at --lr (0.01 with --pretrained), the stages by the chapter's rule
    lrs = {g["name"]: g["initial_lr"] for g in state["optimizer"]["param_groups"]}
    assert lrs == pytest.approx({"head": 0.01, **stage_lrs(rt.create_model("resnet18"), 0.01)})

    proc = cli("evaluate", "--checkpoint", run / "checkpoint.pt", "--workers", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics_folder.json").read_text())
    assert metrics["classes"] == list(CLASSES)
    assert metrics["accuracy"] == pytest.approx(summary["final"]["test_acc"], abs=1e-6)

    proc = cli("predict", "--checkpoint", run / "checkpoint.pt", root, root / "apples" / "1.png", "--topk", "2",
               "--output", tmp_path / "out" / "predictions.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipping" in proc.stderr and "top-2" in proc.stdout
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(rows) == 16 and rows[-1]["image"].endswith("1.png")
    for row in rows:
        assert len(row["top"]) == 2 and {t["class"] for t in row["top"]} <= set(CLASSES)
        assert row["top"][0]["probability"] >= row["top"][1]["probability"] > 0
    proc = cli("predict", "--checkpoint", run / "checkpoint.pt", root / "apples" / "1.png", "--topk", "9",
               "--output", tmp_path / "p.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "image,rank,class,probability" and len(lines) == 1 + 3  # top-9 of 3 classes: 3
    probs = [float(line.split(",")[-1]) for line in lines[1:]]
    assert sum(probs) == pytest.approx(1, abs=1e-4)
    assert rows[-1]["top"][0]["probability"] == pytest.approx(probs[0], abs=1e-6)


def test_same_seed_same_weights_and_head_only_trains_the_head(folder, weights, tmp_path, capsys):
    def weights_of(out):
        return read_checkpoint(out / "checkpoint.pt")["model"]

    root = folder[0]
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert train(root, tmp_path / out, "--pretrained", str(weights), "--seed", seed, "--finetune", "head") == 0
        assert capsys.readouterr().err.count("warning: skipping") == 4
    a, b, c = (weights_of(tmp_path / x) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])
    start = torch.load(weights, weights_only=True)
    frozen = [k for k in a if not k.startswith("fc.")]
    assert all(torch.equal(a[k], start[k]) for k in frozen)  # head: BN statistics included
    assert a["fc.weight"].shape == (3, 512)


# --- bad inputs: one line, exit 2, nothing left behind --------------------------------------------------


@pytest.fixture
def quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FolderWarning)
        yield


@pytest.mark.parametrize("make, needles", [
    (lambda r: None, ["no class folders", "one folder per class"]),
    (lambda r: write_folder(r, classes=("only",)), ["one class ('only')", "at least two"]),
    (lambda r: (write_folder(r, n=3), os.makedirs(r / "empty")), ["empty' holds no usable image"]),
    (lambda r: (write_folder(r, n=3), os.makedirs(r / "texts"), (r / "texts" / "a.txt").write_text("x")),
     ["texts' holds no usable image"]),
    (lambda r: (write_folder(r, n=3), os.makedirs(r / "dots"), Image.new("L", (1, 1)).save(r / "dots" / "1.png")),
     ["dots' holds no usable image"]),
    (lambda r: write_folder(r, n=1), ["has one usable image", "at least two per class"]),
    (lambda r: (write_folder(r / "train"), write_folder(r / "val", classes=CLASSES[:2])), ["the same class folders"]),
])
def test_folders_that_make_no_classifier(tmp_path, capsys, quiet, make, needles):
    (tmp_path / "photos").mkdir()
    make(tmp_path / "photos")
    rc = train(tmp_path / "photos", tmp_path / "run", "--dataset", "folder")
    assert_one_line_error(capsys, rc, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_image_that_passes_the_scan_but_does_not_decode(tmp_path, capsys, workers):
    root = write_folder(tmp_path / "photos", n=3)
    undecodable_png(root / "apples" / "broken.png")
    rc = train(root, tmp_path / "run", "--workers", workers)
    assert_one_line_error(capsys, rc, "cannot decode", "broken.png", "remove or replace it")
    assert not (tmp_path / "run").exists()


def test_bad_training_options(tmp_path, capsys, folder, weights, quiet, monkeypatch):
    root, out = folder[0], tmp_path / "run"
    cases = [
        (["--finetune", "head"], ["--finetune", "add --pretrained"]),
        (["--pretrained", "missing/weights.pth"], ["no such file"]),
        (["--pretrained", "resnet50.tv2_in1k"], ["holds a resnet50, but --model is resnet18"]),
        (["--pretrained", "resnet18.nope"], ["no pretrained weights resnet18.nope", "resnet18.tv_in1k"]),
        (["--image-size", "4"], ["--image-size must be at least 16"]),
        (["--val-fraction", "1.5"], ["--val-fraction must be between 0 and 1"]),
    ]
    for extra, needles in cases:
        assert_one_line_error(capsys, train(root, out, *extra), *needles)
        assert not out.exists()
    rc = main(["train", "--dataset", "digits", "--pretrained", str(weights), "--model", "resnet18", "--epochs", "1",
               "--out", str(out)])
    assert_one_line_error(capsys, rc, "--pretrained need a folder of images", "--data-dir FOLDER")
    assert not out.exists()

    def offline(*args, **kwargs):
        raise OSError("no network")

    from torchvision.models import WeightsEnum

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    rc = train(root, out, "--pretrained", "resnet18.tv_in1k")
    assert_one_line_error(capsys, rc, "could not fetch torchvision's pretrained resnet18.tv_in1k", "--pretrained FILE")
    assert not out.exists()


@pytest.fixture(scope="module")
def trained(folder, weights, tmp_path_factory):
    import warnings

    out = tmp_path_factory.mktemp("trained") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FolderWarning)
        # 9 training images in one batch: every layer trains (--finetune stages), and BN cannot take a batch of 1
        assert train(folder[0], out, "--pretrained", str(weights), "--val-fraction", "0.4", "--split-seed", "1",
                     "--batch-size", "9") == 0
    return out / "checkpoint.pt"


def test_pretrained_weights_train_with_the_chapters_stage_learning_rates_by_default(tmp_path, folder, weights, quiet):
    """--finetune stages, the default: the head at --lr (0.01 with --pretrained), each stage by the chapter's rule."""
    assert train(folder[0], tmp_path / "run", "--pretrained", str(weights), "--batch-size", "12") == 0  # one batch
    groups = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["optimizer"]["param_groups"]
    lrs = {g["name"]: g["initial_lr"] for g in groups}
    assert lrs == pytest.approx({"head": 0.01, **stage_lrs(rt.create_model("resnet18"), 0.01)})


def test_a_folder_trains_from_scratch_with_one_output_per_class(tmp_path, folder, quiet):
    assert train(folder[0], tmp_path / "run", "--model", "resnet20", "--epochs", "1") == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["model_config"]["num_classes"] == 3


def test_checkpoint_without_class_names(tmp_path, capsys, folder):
    path = tmp_path / "digits.pt"
    save_checkpoint(path, rt.create_model("resnet20"), epoch=1, config={"dataset": "digits"})
    rc = main(["predict", "--checkpoint", str(path), str(folder[0] / "apples" / "1.png")])
    assert_one_line_error(capsys, rc, f"{str(path)!r} records no class names and preprocessing", "trained on digits",
                          "train --data-dir FOLDER")
    rc = main(["evaluate", "--checkpoint", str(path), "--dataset", "folder"])
    assert_one_line_error(capsys, rc, f"{str(path)!r} records no class names and preprocessing")
    state = read_checkpoint(path)  # names without their preprocessing, or a file without any config
    state["config"] = {"dataset": "folder", "classes": list(CLASSES)}
    torch.save(state, tmp_path / "names_only.pt")
    del state["config"]
    torch.save(state, tmp_path / "no_config.pt")
    for name, needle in (("names_only.pt", "trained on folder"), ("no_config.pt", "trained on unknown data")):
        rc = main(["predict", "--checkpoint", str(tmp_path / name), str(folder[0] / "apples" / "1.png")])
        assert_one_line_error(capsys, rc, "records no class names and preprocessing", needle)


def test_class_count_that_does_not_match(tmp_path, capsys, trained, quiet):
    other = write_folder(tmp_path / "other", classes=("apples", "bricks"), n=2)
    rc = main(["evaluate", "--checkpoint", str(trained), "--data-dir", str(other), "--workers", "0"])
    assert_one_line_error(capsys, rc, "has 2 classes", "trained on 3 classes", "use the folder it was trained on")
    assert not (trained.parent / "metrics_folder.json").exists()

    state = read_checkpoint(trained)  # a checkpoint whose class names were edited
    state["config"]["classes"] = ["a", "b"]
    torch.save(state, tmp_path / "edited.pt")
    rc = main(["predict", "--checkpoint", str(tmp_path / "edited.pt"), str(other)])
    assert_one_line_error(capsys, rc, "holds a model for 3 classes but names 2")


def test_evaluate_splits_the_folder_it_trained_on_as_the_run_did(tmp_path, capsys, trained, folder, quiet,
                                                                 monkeypatch):
    """Without --data-dir (or with the same folder) evaluate reads the run's folder and its validation images:
    the split of the run's --val-fraction and --split-seed, so the accuracy is the one the run recorded."""
    import resnet_tutorial.cli as cli

    splits = []
    monkeypatch.setattr(cli, "load_folder", lambda root, prep, **kw: splits.append(kw) or load_folder(root, prep, **kw))
    summary = json.loads((trained.parent / "summary.json").read_text())
    for extra in (["--batch-size", "1"], ["--data-dir", str(folder[0])]):  # batches of 1 are allowed too
        assert main(["evaluate", "--checkpoint", str(trained), "--workers", "0", *extra]) == 0
        metrics = json.loads((trained.parent / "metrics_folder.json").read_text())
        assert sum(c["support"] for c in metrics["per_class"]) == 6  # 40 % of each class's 5 images
        assert metrics["accuracy"] == pytest.approx(summary["final"]["test_acc"], abs=1e-6)
    assert splits == [dict(val_fraction=0.4, split_seed=1, classes=list(CLASSES), num_workers=0)] * 2
    state = read_checkpoint(trained)  # a checkpoint that does not say how its folder was split: the defaults
    del state["config"]["split"]
    torch.save(state, tmp_path / "unsplit.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "unsplit.pt"), "--workers", "0"]) == 0
    assert splits[-1] == dict(val_fraction=0.2, split_seed=0, classes=list(CLASSES), num_workers=0)


def test_evaluate_another_folder_uses_every_image(tmp_path, capsys, trained):
    other = write_folder(tmp_path / "new", n=2)
    assert main(["evaluate", "--checkpoint", str(trained), "--data-dir", str(other), "--workers", "0",
                 "--metrics", str(tmp_path / "m.json")]) == 0
    assert sum(json.loads((tmp_path / "m.json").read_text())["per_class"][i]["support"] for i in range(3)) == 6


def test_bad_predict_inputs(tmp_path, capsys, trained, folder):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    cases = [
        ([str(tmp_path / "nothing.jpg")], ["no file or folder", "nothing.jpg"]),
        ([str(tmp_path / "texts")], ["no images to classify"]),
        ([str(folder[0]), "--output", str(tmp_path / "p.txt")], ["name a .json or a .csv file"]),
        ([str(folder[0]), "--topk", "0"], ["--topk must be at least 1"]),
        ([str(folder[0]), "--batch-size", "0"], ["--batch-size must be at least 1"]),
        ([str(folder[0]), "--device", "tpu9"], ["--device 'tpu9' is not a device"]),
    ]
    for extra, needles in cases:
        rc = main(["predict", "--checkpoint", str(trained), *extra])
        assert_one_line_error(capsys, rc, *needles)
    assert sorted(os.listdir(tmp_path)) == ["texts"]
    rc = main(["predict", "--checkpoint", str(trained), str(folder[0] / "bricks" / "truncated.jpg")])
    err = capsys.readouterr().err
    assert rc == 2 and "warning: skipping" in err and "truncated.jpg: truncated" in err


def test_predict_prints_a_table_and_writes_the_same_predictions_as_json_or_csv(tmp_path, capsys, trained, folder,
                                                                               quiet, monkeypatch):
    import resnet_tutorial.cli as cli

    loaders = []  # the batches predict asks for: --batch-size images, decoded by --workers processes (default 0)
    monkeypatch.setattr(cli, "predict_logits", lambda model, loader: loaders.append(
        (loader.batch_size, loader.num_workers)) or predict_logits(model, loader))
    root = folder[0]
    inputs = [str(root / "clouds"), str(root / "apples" / "1.png")]
    assert main(["predict", "--checkpoint", str(trained), *inputs, "--topk", "2", "--output",
                 str(tmp_path / "p.JSON")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = json.loads((tmp_path / "p.JSON").read_text())
    assert lines[-1] == f"wrote {tmp_path / 'p.JSON'}" and lines[0].split() == ["image", "top-1", "top-2"]
    assert lines[0].startswith("image ") and lines[0] == lines[0].rstrip()  # no trailing blanks after "top-2"
    clouds = sorted(str(p) for p in (root / "clouds").iterdir() if p.name != "dot.png")  # 1x1 pixels: skipped
    assert [r["image"] for r in rows] == clouds + [inputs[1]]
    for line, row in zip(lines[1:-1], rows, strict=True):  # the table: one line per image, in columns
        assert line.split() == [row["image"], *(x for t in row["top"] for x in (t["class"], f"{t['probability']:.3f}"))]
        assert line[lines[0].index("top-1"):].startswith(row["top"][0]["class"]) and line == line.rstrip()
        probs = [t["probability"] for t in row["top"]]
        assert probs == sorted(probs, reverse=True) and all(round(p, 6) == p for p in probs)
    assert main(["predict", "--checkpoint", str(trained), *inputs, "--topk", "9", "--output",
                 str(tmp_path / "p.csv")]) == 0  # at most the 3 classes
    assert capsys.readouterr().out.splitlines()[0].split() == ["image", "top-1", "top-2", "top-3"]
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["image", "rank", "class", "probability"] and len(table) == 1 + 3 * len(rows)
    for k, (image, rank, name, prob) in enumerate(table[1:]):
        row = rows[k // 3]
        assert (image, int(rank)) == (row["image"], k % 3 + 1)
        if int(rank) <= 2:
            assert (name, float(prob)) == (row["top"][int(rank) - 1]["class"], row["top"][int(rank) - 1]["probability"])
    for image in {r["image"] for r in rows}:
        assert sum(float(p) for i, _, _, p in table[1:] if i == image) == pytest.approx(1, abs=1e-5)
    assert main(["predict", "--checkpoint", str(trained), inputs[1], "--topk", "1", "--batch-size", "1",
                 "--workers", "1"]) == 0  # the smallest of each
    assert capsys.readouterr().out.splitlines()[0].split() == ["image", "top-1"]
    assert loaders == [(64, 0), (64, 0), (1, 1)]


def test_data_error_is_raised_by_the_library_too(tmp_path):
    with pytest.raises(DataError, match="no folder"):
        load_folder(tmp_path / "absent")


def test_sample_photos_keep_validation_pixels_out_of_training(tmp_path):
    from resnet_tutorial.folder import SAMPLE_CLASSES, sample_photos

    root = sample_photos(tmp_path / "photos", train_per_class=4, val_per_class=2)
    data = load_folder(root, num_workers=0)
    assert data.classes == sorted(SAMPLE_CLASSES) and data.split_info["val_per_class"] == {c: 2 for c in data.classes}
    assert {os.path.splitext(p)[1] for p, _ in data.train} == {".jpg", ".png"}


def test_pretrained_tag_takes_the_weights_and_their_preprocessing(tmp_path, capsys, folder, weights, monkeypatch):
    from torchvision.models import WeightsEnum

    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, **kw: torch.load(weights, weights_only=True))
    out = tmp_path / "run"
    assert main(["train", "--pretrained", "resnet18.tv_in1k", "--data-dir", str(folder[0]), "--epochs", "1",
                 "--out", str(out), "--workers", "0", "--quiet", "--finetune", "all", *SIZE]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "resnet18" and summary["pretrained"] == "resnet18.tv_in1k"
    assert summary["preprocessing"] == {**preprocessing_for("resnet18", "tv_in1k", 32).to_dict()}
    assert "from resnet18.tv_in1k (all)" in capsys.readouterr().out
    groups = read_checkpoint(out / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [0.01]  # all: every layer at --lr, in one group
