"""Test images made at test time: photo-like pixels from NumPy, encoded by Pillow.

``photo_like`` gives what a codec sees in a photograph (smooth shading, fine
noise, hard edges) so that decoders, resamplers and augmentations are tested on
realistic content, deterministically from a seed, without files in the repo.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

__all__ = ["encode", "photo_like", "write_image_folder"]


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


def encode(img, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """Encode an array (HxW or HxWxC uint8) or a PIL image with Pillow's ``save``.

    ``save_kwargs`` go to ``Image.save``, e.g. ``quality=90, subsampling=2``
    (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0), ``progressive=True``, ``exif=...``.
    """
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def write_image_folder(root, classes, per_class: int, size_range=(32, 96), seed: int = 0,
                       fmt: str = "JPEG", **save_kwargs) -> list[tuple[str, int]]:
    """Write ``root/<class>/<i>.<ext>`` images of random sizes within ``size_range``
    (inclusive, both sides) and return ``[(path, class_index), ...]`` in sorted order.
    ``classes`` is a list of names or a count (names ``class0``, ``class1``, ...);
    class indices follow the sorted names, as torchvision's ImageFolder assigns them."""
    if isinstance(classes, int):
        classes = [f"class{i}" for i in range(classes)]
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif",
           "TIFF": "tif"}.get(fmt.upper(), fmt.lower())
    rng = np.random.default_rng(seed)
    out = []
    for label, name in enumerate(sorted(classes)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(size_range[0], size_range[1] + 1, 2)
            path = os.path.join(root, name, f"{i:05d}.{ext}")
            with open(path, "wb") as f:
                f.write(encode(photo_like(int(h), int(w), int(rng.integers(2**31))), fmt, **save_kwargs))
            out.append((path, label))
    return out
