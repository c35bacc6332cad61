"""The models: parity with torchvision and timm, the paper's sizes, every registered model, bad input."""

import pytest
import timm
import torch
import torchvision
from torch import nn

import resnet_tutorial as rt
from resnet_tutorial.errors import ModelConfigError
from resnet_tutorial.models import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    PreActResNet,
    ResNet,
    UnknownModelError,
    WeightsError,
    clean_state_dict,
    load_pretrained,
    model_family,
)
from resnet_tutorial.models.blocks import make_shortcut
from resnet_tutorial.reference import parity_report, randomize_batchnorm

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", rt.list_models(family="imagenet"))  # ResNet, ResNeXt and Wide ResNet
def test_state_dict_keys_and_shapes_match_torchvision_and_timm(name):
    with torch.device("meta"):  # no memory, no initialisation: the shapes are all we need
        ours = _shapes(rt.create_model(name))
        tv = _shapes(torchvision.models.get_model(name, weights=None))
        tm = _shapes(timm.create_model(name, pretrained=False))
    assert ours == tv
    assert ours == tm


@pytest.mark.parametrize("name", IMAGENET)
def test_outputs_equal_both_libraries_in_both_directions(name):
    # 64x64 keeps the suite fast on two cores; every layer still runs (the last stage sees 2x2).
    report = parity_report(name, image_size=64, batch_size=2)
    assert len(report["results"]) == 4
    for r in report["results"]:
        assert r["ok"], r
        assert r["rel_diff"] <= 1e-5


def test_parity_would_notice_a_wrong_weight():
    # The check is not vacuous: perturb one BN statistic after loading and the outputs differ.
    gen = torch.Generator().manual_seed(0)
    ours = randomize_batchnorm(rt.create_model("resnet18"), gen).eval()
    theirs = torchvision.models.resnet18().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.layer3[1].bn2.running_var.mul_(1.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() > 1e-4


# He et al. (2016a), Table 6: parameters of the CIFAR-10 ResNets (option A), in millions.
TABLE6 = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet1202": 19.4,
}


@pytest.mark.parametrize("name,millions", TABLE6.items())
def test_cifar_parameter_counts_match_table6(name, millions):
    params = sum(p.numel() for p in rt.create_model(name).parameters())
    digits = 2 if millions < 1 else 1
    assert round(params / 1e6, digits) == millions


def test_the_cifar_stem_is_one_3x3_convolution_without_bias():
    """He et al. (2016a, Sec. 4.2): "The first layer is 3x3 convolutions", at the input's 32x32, followed by BN."""
    model = rt.create_model("resnet20")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.bias is None
    assert sum(p.numel() for p in model.parameters()) == 269_722  # Table 6's 0.27M, to the parameter


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twins_have_the_same_layers_as_option_a_resnets(depth):
    plain, res = rt.create_model(f"plain{depth}"), rt.create_model(f"resnet{depth}")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in res.state_dict().items()
    }
    assert all(not b.residual and b.downsample is None for stage in plain.stages() for b in stage)
    assert plain.shortcut is None and res.shortcut == "A"


def test_a_plain_net_is_a_resnet_without_shortcuts():
    """shortcut=None is the plain network: the same layers as option A's ResNet, no addition in forward;
    the plain twins of the zoo are exactly that, and take no shortcut option of their own."""
    torch.manual_seed(0)
    plain = ResNet(BasicBlock, [1, 1], channels=(4, 8), stem="cifar", shortcut=None, num_classes=3).eval()
    torch.manual_seed(0)
    res = ResNet(BasicBlock, [1, 1], channels=(4, 8), stem="cifar", shortcut="A", num_classes=3).eval()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), res.state_dict().values(), strict=True))
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(plain(x), res(x))  # the shortcuts' additions are what differ
    for block in (plain.layer1[0], plain.layer2[0]):  # no shortcut: the block is its branch and a ReLU
        assert torch.equal(block(x := torch.randn(2, block.conv1.in_channels, 8, 8)),
                           torch.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))))
    assert rt.create_model("plain20").shortcut is None
    with pytest.raises(ModelConfigError, match="plain network has no shortcuts"):
        rt.create_model("plain20", shortcut="B")
    with pytest.raises(ModelConfigError, match="or None for a plain network"):
        ResNet(BasicBlock, [1, 1], channels=(4, 8), shortcut="D")


