"""ResNeXt and Wide ResNet: bit-identical outputs to torchvision's and timm's (their state_dict names
and shapes are tested with the other ImageNet models in test_models.py), their sizes and costs, and a
clear error where the basic block cannot have groups."""

import pytest
import torch
import torchvision

import resnet_tutorial as rt
from resnet_tutorial.analysis import count_macs, count_params
from resnet_tutorial.cli import main
from resnet_tutorial.models import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet
from resnet_tutorial.models.weights import TORCHVISION_WEIGHTS
from resnet_tutorial.reference import parity_report, randomize_batchnorm, reference_model

VARIANTS = ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


@torch.no_grad()
def _outputs(model, x):
    return model.eval()(x)


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_are_bit_identical_in_both_directions(name, one_thread):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=gen)  # 64 px: every layer runs, the last stage at 2x2
    torch.manual_seed(0)
    ours = randomize_batchnorm(rt.create_model(name), gen)
    tv = reference_model(name, "torchvision")
    tm = reference_model(name, "timm")
    # Ours -> theirs, strict: every key present, none left over, every shape equal.
    tv.load_state_dict(ours.state_dict(), strict=True)
    tm.load_state_dict(ours.state_dict(), strict=True)
    y = _outputs(ours, x)
    assert y.abs().max() > 0
    assert torch.equal(_outputs(tv, x), y)
    assert torch.equal(_outputs(tm, x), y)
    # torchvision -> ours, with fresh random weights and statistics.
    torch.manual_seed(1)
    tv = randomize_batchnorm(reference_model(name, "torchvision"), gen)
    ours.load_state_dict(tv.state_dict(), strict=True)
    y_tv = _outputs(tv, x)
    assert not torch.equal(y_tv, y)  # new weights: the comparison below is not the old one again
    assert torch.equal(_outputs(ours, x), y_tv)
    # timm -> ours.
    torch.manual_seed(2)
    tm = randomize_batchnorm(reference_model(name, "timm"), gen)
    ours.load_state_dict(tm.state_dict(), strict=True)
    assert torch.equal(_outputs(ours, x), _outputs(tm, x))


def test_equality_would_notice_one_wrong_statistic(one_thread):
    gen = torch.Generator().manual_seed(0)
    ours = randomize_batchnorm(rt.create_model("resnext50_32x4d"), gen)
    tv = torchvision.models.resnext50_32x4d()
    tv.load_state_dict(ours.state_dict(), strict=True)
    tv.layer2[1].bn2.running_mean.add_(1e-3)
    x = torch.randn(1, 3, 64, 64, generator=gen)
    assert not torch.equal(_outputs(ours, x), _outputs(tv, x))


def test_resnext_and_wide_weights_do_not_load_into_each_other():
    # Both have 128 channels inside the first stage's bottleneck, but ResNeXt's 3x3 sees 4 channels
    # per group and the wide one all 128: a strict load fails on the shape.
    with torch.device("meta"):
        resnext, wide = rt.create_model("resnext50_32x4d"), rt.create_model("wide_resnet50_2")
    assert resnext.layer1[0].conv2.weight.shape == (128, 4, 3, 3)
    assert wide.layer1[0].conv2.weight.shape == (128, 128, 3, 3)
    with pytest.raises(RuntimeError, match="size mismatch for layer1.0.conv2.weight"):
        wide.load_state_dict(resnext.state_dict(), strict=True)


def test_parameter_counts_match_torchvision():
    counts = {}
    for name in VARIANTS:
        with torch.device("meta"):
            counts[name] = count_params(rt.create_model(name))
            theirs = count_params(torchvision.models.get_model(name, weights=None))
        assert counts[name] == theirs, name
    # The figures of torchvision's model cards.
    assert counts["resnext50_32x4d"] == 25_028_904
    assert counts["wide_resnet50_2"] == 68_883_240
    # ResNeXt-50 is no bigger than ResNet-50 (Xie et al. 2017, Table 1: 25.0M against 25.5M).
    with torch.device("meta"):
        assert counts["resnext50_32x4d"] < count_params(rt.create_model("resnet50"))


