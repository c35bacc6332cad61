"""The timm/torchvision face of the models: FX tracing, features_only, pretrained tags and cfgs,
reset_classifier, norm_layer, clear argument errors, and initial values as torchvision's."""

import math

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.ops import FrozenBatchNorm2d

import resnet_tutorial as rt
from resnet_tutorial.errors import ConfigError, ModelArgumentError, ModelConfigError, ResnetTutorialError
from resnet_tutorial.models import (
    BasicBlock,
    Bottleneck,
    FeatureMaps,
    GlobalPool,
    PreActResNet,
    ResNet,
    ResNetBase,
    WeightsError,
    model_arguments,
    pretrained_cfg,
    pretrained_tags,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --- FX ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet110", "plain20"])
def test_fx_feature_extractor_matches_the_model(name):
    model = rt.create_model(name).eval()
    size = 64 if name == "resnet50" else 32
    x = torch.randn(2, 3, size, size)
    last = "final_relu" if name.startswith("preact") else model.stage_names[-1]
    extractor = create_feature_extractor(model, {"layer2": "mid", last: "last", "fc": "logits"})
    with torch.no_grad():
        out = extractor(x)
        assert torch.equal(out["logits"], model(x))
        assert torch.equal(out["last"], model.forward_features(x))
    assert out["mid"].shape[1] == model.feature_info[2]["num_chs"]


def test_traced_model_still_checks_its_input():
    extractor = create_feature_extractor(rt.create_model("resnet20"), ["layer1"])
    with pytest.raises(ValueError, match=r"in_chans=1"):
        extractor(torch.randn(2, 1, 32, 32))
    traced = torch.fx.symbolic_trace(rt.create_model("resnet20"))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        traced(torch.randn(3, 32, 32))


def test_preact_final_relu_is_a_module():
    model = rt.create_model("preact_resnet110")
    assert isinstance(model.final_relu, nn.ReLU)
    assert "final_relu" in get_graph_node_names(model)[1]
    assert not hasattr(rt.create_model("resnet20"), "final_relu")  # only a pre-activation net ends with one


# --- features_only ----------------------------------------------------------------------------------


def test_features_only_matches_timm_resnet50():
    ours = rt.create_model("resnet50", features_only=True)
    theirs = timm.create_model("resnet50", features_only=True, pretrained=False)
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # same names, no head
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), theirs.eval()(x), strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)

    ours = rt.create_model("resnet50", features_only=True, out_indices=(1, 3))
    theirs = timm.create_model("resnet50", features_only=True, out_indices=(1, 3), pretrained=False)
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [256, 1024]
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [4, 16]
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # layer4 is dropped, as timm does
    assert [f.shape[1] for f in ours(x)] == [256, 1024]


def test_features_only_on_cifar_and_preact_models():
    model = rt.create_model("resnet20", features_only=True, out_indices=(-1,))
    assert model.feature_info.channels() == [64] and model.feature_info.reduction() == [4]
    full = rt.create_model("preact_resnet110").eval()
    feats = rt.create_model("preact_resnet110", features_only=True).eval()
    feats.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the last map is after the final BN-ReLU, what the head pools
        assert torch.equal(feats(x)[-1], full.forward_features(x))
    assert feats.feature_info.module_name()[-1] == "final_relu"
    with pytest.raises(ModelConfigError, match="out_indices"):
        rt.create_model("resnet20", features_only=True, out_indices=(4,))
    with pytest.raises(ModelArgumentError, match="features_only=True"):
        rt.create_model("resnet20", out_indices=(1,))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "plain20", "preact_resnet110",
                                  "preact_resnet164"])
