"""Parameters, multiply-accumulates and stage tables, against the paper's Table 1 and hand counts."""

import pytest
import torch
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial.analysis import count_macs, count_params, format_stage_table, model_table, stage_table


def test_macs_of_a_single_convolution_by_hand():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    # Each of the 8 x 10 x 10 outputs takes 3 x 3 x 3 multiply-accumulates.
    assert count_macs(conv, (1, 3, 10, 10)) == 8 * 10 * 10 * 27


# He et al. (2016a), Table 1, "FLOPs" (multiply-adds) in billions; the bottleneck nets there are v1.
TABLE1 = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


@pytest.mark.parametrize("name,gmacs", TABLE1.items())
def test_macs_match_table1_for_the_paper_architecture(name, gmacs):
    v1 = (
        rt.create_model(name, stride_in_1x1=True)
        if name in ("resnet50", "resnet101", "resnet152")
        else rt.create_model(name)
    )
    measured = count_macs(v1, (1, 3, 224, 224)) / 1e9
    # Table 1 rounds down and counts the 34-layer net slightly lower; within 2 %.
    assert measured == pytest.approx(gmacs, rel=0.02)


def test_v15_costs_more_than_v1():
    v15 = count_macs(rt.create_model("resnet50"), (1, 3, 224, 224))
    v1 = count_macs(rt.create_model("resnet50", stride_in_1x1=True), (1, 3, 224, 224))
    assert round(v15 / 1e9, 1) == 4.1 and round(v1 / 1e9, 1) == 3.9
    assert v15 - v1 > 0.2e9


def test_count_macs_leaves_the_model_untouched():
    model = rt.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (1, 3, 32, 32))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_params_trainable_only():
    model = rt.create_model("resnet20")
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert count_params(model) - count_params(model, trainable_only=True) == frozen


def test_stage_table_shapes_and_totals():
    rows = stage_table(rt.create_model("resnet50"), (1, 3, 224, 224))
    shapes = {r["name"]: r["output_shape"] for r in rows}
    assert shapes["maxpool"] == (1, 64, 56, 56)
    assert shapes["layer1"] == (1, 256, 56, 56)
    assert shapes["layer4"] == (1, 2048, 7, 7)
    assert shapes["fc"] == (1, 1000)
    assert sum(r["params"] for r in rows) == 25_557_032
    assert sum(r["macs"] for r in rows) == count_macs(rt.create_model("resnet50"))
    text = format_stage_table(rows)
    assert "layer4" in text and "25,557,032" in text


def test_model_table_lists_every_model():
    rows = model_table()
    assert [r["model"] for r in rows] == rt.list_models()
    r20 = next(r for r in rows if r["model"] == "resnet20")
    assert r20["input"] == "32x32" and r20["params"] == 269_722
