"""The image field: a list of transform specs compiled into one C plan, run a chunk at a time.

``ImageField.fill`` is the loader's hot path. It hands a whole chunk of paths
to :meth:`fastload._kernels._batch.Worker.run_chunk`, which reads, decodes
(only the crop's region, DCT-scaled where possible), resamples, augments and
writes each sample into its batch row with the GIL released (EXIF-rotated
JPEGs included: the orientation is folded into the final write). Samples the C
route declines (PNG, WebP, CMYK JPEGs, ...) are decoded through
Pillow and finished by the same kernel with the same random draws, so the
route a file takes never changes what the sample looks like beyond decoder
rounding.
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from .._kernels import _batch
from ..errors import DecodeError
from ..ops.augment import ColorJitter, PixelOp, RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from ..ops.geometry import INTERPOLATIONS, GeometricOp
from ..ops.normalize import Normalize
from ..pipeline.fields import ChunkContext, Field, Output
from .color import make_lut
from .decode import DEFAULT_MAX_PIXELS, pillow_decode

__all__ = ["ImageField", "compile_plan"]

DTYPES = {"uint8": 0, "float16": 1, "float32": 2}
LAYOUTS = {"NCHW": 0, "NHWC": 1}


def compile_plan(transforms: Sequence, *, dtype: str = "float32", layout: str = "NCHW",
                 exif: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, dct_scale: bool = True):
    """Validate a transform list and build the C plan. Returns (plan, (h, w))."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    geometry, flips, jitter, normalize, size = [], {}, (0.0, 0.0, 0.0), None, None
    seen_pixel_op = False
    for t in transforms:
        if normalize is not None:
            raise ValueError(f"Normalize must be the last transform; {t!r} follows it")
        if isinstance(t, GeometricOp):
            if seen_pixel_op:
                raise ValueError(f"geometric transform {t!r} after a pixel transform: "
                                 "put crops and resizes first")
            geometry.append(t)
            size = t.static_size
        elif isinstance(t, PixelOp):
            seen_pixel_op = True
            if isinstance(t, ColorJitter):
                jitter = (t.brightness, t.contrast, t.saturation)
            else:
                flips[type(t)] = t.p
        elif isinstance(t, Normalize):
            normalize = t
        else:
            raise TypeError(f"not an image transform: {t!r}")
    if size is None:
        raise ValueError("the transforms must end with a fixed output size (Resize((h, w)), a crop, "
                         "or RandomResizedCrop) so that samples can be batched")
    if flips.get(RandomRotate90, 0) > 0 and size[0] != size[1]:
        raise ValueError(f"RandomRotate90 needs a square output, got {size}")
    resampling = [g for g in geometry if g.interpolation is not None]
    interp = resampling[-1].interpolation if resampling else "bilinear"
    antialias = resampling[-1].antialias if resampling else True
    if normalize is None:   # raw pixel values in the output dtype
        lut, perm = make_lut(dtype=dtype)
    else:
        lut, perm = make_lut(mean=normalize.mean, std=normalize.std, max_value=normalize.max_value,
                             dtype=dtype, order=normalize.order)
    if dtype == "float16":
        lut = lut.view(np.uint16)
    plan = _batch.Plan(
        [g.op() for g in geometry], size[1], size[0],
        filter=INTERPOLATIONS[interp], antialias=antialias, max_denom=8 if dct_scale else 1,
        exif=exif, max_pixels=max_pixels or 0,
        p_hflip=flips.get(RandomHorizontalFlip, 0.0), p_vflip=flips.get(RandomVerticalFlip, 0.0),
        p_rot90=flips.get(RandomRotate90, 0.0), jitter=jitter,
        dtype=DTYPES[dtype], layout=LAYOUTS[layout], perm=perm, lut=lut)
    return plan, size


class ImageField(Field):
    """Decode and transform image paths (or encoded bytes) into a (B, C, H, W) or (B, H, W, C) buffer."""

    error_class = DecodeError

    def __init__(self, transforms: Sequence, *, dtype: str = "float32", layout: str = "NCHW",
                 exif: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, dct_scale: bool = True,
                 name: str = "image"):
        self.name = name
        self.transforms = list(transforms)
        self.dtype, self.layout, self.exif, self.max_pixels = dtype, layout, exif, max_pixels
        self.plan, self.size = compile_plan(self.transforms, dtype=dtype, layout=layout, exif=exif,
                                            max_pixels=max_pixels, dct_scale=dct_scale)
        self._local = threading.local()

    def outputs(self):
        h, w = self.size
        shape = (3, h, w) if self.layout == "NCHW" else (h, w, 3)
        return [Output(self.name, shape, np.dtype(self.dtype))]

    def _worker(self) -> _batch.Worker:
        w = getattr(self._local, "worker", None)
        if w is None:
            w = self._local.worker = _batch.Worker()
        return w

    def fill(self, values, outs, ctx: ChunkContext):
        out = outs[self.name]
        worker = self._worker()
        n = len(values)
        failures: dict[int, str] = {}
        items, paths = _encode(values, failures)
        status = np.empty(n, dtype=np.int32)
        if paths is None:   # a mix of paths and payloads, or missing values: one sample at a time
            for i in range(n):
                if i not in failures:
                    sub = status[i:i + 1]
                    r = worker.run_chunk(self.plan, [items[i]], isinstance(values[i], (str, os.PathLike)),
                                         ctx.indices[i:i + 1], ctx.seed, ctx.epoch, out[i:i + 1], sub)
                    failures.update({i: msg for msg in r.values()})
                else:
                    status[i] = _batch.OK
        else:
            failures.update(worker.run_chunk(self.plan, items, paths, ctx.indices, ctx.seed, ctx.epoch, out, status))
        for i in np.flatnonzero((status == _batch.NOT_JPEG) | (status == _batch.UNSUPPORTED)):
            reason = self._pillow_route(worker, values[i], items[i], int(ctx.indices[i]), ctx, out[i])
            if reason:
                failures[int(i)] = reason
        return failures

    def _pillow_route(self, worker, value, item, index, ctx, out_row):
        try:
            data = worker.read_file(item) if isinstance(value, (str, os.PathLike)) else item
            img = pillow_decode(data, _name(value), exif=self.exif, max_pixels=self.max_pixels)
        except DecodeError as e:
            return e.reason
        except OSError as e:
            return str(e)
        return worker.process_rgb(self.plan, np.ascontiguousarray(img), ctx.seed, ctx.epoch, index, out_row)


def _name(value) -> str:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else "<bytes>"


def _encode(values, failures):
    """bytes for the C loop, and whether they are all paths (True), all payloads (False), or mixed (None)."""
    items, kinds = [], set()
    for i, v in enumerate(values):
        if isinstance(v, (str, os.PathLike)):
            items.append(os.fsencode(v))
            kinds.add(True)
        elif isinstance(v, (bytes, bytearray, memoryview, np.ndarray)):
            items.append(bytes(v))
            kinds.add(False)
        else:
            items.append(b"")
            failures[i] = "missing image" if v is None else f"expected a path or bytes, got {type(v).__name__}"
            kinds.add(None)
    return items, (kinds.pop() if len(kinds) == 1 else None)
