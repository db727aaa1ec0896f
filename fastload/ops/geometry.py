"""Geometric transforms: where a sample's pixels come from and what size they end up.

These are specifications, not functions: a Loader collapses a list of them
into one source rectangle per sample (see ``src_c/geometry.h``), so
Resize(256) + CenterCrop(224) costs a single resample, and the decoder reads
only the rows and columns that rectangle needs.

Interpolation: ``"bilinear"`` (default; Pillow's BILINEAR with antialiasing,
as torchvision's default for PIL images), ``"area"`` (Pillow's BOX filter: the
average of the source pixels each output pixel covers; not torch's or
OpenCV's ``area``, which differ at fractional scales) and ``"nearest"``
(torchvision's ``NEAREST_EXACT``: the source pixel under each output pixel's
centre, ``floor((i + 0.5) * scale)``; not its default ``NEAREST``, which takes
``floor(i * scale)``).

Crops larger than the image pad it as torchvision does: ``CenterCrop`` with
zeros (``(crop - size) // 2`` on the left and top), ``RandomCrop`` only with
``pad_if_needed=True`` (``crop - size`` on both sides, then a random crop,
filled with ``fill``) and otherwise fails the sample. Only the last geometric
transform may pad.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop"]

# Keep in step with src_c/geometry.h.
_RESIZE, _CENTER_CROP, _RANDOM_CROP, _RANDOM_RESIZED_CROP = 1, 2, 3, 4
INTERPOLATIONS = {"nearest": 0, "bilinear": 1, "area": 2}
_NO_FILL = (0, 0, 0)


def _int(v, what: str) -> int:
    """A positive int (any Integral but bool), or a TypeError/ValueError naming `what`."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {v!r} ({type(v).__name__})")
    if v < 1:
        raise ValueError(f"{what} must be positive, got {v}")
    return int(v)


def _size2(size, what: str) -> tuple[int, int]:
    """(h, w) from an int or a (h, w) sequence of ints; [s] means (s, s) as in torchvision."""
    if isinstance(size, (str, bytes)) or not (isinstance(size, numbers.Integral) or hasattr(size, "__len__")):
        raise TypeError(f"{what} size must be an int or a (height, width) pair of ints, got {size!r}")
    if not hasattr(size, "__len__"):
        s = _int(size, f"{what} size")
        return s, s
    if len(size) == 1:
        s = _int(size[0], f"{what} size")
        return s, s
    if len(size) != 2:
        raise ValueError(f"{what} size must be an int or a (height, width) pair, got {size!r}")
    return _int(size[0], f"{what} size[0] (height)"), _int(size[1], f"{what} size[1] (width)")


