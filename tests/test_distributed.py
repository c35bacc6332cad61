"""Data-parallel training with DDP on the CPU: 2 gloo processes, by torch.multiprocessing and by torchrun."""

import json
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import resnet_tutorial as rt
from resnet_tutorial.data import load_dataset
from resnet_tutorial.training import Recipe, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = load_dataset("digits").subset(20, test_per_class=5)
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16))
    history = fit(model, data, Recipe(epochs=2, batch_size=25, lr=0.05), progress=False, device="cpu",
                  checkpoint_path=os.path.join(out, "checkpoint.pt"))
    torch.save({"state": model.state_dict(), "history": history.to_dict()}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.manual_seed(0)
    init = rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16)).state_dict()
    for key, value in r0["state"].items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # parameters: DDP syncs them
            assert torch.equal(value, r1["state"][key]), key
    assert not torch.equal(r0["state"]["fc.weight"], init["fc.weight"])
    # both processes report the same, all-reduced training metrics
    assert r0["history"]["epochs"][-1]["train_loss"] == r1["history"]["epochs"][-1]["train_loss"]
    assert r0["history"]["config"]["world_size"] == 2
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "rank0.pt", "rank1.pt"]  # one checkpoint, by rank 0


def test_torchrun_launches_the_cli(tmp_path):
    out = tmp_path / "run"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "resnet_tutorial", "train", "--model", "resnet20",
           "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["dataset"] == "digits"
    assert proc.stdout.count("test accuracy") == 1  # only rank 0 prints and writes
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "summary.json"]


def _one_digit_repeated(n=16):
    from resnet_tutorial.data import ImageData, Split

    image = torch.zeros(1, 1, 12, 12, dtype=torch.uint8)
    image[..., 4:8, 5:7] = 255  # a small bar: every shift moves it visibly
    split = Split(image.repeat(n, 1, 1, 1), torch.zeros(n, dtype=torch.long))
    return ImageData("bar", ["bar"], split, split, (0.1,), (0.3,), "test", augmentation="shift")


def test_ranks_share_the_shuffle_but_draw_their_own_augmentation():
    data = _one_digit_repeated()
    kw = dict(batch_size=8, shuffle=True, augment=True, device="cpu", seed=3, world_size=2)
    r0, r1 = (next(iter(data.loader("train", rank=r, **kw)))[0] for r in (0, 1))
    # All images are the same, so the two ranks' batches differ only if their augmentations do.
    assert not torch.equal(r0, r1)
    plain = dict(kw, augment=False)
    shares = [data.loader("train", rank=r, **plain)._indices(torch.Generator().manual_seed(3)) for r in (0, 1)]
    assert sorted(torch.cat(shares).tolist()) == list(range(16))  # disjoint shares covering the split
    # One process is unchanged: the same (seed, epoch) gives the same batches.
    single = dict(kw, world_size=1)
    assert torch.equal(next(iter(data.loader("train", **single)))[0], next(iter(data.loader("train", **single)))[0])


def test_seed_this_rank_outside_a_run_is_plain_seeding():
    from resnet_tutorial.distributed import seed_this_rank

    seed_this_rank(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))
