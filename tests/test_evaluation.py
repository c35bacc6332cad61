"""Evaluation (accuracy, top-k, per-class metrics, confusion matrix, predict, shift TTA) and the plots."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from test_training import tiny  # noqa: E402  (tests/ is on the path, as for conftest.py)

import resnet_tutorial as rt  # noqa: E402
from resnet_tutorial import plots  # noqa: E402
from resnet_tutorial.data import load_dataset  # noqa: E402
from resnet_tutorial.evaluation import (  # noqa: E402
    accuracy,
    confusion_matrix,
    evaluate,
    per_class_metrics,
    predict,
    predict_logits,
    shift_views,
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
    assert ax.images[0].get_array().shape[:2] == (2 * 10, 8 * 10)
    ax = plots.show_images(digits.train.images[:5], labels=["a"] * 5)
    assert ax.images
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
