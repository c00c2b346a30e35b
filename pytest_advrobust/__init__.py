"""pytest-advrobust: adversarial robustness as a regression test for PyTorch models."""

__version__ = "0.1.0"
