"""The comparison with timm and torchvision, and the `models` and `compare` commands."""

import pytest
import torch

from resnet_tutorial.cli import main
from resnet_tutorial.errors import ResnetTutorialError
from resnet_tutorial.reference import (
    format_parity,
    format_ratios,
    format_speed,
    paired_speed_ratios,
    parity_report,
    reference_model,
    speed_comparison,
    speed_ratios,
)


def test_speed_comparison_times_every_contestant():
    rows = speed_comparison("resnet18", batch_size=2, image_size=64, repeats=2, progress=False, device="cpu")
    assert len(rows) == 3 * 2 * 2  # ours, timm, torchvision x train, infer x NCHW, channels_last
    assert {r["impl"] for r in rows} == {"ours", "timm", "torchvision"}
    assert all(r["median_ms"] > 0 for r in rows)
    assert all(r["vs_ours"] == 1.0 for r in rows if r["impl"] == "ours")
    assert set(speed_ratios(rows)) == {
        "timm (nchw)",
        "timm (channels_last)",
        "torchvision (nchw)",
        "torchvision (channels_last)",
    }
    assert "our speed x" in format_speed(rows)
    lines = format_ratios(rows, goal=0.0).splitlines()
    assert len(lines) == 4 and all("meets the goal 0.0" in line for line in lines)
    assert all("BELOW" in line for line in format_ratios(rows, goal=1e9).splitlines())


def test_cifar_models_have_no_reference_twin():
    with pytest.raises(ResnetTutorialError, match="only the ImageNet family") as error:
        reference_model("resnet20", "timm")
    assert "resnext50_32x4d" in str(error.value) and "wide_resnet101_2" in str(error.value)  # the whole family


def test_compare_command_prints_parity(capsys):
    assert main(["compare", "--model", "resnet18", "--repeats", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("identical") + out.count("equal") == 4
    assert "DIFFERENT" not in out


def test_compare_command_rejects_bad_models(capsys):
    assert main(["compare", "--model", "resnet20", "--repeats", "0"]) == 2
    assert "only the ImageNet family" in capsys.readouterr().err
    assert main(["compare", "--model", "resnet5O", "--repeats", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and "Traceback" not in err


def test_compare_command_passes_its_options_to_the_parity_and_speed_tables(capsys, monkeypatch):
    import resnet_tutorial.cli as cli

    calls = []
    monkeypatch.setattr(cli, "parity_report", lambda model, libraries: calls.append((model, libraries)) or "report")
    monkeypatch.setattr(cli, "format_parity", lambda report: f"parity of {report}")
    monkeypatch.setattr(cli, "speed_comparison", lambda model, **options: calls.append((model, options)) or "rows")
    monkeypatch.setattr(cli, "format_speed", lambda rows: f"speed of {rows}")
    monkeypatch.setattr(cli, "format_ratios", lambda rows: f"ratios of {rows}")
    assert main(["compare", "--model", "resnet34", "--libraries", "timm", "--repeats", "1", "--batch-size", "3",
                 "--image-size", "40", "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().out == "parity of report\n\nspeed of rows\n\nratios of rows\n"
    options = dict(libraries=["timm"], batch_size=3, image_size=40, repeats=1, device="cpu", progress=False)
    assert calls == [("resnet34", ["timm"]), ("resnet34", options)]
    calls.clear()
    assert main(["compare"]) == 0  # the defaults: resnet50 against both, 7 rounds, sizes and device by the machine
    both = ["timm", "torchvision"]
    defaults = dict(libraries=both, batch_size=None, image_size=None, repeats=7, device=None, progress=True)
    assert calls == [("resnet50", both), ("resnet50", defaults)]
    calls.clear()
    assert main(["compare", "--repeats", "0"]) == 0 and calls == [("resnet50", both)]  # 0: no speed table
    assert capsys.readouterr().out.endswith("parity of report\n")


def test_models_command_lists_parameters_and_macs(capsys):
    assert main(["models", "resnet5*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "25,557,032" in out and "4.089" in out and "resnet56" in out
    lines = out.splitlines()  # a header, its rule, and one line per model in the header's columns
    assert lines[0].split() == ["model", "family", "input", "params", "GMACs"] and lines[1] == "-" * len(lines[0])
    assert all(len(line) == len(lines[0]) for line in lines[2:])
    assert main(["models", "nothing*"]) == 2


def test_format_parity_reports_each_direction():
    report = {
        "model": "m",
        "image_size": 8,
        "tolerance": 1e-5,
        "results": [
            {"direction": "ours -> timm", "max_abs_diff": 0.0, "rel_diff": 0.0, "ok": True},
            {"direction": "timm -> ours", "max_abs_diff": 0.5, "rel_diff": 0.1, "ok": False},
        ],
    }
    text = format_parity(report)
    assert "identical" in text and "DIFFERENT" in text


def test_paired_speed_ratios_pair_rounds_and_take_the_median():
    def row(impl, times):
        return {"impl": impl, "mode": "train", "format": "nchw", "times_ms": times}

    # Round 2 was hit by load for both contestants alike; round 3 only for timm: the median ignores it.
    rows = [row("ours", [10.0, 30.0, 10.0]), row("timm", [11.0, 33.0, 50.0]), row("torchvision", [9.0, 27.0, 9.0])]
    ratios = paired_speed_ratios(rows)
    assert ratios["timm"] == pytest.approx(1.1) and ratios["torchvision"] == pytest.approx(0.9)


def test_speed_rows_keep_every_round():
    rows = speed_comparison("resnet18", batch_size=1, image_size=32, repeats=3, progress=False, device="cpu",
                            modes=("infer",), memory_formats=("nchw",))
    assert all(len(r["times_ms"]) == 3 for r in rows)
    assert set(paired_speed_ratios(rows)) == {"timm", "torchvision"}


def test_parity_reports_a_missing_key_instead_of_claiming_a_strict_load(monkeypatch):
    import resnet_tutorial.reference as reference

    real = reference.reference_model

    def with_an_extra_buffer(name, library, **kwargs):
        model = real(name, library, **kwargs)
        model.register_buffer("extra", torch.zeros(1))  # a key that our model does not have
        return model

    monkeypatch.setattr(reference, "reference_model", with_an_extra_buffer)
    report = reference.parity_report("resnet18", libraries=("torchvision",), image_size=32, batch_size=1)
    assert [r["strict_load"] for r in report["results"]] == [False, False]
    assert not any(r["ok"] for r in report["results"])
    assert "DIFFERENT" in format_parity(report) and " NO " in format_parity(report)


def test_parity_of_a_faithful_copy_is_bit_for_bit():
    report = parity_report("resnet18", libraries=("torchvision",), image_size=32, batch_size=1)
    assert all(r["strict_load"] and r["tensors_equal"] and r["identical"] for r in report["results"])
