"""Tests of resnet_tutorial.gradflow: nets without BN, any-depth CIFAR nets, gradients, deleting blocks."""

import pytest
import torch
from torch import nn

from resnet_tutorial import create_model
from resnet_tutorial.gradflow import (
    DeletedBlock,
    calibrate_batchnorm,
    changes_shape,
    cifar_net,
    delete_block,
    deletion_study,
    evaluate_accuracy,
    lag_correlation,
    named_blocks,
    remove_batchnorm,
    slopes_along_line,
)
from resnet_tutorial.models import BasicBlock, PreActBasicBlock, ResNet
from resnet_tutorial.models.blocks import Bottleneck, PreActBottleneck, make_shortcut


def test_cifar_net_matches_registered_models():
    torch.manual_seed(0)
    ours = cifar_net(20)
    ref = create_model("resnet20")
    assert [k for k in ours.state_dict()] == [k for k in ref.state_dict()]
    plain = cifar_net(56, residual=False)
    assert not any(b.residual for _, b in named_blocks(plain))
    assert len(named_blocks(plain)) == 27
    pre = cifar_net(20, preact=True, channels=(8, 16, 32), in_chans=1)
    assert all(isinstance(b, PreActBasicBlock) for _, b in named_blocks(pre))
    assert pre(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_cifar_net_without_batchnorm_has_the_same_convolutions():
    torch.manual_seed(0)
    with_bn = cifar_net(20, channels=(4, 8, 16))
    torch.manual_seed(0)
    without = cifar_net(20, channels=(4, 8, 16), batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    convs = {k: v for k, v in with_bn.state_dict().items() if "bn" not in k}
    assert list(without.state_dict()) == list(convs)
    assert all(torch.equal(without.state_dict()[k], v) for k, v in convs.items())


@pytest.mark.parametrize("depth", [19, 4])
def test_cifar_net_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_net(depth)


def test_preact_plain_is_rejected():
    with pytest.raises(ValueError, match="plain"):
        cifar_net(20, preact=True, residual=False)


@pytest.mark.parametrize("preact", [False, True])
def test_remove_batchnorm(preact):
    model = cifar_net(20, preact=preact, channels=(4, 8, 16))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0
    n_params = sum(p.numel() for p in model.parameters())
    remove_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # Each BN had 2 * C parameters; only those are gone, the convolutions are untouched.
    assert sum(p.numel() for p in model.parameters()) < n_params
    x = torch.randn(3, 3, 32, 32)
    model.train()
    y1 = model(x)
    model.eval()
    # Without BN, train and eval mode compute the same function.
    assert torch.allclose(y1, model(x))


def test_changes_shape():
    model = cifar_net(20, channels=(4, 8, 16))
    flags = {name: changes_shape(b) for name, b in named_blocks(model)}
    assert flags["layer1.0"] is False
    assert flags["layer2.0"] is True and flags["layer3.0"] is True
    assert flags["layer2.1"] is False


def test_changes_shape_is_whether_the_output_has_another_shape():
    """Widening, striding or both, for basic and bottleneck blocks (the bottleneck's stride is on its 3x3, its
    widening on its last 1x1), against the shape the block really outputs."""
    bn = nn.BatchNorm2d
    blocks = [
        BasicBlock(4, 4),
        BasicBlock(4, 8, 1, make_shortcut("B", 4, 8, 1, bn)),  # wider, same size
        BasicBlock(4, 4, 2, make_shortcut("B", 4, 4, 2, bn)),  # smaller, same width
        Bottleneck(16, 4),  # 16 -> 4 -> 4 -> 16: the identity block of a ResNet-50 stage
        Bottleneck(16, 4, 2, make_shortcut("B", 16, 16, 2, bn)),
        Bottleneck(8, 4, 1, make_shortcut("B", 8, 16, 1, bn)),
        PreActBottleneck(16, 4),
        PreActBottleneck(16, 4, 2, make_shortcut("B", 16, 16, 2, bn)),
    ]
    x = torch.randn(2, 16, 8, 8)
    for block in blocks:
        inp = x[:, : block.conv1.in_channels]
        with torch.no_grad():
            out = block.eval()(inp)
        assert changes_shape(block) == (out.shape != inp.shape), block


def test_deleted_residual_block_is_its_shortcut():
    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16)).eval()
    x = torch.relu(torch.randn(2, 4, 32, 32))  # the output of a ReLU, as a block receives it
    block = model.layer1[1]
    assert torch.equal(DeletedBlock(block)(x), x)
    down = model.layer2[0]
    y = DeletedBlock(down)(x)
    assert y.shape == (2, 8, 16, 16)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2])  # option A: subsampled, zero-padded channels
    assert torch.count_nonzero(y[:, :2]) == 0 and torch.count_nonzero(y[:, 6:]) == 0
    # Deleting the branch is the same as zeroing it: zero the last BN's scale and shift.
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    assert torch.allclose(block(x.clone()), x)