def test_features_only_maps_are_the_stem_and_the_stages_of_the_model(name):
    """FeatureMaps runs the model's children in order: its maps are what the model computes."""
    model = rt.create_model(name, channels=(4, 8, 8, 8) if "resnet1" in name or name == "resnet50" else (4, 8, 8))
    feats = FeatureMaps(model).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    stage_maps = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: stage_maps.__setitem__(n, o))
             for n in model.stage_names]
    with torch.no_grad():
        maps, last = feats(x), model.forward_features(x)
    for h in hooks:
        h.remove()
    assert len(maps) == len(model.feature_info) == len(model.stage_names) + 1
    stem = model.conv1(x) if name.startswith("preact") else model.relu(model.bn1(model.conv1(x)))
    assert torch.equal(maps[0], stem)
    assert all(torch.equal(m, stage_maps[n]) for m, n in zip(maps[1:-1], model.stage_names[:-1], strict=True))
    assert torch.equal(maps[-1], last)
    assert [m.shape[1] for m in maps] == feats.feature_info.channels()
    assert [32 // r for r in feats.feature_info.reduction()] == [m.shape[-1] for m in maps]  # each map's stride


def test_feature_info_answers_for_one_map_or_several():
    """timm's FeatureInfo: no index gives every selected map's value, an int one map's, a list those maps'."""
    info = rt.create_model("resnet20", features_only=True, out_indices=(1, 2, 3)).feature_info
    assert info.channels() == [16, 32, 64] and info.reduction() == [1, 2, 4]
    assert info.channels(1) == 32 and info.channels([0, 2]) == [16, 64]
    assert info.reduction(-1) == 4 and info.reduction([1, 2]) == [2, 4]
    assert info.module_name(0) == "layer1" and info.module_name([1, 2]) == ["layer2", "layer3"]
    assert [d["index"] for d in info.get_dicts()] == [1, 2, 3] and info[0]["index"] == 1  # which map each is


def test_features_only_takes_indices_from_minus_n_and_keeps_the_cfg():
    """Indices as Python's (resnet20 has 4 maps: -4 is the stem), kept normalised and sorted; the feature model
    keeps the model's pretrained_cfg (the mean and std its input is normalised with)."""
    feats = rt.create_model("resnet20", features_only=True, out_indices=(-1, -4))
    assert feats.out_indices == (0, 3) and feats.feature_info.module_name() == ["relu", "layer3"]
    assert feats.pretrained_cfg == rt.create_model("resnet20").pretrained_cfg and "mean" in feats.pretrained_cfg


def test_features_only_keeps_the_children_up_to_the_last_map():
    model = rt.create_model("preact_resnet110")
    two = FeatureMaps(model, out_indices=(0, 2))
    assert [n for n, _ in two.named_children()] == ["conv1", "maxpool", "layer1", "layer2"]  # no final BN
    assert two.stage_names == ["layer1", "layer2"]
    stem = FeatureMaps(rt.create_model("resnet20"), out_indices=(0,))
    assert [n for n, _ in stem.named_children()] == ["conv1", "bn1", "relu"]
    assert torch.fx.symbolic_trace(two)(torch.randn(1, 3, 32, 32))[1].shape == (1, 32, 16, 16)


# --- pretrained tags and cfgs --------------------------------------------------------------------------


def test_tags_for_every_model_torchvision_has_weights_for():
    for name in rt.list_models(family="imagenet"):
        enum = torchvision.models.get_model_weights(name)
        expected = ["tv_in1k"] + (["tv2_in1k"] if hasattr(enum, "IMAGENET1K_V2") else [])
        assert pretrained_tags(name) == expected
        for tag in expected:
            cfg = rt.create_model(f"{name}.{tag}").pretrained_cfg
            weights = getattr(enum, {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}[tag])
            assert cfg["url"] == weights.url and cfg["source"] == "torchvision" and cfg["tag"] == tag
    assert pretrained_tags("resnet50") == ["tv_in1k", "tv2_in1k"]
    assert pretrained_tags("resnet20") == []


def test_pretrained_cfg_v1_and_v2():
    v1, v2 = pretrained_cfg("resnet50", "tv_in1k"), pretrained_cfg("resnet50", "tv2_in1k")
    assert v1["mean"] == v2["mean"] == (0.485, 0.456, 0.406) and v1["std"] == (0.229, 0.224, 0.225)
    assert v1["input_size"] == v2["input_size"] == (3, 224, 224)
    assert (v1["resize_size"], v2["resize_size"]) == (256, 232)  # V2 evaluates with a larger crop share
    assert v1["top1"] == pytest.approx(76.13) and v2["top1"] == pytest.approx(80.858)
    assert v1["weights"] == "ResNet50_Weights.IMAGENET1K_V1" and v2["weights"] == "ResNet50_Weights.IMAGENET1K_V2"
    assert (v1["crop_pct"], v2["crop_pct"]) == (0.875, 0.9655)  # 224 / 256 and 224 / 232, as timm gives them
    assert v1["num_classes"] == v2["num_classes"] == 1000 and v1["interpolation"] == v2["interpolation"] == "bilinear"
    assert v1["license"] == v2["license"] == "bsd-3-clause"  # torchvision's weights, under its licence
    enum = torchvision.models.ResNet50_Weights  # where to read how each was trained
    assert (v1["recipe"], v2["recipe"]) == (enum.IMAGENET1K_V1.meta["recipe"], enum.IMAGENET1K_V2.meta["recipe"])
    assert v1["recipe"] != v2["recipe"] and v2["recipe"].startswith("https://")
    model = rt.create_model("resnet50.tv2_in1k")
    assert model.default_cfg is model.pretrained_cfg  # the old name, an alias as in timm
    assert rt.create_model("resnet20").pretrained_cfg["tag"] is None
    with pytest.raises(WeightsError, match="resnet18.tv_in1k"):
        rt.create_model("resnet18.tv2_in1k")  # torchvision has only V1 for ResNet-18
    with pytest.raises(WeightsError, match="no pretrained weights"):
        rt.create_model("resnet20.tv_in1k")


V1_FILE, V2_FILE = "resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"  # torchvision's file names


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """torch's hub cache in tmp_path holding two different fake resnet50 state_dicts where torchvision
    looks for V1 and V2; any download fails the test."""

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    states = {}
    for seed, file in enumerate((V1_FILE, V2_FILE)):
        torch.manual_seed(seed)
        states[file] = torchvision.models.resnet50().state_dict()
        torch.save(states[file], tmp_path / "checkpoints" / file)
    yield states
    torch.hub.set_dir(old)


def test_tags_load_torchvision_v1_and_v2(fake_hub):
    v1 = rt.create_model("resnet50.tv_in1k", pretrained=True)
    v2 = rt.create_model("resnet50.tv2_in1k", pretrained=True)
    default = rt.create_model("resnet50", pretrained=True)  # today's default: torchvision's DEFAULT, V2
    assert torch.equal(v1.conv1.weight, fake_hub[V1_FILE]["conv1.weight"])
    assert torch.equal(v2.conv1.weight, fake_hub[V2_FILE]["conv1.weight"])
    assert torch.equal(default.conv1.weight, fake_hub[V2_FILE]["conv1.weight"])
    assert default.pretrained_cfg["tag"] == "tv2_in1k" and v1.pretrained_cfg["tag"] == "tv_in1k"
    assert default.pretrained_cfg["family"] == v1.pretrained_cfg["family"] == "imagenet"
    ten = rt.create_model("resnet50.tv_in1k", pretrained=True, num_classes=10)  # all but the head
    assert torch.equal(ten.layer4[2].conv3.weight, fake_hub[V1_FILE]["layer4.2.conv3.weight"])
    assert ten.fc.out_features == 10
    feats = rt.create_model("resnet50.tv_in1k", pretrained=True, features_only=True, out_indices=(4,))
    assert torch.equal(feats.layer1[0].conv1.weight, fake_hub[V1_FILE]["layer1.0.conv1.weight"])


def test_timm_tags_load_through_timm(monkeypatch):
    import resnet_tutorial.models.weights as w

    asked = []

    def fake_timm(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        return timm.models.resnet50()

    monkeypatch.setattr(timm, "create_model", fake_timm)
    model = rt.create_model("resnet50.a1_in1k", pretrained=True)
    assert asked == [("resnet50.a1_in1k", True)]
    assert model.pretrained_cfg["source"] == "timm" and model.pretrained_cfg["interpolation"] == "bicubic"
    assert model.pretrained_cfg["hf_hub_id"] == timm.models.get_pretrained_cfg("resnet50.a1_in1k").hf_hub_id
    w.load_pretrained(rt.create_model("resnet50"), "resnet50.tv_in1k", source="timm")  # timm's copy of V1
    assert asked[-1] == ("resnet50.tv_in1k", True)


# --- reset_classifier, global_pool, norm_layer -------------------------------------------------------------


def test_reset_classifier_with_global_pool():
    model = rt.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        model.reset_classifier(0, global_pool="max")
        assert torch.equal(model(x), feats.amax((2, 3)))
        model.reset_classifier(5, global_pool="catavgmax")
        assert model.fc.in_features == 128 and model(x).shape == (2, 5)
        assert torch.equal(model.forward_head(feats, pre_logits=True), torch.cat([feats.mean((2, 3)),
                                                                                 feats.amax((2, 3))], 1))
        model.reset_classifier(0, global_pool="avgmax")
        assert torch.allclose(model(x), (feats.mean((2, 3)) + feats.amax((2, 3))) / 2)
    with pytest.raises(ModelConfigError, match="catavgmax"):
        model.reset_classifier(3, global_pool="min")
    assert rt.create_model("resnet20", global_pool="max").global_pool.pool_type == "max"
    assert torch.equal(GlobalPool()(feats), feats.mean((2, 3)))  # the default: average pooling
    single = rt.create_model("resnet20", num_classes=1)  # one logit (a binary classifier) is still a classifier
    assert isinstance(single.fc, nn.Linear) and single(x).shape == (2, 1)


def test_reset_classifier_records_the_classes_and_stays_on_the_models_device():
    model = rt.create_model("resnet20")
    model.reset_classifier(3)
    assert model.num_classes == 3  # what a checkpoint records and `evaluate` compares with the data
    on_meta = rt.create_model("resnet20").to("meta")  # the meta device stands in for a GPU
    on_meta.reset_classifier(4)
    assert on_meta.fc.weight.device.type == "meta" and on_meta.num_classes == 4


def test_norm_layer_frozen_bn_group_norm_and_none():
    frozen = rt.create_model("resnet18", norm_layer=FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert isinstance(frozen.layer2[0].downsample[1], FrozenBatchNorm2d)
    tv = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)
    assert frozen.state_dict().keys() == tv.state_dict().keys()  # torchvision's frozen-BN resnet loads
    frozen.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(frozen.train()(x), tv.train()(x), atol=1e-5)  # frozen even in train()
    plain = rt.create_model("resnet20", norm_layer=nn.Identity)
    assert not any("bn" in k for k in plain.state_dict())
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gn = rt.create_model("preact_resnet110", norm_layer=lambda c: nn.GroupNorm(4, c))
    assert isinstance(gn.final_bn, nn.GroupNorm) and isinstance(gn.layer3[0].bn1, nn.GroupNorm)
    assert torch.equal(gn.final_bn.weight, torch.ones(64))
    plain20 = rt.create_model("plain20", norm_layer=lambda c: nn.GroupNorm(4, c))  # a plain net's blocks too
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain20.modules())


def test_a_plain_net_takes_the_block_options_of_its_residual_twin():
    """shortcut=None keeps every other option: the plain twin of a v1 ResNeXt has its grouped, 1x1-strided blocks."""
    plain = ResNet(Bottleneck, [1, 1], channels=(4, 8), shortcut=None, groups=2, width_per_group=32,
                   stride_in_1x1=True)
    block = plain.layer2[0]
    assert not block.residual and block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.conv2.groups == 2 and block.conv2.in_channels == 8  # 8 * 32 / 64 channels per group, 2 groups


# --- clear errors ------------------------------------------------------------------------------------


def test_unknown_create_model_arguments_name_the_valid_ones():
    with pytest.raises(ModelArgumentError, match="Did you mean 'num_classes'") as info:
        rt.create_model("resnet20", num_clases=3)
    assert "in_chans" in str(info.value) and "norm_layer" in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ResnetTutorialError)
    with pytest.raises(ModelArgumentError, match="Did you mean 'num_classes', 'in_chans'\\?"):
        rt.create_model("resnet20", num_clases=3, in_chan=1)  # one suggestion per misspelt argument
    with pytest.raises(ModelArgumentError, match=r"no argument 'colour'\. Its arguments: "):
        rt.create_model("resnet20", colour=True)  # nothing close: no suggestion


