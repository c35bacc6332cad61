"""Evaluation (accuracy, top-k, per-class metrics, confusion matrix, predict, shift TTA) and the plots."""

import json
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from test_training import tiny  # noqa: E402  (tests/ is on the path, as for conftest.py)
from torch import nn  # noqa: E402

import resnet_tutorial as rt  # noqa: E402
from resnet_tutorial import plots  # noqa: E402
from resnet_tutorial.data import ImageData, Split, load_dataset, resize  # noqa: E402
from resnet_tutorial.evaluation import (  # noqa: E402
    Metrics,
    accuracy,
    confusion_matrix,
    evaluate,
    loss_and_accuracy,
    per_class_metrics,
    predict,
    predict_logits,
    shift_views,
    to_image_tensor,
)
from resnet_tutorial.training import History, Recipe, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(30, test_per_class=10)


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=1, num_classes=10, channels=(4, 8, 16))
    history = fit(model, digits, Recipe(epochs=3, batch_size=32, lr=0.05), progress=False, record_grad_norms=True)
    return model, history


def test_accuracy_topk():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = torch.tensor([1, 1, 0, 2])
    assert accuracy(logits, y) == pytest.approx(0.25)
    assert accuracy(logits, y, topk=(1, 2, 3)) == pytest.approx([0.25, 0.5, 1.0])
    assert accuracy(logits, y, topk=5) == 1.0  # k larger than the number of classes


def test_confusion_and_per_class_match_sklearn():
    from sklearn.metrics import confusion_matrix as sk_cm
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    pred[:5] = 3  # class 3 predicted more often
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(y), 4)
    assert cm.tolist() == sk_cm(y, pred, labels=range(4)).tolist()
    rows = per_class_metrics(torch.from_numpy(pred), torch.from_numpy(y), ["a", "b", "c", "d"])
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    for i, row in enumerate(rows):
        assert row["precision"] == pytest.approx(p[i]) and row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i]) and row["support"] == s[i]


def test_evaluate(trained, digits):
    model, history = trained
    m = evaluate(model, digits, device="cpu")
    tol = 0.02 if history.config["amp"] else 1e-4  # fit evaluates under autocast on a GPU
    assert m.accuracy == pytest.approx(history.final["test_acc"], abs=tol)
    assert m.loss == pytest.approx(history.final["test_loss"], rel=tol)
    assert m.confusion.sum().item() == 100 and m.confusion.trace().item() == round(100 * m.accuracy)
    assert m.top5 >= m.accuracy
    assert torch.allclose(m.probabilities.sum(1), torch.ones(100), atol=1e-5)
    assert torch.equal(m.predictions, m.probabilities.argmax(1)) and torch.equal(m.labels, digits.test.labels)
    assert [r["cls"] for r in m.per_class] == digits.classes and sum(r["support"] for r in m.per_class) == 100
    text = m.report()
    assert "macro avg" in text and f"accuracy {m.accuracy:.4f}" in text
    assert m.to_dict()["confusion"] == m.confusion.tolist()
    train = evaluate(model, digits, split="train", device="cpu")
    assert len(train.labels) == 300


