"""Photo-like synthetic images and image-folder datasets, for the demo, benchmarks and tests.

Flat colours compress to nothing and decode unrealistically fast, so each image
mixes what real photos have: smooth illumination, hard-edged objects, fine
texture and sensor noise. At 460x400 and JPEG quality 90 that gives files of
tens of kilobytes, like ImageNet's.

In :func:`make_image_folder` each class also has its own colour cast and
texture orientation, so a small model learns the classes within a few epochs
(a demo that trains on class-independent noise stays at chance and looks like
a broken loader).
"""
from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["class_signal", "encode", "make_image_folder", "photo_like"]


def _smooth(rng, h, w, cells):
    """Low-frequency RGB field: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(0, 255, size=(cells + 1, cells + 1, 3))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bot = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def class_signal(label: int, classes: int) -> tuple[np.ndarray, float]:
    """Class ``label``'s colour cast (RGB) and texture angle: hues and angles evenly spread."""
    hue = 2 * np.pi * label / max(classes, 1)
    tint = 127.5 + 110 * np.cos(hue + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]))
    return tint, np.pi * label / max(classes, 1)


def _rgb(h: int, w: int, seed, tint=None, angle: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = _smooth(rng, h, w, 4)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(2, 6)):   # hard-edged objects
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.35) * h + 1, rng.uniform(0.05, 0.35) * w + 1
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[mask] = img[mask] * 0.3 + rng.uniform(0, 255, 3) * 0.7
    freq = rng.uniform(0.05, 0.5)
    slope = rng.uniform(-1, 1) if angle is None else np.tan(angle - np.pi / 2 + 1e-3)
    if tint is not None:
        img = img * 0.7 + np.asarray(tint, dtype=np.float64) * 0.3
    img += 18 * np.sin(xx * freq + yy * freq * np.clip(slope, -4, 4))[..., None]   # texture
    img += rng.normal(0, 10, size=img.shape)   # sensor noise
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


def photo_like(h: int, w: int, channels: int = 3, *, seed: int = 0, tint=None,
               angle: float | None = None) -> np.ndarray:
    """A deterministic HxWxC uint8 image with gradients, edges, texture and noise.

    Three channels are one RGB picture; other counts take planes from as many
    pictures as needed (the first from ``seed``), so 1 is a grey image and 4
    adds an independent fourth plane. ``tint`` (RGB) pulls the first picture
    towards a colour; ``angle`` sets its texture's orientation (random otherwise).
    """
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    planes = [_rgb(h, w, seed, tint, angle) if k == 0 else _rgb(h, w, [seed, k])
              for k in range(-(-channels // 3))]
    img = planes[0] if len(planes) == 1 else np.concatenate(planes, axis=-1)
    return img if channels == 3 else np.ascontiguousarray(img[..., :channels])


def encode(img, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """Encode an HxW or HxWxC uint8 array, or a PIL image, with Pillow's ``save``.

    ``save_kwargs`` go to ``Image.save``, e.g. ``quality=90, subsampling=2``
    (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0), ``progressive=True``, ``exif=...``.
    """
    from PIL import Image
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def make_image_folder(root: str | os.PathLike, *, classes: int = 10, per_class: int = 32,
                      size: tuple[int, int] = (400, 460), jitter: float = 0.15, seed: int = 0,
                      quality: int = 90, fmt: str = "JPEG", learnable: bool = True) -> str:
    """Write ``classes`` folders of ``per_class`` photo-like images; sizes vary by ``jitter`` around (h, w).

    With ``learnable`` (the default) each class has its own colour cast and
    texture orientation (:func:`class_signal`); without, classes are
    indistinguishable noise.
    """
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}.get(fmt.upper(), fmt.lower())
    kw = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {}
    for c in range(classes):
        d = os.path.join(root, f"class_{c:03d}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            h = max(1, int(size[0] * rng.uniform(1 - jitter, 1 + jitter)))
            w = max(1, int(size[1] * rng.uniform(1 - jitter, 1 + jitter)))
            tint, angle = class_signal(c, classes) if learnable else (None, None)
            img = photo_like(h, w, seed=int(rng.integers(1 << 31)), tint=tint, angle=angle)
            with open(os.path.join(d, f"img_{i:05d}.{ext}"), "wb") as f:
                f.write(encode(img, fmt, **kw))
    return root