@pytest.mark.parametrize("name, family, size", [("resnet20", "cifar", 32), ("plain20", "plain-cifar", 32),
                                                ("preact_resnet110", "preact-cifar", 32),
                                                ("resnet18", "imagenet", 224)])
def test_a_model_without_weights_describes_its_family_and_input_size(name, family, size):
    cfg = rt.create_model(name).pretrained_cfg
    assert cfg["family"] == family and cfg["input_size"] == (3, size, size) and cfg["source"] is None
    assert cfg["mean"] is None and cfg["std"] is None  # no weights: no normalisation they were trained with


@pytest.mark.parametrize("kwargs, needle", [
    (dict(stem="deep"), "stem must be 'imagenet' or 'cifar'"),
    (dict(shortcut="D"), "shortcut must be 'A', 'B' or 'C'"),
    (dict(channels=(16, 0, 64)), "every stage needs at least one block and one channel"),
    (dict(num_classes=-1), "num_classes must be 0"),
    (dict(in_chans=0), "in_chans must be at least 1"),
    (dict(drop_rate=1.0), "drop_rate must be in"),
])
def test_bad_resnet_arguments_are_the_packages_error(kwargs, needle):
    with pytest.raises(ModelConfigError, match=needle) as info:
        rt.create_model("resnet20", **kwargs)
    assert isinstance(info.value, ValueError)  # still a ValueError for code that catches one