def test_deleted_block_keeps_the_relu_after_its_shortcut():
    """relu(shortcut(x)) on signed input, for the identity, option A and a projection (option B)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 16, 16)  # signed: the ReLU changes the result
    option_a = cifar_net(20, channels=(4, 8, 16)).eval()
    assert torch.equal(DeletedBlock(option_a.layer1[1])(x), torch.relu(x))
    y = DeletedBlock(option_a.layer2[0])(x)
    assert torch.equal(y[:, 2:6], torch.relu(x[:, :, ::2, ::2])) and y.min() == 0
    option_b = ResNet(BasicBlock, [1, 1], channels=(4, 8), stem="cifar", shortcut="B", in_chans=1).eval()
    down = option_b.layer2[0]
    projected = down.downsample(x)
    assert projected.min() < 0
    torch.testing.assert_close(DeletedBlock(down)(x), torch.relu(projected))


def test_deleted_preact_block():
    torch.manual_seed(0)
    model = cifar_net(20, preact=True, channels=(4, 8, 16)).eval()
    x = torch.randn(2, 4, 32, 32)
    assert torch.equal(DeletedBlock(model.layer1[2])(x), x)
    down = model.layer2[0]
    assert DeletedBlock(down)(x).shape == (2, 8, 16, 16)


def test_deleted_plain_block():
    model = cifar_net(20, residual=False, channels=(4, 8, 16)).eval()
    x = torch.randn(2, 4, 32, 32)
    assert torch.equal(DeletedBlock(model.layer1[0])(x), x)
    with pytest.raises(ValueError, match="cannot be deleted"):
        DeletedBlock(model.layer2[0])


def test_delete_block_restores_the_model():
    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    original = model.layer2[1]
    with delete_block(model, "layer2.1"):
        assert isinstance(model.layer2[1], DeletedBlock)
        during = model(x)
    assert model.layer2[1] is original
    assert isinstance(original, BasicBlock)
    assert not torch.allclose(before, during)
    assert torch.equal(before, model(x))


class _TinyData:
    """Just enough of ImageData for evaluate_accuracy: a test loader of (x, y) batches (and a training split
    of other images, which no accuracy here may read)."""

    def __init__(self, x, y):
        self.splits = {"test": (x, y), "train": (torch.full_like(x, float("nan")), y)}

    def loader(self, split, batch_size, device):
        x, y = self.splits[split]
        for i in range(0, len(y), batch_size):
            yield x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)


def test_deletion_study_rows():
    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16), in_chans=1)
    x = torch.randn(20, 1, 12, 12)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # labels the intact model gets all right
    data = _TinyData(x, y)
    assert evaluate_accuracy(model, data, batch_size=7) == 1.0
    rows = deletion_study(model, data, batch_size=7)
    assert rows[0] == {"name": "none", "changes_shape": False, "accuracy": 1.0}
    assert [r["name"] for r in rows[1:]] == [n for n, _ in named_blocks(model)]
    assert [r["changes_shape"] for r in rows[1:]] == [changes_shape(b) for _, b in named_blocks(model)]
    assert rows[1 + 3]["name"] == "layer2.0" and rows[1 + 3]["changes_shape"] is True
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    plain = cifar_net(20, residual=False, channels=(4, 8, 16), in_chans=1)
    names = [r["name"] for r in deletion_study(plain, data, batch_size=7)[1:]]
    assert "layer2.0" not in names and "layer3.0" not in names and len(names) == 7


def test_gradient_profile():
    from resnet_tutorial.gradflow import gradient_profile
    from resnet_tutorial.training import layer_grad_norms

    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16), in_chans=1).eval()
    x, y = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    prof = gradient_profile(model, x, y)
    assert all(p.grad is None for p in model.parameters())  # left as it was
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    again = gradient_profile(model, x, y)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert again["weights"] == prof["weights"]
    ref = layer_grad_norms(model, x, y)
    assert list(prof["weights"]) == list(ref)
    assert all(abs(prof["weights"][k] - ref[k]) <= 1e-6 * max(1.0, ref[k]) for k in ref)
    assert list(prof["blocks"]) == [n for n, _ in named_blocks(model)] + ["features"]
    assert prof["blocks"]["layer1.0"].shape == (4, 4, 12, 12)
    assert prof["blocks"]["features"].shape == (4, 16, 3, 3)
    # "features": the gradient with respect to the last block's output, which the net pools and classifies:
    # d loss / d features = (softmax - one-hot) / batch @ fc.weight, spread evenly over the 3 x 3 positions.
    with torch.no_grad():
        p = torch.softmax(model(x), 1) - nn.functional.one_hot(y, 10)
    expected = (p / len(y) @ model.fc.weight)[:, :, None, None].expand(4, 16, 3, 3) / 9
    torch.testing.assert_close(prof["blocks"]["features"], expected)
    assert (prof["blocks"]["features"] - prof["blocks"]["layer3.2"]).abs().max() > 1e-3  # not the block's input
    # Zero residual branches: every block is the identity (after its ReLU) and passes the gradient on
    # unchanged wherever its input is positive.
    model = cifar_net(20, channels=(4, 8, 16), in_chans=1, zero_init_last=True).eval()
    g = gradient_profile(model, x, y)["blocks"]
    assert torch.allclose(g["layer1.1"], g["layer1.2"]) and torch.allclose(g["layer3.1"], g["layer3.2"])


def test_gradient_profile_of_a_net_with_a_deleted_block_leaves_out_its_weights():
    """The deleted block's layers take no part in the forward pass: they get no gradient and no norm."""
    from resnet_tutorial.gradflow import gradient_profile

    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16), in_chans=1).eval()
    x, y = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    full = gradient_profile(model, x, y)["weights"]
    with delete_block(model, "layer2.1"):
        weights = gradient_profile(model, x, y)["weights"]
    assert set(full) - set(weights) == {"layer2.1.conv1", "layer2.1.conv2"}
    assert set(weights) < set(full)


