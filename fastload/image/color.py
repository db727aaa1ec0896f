"""Colour jitter, normalisation tables and the final write into a batch slot.

Normalisation is a lookup: ``make_lut`` builds, per output channel, the 256
values an input byte can become (already in the output dtype), and
``write_sample`` applies rotation, flips, channel order and that table in one
pass straight into the batch buffer. The loops live in src_c/augment.c and
run with the GIL released.
"""
from __future__ import annotations

import math

import numpy as np

from .._kernels import _augment
from ._checks import uint8_hwc

__all__ = ["color_jitter", "make_lut", "output_shape", "write_sample"]

_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}
_LAYOUTS = {"NCHW": _augment.NCHW, "NHWC": _augment.NHWC}


def _check_img(img, name="img") -> np.ndarray:
    img = uint8_hwc(img, name)
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"{name} must be a non-empty HxW or HxWxC array, got shape {img.shape}")
    return img


def _factor(v, name: str) -> float:
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite factor >= 0, got {v}")
    return v


def color_jitter(img: np.ndarray, brightness: float = 1.0, contrast: float = 1.0,
                 saturation: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """Brightness, then contrast, then saturation (factors; 1 = unchanged).

    Brightness scales values; contrast blends towards the mean luma
    (0.299 R + 0.587 G + 0.114 B) of its input; saturation blends each pixel
    towards its own luma. Float math, clamped to [0, 255] after each step and
    rounded to nearest (halves up) once at the end. An alpha channel is left
    alone; a grey image ignores saturation. ``out`` (same shape, uint8) may be
    ``img`` itself; by default a new array is returned.
    """
    src = _check_img(img)
    b, c, s = _factor(brightness, "brightness"), _factor(contrast, "contrast"), _factor(saturation, "saturation")
    if out is None:
        out = img.copy()
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != img.shape:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"out must be a uint8 array of shape {img.shape}, got {got}")
        if out is not img:
            np.copyto(out, img)
    dst = out[:, :, None] if out.ndim == 2 else out
    if (dst.strides[2] != 1 and src.shape[2] > 1) or dst.strides[1] != src.shape[2]:
        tmp = np.ascontiguousarray(dst)
        _augment.color_jitter(tmp, b, c, s)
        np.copyto(dst, tmp)
    else:
        _augment.color_jitter(dst, b, c, s)
    return out


def _per_channel(v, default: float, name: str) -> np.ndarray:
    a = np.full(3, default, np.float64) if v is None else np.asarray(v, np.float64)
    if a.ndim == 0:
        a = np.full(3, float(a))
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite scalar or 3 values, got {v!r}")
    return a


def make_lut(mean=None, std=None, max_value: float = 255.0, dtype="float32",
             order: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
    """Tables for ``write_sample``: input byte v of output channel c becomes
    ``(v / max_value - mean[c]) / std[c]`` in ``dtype``.

    Without mean and std the values are v itself (converted to dtype).
    mean/std are given per *output* channel. order "BGR" reverses the channels
    (perm = [2, 1, 0]). Caffe-style: ``make_lut(mean=[103.939, 116.779,
    123.68], max_value=1.0, order="BGR")`` gives v - mean in BGR order.
    Returns (lut of shape (3, 256) and the given dtype, perm int32 of shape (3,)).
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
    lut = np.ascontiguousarray(table, dtype=_DTYPES[key])
    perm = np.array([0, 1, 2] if order == "RGB" else [2, 1, 0], np.int32)
    return lut, perm


def output_shape(img_shape, *, rot90: int = 0, channels: int = 3, layout: str = "NCHW") -> tuple:
    """Shape of one sample slot for an image of ``img_shape`` (H, W[, C])."""
    h, w = img_shape[:2]
    if rot90 % 2:
        h, w = w, h
    return (channels, h, w) if layout == "NCHW" else (h, w, channels)


def write_sample(img: np.ndarray, out: np.ndarray, *, rot90: int = 0, hflip: bool = False,
                 vflip: bool = False, lut: np.ndarray, perm, layout: str = "NCHW") -> np.ndarray:
    """Write ``img`` (HxWxC uint8) into the batch slot ``out``.

    Geometry: rotate counter-clockwise by 90 * rot90 degrees (as
    ``np.rot90(img, rot90)``), then mirror left-right if hflip, then up-down
    if vflip. Output channel c is ``lut[c][img[..., perm[c]]]``. ``out`` is a
    C-contiguous (C, H', W') array for layout "NCHW" or (H', W', C) for
    "NHWC", of lut's dtype (uint8, float16 or float32). Returns out.
    """
    src = _check_img(img)
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    lut = np.asarray(lut)
    perm = np.ascontiguousarray(perm, dtype=np.int32)
    if lut.dtype not in (np.uint8, np.float16, np.float32) or lut.ndim != 2 or lut.shape[1] != 256:
        raise ValueError(f"lut must be (C, 256) of uint8, float16 or float32, got {lut.dtype} {lut.shape}")
    if perm.shape != (lut.shape[0],):
        raise ValueError(f"perm must have one entry per lut row ({lut.shape[0]}), got shape {perm.shape}")
    if np.any(perm < 0) or np.any(perm >= src.shape[2]):
        raise ValueError(f"perm entries must index the {src.shape[2]} input channels, got {perm.tolist()}")
    shape = output_shape(src.shape, rot90=int(rot90), channels=lut.shape[0], layout=layout)
    if not isinstance(out, np.ndarray) or out.dtype != lut.dtype or out.shape != shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {lut.dtype} array of shape {shape}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writable")
    if (src.strides[2] != 1 and src.shape[2] > 1) or src.strides[1] != src.shape[2]:
        src = np.ascontiguousarray(src)
    _augment.write_sample(src, out, int(rot90), bool(hflip), bool(vflip), perm,
                          np.ascontiguousarray(lut), _LAYOUTS[layout])
    return out
