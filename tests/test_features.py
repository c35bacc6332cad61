"""The backbone helpers: features, neighbours, projection, stage outputs and class activation maps."""

import pytest
import torch

from resnet_tutorial import create_model
from resnet_tutorial.features import (
    class_activation_map,
    extract_features,
    nearest_neighbours,
    neighbour_precision,
    project_2d,
    stage_outputs,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("resnet20", in_chans=1, num_classes=4, channels=(4, 8, 16))
    # Non-trivial BN statistics and a non-zero classifier, so the checks below can fail.
    m.train()
    with torch.no_grad():
        m(torch.randn(16, 1, 12, 12))
        m.fc.bias.normal_()
    return m.eval()


def test_extract_features_matches_forward_head_and_keeps_mode(model):
    x = torch.randn(7, 1, 12, 12)
    model.train()
    feats = extract_features(model, x, batch_size=3)
    assert model.training  # restored
    model.eval()
    assert feats.shape == (7, 16)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(model.fc(feats), logits)


def test_extract_features_rejects_a_single_image(model):
    with pytest.raises(ValueError, match="N, C, H, W"):
        extract_features(model, torch.randn(1, 12, 12))


def test_nearest_neighbours_cosine_and_euclidean():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([[2.0, 0.1]])
    idx, score = nearest_neighbours(q, bank, k=2)
    # cosine ignores the length: [1, 0] and [10, 1] point the same way as the query
    assert set(idx[0].tolist()) == {0, 2}
    assert score[0, 0] >= score[0, 1]
    idx_e, score_e = nearest_neighbours(q, bank, k=1, metric="euclidean")
    assert idx_e.tolist() == [[0]]
    assert score_e[0, 0] == pytest.approx(-torch.dist(q[0], bank[0]).item())


def test_nearest_neighbours_exclude_self_never_returns_the_query():
    torch.manual_seed(0)
    bank = torch.randn(20, 5)
    idx, _ = nearest_neighbours(bank, bank, k=3, exclude_self=True)
    assert not (idx == torch.arange(20)[:, None]).any()
    idx_self, _ = nearest_neighbours(bank, bank, k=1)
    assert idx_self[:, 0].tolist() == list(range(20))


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=5), dict(metric="manhattan")])
def test_nearest_neighbours_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        nearest_neighbours(torch.randn(2, 3), torch.randn(4, 3), **{"k": 1, **kwargs})


def test_neighbour_precision():
    bank_labels = torch.tensor([0, 0, 1, 1])
    query_labels = torch.tensor([0, 1])
    indices = torch.tensor([[0, 2], [2, 3]])
    assert neighbour_precision(query_labels, bank_labels, indices) == pytest.approx(0.75)


def test_project_2d_finds_the_direction_of_largest_variance():
    torch.manual_seed(0)
    t = torch.randn(200)
    x = torch.stack([3 * t, 0.1 * torch.randn(200), 0.01 * torch.randn(200)], dim=1) + 5
    p = project_2d(x)
    assert p.shape == (200, 2)
    assert p.mean(0).abs().max() < 1e-4
    corr = torch.corrcoef(torch.stack([p[:, 0], t]))[0, 1]
    assert corr > 0.999  # sign fixed so that the largest loading is positive
    assert p[:, 0].var() > 100 * p[:, 1].var()


def test_stage_outputs_shapes(model):
    maps = stage_outputs(model, torch.randn(2, 1, 12, 12))
    assert list(maps) == ["stem", "layer1", "layer2", "layer3"]
    assert [tuple(m.shape) for m in maps.values()] == [(2, 4, 12, 12), (2, 4, 12, 12), (2, 8, 6, 6), (2, 16, 3, 3)]


def test_stage_outputs_last_map_is_forward_features(model):
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(stage_outputs(model, x)["layer3"], model.forward_features(x))


def test_stage_outputs_of_a_preact_net_include_its_final_bn_and_keep_the_mode():
    from resnet_tutorial.gradflow import cifar_net

    torch.manual_seed(0)
    net = cifar_net(8, preact=True, in_chans=1, num_classes=4, channels=(4, 8))
    with torch.no_grad():  # non-trivial statistics for the final BN, so leaving it out would show
        net.final_bn.running_mean.normal_()
        net.final_bn.running_var.uniform_(0.5, 2.0)
    net.train()
    x = torch.randn(3, 1, 12, 12)
    maps = stage_outputs(net, x)
    assert net.training  # restored
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(maps["stem"], net.conv1(x))
        torch.testing.assert_close(maps["layer2"], net.forward_features(x))
        assert (maps["layer2"] >= 0).all()  # after the final ReLU
        assert not torch.allclose(maps["layer2"], net.layer2(net.layer1(net.conv1(x))))


def test_class_activation_map_averages_to_the_logit(model):
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        logits = model(x)
    maps, classes = class_activation_map(model, x, upsample=False)
    assert maps.shape == (5, 3, 3)
    assert classes.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(maps.mean(dim=(1, 2)), logits.max(dim=1).values)
    maps2, classes2 = class_activation_map(model, x, class_idx=2)
    assert maps2.shape == (5, 12, 12) and classes2.tolist() == [2] * 5
    torch.testing.assert_close(class_activation_map(model, x, class_idx=2, upsample=False)[0].mean(dim=(1, 2)),
                               logits[:, 2])


def test_class_activation_map_needs_a_linear_classifier():
    m = create_model("resnet20", num_classes=0, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="linear classifier"):
        class_activation_map(m, torch.randn(1, 3, 8, 8))
