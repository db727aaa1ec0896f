"""Normalisation: the last step, fused with dtype conversion into a lookup table.

The compiled write (src_c/augment.c) maps each input byte of output channel
c through a table of 256 values already in the output dtype, so
normalisation, scaling and conversion cost one lookup per value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Normalize", "make_lut"]

_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Normalize:
    """out[c] = (pixel / max_value - mean[c]) / std[c], channels in ``order``.

    torchvision style: ``Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])``
    (pixels scaled to [0, 1] first). Caffe style, as in the classic
    generator-pipeline tutorial: ``Normalize([103.939, 116.779, 123.68],
    max_value=1.0, order="BGR")`` subtracts a BGR mean from raw 0..255 pixels.

    Without Normalize, float outputs hold pixel / 255 in [0, 1], as
    torchvision's ``ToDtype(torch.float32, scale=True)``; uint8 outputs hold
    the pixels as they are.
    """
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    max_value: float = 255.0
    order: str = "RGB"

    def __post_init__(self):
        for name in ("mean", "std"):   # one value for every channel, as torchvision broadcasts it
            v = getattr(self, name)
            try:   # numbers, NumPy's or torch's alike
                values = () if isinstance(v, (str, bytes)) else \
                    (float(v),) if np.ndim(v) == 0 else tuple(float(x) for x in v)
            except (TypeError, ValueError):
                values = ()
            if len(values) not in (1, 3) or not all(math.isfinite(x) for x in values):
                raise ValueError(f"Normalize {name} must be 1 or 3 finite numbers, got {v!r}")
            object.__setattr__(self, name, values * 3 if len(values) == 1 else values)
        if any(s == 0 for s in self.std):
            raise ValueError("Normalize std must be non-zero")
        if self.order not in ("RGB", "BGR"):
            raise ValueError(f"order must be 'RGB' or 'BGR', got {self.order!r}")
        if isinstance(self.max_value, bool) or not isinstance(self.max_value, (int, float, np.number)) or not (
                math.isfinite(self.max_value) and self.max_value > 0):
            raise ValueError(f"Normalize max_value must be a positive finite number, got {self.max_value!r}")


def _per_channel(v, default: float, name: str) -> np.ndarray:
    a = np.full(3, default, np.float64) if v is None else np.asarray(v, np.float64)
    if a.ndim == 0:
        a = np.full(3, float(a))
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite scalar or 3 values, got {v!r}")
    return a


def make_lut(mean=None, std=None, max_value: float = 255.0, dtype="float32",
             order: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
    """Tables for the compiled write: input byte v of output channel c becomes
    ``(v / max_value - mean[c]) / std[c]`` in ``dtype``.

    Without mean and std the values are v itself (converted to dtype).
    mean/std are given per *output* channel. order "BGR" reverses the channels
    (perm = [2, 1, 0]). Caffe-style: ``make_lut(mean=[103.939, 116.779,
    123.68], max_value=1.0, order="BGR")`` gives v - mean in BGR order.
    Returns (lut of shape (3, 256) and the given dtype, perm int32 of shape (3,)).
    Raises ValueError when a value does not fit the dtype (float16 overflows
    to inf past 65504, e.g. with a tiny std).
    """
    key = np.dtype(dtype).name
    if key not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if order not in ("RGB", "BGR"):
        raise ValueError(f"order must be 'RGB' or 'BGR', got {order!r}")
    max_value = float(max_value)
    if not math.isfinite(max_value) or max_value <= 0:
        raise ValueError(f"max_value must be positive, got {max_value}")
    v = np.arange(256, dtype=np.float64)
    if mean is None and std is None:
        table = np.broadcast_to(v, (3, 256))
    else:
        if key == "uint8":
            raise ValueError("a uint8 output cannot hold normalised values; use float16 or float32")
        m = _per_channel(mean, 0.0, "mean")
        s = _per_channel(std, 1.0, "std")
        if np.any(s == 0):
            raise ValueError("std must be non-zero")
        table = (v[None, :] / max_value - m[:, None]) / s[:, None]
    limit = _FLOAT16_MAX if key == "float16" else float(np.finfo(np.float32).max)
    if key != "uint8" and np.abs(table).max() > limit:
        raise ValueError(f"std={std!r} with mean={mean!r} gives values up to {np.abs(table).max():.4g}, "
                         f"beyond the largest {key} ({limit:.6g}): they would be inf")
    lut = np.ascontiguousarray(table, dtype=_DTYPES[key])
    perm = np.array([0, 1, 2] if order == "RGB" else [2, 1, 0], np.int32)
    return lut, perm