def _flag(v, what: str) -> bool:
    """A bool (NumPy's too): None or 0 would switch antialiasing off by their truthiness, "False" on."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {v!r}")
    return bool(v)


def _interp(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


def _pair(v, what: str, zero: bool = False) -> tuple[float, float]:
    """A (lo, hi) pair of finite numbers with 0 < lo <= hi (0 <= lo with ``zero``; hi > 0 always)."""
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a (min, max) pair of numbers, got {v!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and (0 <= lo if zero else 0 < lo) and lo <= hi and hi > 0):
        raise ValueError(f"{what} must satisfy 0 {'<=' if zero else '<'} min <= max, max > 0 (finite), got {v!r}")
    return lo, hi


def _fill(fill) -> tuple[int, int, int]:
    values = (fill,) * 3 if isinstance(fill, numbers.Number) else tuple(fill) if hasattr(fill, "__len__") else None
    if values is None or len(values) != 3 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        raise ValueError(f"RandomCrop fill must be an int in [0, 255] or 3 of them (R, G, B), got {fill!r}")
    return tuple(int(v) for v in values)


class GeometricOp:
    """Base of transforms that move or resize pixels."""
    #: fixes the output size on its own (so a batch has a static shape after it)
    static_size: tuple[int, int] | None = None
    interpolation: str | None = None
    antialias: bool = True

    def op(self) -> tuple:
        """(kind, h, w, max_size, scale_lo, scale_hi, log_ratio_lo, log_ratio_hi, pad, fill) for the C plan."""
        raise NotImplementedError


@dataclass(frozen=True)
class Resize(GeometricOp):
    """Resize to ``(h, w)``, or an int: the shorter side to ``size`` keeping the aspect ratio, the
    longer one then at most ``max_size`` (both sides scaled down to fit), as torchvision's.
    ``interpolation``: "bilinear", "nearest" or "area"; ``antialias`` (bilinear): Pillow's filter
    widened when shrinking (False: two source pixels per output pixel)."""
    size: int | tuple[int, int]
    interpolation: str = "bilinear"
    antialias: bool = True
    max_size: int | None = None

    def __post_init__(self):
        _interp(self.interpolation)
        object.__setattr__(self, "antialias", _flag(self.antialias, "Resize antialias"))
        h, w = _size2(self.size, "Resize")
        if self._shorter_side:
            if self.max_size is not None and _int(self.max_size, "Resize max_size") <= h:
                raise ValueError(f"Resize max_size = {self.max_size} must be strictly greater than the "
                                 f"requested size for the smaller edge, {h}")
        elif self.max_size is not None:
            raise ValueError("Resize max_size applies only when size is an int (the shorter side)")

    @property
    def _shorter_side(self) -> bool:
        return not hasattr(self.size, "__len__") or len(self.size) == 1

    @property
    def static_size(self):
        return None if self._shorter_side else _size2(self.size, "Resize")

    def op(self):
        h, w = _size2(self.size, "Resize")
        if self._shorter_side:
            return (_RESIZE, h, 0, self.max_size or 0, 0.0, 0.0, 0.0, 0.0, 0, _NO_FILL)
        return (_RESIZE, h, w, 0, 0.0, 0.0, 0.0, 0.0, 0, _NO_FILL)


@dataclass(frozen=True)
class CenterCrop(GeometricOp):
    """The centred ``size`` crop; an image smaller than the crop is padded with zeros, as torchvision."""
    size: int | tuple[int, int]

    def __post_init__(self):
        _size2(self.size, "CenterCrop")

    @property
    def static_size(self):
        return _size2(self.size, "CenterCrop")

    def op(self):
        h, w = self.static_size
        return (_CENTER_CROP, h, w, 0, 0.0, 0.0, 0.0, 0.0, 1, _NO_FILL)


@dataclass(frozen=True)
class RandomCrop(GeometricOp):
    """A uniformly placed ``size`` crop.

    An image smaller than the crop fails its sample, unless ``pad_if_needed``:
    then, as torchvision, it is padded by (crop - size) on both sides of the
    short axis with ``fill`` (an int or an (R, G, B) triple, 0..255) and the
    crop placed at random in the padded image.
    """
    size: int | tuple[int, int]
    pad_if_needed: bool = False
    fill: int | tuple[int, int, int] = 0

    def __post_init__(self):
        _size2(self.size, "RandomCrop")
        if not isinstance(self.pad_if_needed, bool):
            raise TypeError(f"RandomCrop pad_if_needed must be True or False, got {self.pad_if_needed!r}")
        _fill(self.fill)

    @property
    def static_size(self):
        return _size2(self.size, "RandomCrop")

    def op(self):
        h, w = self.static_size
        return (_RANDOM_CROP, h, w, 0, 0.0, 0.0, 0.0, 0.0, int(self.pad_if_needed), _fill(self.fill))


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
        object.__setattr__(self, "antialias", _flag(self.antialias, "RandomResizedCrop antialias"))
        lo, hi = _pair(self.scale, "RandomResizedCrop scale", zero=True)   # a 0 as torchvision takes it
        if hi > 1:
            raise ValueError(f"RandomResizedCrop scale must satisfy 0 <= min <= max <= 1, got {self.scale}")
        _pair(self.ratio, "RandomResizedCrop ratio")

    @property
    def static_size(self):
        return _size2(self.size, "RandomResizedCrop")

    def op(self):
        h, w = self.static_size
        return (_RANDOM_RESIZED_CROP, h, w, 0, float(self.scale[0]), float(self.scale[1]),
                math.log(self.ratio[0]), math.log(self.ratio[1]), 0, _NO_FILL)
