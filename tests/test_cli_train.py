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
    rc = main(["train", "--dataset", "imagenet", "--epochs", "1", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, rc, "unknown dataset 'imagenet'", "mnist5k")
    assert not (tmp_path / "o").exists()


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
    (["train", "--dataset", "nope", "--epochs", "1", "--out", "x"], "unknown dataset"),
    (["evaluate", "--checkpoint", "missing.pt"], "no checkpoint"),
])
def test_console_entry_point_prints_no_traceback(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "resnet_tutorial", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_the_same_command_and_seed_give_the_same_weights(tmp_path):
    states = []
    for run in ("a", "b"):
        torch.rand(3)  # whatever came before in the process must not matter
        assert train(tmp_path / run, "--seed", "3") == 0
        states.append(read_checkpoint(tmp_path / run / "checkpoint.pt")["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
