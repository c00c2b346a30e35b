"""No false alarms on real data: a normally trained Fashion-MNIST model raises no flag,
at the cheap and at the full level."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pytest_advrobust.attacks.base import AttackConfig, AttackContext
from pytest_advrobust.attacks.gradient import pgd
from pytest_advrobust.inputs.data import load_idx_dataset
from pytest_advrobust.sanity import Evaluated, run_sanity

FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
        reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
    ),
]


@pytest.fixture(scope="module")
def fashion_model():
    x, y = load_idx_dataset(FASHION, "test")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_x, train_y = x[:4000], y[:4000]
    for _epoch in range(3):
        for i in range(0, 4000, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(
                model(train_x[i : i + 100]), train_y[i : i + 100]
            ).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x[9000:9256], y[9000:9256]


@pytest.mark.parametrize("level", ["cheap", "full"])
def test_normal_fashion_model_raises_no_flag(fashion_model, level):
    model, x, y = fashion_model
    assert (model(x).argmax(1) == y).float().mean() > 0.7  # a real, working classifier
    cfg = AttackConfig(eps=0.05, steps=10, step_size=0.01)
    ctx = AttackContext(device=torch.device("cpu"))
    x_adv = pgd(model, x, y, cfg, ctx)
    curve = []
    for eps in (0.01, 0.03, 0.05):
        xa = pgd(model, x, y, AttackConfig(eps=eps, steps=10), ctx)
        curve.append(
            {"eps": eps, "adversarial_accuracy": float((model(xa).argmax(1) == y).float().mean())}
        )
    found = Evaluated(x, y, x_adv, attacks=["pgd"], curve=curve, num_classes=10)
    flags = run_sanity(model, found, cfg, ctx, level=level)
    assert flags == []
