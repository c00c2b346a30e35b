"""AdvGAN: generator/discriminator networks and their training."""

from .networks import Generator, build_discriminator, build_generator, generator_from_arch
from .train import GanConfig, TrainResult, margin, train_generator

__all__ = [
    "GanConfig",
    "Generator",
    "TrainResult",
    "build_discriminator",
    "build_generator",
    "generator_from_arch",
    "margin",
    "train_generator",
]
