"""Random pixel augmentations, applied after the resample and before the final write.

Their random draws come from the sample's (seed, epoch, index) stream, so a
sample is augmented the same way whatever thread or worker count runs it.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotate90", "ColorJitter"]


def _prob(p: float, what: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} probability p must be a number in [0, 1], got {p!r}")
    return float(p)


#: Factors past this saturate every pixel long before; beyond float32's range the kernels' tables
#: would hold inf - inf (NaN).
_MAX_FACTOR = 1e30


def _range(v, name: str, center: float, lo: float, hi: float) -> tuple[float, float]:
    """torchvision's ColorJitter._check_input: a number s gives [center - s, center + s]
    (clipped at lo), a (min, max) pair is taken as it is, within [lo, hi]."""
    def number(x):
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
            raise ValueError(f"ColorJitter {name} must be a finite number or a (min, max) pair, got {v!r}")
        if abs(x) > _MAX_FACTOR:
            raise ValueError(f"ColorJitter {name} must be at most {_MAX_FACTOR:g} in magnitude, got {v!r}")
        return float(x)

    if isinstance(v, numbers.Number) or isinstance(v, bool):
        s = number(v)
        if s < 0 or (center == 0 and s > hi):
            raise ValueError(f"ColorJitter {name} must be in {f'[0, {hi}]' if center == 0 else '[0, inf)'}, got {v!r}")
        return max(center - s, lo), center + s
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 2:
        raise ValueError(f"ColorJitter {name} must be a finite number or a (min, max) pair, got {v!r}")
    a, b = number(v[0]), number(v[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f"ColorJitter {name} range must satisfy {lo} <= min <= max <= {hi}, got {v!r}")
    return a, b


class PixelOp:
    """Base of transforms that keep the geometry's output size."""


@dataclass(frozen=True)
class RandomHorizontalFlip(PixelOp):
    """Mirror left-right with probability ``p``, drawn per sample from (seed, epoch, index)."""
    p: float = 0.5

    def __post_init__(self):
        _prob(self.p, "RandomHorizontalFlip")


@dataclass(frozen=True)
class RandomVerticalFlip(PixelOp):
    """Mirror top-bottom with probability ``p``, drawn per sample from (seed, epoch, index)."""
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
    """torchvision's ColorJitter: brightness, contrast, saturation and hue.

    Each of brightness, contrast and saturation is a number s (factor drawn
    from [max(0, 1 - s), 1 + s]) or a (min, max) range of factors >= 0; hue is
    a number h in [0, 0.5] (shift drawn from [-h, h] turns of the colour
    wheel) or a (min, max) range within [-0.5, 0.5]. Applied in the fixed order
    brightness -> contrast -> saturation -> hue (torchvision shuffles the
    order per sample; a fixed order keeps a sample reproducible and the kernel
    single-pass). Contrast blends towards the mean luma, saturation towards
    each pixel's luma (0.299 R + 0.587 G + 0.114 B), hue turns in HSV space;
    each step clamps to [0, 255] and the result is rounded to nearest.
    """
    brightness: float | tuple[float, float] = 0.0
    contrast: float | tuple[float, float] = 0.0
    saturation: float | tuple[float, float] = 0.0
    hue: float | tuple[float, float] = 0.0

    def __post_init__(self):
        self.ranges()

    def ranges(self) -> tuple[tuple[float, float], ...]:
        """(min, max) of the brightness, contrast, saturation factors and the hue shift."""
        inf = math.inf
        return (_range(self.brightness, "brightness", 1.0, 0.0, inf),
                _range(self.contrast, "contrast", 1.0, 0.0, inf),
                _range(self.saturation, "saturation", 1.0, 0.0, inf),
                _range(self.hue, "hue", 0.0, -0.5, 0.5))
