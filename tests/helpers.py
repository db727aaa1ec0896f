"""What the tests share: batch comparison and photo-like image fixtures made at test time.

The pixels come from :mod:`fastload.synthetic` (the generator the demo and the
benchmarks use), so every test decodes, resizes and augments the same kind of
content: smooth shading, hard edges, fine texture and sensor noise,
deterministic per seed, no files in the repository.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from fastload.synthetic import encode, photo_like

__all__ = ["assert_batches_equal", "encode", "photo_like", "write_image_folder"]

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif"}


def _as_array(value):
    """A NumPy view of an array-like leaf (ndarray, NumPy scalar, CPU torch tensor, JAX array), else None."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if hasattr(value, "detach"):   # torch: compare the values, whatever the device
            value = value.detach().cpu()
        return np.asarray(value)
    return None


def _compare(a, b, where: str) -> str | None:
    """Why ``a`` and ``b`` differ (naming the field at ``where``), or None when they are equal."""
    xa, xb = _as_array(a), _as_array(b)
    if xa is not None or xb is not None:
        if xa is None or xb is None:
            return f"{where}: an array ({type(a if xa is not None else b).__name__}) against " \
                   f"{type(b if xa is not None else a).__name__}"
        if xa.shape != xb.shape:
            return f"{where}: shape {xa.shape} != {xb.shape}"
        if xa.dtype != xb.dtype:
            return f"{where}: dtype {xa.dtype} != {xb.dtype}"
        same = (xa == xb) | ((xa != xa) & (xb != xb)) if xa.dtype.kind in "fc" else xa == xb
        if not np.all(same):
            first = tuple(int(i) for i in np.argwhere(~np.asarray(same))[0])
            return (f"{where}: {int(np.size(same) - np.count_nonzero(same))} of {np.size(same)} values differ, "
                    f"first at {first}: {xa[first].item()!r} != {xb[first].item()!r}")
        return None
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            return f"{where}: {type(a).__name__} != {type(b).__name__}"
        if set(a) != set(b):
            return f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            why = _compare(a[key], b[key], f"{where}[{key!r}]")
            if why:
                return why
        return None
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        if isinstance(a, tuple) != isinstance(b, tuple):   # a named tuple is a tuple
            return f"{where}: {type(a).__name__} != {type(b).__name__}"
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            why = _compare(x, y, f"{where}[{k}]")
            if why:
                return why
        return None
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_batches_equal(a, b) -> None:
    """Assert two sequences of batches are equal: as many batches, each with the same structure.

    A batch is an array, a tuple/list (``(images, labels)``) or a dict of named
    fields, nested as deep as needed; arrays must agree in shape, dtype and
    every value (NaN equals NaN), other leaves (strings, numbers) by ``==``.
    Unlike ``zip``, a missing or extra batch is an error. The message names
    the first differing batch and field.
    """
    a, b = list(a), list(b)
    for i, (x, y) in enumerate(zip(a, b)):
        why = _compare(x, y, f"batch {i}")
        if why:
            raise AssertionError(f"batches differ: {why}")
    if len(a) != len(b):
        raise AssertionError(f"batches differ: {len(a)} batches != {len(b)} batches")


def write_image_folder(root, classes, per_class: int, size_range=(32, 96), seed: int = 0,
                       fmt: str = "JPEG", **save_kwargs) -> list[tuple[str, int]]:
    """Write ``root/<class>/<i>.<ext>`` images of random sizes within ``size_range``
    (inclusive, both sides) and return ``[(path, class_index), ...]`` in sorted order.
    ``classes`` is a list of names or a count (names ``class0``, ``class1``, ...);
    class indices follow the sorted names, as torchvision's ImageFolder assigns them."""
    if isinstance(classes, int):
        classes = [f"class{i}" for i in range(classes)]
    ext = _EXTENSIONS.get(fmt.upper(), fmt.lower())
    rng = np.random.default_rng(seed)
    out = []
    for label, name in enumerate(sorted(classes)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(size_range[0], size_range[1] + 1, 2)
            path = os.path.join(root, name, f"{i:05d}.{ext}")
            with open(path, "wb") as f:
                f.write(encode(photo_like(int(h), int(w), seed=int(rng.integers(2**31))), fmt, **save_kwargs))
            out.append((path, label))
    return out


def decode_limit_probe(n: int, broken: int):
    """A stand-in for the bench's decode-limit work (``limits._parallel_rate`` builds it in each
    process): ``n`` images, of which image ``broken`` fails; any on the main thread fails too."""
    import threading

    def work(i):
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("a decode-limit image was decoded on the main thread")
        if i == broken:
            raise ValueError(f"image {i} is broken")
    return work, n