def test_predict_tensor_and_pil(trained, digits):
    model, _ = trained
    img = digits.test.images[0]  # uint8 (1, 8, 8)
    top = predict(model, img, digits, topk=3)
    assert len(top) == 3 and all(name in digits.classes for name, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    m = evaluate(model, digits, device="cpu")
    assert top[0][0] == digits.classes[m.predictions[0]]
    assert top[0][1] == pytest.approx(m.probabilities[0].max().item(), rel=1e-4)
    again = predict(model, img.float() / 255, digits)  # floats in 0..1 give the same answer
    assert [n for n, _ in again] == [n for n, _ in top] and [p for _, p in again] == pytest.approx(probs, rel=1e-4)
    rgb = Image.fromarray(img[0].numpy()).convert("RGB").resize((32, 32))  # a bigger colour picture
    assert len(predict(model, rgb, digits, topk=2)) == 2


def test_plots_return_axes(trained, digits):
    import matplotlib.pyplot as plt

    model, history = trained
    ax = plots.plot_history({"a": history, "b": History.from_dict(history.to_dict())})
    assert len(ax.lines) == 4 and ax.get_xlabel() == "epoch"
    m = evaluate(model, digits, device="cpu")
    ax = plots.plot_confusion_matrix(m.confusion, digits.classes, normalize=True)
    assert ax.get_ylabel() == "true class" and ax.images
    x, y = next(iter(digits.loader("train", 16)))
    ax = plots.show_images(x, y, data=digits, nrow=8)
    # 8x8 digits, 2 pixels between images, and 3 more between rows for the captions
    assert ax.images[0].get_array().shape[:2] == (2 * 13, 8 * 10)
    assert [t.get_position()[1] for t in ax.texts[::8]] == [2.5, 15.5]  # above each row's images
    ax = plots.show_images(digits.train.images[:5], labels=["a"] * 5)
    assert ax.images
    ax = plots.show_images(digits.train.images[:16], nrow=8)  # no captions: no room for them
    assert ax.images[0].get_array().shape[:2] == (2 * 10, 8 * 10)
    ax = plots.show_augmentations(digits, n=6)
    assert len(ax.texts) == 6
    ax = plots.plot_grad_norms({"trained": history.grad_norms})
    assert len(ax.lines[0].get_xdata()) == 20 and ax.get_yscale() == "log"
    plt.close("all")


def test_shift_views_move_the_image_one_pixel_and_fill_with_black():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    fill = torch.tensor([-1.0, -2.0])
    views = shift_views(x, fill)
    assert len(views) == 5 and torch.equal(views[0], x)
    up = views[1]  # content moved down by one row: row 0 is the fill, row 1 is the old row 0
    assert torch.equal(up[0, :, 1:], x[0, :, :-1]) and up[0, 0, 0].eq(-1).all() and up[0, 1, 0].eq(-2).all()
    right = views[4]  # content moved left by one column
    assert torch.equal(right[0, :, :, :-1], x[0, :, :, 1:]) and right[0, 1, :, -1].eq(-2).all()


def test_tta_averages_the_probabilities_of_the_shifted_views(digits):
    model = tiny().eval()
    loader = digits.loader("test", 64, device="cpu")
    fill = digits.normalize(torch.zeros(1, 1, 1, dtype=torch.uint8)).flatten()
    logits, labels = predict_logits(model, loader, tta_fill=fill)
    x = torch.cat([b for b, _ in loader])
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in shift_views(x, fill)]).mean(0)
    torch.testing.assert_close(logits.softmax(1), expected)
    assert torch.equal(labels, digits.test.labels)
    plain = evaluate(model, digits, device="cpu")
    with_tta = evaluate(model, digits, device="cpu", tta=True)
    assert torch.equal(with_tta.predictions, expected.argmax(1)) and with_tta.loss != plain.loss


# --- what mutation testing (scripts/mutation.py) showed the tests above left unchecked ----------------


@pytest.fixture(scope="module")
def rgb():
    """A tiny three-channel dataset (random 8x8 colour images, 4 classes), with a different mean per channel."""
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),  # noqa: E731
                            torch.arange(n) % 4)
    return ImageData("rgb", ["a", "b", "c", "d"], split(24), split(12), mean=(0.2, 0.5, 0.7), std=(0.3, 0.2, 0.25),
                     source="random")