def test_bad_stage_table():
    from resnet_tutorial.models import BasicBlock, ResNet

    with pytest.raises(ModelConfigError, match="one channel width per stage"):
        ResNet(BasicBlock, [2, 2], channels=(16, 32, 64))
    with pytest.raises(ModelConfigError, match="block must be a block class"):
        ResNet(nn.Conv2d, [2, 2, 2])
    with pytest.raises(ModelConfigError, match="every stage needs at least one block"):
        ResNet(BasicBlock, [2, 0], channels=(16, 32))


def test_the_smallest_arguments_that_make_a_net_are_accepted():
    """The bounds are inclusive: a stage of one channel, no classifier (num_classes=0: the pooled features)."""
    x = torch.randn(2, 3, 16, 16)
    assert ResNet(BasicBlock, [1, 1], channels=(1, 2), stem="cifar", num_classes=3)(x).shape == (2, 3)
    features = ResNet(BasicBlock, [1, 1], channels=(4, 8), stem="cifar", num_classes=0)
    assert isinstance(features.fc, nn.Identity) and features(x).shape == (2, 8) and features.num_classes == 0
    assert features.pretrained_cfg == {} == features.default_cfg  # a net built by hand has an empty cfg, not None


def test_resnet_and_preact_resnet_refuse_each_others_blocks():
    from resnet_tutorial.models import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck

    for block in (PreActBasicBlock, PreActBottleneck):
        with pytest.raises(ModelConfigError, match=f"{block.__name__} is a pre-activation block.*PreActResNet"):
            ResNet(block, [1, 1], channels=(4, 8))
    for block in (BasicBlock, Bottleneck):
        with pytest.raises(ModelConfigError, match=f"{block.__name__} is not a pre-activation block.*ResNet"):
            PreActResNet(block, [1, 1], channels=(4, 8))
    with pytest.raises(ModelConfigError, match="block must be a block class"):
        PreActResNet(nn.Conv2d, [2, 2, 2])


