"""The helpers every chapter calls: chapter_setup, choose, check, show_source/source_of, Chapter.report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_tutorial import book
from resnet_tutorial.models import BasicBlock


def test_choose_follows_the_profile(monkeypatch):
    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "cpu")
    assert book.choose(cpu=3, gpu=30, paper=164) == 3
    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "gpu")
    assert book.choose(cpu=3, gpu=30, paper=164) == 30
    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "paper")
    assert book.choose(cpu=3, gpu=30, paper=164) == 164


def test_check_prints_a_true_claim_and_fails_a_false_one(capsys):
    book.check("two is more than one", 2 > 1, detail="2 > 1")
    assert capsys.readouterr().out.strip() == "\u2714 two is more than one (2 > 1)"
    with pytest.raises(AssertionError, match="claim does not hold: one is more than two"):
        book.check("one is more than two", 1 > 2)


def test_source_of_is_the_package_source():
    source = book.source_of(BasicBlock)
    assert source.startswith("class BasicBlock")
    assert "def forward" in source


def test_show_source_prints_outside_a_notebook(capsys):
    book.show_source(BasicBlock.forward)
    assert capsys.readouterr().out.startswith("def forward")


def test_chapter_setup_prints_numpy_scalars_as_plain_numbers(monkeypatch):
    import numpy as np

    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "cpu")
    options = np.get_printoptions()
    try:
        book.chapter_setup("A chapter", device="cpu")
        assert repr(np.float64(4.75)) == "4.75"  # what myst_nb's {glue:text}`x:.1f` parses
    finally:
        np.set_printoptions(**options)


def test_chapter_setup_seeds_and_reports(monkeypatch, capsys):
    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "cpu")
    ch = book.chapter_setup("A chapter", seed=3, device="cpu")
    first = torch.rand(3)
    assert ch.profile == "cpu" and ch.device == torch.device("cpu")
    assert "profile=cpu" in capsys.readouterr().out
    book.chapter_setup("A chapter", seed=3, device="cpu")
    assert torch.equal(first, torch.rand(3))  # seeded the same way
    capsys.readouterr()
    with ch.timed("experiment"):
        pass
    with ch.timed("experiment"):
        pass
    assert list(ch.timings) == ["experiment"]
    ch.report()
    out = capsys.readouterr().out
    assert out.startswith("A chapter: ran on profile=cpu")
    assert re.search(r"experiment\s+\d+\.\d s", out) and re.search(r"whole chapter\s+\d+\.\d s", out)


def test_check_logs_every_claim_and_reports_instead_of_raising_only_when_asked(monkeypatch, tmp_path, capsys):
    import json

    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv("RESNET_TUTORIAL_CHECK_LOG", str(log))
    book.check("holds", True, "1 < 2")
    with pytest.raises(AssertionError, match="claim does not hold: fails"):  # the default: raise
        book.check("fails", False, "2 < 1")
    monkeypatch.setenv("RESNET_TUTORIAL_CHECKS", "report")
    book.check("fails too", False, "3 < 1")
    assert "\u2718 claim does not hold: fails too (3 < 1)" in capsys.readouterr().out
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows == [{"claim": "holds", "holds": True, "detail": "1 < 2"},
                    {"claim": "fails", "holds": False, "detail": "2 < 1"},
                    {"claim": "fails too", "holds": False, "detail": "3 < 1"}]
    monkeypatch.setenv("RESNET_TUTORIAL_CHECKS", "ignore")
    with pytest.raises(ValueError, match="'raise' or 'report'"):
        book.check("anything", True)


def test_a_scratch_dir_is_new_and_gone_when_the_process_exits(tmp_path):
    code = ("import os, sys; from resnet_tutorial.book import scratch_dir; "
            "p = scratch_dir('chapter-'); assert os.listdir(p) == []; "
            "open(os.path.join(p, 'run.pt'), 'w').write('x'); print(p)")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path and path.name.startswith("chapter-")
    assert not path.exists()  # deleted at exit, with what the chapter wrote in it


def test_the_chapter_report_deletes_its_scratch_dirs(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(book.tempfile, "tempdir", None)  # read TMPDIR again
    first, second = book.scratch_dir("run-"), book.scratch_dir("photos-")
    (Path(first) / "checkpoint.pt").write_text("x")
    assert Path(first).parent == tmp_path and Path(second).is_dir()
    book.Chapter(title="t", device=torch.device("cpu"), profile="cpu", seed=0).report()
    assert not Path(first).exists() and not Path(second).exists()
    assert "whole chapter" in capsys.readouterr().out