@pytest.mark.parametrize("name", ["resnet50", *VARIANTS])
def test_macs_and_sizes_match_torchvision_counted_and_published(name):
    with torch.device("meta"):
        ours, tv = rt.create_model(name), torchvision.models.get_model(name, weights=None)
    macs = count_macs(ours, (1, 3, 224, 224))
    assert macs == count_macs(tv, (1, 3, 224, 224))
    # The metadata of torchvision's pretrained weights (read locally, nothing is downloaded):
    # parameters, and GFLOPS that are in fact billions of multiply-accumulates.
    meta = getattr(torchvision.models, TORCHVISION_WEIGHTS[name]).DEFAULT.meta
    assert meta["num_params"] == count_params(ours)
    assert round(macs / 1e9, 3) == pytest.approx(meta["_ops"], abs=1e-3)


def test_every_imagenet_model_has_a_torchvision_weights_entry():
    for name in rt.list_models(family="imagenet"):
        assert hasattr(torchvision.models, TORCHVISION_WEIGHTS[name]), name


def test_bottleneck_width_follows_torchvision_rule():
    # width = int(planes * width_per_group / 64) * groups, for the 3x3 of the bottleneck.
    cases = {(1, 64): 64, (32, 4): 128, (32, 8): 256, (64, 4): 256, (1, 128): 128}
    for (groups, wpg), width in cases.items():
        for block in (Bottleneck, PreActBottleneck):
            b = block(256, 64, groups=groups, width_per_group=wpg)
            assert b.conv2.in_channels == b.conv2.out_channels == width
            assert b.conv2.groups == groups
            assert b.conv3.out_channels == 256
    x = torch.randn(2, 256, 8, 8)
    assert Bottleneck(256, 64, groups=32, width_per_group=4)(x).shape == x.shape
    from resnet_tutorial.models.blocks import bottleneck_width

    assert bottleneck_width(64) == 64 and bottleneck_width(128) == 128  # by default ResNet's: the planes


@pytest.mark.parametrize("block", [BasicBlock, PreActBasicBlock])
def test_basic_blocks_refuse_groups_and_width_with_a_clear_message(block):
    with pytest.raises(ValueError, match="only supports groups=1 and width_per_group=64.*bottleneck"):
        block(64, 64, groups=32, width_per_group=4)
    with pytest.raises(ValueError, match=f"^{block.__name__} only supports.*width_per_group=128"):
        block(64, 64, width_per_group=128)  # the message names the block
    with pytest.raises(ValueError, match="BasicBlock only supports"):
        rt.create_model("resnet18", groups=2)


def test_groups_reach_every_stage_of_a_custom_resnext():
    # A ResNeXt-26 the registry does not have, from the same class.
    model = ResNet(Bottleneck, [2, 2, 2, 2], groups=8, width_per_group=16, num_classes=10)
    convs = [b.conv2 for stage in model.stages() for b in stage]
    assert [c.groups for c in convs] == [8] * 8
    assert [c.out_channels for c in convs[::2]] == [128, 256, 512, 1024]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_cli_lists_them_with_parameters_and_macs(capsys):
    assert main(["models", "resnext*"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[2:]] == VARIANTS[:3]
    line = next(line for line in out.splitlines() if line.startswith("resnext50_32x4d"))
    assert line.split()[1:] == ["imagenet", "224x224", "25,028,904", "4.230"]
    assert main(["models", "wide_*"]) == 0
    out = capsys.readouterr().out
    assert "68,883,240" in out and "11.398" in out and "wide_resnet101_2" in out


def test_parity_report_and_compare_cover_the_new_models(one_thread):
    # The package's own parity report (what `resnet-tutorial compare` prints) works for them too.
    report = parity_report("wide_resnet50_2", image_size=64, batch_size=1)
    assert [r["direction"] for r in report["results"]] == [
        "ours -> timm", "timm -> ours", "ours -> torchvision", "torchvision -> ours"
    ]
    assert all(r["ok"] and r["max_abs_diff"] == 0 for r in report["results"]), report