def test_imagenet_parameter_counts_match_torchvision():
    for name in IMAGENET:
        ours = sum(p.numel() for p in rt.create_model(name).parameters())
        theirs = sum(p.numel() for p in torchvision.models.get_model(name).parameters())
        assert ours == theirs


def test_preact_sizes_match_identity_mappings_paper():
    # He et al. (2016b), Table 5 / Sec. 5: pre-activation ResNet-164 has 1.7M parameters.
    assert round(sum(p.numel() for p in rt.create_model("preact_resnet164").parameters()) / 1e6, 1) == 1.7
    assert round(sum(p.numel() for p in rt.create_model("preact_resnet110").parameters()) / 1e6, 1) == 1.7


def _input_for(name):
    return torch.randn(2, 3, 64, 64) if model_family(name).endswith("imagenet") else torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name", rt.list_models())
def test_every_registered_model_runs_forward_and_backward(name):
    model = rt.create_model(name, num_classes=7)
    x = _input_for(name)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    if name != "resnet1202":  # its backward is 600 blocks deep; the forward suffices there
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_list_models_filters():
    assert rt.list_models("resnet1*") == ["resnet18", "resnet101", "resnet152", "resnet110", "resnet1202"]
    assert rt.list_models(family="plain-imagenet") == ["plain18", "plain34"]
    assert len(rt.list_models()) == 25


def test_a_registered_factory_is_listed_built_and_described_by_its_family(monkeypatch):
    """register_model, as the zoo uses it: the factory is found by its name, in its family, with its class's
    arguments; a name registered twice is refused."""
    from resnet_tutorial.models import registry

    for table in ("_MODELS", "_FAMILY", "_CLASS"):  # leave the registry as it was
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))

    def tiny_net(**kwargs):
        return ResNet(BasicBlock, [1], channels=(4,), stem="cifar", **kwargs)

    registry.register_model("tiny")(tiny_net)
    assert rt.list_models(family="tiny") == ["tiny_net"] and model_family("tiny_net") == "tiny"
    assert "num_classes" in registry.model_arguments("tiny_net")  # the class's arguments, through **kwargs
    assert not {"self", "block", "layers"} & set(registry.model_arguments("tiny_net"))  # not the zoo's to give
    assert rt.create_model("tiny_net", num_classes=3).fc.out_features == 3
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_model("tiny")(tiny_net)


def test_unknown_model_names_the_closest_ones():
    with pytest.raises(UnknownModelError, match="'resnet50'") as info:
        rt.create_model("resnet05")
    assert "list_models" in str(info.value)
    with pytest.raises(UnknownModelError, match=r"unknown model 'vgg16'\. resnet_tutorial.list_models\(\)"):
        rt.create_model("vgg16")  # nothing close: no "Did you mean" at all


def _suggested(err) -> list[str]:
    """The names a "Did you mean 'a', 'b'?" hint of ``err`` offers."""
    hint = str(err.value).split("Did you mean ", 1)[1].split("?", 1)[0]
    return [name.strip("'") for name in hint.split(", ")]


def test_an_unknown_model_suggests_at_most_three_registered_names_and_loose_matches_too():
    with pytest.raises(UnknownModelError) as info:
        rt.create_model("resnet05")  # a dozen ResNets are close: the three closest are offered
    assert len(_suggested(info)) == 3 and "resnet50" in _suggested(info)
    assert set(_suggested(info)) <= set(rt.list_models())
    with pytest.raises(UnknownModelError) as info:
        rt.create_model("preact")  # half the letters of their names are enough to be offered
    assert sorted(_suggested(info)) == rt.list_models("preact*")


