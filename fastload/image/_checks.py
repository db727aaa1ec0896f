"""Argument checks shared by the image modules (color, resize)."""
from __future__ import annotations

import numpy as np


def uint8_hwc(img, name: str) -> np.ndarray:
    """``img`` as a uint8 array with a channel axis: an HxW image becomes an HxWx1 view.

    Raises TypeError when ``img`` is not a numpy array and ValueError when it is
    not uint8. Other arrays come back as they are: each caller checks the shape
    it takes (the result has 3 dimensions only if ``img`` had 2 or 3).
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    return img
