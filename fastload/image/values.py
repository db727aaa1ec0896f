"""What an image field accepts as a value, turned into what its kernels read.

:func:`to_image_value` is the one place that does it: a path, encoded bytes,
or an HWC uint8 RGB array of pixels already decoded (which skips decoding and
goes straight to the resample-and-write kernel), or None for a missing image.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["to_image_value"]


def to_image_value(v):
    """A path (str), encoded bytes, an (H, W, 3) uint8 C-contiguous array, or None for a missing image.

    Accepts paths, bytes-like objects, the Hub's ``{"bytes", "path"}`` dicts,
    PIL images, binary file-like objects and NumPy arrays (HW grey, HWC with 1,
    3 or 4 channels, uint8; a 1-D uint8 array is an encoded file's bytes). A PIL
    image's 16-bit and float modes map to 0..255 as a file's do (see
    :mod:`fastload.image.decode`). Raises TypeError or ValueError naming what was wrong.
    """
    if v is None or isinstance(v, (str, bytes)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, dict):
        if not {"bytes", "path"} & v.keys():
            raise TypeError(f"an image dict needs 'bytes' or 'path', got keys {sorted(v)}")
        data, path = v.get("bytes"), v.get("path")
        return bytes(data) if data is not None else (to_image_value(path) if path is not None else None)
    if isinstance(v, np.ndarray):   # 1-D uint8: an encoded file's bytes (as a memory map gives them)
        return v.tobytes() if v.ndim == 1 and v.dtype == np.uint8 else _rgb_array(v)
    if hasattr(v, "getvalue"):   # io.BytesIO: the whole buffer, wherever its position is
        return v.getvalue()
    if hasattr(v, "read"):
        if hasattr(v, "seekable") and v.seekable():
            v.seek(0)
        data = v.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"an image file object must be opened in binary mode, read gave {type(data).__name__}")
        return bytes(data)
    if _is_pil_image(v):
        if v.mode in ("RGB", "L", "RGBA"):
            return _rgb_array(np.asarray(v))
        from .decode import _to_rgb   # a file's conversion: convert("RGB") clips 16-bit samples at 255
        return _rgb_array(_to_rgb(v))
    raise TypeError(f"expected an image path, bytes, a {{'bytes', 'path'}} dict, a PIL image, a file object "
                    f"or an HWC uint8 array, got {type(v).__name__}")


def _is_pil_image(v) -> bool:
    try:
        from PIL import Image
    except ImportError:   # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(v, Image.Image)


def _rgb_array(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or 0 in a.shape:
        raise ValueError(f"an image array must be (H, W), or (H, W, C) with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]   # alpha dropped, as a JPEG decoder would see the colour
    return np.ascontiguousarray(a)