def test_wrong_number_of_input_channels_gets_a_clear_message():
    model = rt.create_model("resnet20")
    with pytest.raises(ValueError, match=r"in_chans=1"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(4, 10\)$"):  # not an image at all: no hint
        model(torch.randn(4, 10))
    gray = rt.create_model("resnet20", in_chans=1)
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_timm_model_face():
    model = rt.create_model("resnet50")
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2048, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 2048)
    assert torch.equal(model.forward_head(feats), model.fc(model.forward_head(feats, pre_logits=True)))
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5 and model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 2048)
    assert [f["reduction"] for f in rt.create_model("resnet50").feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in rt.create_model("resnet20").feature_info] == [16, 16, 32, 64]


def test_v1_strides_the_first_1x1_and_v15_the_3x3():
    v15 = rt.create_model("resnet50")
    v1 = rt.create_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v1.state_dict().keys() == v15.state_dict().keys()


def test_a_basic_block_is_the_same_in_v1_and_v15():
    """Every block takes stride_in_1x1; a basic block has no 1x1 convolution to stride, so it is the same."""
    torch.manual_seed(0)
    v15 = rt.create_model("resnet18")
    torch.manual_seed(0)
    v1 = rt.create_model("resnet18", stride_in_1x1=True)
    assert v1.stride_in_1x1 and v1.layer2[0].conv1.stride == (2, 2)
    assert all(torch.equal(a, b) for a, b in zip(v1.state_dict().values(), v15.state_dict().values(), strict=True))
    block = BasicBlock(16, 32, 2, PadShortcut(16, 32, 2), stride_in_1x1=True)
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_shortcut_options_a_b_c():
    a, b, c = (rt.create_model("resnet20", shortcut=s) for s in "ABC")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert isinstance(a.layer2[0].downsample, PadShortcut)
    assert a.layer1[0].downsample is None and b.layer1[0].downsample is None
    assert isinstance(c.layer1[0].downsample, nn.Sequential)
    assert count(a) < count(b) < count(c)
    # Option B adds exactly two 1x1 projections with BN: 16->32 and 32->64.
    assert count(b) - count(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_a_shortcut_pads_zero_channels_and_subsamples():
    sc = PadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_zero_init_last_makes_a_block_the_identity(block):
    torch.manual_seed(0)
    channels = 16 * block.expansion
    b = block(channels, 16)
    b.zero_init_last()
    b.eval()
    x = torch.rand(2, channels, 8, 8)  # non-negative, as the output of the previous block's ReLU
    assert torch.equal(b(x), x)


@pytest.mark.parametrize("block", [PreActBasicBlock, PreActBottleneck])
def test_zero_init_last_makes_a_preact_block_the_identity_on_any_input(block):
    """A pre-activation block adds its branch to x and applies nothing after: x, signed or not."""
    torch.manual_seed(0)
    channels = 16 * block.expansion
    b = block(channels, 16).eval()
    x = torch.randn(2, channels, 8, 8)
    assert not torch.allclose(b(x), x)
    b.zero_init_last()
    assert torch.equal(b(x), x)


@pytest.mark.parametrize("block", [PreActBasicBlock, PreActBottleneck])
def test_a_preact_block_without_normalisation_adds_its_branch_to_its_input_untouched(block):
    """With norm_layer=nn.Identity (gradflow.remove_batchnorm does the same) the branch begins with relu(x): it
    must not turn the block's input, which the shortcut adds, into relu(x)."""
    torch.manual_seed(0)
    channels = 8 * block.expansion
    b = block(channels, 8, norm_layer=nn.Identity)
    b.zero_init_last()
    x = torch.randn(2, channels, 4, 4)
    given = x.clone()
    assert torch.equal(b(given), x) and torch.equal(given, x)


def test_a_preact_net_without_normalisation_leaves_every_block_output_as_it_was_made():
    """Forward hooks and feature maps see what each block returned: the final ReLU must not change the last
    block's output in place (without normalisation, final_bn(x) is that output itself)."""
    torch.manual_seed(0)
    net = PreActResNet(PreActBasicBlock, [1, 1], channels=(4, 8), stem="cifar", norm_layer=nn.Identity).eval()
    kept = []
    for stage in net.stages():
        stage[-1].register_forward_hook(lambda module, args, out: kept.append((out, out.clone())))
    net(torch.randn(2, 3, 8, 8))
    assert len(kept) == 2 and all(torch.equal(out, copy) for out, copy in kept)
    assert (kept[-1][1] < 0).any()  # there was something for a ReLU to change


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck])
def test_a_block_by_default_keeps_the_shape_with_one_group_of_64_wide_channels_and_batch_norm(block):
    channels = 64 * block.expansion
    b = block(channels, 64)
    x = torch.randn(2, channels, 4, 4)
    assert b(x).shape == x.shape
    assert all(c.stride == (1, 1) and c.groups == 1 for c in b.modules() if isinstance(c, nn.Conv2d))
    assert b.conv2.in_channels == 64 and b.conv2.out_channels == 64  # planes: width_per_group 64
    norms = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == sum(isinstance(m, nn.Conv2d) for m in b.modules())