def test_is_residual_for_a_block_without_a_flag():
    """A block that has no ``residual`` setting (torchvision's) has its shortcut: it counts as residual."""
    from resnet_tutorial.gradflow import is_residual

    class Foreign(nn.Module):
        def forward(self, x):
            return x

    assert is_residual(Foreign())
    assert not is_residual(cifar_net(20, residual=False, channels=(2, 4, 8)).layer1[0])


def test_degradation_experiment_trains_once_then_loads(tmp_path, monkeypatch):
    from resnet_tutorial.data import load_dataset
    from resnet_tutorial.gradflow import degradation_experiment
    from resnet_tutorial.training import Recipe

    monkeypatch.setenv("RESNET_TUTORIAL_CACHE", str(tmp_path))
    data = load_dataset("digits").subset(n_per_class=10, test_per_class=5)
    kwargs = dict(channels=(2, 4, 8), recipe=Recipe(epochs=1, batch_size=32), progress=False)
    first = degradation_experiment(data, ("plain20", "resnet20"), **kwargs)
    model, history = first["resnet20"]
    assert history.grad_norms and len(history.epochs) == 1  # gradient norms were recorded
    assert len(list(tmp_path.glob("degradation-*.pt"))) == 2
    again = degradation_experiment(data, ("resnet20",), **kwargs)
    assert again["resnet20"][1].to_dict() == history.to_dict()  # loaded, not retrained
    for a, b in zip(model.state_dict().values(), again["resnet20"][0].state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b.cpu())


