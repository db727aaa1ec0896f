"""Photo-like test images made at test time: smooth gradients, texture noise
and hard edges, deterministic per seed (no files, no network)."""
import numpy as np


def photo_like(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for _ in range(c):
        a, b, ph = rng.uniform(-3, 3, 3)
        base = 128 + 90 * np.sin(a * x / max(w, 1) + b * y / max(h, 1) + ph)
        planes.append(base)
    img = np.stack(planes, axis=-1)
    # A few hard-edged rectangles and a disc, like objects in front of a background.
    for _ in range(3):
        x0, x1 = np.sort(rng.integers(0, w + 1, 2))
        y0, y1 = np.sort(rng.integers(0, h + 1, 2))
        img[y0:y1, x0:x1] = rng.uniform(0, 255, c)
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, max(3, min(h, w) / 3))
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, c)
    img += rng.normal(0, 8, img.shape)   # sensor-like noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
