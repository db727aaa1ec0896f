"""Random pixel augmentations, applied after the resample and before the final write.

Their random draws come from the sample's (seed, epoch, index) stream, so a
sample is augmented the same way whatever thread or worker count runs it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotate90", "ColorJitter"]


def _prob(p: float, what: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} probability must be in [0, 1], got {p}")
    return float(p)


class PixelOp:
    """Base of transforms that keep the geometry's output size."""


@dataclass(frozen=True)
class RandomHorizontalFlip(PixelOp):
    p: float = 0.5

    def __post_init__(self):
        _prob(self.p, "RandomHorizontalFlip")


@dataclass(frozen=True)
class RandomVerticalFlip(PixelOp):
    p: float = 0.5

    def __post_init__(self):
        _prob(self.p, "RandomVerticalFlip")


@dataclass(frozen=True)
class RandomRotate90(PixelOp):
    """With probability ``p``, rotate by 90, 180 or 270 degrees (equally likely). Needs a square output."""
    p: float = 0.5

    def __post_init__(self):
        _prob(self.p, "RandomRotate90")


@dataclass(frozen=True)
class ColorJitter(PixelOp):
    """Brightness, contrast and saturation factors drawn from [max(0, 1 - s), 1 + s].

    Applied in that fixed order (torchvision shuffles the order per sample;
    a fixed order keeps samples reproducible and the kernel single-pass).
    """
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ColorJitter {name} must be >= 0")
