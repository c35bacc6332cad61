"""The three profiles: one setting selects them, a chapter can set it, and chapter_setup prints the expected time."""

import os

import pytest
import torch

from resnet_tutorial.book import chapter_setup, choose, expected_time_line, set_profile
from resnet_tutorial.runtime import PROFILE_ENV, get_profile


@pytest.fixture(autouse=True)
def _restore_profile():
    """set_profile writes the environment variable itself: put it back as it was after each test."""
    saved = os.environ.pop(PROFILE_ENV, None)
    yield
    os.environ.pop(PROFILE_ENV, None)
    if saved is not None:
        os.environ[PROFILE_ENV] = saved


def test_default_profile_follows_the_hardware():
    assert get_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_environment_variable_selects_the_profile(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, " Paper ")
    assert get_profile() == "paper"
    assert choose(cpu=3, gpu=5, paper=164) == 164


def test_bad_environment_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "full")
    with pytest.raises(ValueError, match="must be one of .*'full'"):
        get_profile()


def test_set_profile_overrides_the_environment_and_none_keeps_it(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "paper")
    assert set_profile(None) == "paper"
    assert set_profile("GPU") == "gpu"
    assert choose(cpu=1, gpu=2, paper=3) == 2
    with pytest.raises(ValueError, match="profile must be one of"):
        set_profile("fast")
    assert get_profile() == "gpu"  # a bad value changes nothing


def test_chapter_setup_selects_the_profile_and_prints_its_expected_time(capsys):
    ch = chapter_setup("T", profile="cpu", expected={"cpu": "40 s", "gpu": "6 min", "paper": "3 h"})
    out = capsys.readouterr().out
    assert ch.profile == "cpu" and get_profile() == "cpu"
    assert "profile=cpu" in out
    assert "expected time in the cpu profile: 40 s (other profiles: gpu: 6 min, paper: 3 h)" in out


def test_expected_time_warns_when_a_gpu_profile_runs_on_the_cpu():
    line = expected_time_line("gpu", {"cpu": "1 min", "gpu": "8 min"}, torch.device("cpu"))
    assert line.startswith("expected time in the gpu profile: 8 min (other profiles: cpu: 1 min)")
    assert "meant for a GPU" in line
    assert "warning" not in expected_time_line("cpu", {"cpu": "1 min"}, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown profiles"):
        expected_time_line("cpu", {"full": "3 h"})