class Probe(nn.Module):
    """A linear classifier that records, for each batch, the dtype it computed in and whether its input was
    in the channels-last layout."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.fc, self.seen = nn.Linear(features, classes), []

    def forward(self, x):
        out = self.fc(x.flatten(1))
        self.seen.append((out.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return out


def test_binary_accuracy_is_the_argmax():
    """Two classes: top-1 is whether the larger logit is the label's, whatever the logits' range."""
    logits = torch.tensor([[0.0, 0.3], [0.0, 0.8], [0.9, 0.1], [2.0, 5.0]])  # differences all in 0..1 but one
    y = torch.tensor([1, 1, 1, 0])
    assert accuracy(logits, y) == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert accuracy(logits[:2], y[:2]) == 1.0
    assert accuracy(logits[2:], y[2:]) == 0.0
    assert accuracy(-logits[2:], y[2:]) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert accuracy(logits, y, topk=(1, 2)) == [0.5, 1.0]


def test_accuracy_with_classes_missing_from_the_labels_and_no_warnings():
    logits = torch.tensor([[0.1, 0.7, 0.2, 0.0], [0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.5, 0.0]])
    y = torch.tensor([1, 1, 0])  # classes 2 and 3 never the label
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k >= the number of classes gives 1 without scikit-learn's warning
        assert accuracy(logits, y, topk=(1, 2, 4, 5)) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_confusion_and_per_class_cover_classes_that_never_occur():
    y, pred = torch.tensor([0, 0, 1, 3, 3]), torch.tensor([0, 1, 1, 1, 3])  # class 2 never occurs, 3 once predicted
    cm = confusion_matrix(pred, y, 4)
    assert cm.dtype == torch.int64 and cm.shape == (4, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a class never predicted: precision 0, without a warning
        rows = per_class_metrics(pred, y, ["a", "b", "c", "d"])
    assert [r["cls"] for r in rows] == ["a", "b", "c", "d"] and [r["support"] for r in rows] == [2, 1, 0, 2]
    assert [r["precision"] for r in rows] == pytest.approx([1.0, 1 / 3, 0.0, 1.0])
    assert [r["recall"] for r in rows] == pytest.approx([0.5, 1.0, 0.0, 0.5])
    assert rows[2]["f1"] == 0.0


def test_metrics_report_and_dict():
    y, pred = torch.tensor([0, 0, 1, 3, 3]), torch.tensor([0, 1, 1, 1, 3])
    classes = ["cat", "dog", "eel", "fox"]  # "eel" neither occurs nor is predicted
    m = Metrics(accuracy=0.6, top5=1.0, loss=0.75, confusion=confusion_matrix(pred, y, 4),
                per_class=per_class_metrics(pred, y, classes), predictions=pred, labels=y,
                probabilities=torch.full((5, 4), 0.25), classes=classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = m.report()
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    for r in m.per_class:  # a row per class, by name, to four digits
        (row,) = [ln for ln in lines if ln.split()[:1] == [r["cls"]]]
        assert row.split()[1:] == [f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"])]
        assert len(row) == len(lines[0])  # the header stands over its columns
    assert lines[-1] == "accuracy 0.6000 | top-5 1.0000 | loss 0.7500 | 5 images"
    d = json.loads(json.dumps(m.to_dict()))
    assert d == dict(accuracy=0.6, top5=1.0, loss=0.75, per_class=m.per_class, confusion=m.confusion.tolist(),
                     classes=classes)


def test_shift_views_cover_all_four_directions_and_keep_the_dtype():
    x = torch.arange(2 * 4 * 5, dtype=torch.float32).view(1, 2, 4, 5)
    fill = torch.tensor([-1.0, -2.0])
    _, up, down, left, right = shift_views(x, fill)
    black = fill.view(2, 1, 1)
    assert torch.equal(up[0, :, 1:], x[0, :, :-1]) and torch.equal(up[0, :, :1], black.expand(2, 1, 5))
    assert torch.equal(down[0, :, :-1], x[0, :, 1:]) and torch.equal(down[0, :, -1:], black.expand(2, 1, 5))
    assert torch.equal(left[0, :, :, 1:], x[0, :, :, :-1]) and torch.equal(left[0, :, :, :1], black.expand(2, 4, 1))
    assert torch.equal(right[0, :, :, :-1], x[0, :, :, 1:]) and torch.equal(right[0, :, :, -1:], black.expand(2, 4, 1))
    one = shift_views(x[0], fill)  # one image (C, H, W) as well as a batch
    assert all(torch.equal(a, b[0]) for a, b in zip(one, (x, up, down, left, right), strict=True))
    assert {v.dtype for v in shift_views(x.bfloat16(), fill)} == {torch.bfloat16}  # a bf16 model gets bf16


def test_tta_fills_each_channel_with_its_own_black(rgb):
    torch.manual_seed(0)
    model = rt.create_model("resnet20", in_chans=3, num_classes=4, channels=(4, 8, 16)).eval()
    m = evaluate(model, rgb, device="cpu", tta=True)
    fill = rgb.normalize(torch.zeros(3, 1, 1, dtype=torch.uint8)).flatten()
    with torch.no_grad():
        views = shift_views(rgb.normalize(rgb.test.images), fill)
        expected = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    torch.testing.assert_close(m.probabilities, expected)


def test_evaluate_the_training_split_in_order_without_augmentation(digits):
    model = tiny().eval()
    m = evaluate(model, digits, split="train", device="cpu")
    assert torch.equal(m.labels, digits.train.labels)
    with torch.no_grad():
        expected = model(digits.normalize(digits.train.images)).softmax(1)
    torch.testing.assert_close(m.probabilities, expected)


def test_evaluate_top5_is_the_fraction_with_the_label_among_the_five_most_probable(digits):
    m = evaluate(tiny(seed=3), digits, device="cpu")
    in_top5 = (m.probabilities.topk(5, dim=1).indices == m.labels[:, None]).any(1).float().mean().item()
    assert m.top5 == pytest.approx(in_top5) and m.top5 != m.accuracy


def test_evaluate_and_loss_and_accuracy_compute_as_asked(rgb):
    probe = Probe(3 * 8 * 8, 4)
    loader = rgb.loader("test", 8, device="cpu")
    loss_and_accuracy(probe, loader)
    assert set(probe.seen) == {(torch.float32, False)}  # by default: float32, the layout as given
    probe.seen.clear()
    loss_and_accuracy(probe, loader, amp=True, amp_dtype=torch.float16, channels_last=True)
    assert set(probe.seen) == {(torch.float16, True)}
    probe.seen.clear()
    evaluate(probe, rgb, device="cpu", amp=True)  # autocast as fit does: bf16 on a CPU
    assert set(probe.seen) == {(torch.bfloat16, False)}
    probe.seen.clear()
    evaluate(probe, rgb, device="cpu")
    assert set(probe.seen) == {(torch.float32, False)}


def test_loss_and_accuracy_with_tta_and_of_an_empty_split(digits):
    model = tiny().eval()
    loader = digits.loader("test", 64, device="cpu")
    fill = digits.normalize(torch.zeros(1, 1, 1, dtype=torch.uint8)).flatten()
    logits, labels = predict_logits(model, loader, tta_fill=fill)
    loss, acc = loss_and_accuracy(model, loader, tta_fill=fill)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert loss != pytest.approx(loss_and_accuracy(model, loader)[0], rel=1e-3)  # the shifts do count
    empty = digits.subset(1, test_per_class=0).loader("test", 64, device="cpu")
    assert loss_and_accuracy(model, empty) == (0.0, 0.0)


def test_to_image_tensor_for_grey_data(digits):
    size = digits.image_size
    grey = torch.arange(size * size, dtype=torch.uint8).view(size, size) * 3
    as_uint8 = lambda t: t.dtype == torch.uint8 and t.shape == (1, size, size)  # noqa: E731
    for image in (grey, grey[None], grey.numpy(), Image.fromarray(grey.numpy())):  # tensor, array, PIL image
        out = to_image_tensor(image, digits)
        assert as_uint8(out) and torch.equal(out, grey[None])
    colour = np.zeros((size, size, 3), dtype=np.uint8)
    colour[:, :3, 0], colour[:, 3:6, 1], colour[:, 6:, 2] = 255, 255, 255  # red, green and blue stripes
    out = to_image_tensor(Image.fromarray(colour), digits)  # turned grey as PIL does: by luminance
    assert as_uint8(out) and torch.equal(out[0], torch.from_numpy(np.array(Image.fromarray(colour).convert("L"))))
    assert len(set(out[0, 0].tolist())) == 3
    channels = torch.stack([grey + v for v in (0, 10, 40)])
    out = to_image_tensor(channels, digits)  # a three-channel tensor: the mean of its channels, pixel by pixel
    assert as_uint8(out) and torch.equal(out, grey[None] + 17)  # grey + 50 / 3, rounded
    floats = torch.linspace(-0.5, 1.5, size * size).view(1, size, size)  # floats: clamped to 0..1, then 0..255
    out = to_image_tensor(floats, digits)
    assert as_uint8(out) and torch.equal(out, (floats.clamp(0, 1) * 255).round().to(torch.uint8))
    assert out.min() == 0 and out.max() == 255


def test_to_image_tensor_for_colour_data(rgb):
    colour = torch.randint(0, 256, (8, 8, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for image in (colour.numpy(), Image.fromarray(colour.numpy())):  # (H, W, C) as numpy and PIL give them
        out = to_image_tensor(image, rgb)
        assert out.dtype == torch.uint8 and torch.equal(out, colour.permute(2, 0, 1))
    grey = torch.arange(64, dtype=torch.uint8).view(8, 8)
    for image in (grey, grey[None], Image.fromarray(grey.numpy())):  # a grey picture: the same in each channel
        assert torch.equal(to_image_tensor(image, rgb), grey.expand(3, 8, 8))
    strip = torch.arange(24, dtype=torch.uint8).view(1, 3, 8)  # as high as the data has channels: still one channel
    assert torch.equal(to_image_tensor(strip, rgb), resize(strip.expand(3, 3, 8)[None], 8)[0])
