"""`resnet-tutorial train` and `evaluate`: outputs, resume, and every bad input (one line, exit 2, no traceback)."""

import argparse
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
    assert (out / "summary.json").read_text().startswith('{\n  "model": "resnet20",\n')  # indented, for reading
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    digits, ckpt = rd.load_dataset("digits"), os.path.abspath(out / "checkpoint.pt")
    assert (summary["mean"], summary["std"], summary["classes"]) == (list(digits.mean), list(digits.std), digits.classes)
    assert summary["data_source"] == digits.source and summary["world_size"] == 1 and summary["checkpoint"] == ckpt
    assert summary["final"]["epoch"] == 1 and summary["seconds"] == summary["history"]["seconds"] > 0
    assert (summary["pretrained"], summary["finetune"], summary["train_per_class"]) == (None, None, None)
    assert capsys.readouterr().out.splitlines() == [
        f"training resnet20 on {digits.source} | 1 process(es)",
        f"test accuracy {summary['final']['test_acc']:.4f} after 1 epochs ({summary['seconds']:.1f} s); "
        f"wrote {out / 'checkpoint.pt'} and {out / 'summary.json'}"]
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt")]) == 0  # dataset: the one it was trained on
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"resnet20 on {digits.source} (test split)" and printed[-1] == f"wrote {out / 'metrics_digits.json'}"
    assert "macro avg" in "\n".join(printed) and f"accuracy {summary['final']['test_acc']:.4f}" in "\n".join(printed)
    metrics = json.loads((out / "metrics_digits.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["final"]["test_acc"], abs=1e-6)
    assert len(metrics["confusion"]) == 10 and len(metrics["per_class"]) == 10
    assert (metrics["checkpoint"], metrics["dataset"], metrics["split"]) == (ckpt, "digits", "test")


def test_seed_and_schedule_reach_the_training_and_progress_bars_show_unless_quiet(tmp_path, capsys):
    """--seed seeds the batch order and augmentation too, not only the initial weights, and --schedule sets the
    learning rate's schedule (the checkpoint records the training's settings); without --quiet each epoch shows a
    progress bar on stderr."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "128", "--out", str(out),
                 "--seed", "3", "--schedule", "step"]) == 0
    config = read_checkpoint(out / "checkpoint.pt")["config"]
    assert (config["seed"], config["schedule"]) == (3, "step")
    assert "epoch 1/1" in capsys.readouterr().err


def test_the_line_saying_what_trains_is_out_before_the_training(tmp_path, monkeypatch):
    """Under `| tee log`, or a notebook's `!resnet-tutorial train ...`, stdout is a pipe, written in blocks: the
    line saying what trains on what must be sent before the minutes of training, not held back until the end."""
    import io
    import sys

    from resnet_tutorial import training

    class Pipe(io.StringIO):
        sent = ""

        def flush(self):
            self.sent = self.getvalue()

    pipe, sent_before_training = Pipe(), []
    monkeypatch.setattr(sys, "stdout", pipe)

    def fit(*args, **kwargs):
        sent_before_training.append(pipe.sent)
        raise RuntimeError("stop here")

    monkeypatch.setattr(training, "fit", fit)
    assert train(tmp_path / "run") == 2  # "training failed": the test stops it
    assert sent_before_training == [f"training resnet20 on {rd.load_dataset('digits').source} | 1 process(es)\n"]


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
    rc = main(["train", "--dataset", "cifar10", "--data-dir", str(empty), "--no-download", "--epochs", "1",
               "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, rc, "no CIFAR-10 in", "allow the download")  # --no-download: not even tried
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


def test_evaluate_reads_and_measures_as_its_options_and_the_checkpoint_say(tmp_path, capsys, monkeypatch):
    """The dataset: --dataset, else the one the checkpoint was trained on, else auto; from --data-dir, downloaded
    unless --no-download. The measurement: --split, --batch-size, --device, in the precision the run trained in."""
    import resnet_tutorial.cli as cli

    loads, runs, digits = [], [], rd.load_dataset("digits")
    monkeypatch.setattr(cli, "load_dataset", lambda *args, **kw: loads.append((*args, kw)) or digits)
    monkeypatch.setattr(cli, "evaluate", lambda model, data, **options: runs.append(options) or (
        _ for _ in ()).throw(cli.CLIError("measured")))
    amp = tmp_path / "amp.pt"
    save_checkpoint(amp, rt.create_model("resnet20", in_chans=1), epoch=1, config={"dataset": "digits", "amp": True})
    state = read_checkpoint(amp)
    del state["config"]  # a file that says nothing of its training
    torch.save(state, tmp_path / "bare.pt")
    for args, load, run in [
        (["--checkpoint", str(amp)], ("digits", None, {"download": True}),
         dict(split="test", batch_size=512, device=None, amp=True)),
        (["--checkpoint", str(amp), "--dataset", "fashion-mnist", "--data-dir", "d", "--no-download", "--split",
          "train", "--batch-size", "7", "--device", "cpu"], ("fashion-mnist", "d", {"download": False}),
         dict(split="train", batch_size=7, device="cpu", amp=True)),
        (["--checkpoint", str(tmp_path / "bare.pt")], ("auto", None, {"download": True}),
         dict(split="test", batch_size=512, device=None, amp=False)),
    ]:
        assert_one_line_error(capsys, main(["evaluate", *args]), "measured")
        assert loads.pop() == load and runs.pop() == run


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
    (["--image-size", "32"], ["--image-size need a folder of images"]),
    (["--val-fraction", "0"], ["--val-fraction must be between 0 and 1"]),
    (["--val-fraction", "1"], ["--val-fraction must be between 0 and 1"]),
    (["--dataset", "folder", "--train-per-class", "5"], ["--train-per-class takes", "a dataset held in memory"]),
    # the smallest values taken: these pass their own checks and fail only at the next one
    (["--image-size", "16"], ["--image-size need a folder of images"]),
    (["--train-per-class", "1", "--image-size", "32"], ["--image-size need a folder of images"]),
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


def test_device_check_says_what_this_machine_has(tmp_path, capsys, monkeypatch):
    """--device is checked before anything is read: a device this machine has passes (the next error is then the
    missing checkpoint), an index at the count does not; MPS is looked up in torch.backends.mps; a device type
    torch knows but has no module for (xla) is absent; the CPU is always there (torch puts a tensor for any CPU
    index on the one CPU)."""
    def evaluate(device):
        return main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--device", device])

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("cuda", "cuda:1", "cpu", "cpu:1"):
        assert_one_line_error(capsys, evaluate(device), "no checkpoint at")
    assert_one_line_error(capsys, evaluate("xla"), "--device xla: this machine has no xla device")
    assert_one_line_error(capsys, evaluate("cuda:2"), "--device cuda:2: this machine has 2 cuda device(s)")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert_one_line_error(capsys, evaluate("mps"), "--device mps: this machine has no mps device")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert_one_line_error(capsys, evaluate("mps"), "no checkpoint at")
    assert_one_line_error(capsys, evaluate("mps:1"), "this machine has 1 mps device(s)")


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


def _typed(namespace):
    """An argparse namespace as {dest: (type name, value)}: 64 and 64.0 differ, as an option's type says."""
    return {k: (type(v).__name__, v) for k, v in vars(namespace).items() if k != "func"}


def test_every_commands_options_their_types_and_defaults():
    """What each option is called, what it takes and what it defaults to: scripts and the book's commands depend
    on these, so a renamed option, a lost type or a changed default fails here rather than in a user's run."""
    import resnet_tutorial.cli as cli

    parse = cli.build_parser().parse_args
    defaults = parse(["train", "--epochs", "3", "--out", "o"])
    assert defaults.func is cli._cmd_train and _typed(defaults) == _typed(argparse.Namespace(
        command="train", model=None, dataset="auto", data_dir=None, pretrained=None, finetune=None, image_size=None,
        val_fraction=0.2, split_seed=0, train_per_class=None, workers=None, no_download=False, epochs=3, out="o",
        seed=0, resume=False, batch_size=128, lr=None, schedule="cosine", weight_decay=5e-4, label_smoothing=0.0,
        device=None, quiet=False))
    given = parse(["train", "--model", "resnet18", "--dataset", "folder", "--data-dir", "d", "--pretrained", "t",
                   "--finetune", "head", "--image-size", "64", "--val-fraction", "0.3", "--split-seed", "2",
                   "--train-per-class", "5", "--workers", "1", "--no-download", "--epochs", "3", "--out", "o",
                   "--seed", "4", "--resume", "--batch-size", "16", "--lr", "0.5", "--schedule", "onecycle",
                   "--weight-decay", "1", "--label-smoothing", "0.1", "--device", "cpu", "--quiet"])
    assert _typed(given) == _typed(argparse.Namespace(
        command="train", model="resnet18", dataset="folder", data_dir="d", pretrained="t", finetune="head",
        image_size=64, val_fraction=0.3, split_seed=2, train_per_class=5, workers=1, no_download=True, epochs=3,
        out="o", seed=4, resume=True, batch_size=16, lr=0.5, schedule="onecycle", weight_decay=1.0,
        label_smoothing=0.1, device="cpu", quiet=True))

    evaluate = parse(["evaluate", "--checkpoint", "c.pt"])
    assert evaluate.func is cli._cmd_evaluate and _typed(evaluate) == _typed(argparse.Namespace(
        command="evaluate", checkpoint="c.pt", dataset=None, data_dir=None, no_download=False, split="test",
        batch_size=512, device=None, metrics=None, workers=None))
    evaluate = parse(["evaluate", "--checkpoint", "c.pt", "--dataset", "digits", "--data-dir", "d", "--no-download",
                      "--split", "train", "--batch-size", "8", "--device", "cpu", "--metrics", "m.json",
                      "--workers", "2"])
    assert _typed(evaluate) == _typed(argparse.Namespace(
        command="evaluate", checkpoint="c.pt", dataset="digits", data_dir="d", no_download=True, split="train",
        batch_size=8, device="cpu", metrics="m.json", workers=2))
    assert parse(["evaluate", "--checkpoint", "c.pt", "--split", "test"]).split == "test"  # the default, spelled out

    predict = parse(["predict", "--checkpoint", "c.pt", "a.jpg"])
    assert predict.func is cli._cmd_predict and _typed(predict) == _typed(argparse.Namespace(
        command="predict", checkpoint="c.pt", inputs=["a.jpg"], topk=5, output=None, batch_size=64, workers=None,
        device=None))
    predict = parse(["predict", "--checkpoint", "c.pt", "a.jpg", "b", "--topk", "2", "--output", "p.csv",
                     "--batch-size", "4", "--workers", "1", "--device", "cpu"])
    assert _typed(predict) == _typed(argparse.Namespace(
        command="predict", checkpoint="c.pt", inputs=["a.jpg", "b"], topk=2, output="p.csv", batch_size=4,
        workers=1, device="cpu"))

    compare = parse(["compare"])
    assert compare.func is cli._cmd_compare and _typed(compare) == _typed(argparse.Namespace(
        command="compare", model="resnet50", libraries=["timm", "torchvision"], batch_size=None, image_size=None,
        repeats=7, device=None, quiet=False))
    compare = parse(["compare", "--model", "resnet18", "--libraries", "torchvision", "--batch-size", "2",
                     "--image-size", "32", "--repeats", "1", "--device", "cpu", "--quiet"])
    assert _typed(compare) == _typed(argparse.Namespace(
        command="compare", model="resnet18", libraries=["torchvision"], batch_size=2, image_size=32, repeats=1,
        device="cpu", quiet=True))

    models = parse(["models"])
    assert models.func is cli._cmd_models and _typed(models) == {"command": ("str", "models"), "pattern": ("NoneType", None)}
    assert parse(["models", "resnet*"]).pattern == "resnet*"


@pytest.mark.parametrize("args", [
    [],  # a command is required
    ["train", "--out", "o"], ["train", "--epochs", "1"],  # both required
    ["train", "--epochs", "1", "--out", "o", "--finetune", "some"],
    ["evaluate"], ["evaluate", "--checkpoint", "c.pt", "--split", "val"],
    ["predict", "--checkpoint", "c.pt"],  # no image
    ["predict", "a.jpg"],  # no checkpoint
    ["compare", "--libraries", "keras"],
    ["models", "a*", "b*"],  # one pattern at most
])
def test_missing_or_bad_options_are_argparse_errors(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "usage: resnet-tutorial" in capsys.readouterr().err


@pytest.mark.parametrize("command, shown", [
    (["train"], ["--pretrained TAG|FILE", "--finetune {head,all,stages}", "--train-per-class N",
                 "--dataset {auto,mnist5k,fashion-mnist,cifar10,digits,folder}",
                 "--schedule {cosine,warmup_cosine,step,constant,onecycle}"]),
    (["predict"], ["--checkpoint CHECKPOINT", "FILE_OR_DIR [FILE_OR_DIR ...]"]),
    (["compare", "--libraries", "keras"], ["--libraries {timm,torchvision} [{timm,torchvision} ...]"]),
    (["evaluate"], ["--split {train,test}"]),
])
def test_usage_says_what_each_option_takes(capsys, command, shown):
    """A mistyped command prints its usage: each option with the kind of value it takes (a tag or a file, a
    number, files or folders) or the values it accepts, the reader's guide to a correct command line."""
    with pytest.raises(SystemExit):
        main(command)
    usage = " ".join(capsys.readouterr().err.split())  # argparse wraps the usage to the terminal's width
    for text in shown:
        assert text in usage


def test_version_and_usage(capsys):
    from resnet_tutorial import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"resnet-tutorial {__version__}\n"
    with pytest.raises(SystemExit):
        main([])
    assert "usage: resnet-tutorial [-h] [--version] COMMAND ..." in capsys.readouterr().err


def test_pretrained_fills_in_the_model_the_learning_rate_and_the_finetuning(tmp_path):
    from resnet_tutorial.cli import CLIError, build_parser, check_train_args

    def checked(*extra):
        args = build_parser().parse_args(["train", "--epochs", "1", "--out", str(tmp_path / "o"), *extra])
        check_train_args(args)
        return args.model, args.lr, args.finetune, args.recipe.lr

    assert checked() == ("resnet20", 0.1, None, 0.1)
    assert checked("--pretrained", "resnet50.tv2_in1k") == ("resnet50", 0.01, "stages", 0.01)
    assert checked("--pretrained", "resnet18.tv_in1k", "--finetune", "head", "--lr", "0.2") == (
        "resnet18", 0.2, "head", 0.2)
    for name in ("w.pt", "w.pth", "w.bin", "w.ckpt", "w.safetensors", "sub/w"):  # a file's name, not a tag
        with pytest.raises(CLIError, match=f"--pretrained '{name}': no such file"):
            checked("--pretrained", name)


def test_interrupted_training_keeps_its_last_checkpoint_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import resnet_tutorial.training as training

    def interrupted_fit(model, data, recipe, *, checkpoint_path, **kwargs):
        save_checkpoint(checkpoint_path, model, epoch=1)  # the first epoch finished, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit", interrupted_fit)
    assert train(tmp_path / "o") == 130
    err = capsys.readouterr().err
    assert "continue with the same command and --resume" in err and err.rstrip().endswith("interrupted")
    assert os.listdir(tmp_path / "o") == ["checkpoint.pt"]


def test_interrupted_before_the_first_checkpoint_offers_nothing_to_resume(tmp_path, capsys, monkeypatch):
    import resnet_tutorial.training as training

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C during the first epoch: no checkpoint yet

    monkeypatch.setattr(training, "fit", interrupted_fit)
    assert train(tmp_path / "o") == 130
    assert capsys.readouterr().err == "interrupted\n"  # not "continue with ... --resume": there is nothing to resume


def test_a_failed_run_in_an_existing_folder_removes_only_what_it_wrote(tmp_path, capsys, monkeypatch):
    """--out may be a folder that already holds files (notes, the summary of an earlier run): a failed run removes
    its half-written checkpoint and leaves them."""
    import resnet_tutorial.training as training

    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.json").write_text("{}")

    def broken_fit(*args, checkpoint_path, **kwargs):
        with open(checkpoint_path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(training, "fit", broken_fit)
    assert_one_line_error(capsys, train(out), "training failed (RuntimeError: disk full)")
    assert sorted(os.listdir(out)) == ["notes.txt", "summary.json"]
    assert (out / "summary.json").read_text() == "{}"


def test_out_in_a_folder_without_write_permission(tmp_path, capsys, monkeypatch):
    """What a user who is not root gets from a read-only folder (os.access answers as for them: it exists and can
    be read and searched, not written)."""
    existing = tmp_path / "existing"
    existing.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    assert_one_line_error(capsys, train(existing), f"--out {str(existing)!r} is not writable")
    assert_one_line_error(capsys, train(existing / "a" / "b"), f"{str(existing)!r} is not a writable folder")


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


def test_a_failures_first_line_is_cut_at_300_characters(tmp_path, capsys, monkeypatch):
    import resnet_tutorial.training as training

    for error, shown in ((RuntimeError("x" * 400), "x" * 300 + ")"), (MemoryError(), "(MemoryError: )")):
        monkeypatch.setattr(training, "fit", lambda *a, error=error, **k: (_ for _ in ()).throw(error))
        line = assert_one_line_error(capsys, train(tmp_path / "o"), "training failed")
        assert line.endswith(shown) and "x" * 301 not in line


def test_another_rank_reads_rank_0s_copy_and_leaves_the_outputs_to_it(tmp_path, capsys, monkeypatch):
    """Under torchrun each process runs the command: the others wait for rank 0 (which downloads), read the data
    without downloading, but with the options rank 0 reads it with (a folder split by the same fraction and seed,
    into the same validation images), train on the device torchrun gives them, and print and write nothing."""
    import resnet_tutorial.cli as cli
    from resnet_tutorial import distributed, training
    from resnet_tutorial.folder import preprocessing_for

    events = []
    monkeypatch.setattr(distributed, "launched_by_torchrun", lambda: True)
    monkeypatch.setattr(distributed, "setup", lambda device: ("this rank's device for", device))
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(distributed, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(distributed, "cleanup", lambda: events.append("cleanup"))
    load = cli.load_dataset
    options = []
    monkeypatch.setattr(cli, "load_dataset", lambda name, data_dir, download, **kw: events.append(
        ("load", name, data_dir, download)) or options.append(kw) or load(name, data_dir, download=download, **kw))
    monkeypatch.setattr(training, "fit", lambda model, data, recipe, **kw: events.append(("fit", kw["device"])))
    assert train(tmp_path / "o", "--device", "cpu", "--data-dir", str(tmp_path), "--val-fraction", "0.3",
                 "--split-seed", "5", "--workers", "0") == 0
    assert events == ["barrier", ("load", "digits", str(tmp_path), False), ("fit", ("this rank's device for", "cpu")),
                      "cleanup"]
    assert options == [dict(preprocessing=preprocessing_for("resnet20", None, None), val_fraction=0.3, split_seed=5,
                            num_workers=0)]
    assert capsys.readouterr().out == "" and not (tmp_path / "o").exists()


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
