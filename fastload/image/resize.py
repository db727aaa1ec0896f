"""Resize (a box of) an HxWxC uint8 image into a caller-supplied buffer.

This module validates and explains; the loops live in src_c/resample.c and
run with the GIL released. Each thread gets its own scratch space (tap tables
and the intermediate image), which only grows, so a thread that resizes many
images stops allocating after the first few.

Results match Pillow's ``Image.resize(size, BILINEAR or BOX, box=...)``: each
axis on its own is bit-identical (same taps, same 22-bit fixed point). For a
resize in both directions Pillow 13 sometimes runs the vertical pass first;
fastload always runs horizontal then vertical, so a few pixels can then
differ by one grey level.
"""
from __future__ import annotations

import threading

import numpy as np

from .._kernels import _resample
from ._checks import uint8_hwc

__all__ = ["FILTERS", "resize"]

FILTERS = {"nearest": _resample.NEAREST, "bilinear": _resample.BILINEAR, "area": _resample.AREA}

_local = threading.local()


def _resampler() -> _resample.Resampler:
    r = getattr(_local, "resampler", None)
    if r is None:
        r = _local.resampler = _resample.Resampler()
    return r


def _as_hwc(img, name: str) -> np.ndarray:
    img = uint8_hwc(img, name)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name} must be HxW or HxWxC with C in (1, 3, 4), got shape {img.shape}")
    return img


def resize(img: np.ndarray, size: tuple[int, int], *, box=None, filter: str = "bilinear",
           antialias: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """Resample ``img[box]`` to ``size`` = (height, width).

    box: (x0, y0, x1, y1) in continuous pixel coordinates (pixel i covers
    [i, i+1)), fractional allowed, inside the image; default the whole image.
    filter: "bilinear" (triangle), "area" (box average, Pillow's BOX) or
    "nearest". antialias=False keeps the bilinear support fixed when shrinking
    (plain interpolation, like torchvision's antialias=False); it does not
    affect "area" or "nearest".
    out: an array of exactly the output shape and dtype uint8 to write into
    (rows may be strided, pixels must be contiguous). Returns out.
    """
    src = _as_hwc(img, "img")
    h, w, c = src.shape
    try:
        oh, ow = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if oh <= 0 or ow <= 0:
        raise ValueError(f"size must be positive, got {(oh, ow)}")
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {sorted(FILTERS)}, got {filter!r}")
    if h == 0 or w == 0:
        raise ValueError(f"img is empty (shape {img.shape})")
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    else:
        box = tuple(float(v) for v in box)
        if len(box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = box
        eps = 1e-3
        if not (-eps <= x0 < x1 <= w + eps and -eps <= y0 < y1 <= h + eps):
            raise ValueError(f"box {box} must be non-empty and inside the {w}x{h} image")

    shape = (oh, ow) if img.ndim == 2 else (oh, ow, c)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a uint8 array of shape {shape}, got {got}")
    elif not out.flags.writeable:
        raise ValueError("out is read-only")
    dst = out[:, :, None] if out.ndim == 2 else out
    if (dst.strides[2] != 1 and c > 1) or dst.strides[1] != c:
        raise ValueError(f"out must have contiguous pixels (strides (row, {c}, 1)), got {out.strides}")
    if (src.strides[2] != 1 and c > 1) or src.strides[1] != c:
        src = np.ascontiguousarray(src)
    if np.shares_memory(src, dst):
        raise ValueError("out must not overlap img")
    _resampler().resize(src, dst, box, FILTERS[filter], bool(antialias))
    return out
