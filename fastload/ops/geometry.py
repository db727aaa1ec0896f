"""Geometric transforms: where a sample's pixels come from and what size they end up.

These are specifications, not functions: a Loader collapses a list of them
into one source rectangle per sample (see ``src_c/geometry.h``), so
Resize(256) + CenterCrop(224) costs a single resample, and the decoder reads
only the rows and columns that rectangle needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop"]

# Keep in step with src_c/geometry.h.
_RESIZE, _CENTER_CROP, _RANDOM_CROP, _RANDOM_RESIZED_CROP = 1, 2, 3, 4
INTERPOLATIONS = {"nearest": 0, "bilinear": 1, "area": 2}


def _size2(size, what: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"{what} size must be positive, got {size}")
    return h, w


def _interp(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


class GeometricOp:
    """Base of transforms that move or resize pixels."""
    #: fixes the output size on its own (so a batch has a static shape after it)
    static_size: tuple[int, int] | None = None
    interpolation: str | None = None
    antialias: bool = True

    def op(self) -> tuple:
        """(kind, h, w, max_size, scale_lo, scale_hi, log_ratio_lo, log_ratio_hi) for the C plan."""
        raise NotImplementedError


@dataclass(frozen=True)
class Resize(GeometricOp):
    """Resize to ``(h, w)``, or an int: the shorter side to ``size`` keeping the aspect ratio."""
    size: int | tuple[int, int]
    interpolation: str = "bilinear"
    antialias: bool = True
    max_size: int | None = None

    def __post_init__(self):
        _interp(self.interpolation)
        if isinstance(self.size, int):
            if self.size < 1:
                raise ValueError(f"Resize size must be positive, got {self.size}")
        else:
            _size2(self.size, "Resize")
            if self.max_size is not None:
                raise ValueError("max_size applies only when size is an int")

    @property
    def static_size(self):
        return None if isinstance(self.size, int) else _size2(self.size, "Resize")

    def op(self):
        if isinstance(self.size, int):
            return (_RESIZE, self.size, 0, self.max_size or 0, 0.0, 0.0, 0.0, 0.0)
        h, w = _size2(self.size, "Resize")
        return (_RESIZE, h, w, 0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CenterCrop(GeometricOp):
    """The centred ``size`` crop; an image smaller than the crop is used whole and stretched."""
    size: int | tuple[int, int]

    def __post_init__(self):
        _size2(self.size, "CenterCrop")

    @property
    def static_size(self):
        return _size2(self.size, "CenterCrop")

    def op(self):
        h, w = self.static_size
        return (_CENTER_CROP, h, w, 0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RandomCrop(GeometricOp):
    """A uniformly placed ``size`` crop."""
    size: int | tuple[int, int]

    def __post_init__(self):
        _size2(self.size, "RandomCrop")

    @property
    def static_size(self):
        return _size2(self.size, "RandomCrop")

    def op(self):
        h, w = self.static_size
        return (_RANDOM_CROP, h, w, 0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RandomResizedCrop(GeometricOp):
    """torchvision's RandomResizedCrop: a crop of random area fraction and aspect, resized to ``size``.

    Ten tries at a crop that fits; then the largest centred crop whose aspect
    is within ``ratio`` (so 1x1 and extreme-aspect images still work).
    """
    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    antialias: bool = True

    def __post_init__(self):
        _size2(self.size, "RandomResizedCrop")
        _interp(self.interpolation)
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")

    @property
    def static_size(self):
        return _size2(self.size, "RandomResizedCrop")

    def op(self):
        h, w = self.static_size
        return (_RANDOM_RESIZED_CROP, h, w, 0, float(self.scale[0]), float(self.scale[1]),
                math.log(self.ratio[0]), math.log(self.ratio[1]))
