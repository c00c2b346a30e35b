"""Robustness gates for the digits CNN.

Run with ``pytest --advrobust``; without the flag these tests are skipped.
The numbers (on the 539 held-out images, L-inf eps=0.1 in pixel units of
[0, 1]) are in README.md, as ``pytest examples/digits --advrobust -rA``
printed them: gaps of about 0.15 to 0.17 under PGD-40 and the GAN attack, a
few images apart from one machine to another. Both gates share one threshold,
about 0.1 above those gaps: the suite passes on every machine, while a model
as fragile as ``fragile_model`` (gap 0.41 under PGD) fails.
"""

import pytest
import torch

EPS = 0.1  # L-inf, in units of the [0, 1] pixel range: 1.6 of the 16 grey levels


@pytest.mark.robust(threshold=0.25)
def test_survives_gan_attack():
    """The default attack: a generator trained for this model family (then cached), then
    short APGD stages on the images it does not fool."""


@pytest.mark.robust(threshold=0.25, attack="pgd", eps=EPS, steps=40)
def test_survives_pgd():
    """The strong white-box reference: 40 steps of projected gradient descent."""


@pytest.mark.robust(threshold=0.25, attack=["gan", "pgd"], eps=EPS)
def test_survives_worst_case_of_gan_and_pgd():
    """Per image, the worse of the two attacks counts."""


@pytest.mark.robust(threshold=0.25, attack="pgd", eps=[0.02, 0.05, 0.1, 0.2], threshold_eps=EPS)
def test_pgd_robustness_curve():
    """An eps sweep: the JSON report holds the whole curve, the gate judges eps=0.1 only
    (``threshold_eps``); without it the threshold would apply at every eps."""


def test_adversarial_batch_is_a_bounded_perturbation(adversarial_batch, robust_model):
    """The adversarial twin of the evaluation batch (default attack and eps, no gate).

    Shares its evaluation with ``test_survives_gan_attack`` (same model, data
    and settings), so it costs nothing extra.
    """
    b = adversarial_batch
    assert b.x_adv.shape == b.x.shape == (len(b), 1, 8, 8)
    assert b.y.shape == (len(b),)
    linf = (b.x_adv - b.x).flatten(1).abs().amax(dim=1)
    assert bool((linf <= b.eps + 1e-6).all()), f"largest perturbation {linf.max():.4f} > eps"
    assert 0.0 <= float(b.x_adv.min()) and float(b.x_adv.max()) <= 1.0
    # The attack changed something, and evaluate() reproduces the report's numbers.
    assert bool((linf > 0).any())
    numbers = b.evaluate(robust_model)
    assert numbers["adversarial_accuracy"] == pytest.approx(
        b.report["adversarial_accuracy"], abs=1e-6
    )
    assert numbers["adversarial_accuracy"] <= numbers["clean_accuracy"]
    with torch.no_grad():
        assert robust_model(b.x_adv).shape == (len(b), 10)


@pytest.mark.xfail(strict=True, reason="shows what a failing gate looks like")
@pytest.mark.robust(threshold=0.25, model="fragile_model", attack="pgd", eps=EPS, steps=40)
def test_fragile_model_fails_the_gate():
    """The same PGD gate as ``test_survives_pgd``, on the model trained without adversarial
    examples: its clean accuracy is as good, but PGD takes it from 0.97 to about 0.56, a gap
    of 0.41 > 0.25, so the gate fails, which is what CI would report for a change that made
    the model fragile. It is marked ``xfail(strict=True)`` to keep the suite green: the
    failure is expected (the summary table shows it as FAIL), and if the gate ever stopped
    catching this model the test would turn red as an unexpected pass. To see the failure
    exactly as CI would print it, run ``pytest --advrobust --runxfail -k fragile``.
    """