def test_preact_nets_take_no_shortcut_option():
    """A pre-activation net always projects where the shape changes: it takes no shortcut or stride_in_1x1,
    which ResNet used to accept and ignore for it."""
    model = rt.create_model("preact_resnet110")
    assert isinstance(model, PreActResNet) and isinstance(model, ResNetBase) and not isinstance(model, ResNet)
    assert isinstance(rt.create_model("resnet20"), ResNetBase)
    for key in ("shortcut", "stride_in_1x1"):
        assert key not in model_arguments("preact_resnet164") and key in model_arguments("resnet20")
        assert not hasattr(model, key)
    with pytest.raises(ModelArgumentError, match="preact_resnet110 takes no argument 'shortcut'"):
        rt.create_model("preact_resnet110", shortcut="A")
    assert "groups" in model_arguments("preact_resnet164") and "norm_layer" in model_arguments("preact_resnet110")


def test_preact_resnet_built_directly_has_the_imagenet_stem_and_its_options():
    """The class itself, not only the zoo's CIFAR nets: 1000 classes, a 7x7 stride-2 stem and max-pool (the maps
    at the strides feature_info gives), no zeroed branch, and ResNeXt groups as asked."""
    from resnet_tutorial.models import PreActBottleneck

    torch.manual_seed(0)
    net = PreActResNet(PreActBottleneck, [1, 1], channels=(4, 8), groups=2, width_per_group=32)
    assert net.num_classes == 1000 and net.fc.out_features == 1000
    conv2 = net.layer1[0].conv2
    assert conv2.groups == 2 and conv2.in_channels == 4  # 4 * 32 / 64 channels per group, 2 groups
    assert all(block.conv3.weight.abs().sum() > 0 for block in (net.layer1[0], net.layer2[0]))  # not zeroed
    feats = FeatureMaps(net).eval()
    with torch.no_grad():
        maps = feats(torch.randn(2, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // r for r in feats.feature_info.reduction()] == [32, 16, 8]


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110"])
def test_drop_rate_drops_pooled_features_in_training_only(name):
    torch.manual_seed(0)
    model = rt.create_model(name, num_classes=7, drop_rate=0.25, channels=(4, 8, 8))
    assert model.num_classes == 7 and model.drop_rate == 0.25
    ones = torch.ones(2, 8, 2, 2)
    assert torch.equal(model.eval().forward_head(ones, pre_logits=True), torch.ones(2, 8))  # eval: no dropout
    pooled = model.train().forward_head(ones, pre_logits=True)  # p=0.25 in training: each 1 -> 0 or 4/3
    assert sorted(set(pooled.unique().tolist())) == pytest.approx([0.0, 4 / 3])


def test_bogus_profile_is_a_config_error(monkeypatch):
    from resnet_tutorial.runtime import get_profile

    monkeypatch.setenv("RESNET_TUTORIAL_PROFILE", "bogus")
    with pytest.raises(ConfigError, match="cpu, gpu, paper.*'bogus'.*unset it") as info:
        get_profile()
    assert isinstance(info.value, ValueError)


# --- initial values: torchvision's scheme, with margins a wrong init fails ------------------------------


def test_new_model_bn_is_the_identity():
    for name in ("resnet50", "resnet20", "preact_resnet164"):
        for m in rt.create_model(name).modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.equal(m.weight, torch.ones_like(m.weight))
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
                assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_conv_init_is_kaiming_normal_fan_out_relu():
    """Every large conv's weights have mean 0 and std sqrt(2 / fan_out), fan_out = out_channels * k * k.

    The margins tell the alternatives apart: fan_in (PyTorch's default kaiming_uniform, a=sqrt(5))
    differs by a factor of at least 1.7 in std on these layers, and a uniform init has kurtosis 1.8
    instead of a normal's 3.
    """
    torch.manual_seed(0)
    model = rt.create_model("resnet50")
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 20_000:
            w = m.weight.detach().double().flatten()
            k = m.kernel_size[0] * m.kernel_size[1]
            expected = math.sqrt(2.0 / (m.out_channels * k))
            fan_in_std = math.sqrt(2.0 / (m.in_channels * k))
            assert abs(w.mean()) < 4 * expected / math.sqrt(w.numel()), name
            assert w.std().item() == pytest.approx(expected, rel=0.05), name
            if abs(fan_in_std / expected - 1) > 0.2:  # where fan_in and fan_out differ, it is fan_out
                assert abs(w.std().item() / fan_in_std - 1) > 0.15, name
            kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item()
            assert kurtosis == pytest.approx(3.0, abs=0.3), name  # normal, not uniform (1.8)
            checked += 1
    assert checked >= 40
    default = nn.Conv2d(256, 256, 3)  # the check fails PyTorch's default init
    assert abs(default.weight.std().item() / math.sqrt(2.0 / (256 * 9)) - 1) > 0.05


def test_linear_init_is_torchvision_default():
    torch.manual_seed(0)
    ours = rt.create_model("resnet50").fc
    bound = 1 / math.sqrt(ours.in_features)  # nn.Linear's default, which torchvision keeps
    assert ours.weight.abs().max() <= bound and ours.weight.abs().max() > 0.99 * bound
    assert ours.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_init_weights_starts_a_used_model_afresh():
    """Called again (say, on a trained model), init_weights resets every norm layer to the identity and zeroes no
    branch unless asked."""
    model = rt.create_model("resnet20", norm_layer=lambda c: nn.GroupNorm(4, c))
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    with torch.no_grad():
        for m in norms:
            m.weight.fill_(0.5)
            m.bias.fill_(0.3)
    model.init_weights()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)


def test_zero_init_last_without_a_norm_weight_is_a_clear_error():
    with pytest.raises(ModelConfigError, match="zero_init_last=False"):
        rt.create_model("resnet20", norm_layer=nn.Identity, zero_init_last=True)
    gn = rt.create_model("preact_resnet110", norm_layer=lambda c: nn.GroupNorm(4, c), zero_init_last=True)
    assert gn.layer1[0].conv2.weight.abs().sum() == 0  # pre-activation: the last conv is zeroed


def test_torch_compile_traces_the_checked_forward():
    model = rt.create_model("resnet20", channels=(4, 8, 16)).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


def test_list_pretrained():
    assert rt.models.list_pretrained("resnet50.*") == ["resnet50.tv_in1k", "resnet50.tv2_in1k"]
    assert rt.models.list_pretrained() == [
        "resnet18.tv_in1k", "resnet34.tv_in1k", "resnet50.tv_in1k", "resnet50.tv2_in1k",
        "resnet101.tv_in1k", "resnet101.tv2_in1k", "resnet152.tv_in1k", "resnet152.tv2_in1k",
        "resnext50_32x4d.tv_in1k", "resnext50_32x4d.tv2_in1k", "resnext101_32x8d.tv_in1k",
        "resnext101_32x8d.tv2_in1k", "resnext101_64x4d.tv_in1k",  # torchvision has no V2 of 64x4d
        "wide_resnet50_2.tv_in1k", "wide_resnet50_2.tv2_in1k", "wide_resnet101_2.tv_in1k",
        "wide_resnet101_2.tv2_in1k",
    ]


def test_a_model_with_a_lambda_norm_layer_pickles(tmp_path):
    model = rt.create_model("resnet20", norm_layer=lambda c: nn.GroupNorm(4, c))
    torch.save(model, tmp_path / "whole.pt")  # no lambda kept on the model
    assert isinstance(torch.load(tmp_path / "whole.pt", weights_only=False).layer1[0].bn1, nn.GroupNorm)