def test_a_bottleneck_strides_its_3x3_by_default():
    """ResNet v1.5, torchvision's and timm's: the stride on the 3x3, not on the first 1x1."""
    b = Bottleneck(64, 16, stride=2, downsample=make_shortcut("B", 64, 64, 2))
    assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)
    assert b(torch.randn(1, 64, 8, 8)).shape == (1, 64, 4, 4)


def test_option_a_subsamples_without_widening():
    sc = make_shortcut("A", 8, 8, 2)
    x = torch.randn(2, 8, 6, 6)
    assert isinstance(sc, PadShortcut) and torch.equal(sc(x), x[:, :, ::2, ::2])


def test_zero_init_last_is_off_by_default_and_on_when_asked():
    assert rt.create_model("resnet18").layer1[0].bn2.weight.abs().sum() > 0
    assert rt.create_model("resnet18", zero_init_last=True).layer1[0].bn2.weight.abs().sum() == 0
    assert rt.create_model("resnet50", zero_init_last=True).layer1[0].bn3.weight.abs().sum() == 0
    # A plain net is never zero-initialised: it would pass nothing on.
    assert rt.create_model("plain20", zero_init_last=True).layer1[0].bn2.weight.abs().sum() > 0


def test_checkpoint_path_loads_dataparallel_and_package_checkpoints(tmp_path):
    source = rt.create_model("resnet20")
    dp = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save(dp, tmp_path / "dp.pt")
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for f in ("dp.pt", "ckpt.pt"):
        loaded = rt.create_model("resnet20", checkpoint_path=str(tmp_path / f))
        assert all(
            torch.equal(a, b)
            for a, b in zip(loaded.state_dict().values(), source.state_dict().values(), strict=True)
        )
    assert list(clean_state_dict({"module._orig_mod.fc.weight": torch.zeros(1)})) == ["fc.weight"]


def test_bad_weight_files_get_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        rt.create_model("resnet20", checkpoint_path=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="truncated or not a checkpoint"):
        rt.create_model("resnet20", checkpoint_path=str(tmp_path / "junk.pt"))
    torch.save(rt.create_model("resnet20", num_classes=100).state_dict(), tmp_path / "c100.pt")
    with pytest.raises(WeightsError, match=r"fc.weight: file \(100, 64\) vs model \(10, 64\)"):
        rt.create_model("resnet20", checkpoint_path=str(tmp_path / "c100.pt"))
    with pytest.raises(WeightsError, match="only"):
        load_pretrained(rt.create_model("resnet20"), "resnet20")