def test_lag_correlation_tells_white_noise_from_smooth_signals():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(2000, generator=g)
    brown = white.cumsum(0)  # a random walk
    smooth = torch.sin(torch.linspace(0, 6.28, 2000))
    # White noise: the sample autocorrelation is about N(0, 1/n), so |r| < 4 / sqrt(n).
    assert abs(lag_correlation(white)) < 4 / 2000**0.5
    assert abs(lag_correlation(white, lag=5)) < 4 / 2000**0.5
    assert lag_correlation(brown) > 0.95
    assert lag_correlation(smooth) > 0.999
    assert lag_correlation(smooth, lag=100) < lag_correlation(smooth, lag=10) < lag_correlation(smooth)
    alternating = torch.tensor([1.0, -1.0] * 50)
    assert lag_correlation(alternating) == pytest.approx(-0.99)
    # An offset is no part of the signal's shape: its mean is taken out first.
    assert lag_correlation(alternating + 5) == pytest.approx(-0.99)
    assert lag_correlation(smooth + 3, lag=10) == pytest.approx(lag_correlation(smooth, lag=10), abs=1e-4)


def test_slopes_along_line_is_the_derivative_along_the_line():
    torch.manual_seed(0)
    start, end = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    expected = (linear[1].weight[2] * (end - start).flatten()).sum()
    slopes = slopes_along_line(linear, start, end, steps=10, output=2)
    assert slopes.shape == (10,)
    assert torch.allclose(slopes, expected.expand(10), atol=1e-5)
    # By default: 256 points, of the first output.
    first = (linear[1].weight[0] * (end - start).flatten()).sum()
    slopes = slopes_along_line(linear, start, end)
    assert slopes.shape == (256,) and torch.allclose(slopes, first.expand(256), atol=1e-5)
    # A smooth net: the slopes match finite differences of f(t) along the line.
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    start, end = start.double(), end.double()
    steps = 401
    t = torch.linspace(0, 1, steps, dtype=torch.float64).view(-1, 1, 1, 1)
    with torch.no_grad():
        f = net(start + t * (end - start))[:, 1]
    numeric = torch.gradient(f, spacing=1 / (steps - 1))[0]
    slopes = slopes_along_line(net, start, end, steps=steps, output=1, chunk=50)
    assert torch.allclose(slopes[1:-1], numeric[1:-1], rtol=1e-3, atol=1e-6)
    # Each point is computed on its own, so the chunking does not change the result; but a batch of 50 and one
    # of 7 may take different GEMM kernels, which sum in another order: equal up to float64 rounding (a few
    # ulps per term of the 32-long sums), not to the last bit.
    rechunked = slopes_along_line(net, start, end, steps=steps, output=1, chunk=7)
    tol = 64 * torch.finfo(torch.float64).eps
    torch.testing.assert_close(rechunked, slopes, rtol=tol, atol=tol * slopes.abs().max().item())


def test_slopes_along_line_refuses_batch_statistics():
    model = cifar_net(8, channels=(2, 4, 8), in_chans=1)
    x = torch.randn(1, 12, 12)
    with pytest.raises(ValueError, match="eval"):
        slopes_along_line(model.train(), x, -x, steps=4)
    assert slopes_along_line(model.eval(), x, -x, steps=4).shape == (4,)


def test_calibrate_batchnorm_normalises_as_training_mode_does():
    torch.manual_seed(0)
    model = cifar_net(20, channels=(4, 8, 16), in_chans=1)
    x = torch.randn(64, 1, 12, 12) * 3 + 1
    with torch.no_grad():
        train_mode = model.train()(x)
        fresh = model.eval()(x)  # a fresh BN's running statistics are 0 and 1
    assert (fresh - train_mode).abs().max() > 0.1
    assert calibrate_batchnorm(model, x) is model and not model.training
    with torch.no_grad():
        calibrated = model(x)
    # Equal up to the running variance being the unbiased estimate (a factor n / (n - 1)).
    assert (calibrated - train_mode).abs().max() < 5e-3
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
