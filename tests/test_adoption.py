"""A model repository adopting the plugin from README alone (#20): a timm model and a
torchvision model (untrained weights), each read through a DataLoader of a dataset of PIL
images through torchvision transforms whose ``Normalize`` is given to the plugin as
``preprocessing``, attacked by the default attack and by PGD, end to end in a subprocess.
The clean accuracy must be the one the repository measures itself with its loader and
torchvision's ``Normalize``."""

import json

import pytest

pytest.importorskip("timm")
pytest.importorskip("torchvision")

ADOPTION_CONFTEST = """
import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN, STD = (0.5,), (0.25,)
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

class Digits(Dataset):
    # an image folder in miniature: PIL images through torchvision transforms, as
    # torchvision's datasets give them; Normalize is left to the plugin's preprocessing
    classes = [str(d) for d in range(10)]

    def __init__(self, channels, n=32):
        d = load_digits()
        self.images = (d.images[:n] * 255 / 16).astype(np.uint8)
        self.targets = d.target[:n].tolist()
        steps = [transforms.Resize(16)]
        if channels == 3:
            steps.append(transforms.Grayscale(num_output_channels=3))
        self.transform = transforms.Compose(steps + [transforms.ToTensor()])

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]

def own_accuracy(model, loader, mean, std):
    # what the repository measures itself: its loader, torchvision's Normalize, the model
    norm = transforms.Normalize(mean, std)
    with torch.no_grad():
        right = [(model(norm(x)).argmax(1) == y) for x, y in loader]
    return float(torch.cat(right).double().mean())

@pytest.fixture(scope="session")
def timm_model():
    torch.manual_seed(0)  # untrained weights: what matters is that everything runs
    return timm.create_model("resnet10t", num_classes=10, in_chans=1).eval()

@pytest.fixture(scope="session")
def timm_data():
    return DataLoader(Digits(1), batch_size=32)

@pytest.fixture(scope="session")
def torchvision_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()

@pytest.fixture(scope="session")
def torchvision_data():
    return DataLoader(Digits(3), batch_size=32)
"""

ADOPTION_TESTS = """
import pytest
from conftest import MEAN, RGB_MEAN, RGB_STD, STD, own_accuracy

# every sample (32) is evaluated: the clean accuracy is the one the loader itself gives
TIMM = dict(model="timm_model", data="timm_data", preprocessing=(MEAN, STD),
            eps=8 / 255, n_samples=32, steps=5, min_clean_accuracy=0)
TV = dict(model="torchvision_model", data="torchvision_data",
          preprocessing=(RGB_MEAN, RGB_STD), eps=8 / 255, n_samples=32, steps=5,
          min_clean_accuracy=0)

def check(batch, model, loader, mean, std, shape):
    assert batch.x.shape[1:] == shape and len(batch) == 32
    assert 0 <= batch.x_adv.min() and batch.x_adv.max() <= 1  # the attack works on [0, 1]
    assert batch.report["clean_accuracy"] == round(own_accuracy(model, loader, mean, std), 6)

@pytest.mark.robust(threshold=1.0, **TIMM)
def test_timm_default_attack(adversarial_batch, timm_model, timm_data):
    check(adversarial_batch, timm_model, timm_data, MEAN, STD, (1, 16, 16))

@pytest.mark.robust(threshold=1.0, attack="pgd", **TIMM)
def test_timm_pgd(adversarial_batch, timm_model, timm_data):
    check(adversarial_batch, timm_model, timm_data, MEAN, STD, (1, 16, 16))

@pytest.mark.robust(threshold=1.0, **TV)
def test_torchvision_default_attack(adversarial_batch, torchvision_model, torchvision_data):
    check(adversarial_batch, torchvision_model, torchvision_data, RGB_MEAN, RGB_STD, (3, 16, 16))

@pytest.mark.robust(threshold=1.0, attack="pgd", **TV)
def test_torchvision_pgd(adversarial_batch, torchvision_model, torchvision_data):
    check(adversarial_batch, torchvision_model, torchvision_data, RGB_MEAN, RGB_STD, (3, 16, 16))

def test_models_handed_back(timm_model, torchvision_model):
    for model in (timm_model, torchvision_model):
        assert not model.training
        assert all(p.requires_grad for p in model.parameters())
"""


def test_adoption_of_a_timm_and_a_torchvision_model(pytester):
    pytester.makeconftest(ADOPTION_CONFTEST)
    pytester.makepyfile(test_adopt=ADOPTION_TESTS)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "--advrobust",
        "-rA",
        "--advrobust-gan-steps=5",
        "--advrobust-threads=2",
        "--advrobust-json=r.json",
        timeout=900,
    )
    result.assert_outcomes(passed=5)
    tests = {
        t["nodeid"].split("::")[1]: t
        for t in json.loads((pytester.path / "r.json").read_text())["tests"]
    }
    for name in ("timm", "torchvision"):
        gan, pgd = tests[f"test_{name}_default_attack"], tests[f"test_{name}_pgd"]
        assert gan["clean_accuracy"] == pgd["clean_accuracy"]
        assert gan["settings"]["preprocessing"] is not None
        for rep in (gan, pgd):
            assert rep["adversarial_accuracy"] <= rep["clean_accuracy"]
        # the generator was trained for this model family, and every sample met the model
        assert gan["training"]["mode"] == "cold" and gan["cost"]["gan"]["forward_per_sample"] >= 1
        assert set(gan["gan"]["stages"]) == {"start", "untargeted", "targeted"}
