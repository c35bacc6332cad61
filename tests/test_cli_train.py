"""`resnet-tutorial train` and `evaluate`: outputs, resume, and every bad input (one line, exit 2, no traceback)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import resnet_tutorial as rt
from resnet_tutorial import data as rd
from resnet_tutorial.checkpoint import read_checkpoint, save_checkpoint
from resnet_tutorial.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def train(out, *extra):
    return main(["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "128", "--out", str(out), "--quiet",
                 *extra])


def assert_one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_train_writes_checkpoint_and_summary_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "resnet20" and summary["dataset"] == "digits" and len(summary["history"]["epochs"]) == 1
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt")]) == 0  # dataset: the one it was trained on
    printed = capsys.readouterr().out
    assert "macro avg" in printed and f"accuracy {summary['final']['test_acc']:.4f}" in printed
    metrics = json.loads((out / "metrics_digits.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["final"]["test_acc"], abs=1e-6)
    assert len(metrics["confusion"]) == 10 and len(metrics["per_class"]) == 10


def test_train_per_class_trains_on_a_stratified_subset_and_evaluates_the_whole_test_split(tmp_path, monkeypatch):
    from resnet_tutorial import training

    seen = []
    fit = training.fit
    monkeypatch.setattr(training, "fit", lambda model, data, *a, **k: seen.append(data) or fit(model, data, *a, **k))
    out = tmp_path / "run"
    assert train(out, "--train-per-class", "5", "--split-seed", "3") == 0
    summary = json.loads((out / "summary.json").read_text())
    digits = rd.load_dataset("digits")
    assert torch.bincount(seen[0].train.labels).tolist() == [5] * 10
    assert torch.equal(seen[0].train.images, digits.subset(5, seed=3).train.images)
    assert summary["train_per_class"] == 5 and "subset of 5 training images per class (seed 3)" in summary["data_source"]
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt")]) == 0
    metrics = json.loads((out / "metrics_digits.json").read_text())
    assert sum(map(sum, metrics["confusion"])) == len(digits.test)

def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    first = json.loads((out / "summary.json").read_text())["history"]["epochs"][0]
    assert train(out) == 2  # a second run into the same folder must say --resume
    assert_one_line_error(capsys, 2, "--resume")
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--out", str(out), "--quiet", "--resume"]) == 0
    history = json.loads((out / "summary.json").read_text())["history"]["epochs"]
    assert [e["epoch"] for e in history] == [1, 2] and history[0] == first


def test_unknown_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # argparse's choices: usage and one error line, status 2
        main(["train", "--dataset", "imagenet", "--epochs", "1", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(rd.DataError, match="unknown dataset 'imagenet'.*mnist5k"):  # the library says the same
        rd.load_dataset("imagenet")


def test_unknown_model(tmp_path, capsys):
    rc = main(["train", "--model", "resnet21", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, rc, "unknown model 'resnet21'")
    assert not (tmp_path / "o").exists()


def test_data_dir_without_files_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rd, "_online", lambda *a, **k: False)
    empty = tmp_path / "data"
    empty.mkdir()
    rc = main(["train", "--dataset", "cifar10", "--data-dir", str(empty), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, rc, "cannot be downloaded (offline)", "cifar-10-batches-py")
    assert not (tmp_path / "o").exists()
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", "cifar10"])
    assert_one_line_error(capsys, rc, "no checkpoint")


def test_checkpoint_for_another_number_of_classes(tmp_path, capsys):
    path = tmp_path / "five.pt"
    save_checkpoint(path, rt.create_model("resnet20", in_chans=1, num_classes=5), epoch=1)
    rc = main(["evaluate", "--checkpoint", str(path), "--dataset", "digits"])
    assert_one_line_error(capsys, rc, "5 classes", "digits has 10 classes")
    out = tmp_path / "run"
    out.mkdir()
    os.replace(path, out / "checkpoint.pt")
    rc = train(out, "--resume")
    assert_one_line_error(capsys, rc, "trained for 5 classes")
    assert os.listdir(out) == ["checkpoint.pt"]  # the user's file is left alone


@pytest.mark.parametrize("content, needle", [(None, "truncated"), (b"not a checkpoint", "truncated or not")])
def test_truncated_or_foreign_checkpoint(tmp_path, capsys, content, needle):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, rt.create_model("resnet20", in_chans=1), epoch=1)
    path.write_bytes(path.read_bytes()[:2000] if content is None else content)
    rc = main(["evaluate", "--checkpoint", str(path), "--dataset", "digits"])
    assert_one_line_error(capsys, rc, needle)
    rc = main(["train", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path), "--resume"])
    assert_one_line_error(capsys, rc, needle)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_bare_state_dict_is_foreign(tmp_path, capsys):
    path = tmp_path / "sd.pt"
    torch.save(rt.create_model("resnet20", in_chans=1).state_dict(), path)
    rc = main(["evaluate", "--checkpoint", str(path), "--dataset", "digits"])
    assert_one_line_error(capsys, rc, "not a resnet_tutorial checkpoint")


def test_missing_checkpoint(tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")])
    assert_one_line_error(capsys, rc, "no checkpoint at")
    rc = train(tmp_path / "fresh", "--resume")
    assert_one_line_error(capsys, rc, "no checkpoint at")
    assert not (tmp_path / "fresh").exists()


def test_nan_loss_leaves_nothing_behind(tmp_path, capsys):
    rc = train(tmp_path / "new", "--lr", "1e30")
    assert_one_line_error(capsys, rc, "lower the learning rate")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    rc = train(existing, "--lr", "1e30")
    assert_one_line_error(capsys, rc, "lower the learning rate")
    assert os.listdir(existing) == ["notes.txt"]


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "resnet21", "--epochs", "1", "--out", "x"], "unknown model"),
    (["train", "--lr", "-1", "--epochs", "1", "--out", "x"], "--lr must be a positive"),
    (["evaluate", "--checkpoint", "missing.pt"], "no checkpoint"),
])
def test_console_entry_point_prints_no_traceback(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "resnet_tutorial", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


# --- reproducibility: the same command gives the same weights; a killed and resumed run, too --------


def _weights(out):
    return read_checkpoint(os.path.join(out, "checkpoint.pt"))["model"]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "resnet_tutorial", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def test_same_command_and_seed_give_identical_weights(tmp_path):
    args = ["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--seed", "3"]
    for name in ("a", "b"):
        assert _cli(*args, "--out", str(tmp_path / name)).wait(timeout=300) == 0
    assert _equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    # ... and the seed matters: another seed gives other initial weights, so other final weights.
    assert _cli(*args[:-1], "4", "--out", str(tmp_path / "c")).wait(timeout=300) == 0
    assert not _equal(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_run_killed_after_its_first_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    import signal
    import time

    args = ["train", "--dataset", "digits", "--epochs", "3", "--quiet", "--seed", "1"]
    assert _cli(*args, "--out", str(tmp_path / "whole")).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = _cli(*args, "--out", str(killed))
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists():  # written atomically at the end of epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint(killed / "checkpoint.pt")["epoch"] < 3  # it really was interrupted
    assert not (killed / "summary.json").exists()

    assert _cli(*args, "--out", str(killed), "--resume").wait(timeout=300) == 0
    assert read_checkpoint(killed / "checkpoint.pt")["epoch"] == 3
    assert _equal(_weights(tmp_path / "whole"), _weights(killed))


# --- bad arguments: checked before anything is created ---------------------------------------------


@pytest.mark.parametrize("extra, needles", [
    (["--lr", "-0.1"], ["--lr must be a positive learning rate", "-0.1"]),
    (["--lr", "0"], ["--lr must be a positive"]),
    (["--weight-decay=-1e-4"], ["--weight-decay must be 0 or more"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    (["--label-smoothing", "1.5"], ["--label-smoothing must be in [0, 1)"]),
    (["--device", "gpu0"], ["--device 'gpu0' is not a device", "cpu"]),
    (["--epochs", "0"], ["--epochs must be at least 1"]),
    (["--train-per-class", "0"], ["--train-per-class takes a whole number of 1 or more", "got 0"]),
])
def test_bad_training_arguments(tmp_path, capsys, extra, needles):
    rc = train(tmp_path / "o", *extra)
    assert_one_line_error(capsys, rc, *needles)
    assert not (tmp_path / "o").exists()


def test_absent_device(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA
    rc = train(tmp_path / "o", "--device", "cuda")
    assert_one_line_error(capsys, rc, "no cuda device", "--device cpu")
    assert not (tmp_path / "o").exists()


def test_absent_device_index(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    rc = train(tmp_path / "o", "--device", "cuda:3")
    assert_one_line_error(capsys, rc, "1 cuda device(s)")
    assert not (tmp_path / "o").exists()


def test_out_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    rc = train(blocker)
    assert_one_line_error(capsys, rc, "is a file, not a folder")
    rc = train(blocker / "run")
    assert_one_line_error(capsys, rc, "cannot create --out")
    assert blocker.read_text() == "mine"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            rc = train(locked / "run")
            assert_one_line_error(capsys, rc, "not a writable folder")
        finally:
            locked.chmod(0o700)


@pytest.mark.parametrize("option, value", [("--schedule", "linear"), ("--dataset", "cifar100")])
def test_schedule_and_dataset_have_choices(capsys, option, value):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "1", "--out", "x", option, value])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_any_failure_during_a_run_is_a_failed_run(tmp_path, capsys, monkeypatch):
    import resnet_tutorial.training as training

    def broken_fit(*args, **kwargs):
        os.makedirs(tmp_path / "o", exist_ok=True)
        (tmp_path / "o" / "checkpoint.pt").write_bytes(b"half")
        raise RuntimeError("CUDA out of memory\nmore lines")

    monkeypatch.setattr(training, "fit", broken_fit)
    rc = train(tmp_path / "o")
    assert_one_line_error(capsys, rc, "training failed (RuntimeError: CUDA out of memory)")
    assert not (tmp_path / "o").exists()


# --- --dataset auto: a local CIFAR-10 copy, else MNIST-5k; never the network -----------------------


def test_auto_never_asks_the_network(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("auto must not probe the network or download")

    monkeypatch.setattr(rd, "_online", no_network)
    monkeypatch.setattr(rd, "download_cifar10", no_network)
    monkeypatch.setattr(rd, "load_mnist5k", rd.load_digits)  # the same path, on the smaller dataset
    empty = tmp_path / "data"
    empty.mkdir()
    rc = main(["train", "--dataset", "auto", "--data-dir", str(empty), "--epochs", "1", "--quiet",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"dataset auto: MNIST-5k (no CIFAR-10 in {empty}" in printed


def test_only_explicit_cifar10_downloads(tmp_path, monkeypatch):
    calls = []

    def fake_download(data_dir):
        calls.append(data_dir)
        raise rd.DataError("offline")

    monkeypatch.setattr(rd, "download_cifar10", fake_download)
    monkeypatch.setattr(rd, "load_mnist5k", rd.load_digits)
    rd.load_dataset("auto", data_dir=str(tmp_path))
    assert calls == []
    with pytest.raises(rd.DataError):
        rd.load_dataset("cifar10", data_dir=str(tmp_path))
    assert calls == [str(tmp_path)]


def test_evaluate_checks_device_and_batch_size(tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "c.pt"), "--device", "tpu9"])
    assert_one_line_error(capsys, rc, "--device 'tpu9' is not a device")
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "c.pt"), "--batch-size", "0"])
    assert_one_line_error(capsys, rc, "--batch-size must be at least 1")
