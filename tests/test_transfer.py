"""Fine-tuning from ImageNet weights with their own transforms, offline: a random state_dict stands in."""

import pytest
import torch
import torchvision

from resnet_tutorial.data import ImageData, Split
from resnet_tutorial.transfer import imagenet_backbone, imagenet_finetune, imagenet_weights


def cifar_like(n_train=40, n_test=20, seed=0):
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        images[:, 0] = (labels * 25).to(torch.uint8)[:, None, None]  # a learnable class cue
        return Split(images, labels)

    return ImageData("fake-cifar", [str(i) for i in range(10)], split(n_train), split(n_test),
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "random fixture", augmentation="crop_flip")


def random_imagenet_state(name="resnet18"):
    torch.manual_seed(1)
    return torchvision.models.get_model(name, weights=None).state_dict()


def test_weights_entry_and_transforms_need_no_download():
    weights = imagenet_weights("resnet18")
    assert weights.url.startswith("https://download.pytorch.org/")
    transform = weights.transforms()
    x = transform(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 3  # normalised with ImageNet's statistics, not 0..255


def test_backbone_loads_every_tensor_and_gets_a_new_head():
    state = random_imagenet_state()
    model = imagenet_backbone("resnet18", state, num_classes=10)
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert model.get_classifier().out_features == 10
    bad = dict(state)
    bad.pop("layer1.0.conv1.weight")
    with pytest.raises(RuntimeError, match="Missing key"):
        imagenet_backbone("resnet18", bad, num_classes=10)


def test_finetune_trains_every_layer_on_transformed_batches():
    data, state = cifar_like(), random_imagenet_state()
    transform = imagenet_weights("resnet18").transforms(crop_size=64, resize_size=72)
    seen = []
    original_forward = torchvision.transforms._presets.ImageClassification.forward

    def spy(self, img):
        out = original_forward(self, img)
        seen.append(tuple(out.shape[1:]))
        return out

    torchvision.transforms._presets.ImageClassification.forward = spy
    try:
        model, record = imagenet_finetune(data, state_dict=state, transform=transform, epochs=1,
                                          batch_size=20, device="cpu", amp=False)
    finally:
        torchvision.transforms._presets.ImageClassification.forward = original_forward
    assert set(seen) == {(3, 64, 64)}  # every batch, train and test, went through the transform
    assert record["steps"] == 2 and 0.0 <= record["test_acc"] <= 1.0
    assert not torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])  # the stem trained
    assert not torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    again, record2 = imagenet_finetune(data, state_dict=state, transform=transform, epochs=1,
                                       batch_size=20, device="cpu", amp=False)
    assert torch.equal(again.state_dict()["fc.weight"], model.state_dict()["fc.weight"])  # deterministic
