"""The image field: a list of transform specs compiled into one C plan, run a chunk at a time.

``ImageField.fill`` is the loader's hot path. It hands a whole chunk of paths
to :meth:`fastload._kernels._batch.Worker.run_chunk`, which reads, decodes
(only the crop's region, DCT-scaled where possible), resamples, augments and
writes each sample into its batch row with the GIL released (EXIF-rotated
JPEGs and PNGs included: the orientation is folded into the final write);
PNGs decode (libspng) only down to the crop's last row. Samples the C route
declines (WebP, CMYK JPEGs, PNGs libspng rejects, a build without libspng, ...)
are decoded through Pillow and finished by the same kernel with the same random
draws, so the route a file takes never changes what the sample looks like
beyond decoder rounding (none for PNG). Built without libjpeg-turbo, JPEGs take
:meth:`Worker.run_chunk_pillow` (see :func:`jpeg_route`): Pillow's own decoder,
driven from the compiled loop, DCT-scaled by ``draft()``'s rule under the same
``reducing_gap``, decoding only the leading rows the crop reaches with the GIL
released, so it too runs in parallel on the worker threads, with exactly the
pixels of the per-sample route.

Conventions (torchvision's unless said): float output without Normalize is
pixel / 255 in [0, 1] for :class:`Image` (``ToDtype(float32, scale=True)``);
``scale=False`` keeps 0..255. JPEGs are DCT-scaled only while the decoded
crop stays at least ``reducing_gap`` (default 2, as Pillow's ``thumbnail``)
times the output, then resampled with the antialiasing filter, so samples of
photographs stay within a grey level or two of Pillow's ``resize`` (a sharp
line at an edge whose size is not a multiple of 8 times the scale can be tens
of levels off, as with Pillow's own ``draft``); ``dct_scale=False`` never scales,
nor do the "nearest" and "area" filters.
"""
from __future__ import annotations

import math
import os
import threading
import sys
from typing import Sequence

import numpy as np

from .._kernels import _batch
from ..errors import DecodeError
from ..ops.augment import ColorJitter, PixelOp, RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from ..ops.geometry import INTERPOLATIONS, GeometricOp
from ..ops.normalize import Normalize, make_lut
from ..pipeline.fields import ChunkContext, Field, Output
from .decode import DEFAULT_MAX_PIXELS, pillow_decode, pillow_jpeg
from .values import to_image_value

__all__ = ["Image", "ImageField", "compile_plan", "jpeg_route"]

DTYPES = {"uint8": 0, "float16": 1, "float32": 2}
LAYOUTS = {"NCHW": 0, "NHWC": 1}
DEFAULT_REDUCING_GAP = 2.0


def _dtype_name(dtype) -> str:
    """'uint8', 'float16' or 'float32' from a name, a NumPy type or a dtype."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (a name or a NumPy dtype), got {dtype!r}")
    return name


_FLIP_MERGE = "give one, with p = p1 + p2 - 2 * p1 * p2 (two flips that both fire cancel)"
_MERGE = {ColorJitter: "give one ColorJitter with every factor (brightness=..., contrast=..., ...)",
          RandomHorizontalFlip: _FLIP_MERGE, RandomVerticalFlip: _FLIP_MERGE,
          RandomRotate90: "give one"}


def compile_plan(transforms: Sequence, *, dtype="float32", layout: str = "NCHW",
                 exif: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, dct_scale: bool = True,
                 reducing_gap: float = DEFAULT_REDUCING_GAP, scale: bool = False,
                 interpolation: str | None = None):
    """Validate a transform list and build the C plan. Returns (plan, (h, w)).

    ``scale``: without Normalize, float outputs hold pixel / 255 (else 0..255).
    ``interpolation`` overrides the transforms' own filter.
    """
    dtype = _dtype_name(dtype)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if isinstance(reducing_gap, bool) or not isinstance(reducing_gap, (int, float)) or not reducing_gap >= 1:
        raise ValueError(f"reducing_gap must be a number >= 1, got {reducing_gap!r}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    geometry, flips, jitter, normalize, size = [], {}, ColorJitter().ranges(), None, None
    pixel_ops = {}
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
            # The plan applies each pixel op at most once per sample: a second one would
            # silently replace the first, not follow it.
            if type(t) in pixel_ops:
                raise ValueError(f"{type(t).__name__} given twice ({pixel_ops[type(t)]!r}, then {t!r}): "
                                 f"each pixel transform is applied once per sample; {_MERGE[type(t)]}")
            pixel_ops[type(t)] = t
            if isinstance(t, ColorJitter):
                jitter = t.ranges()
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
    interp = interpolation or (resampling[-1].interpolation if resampling else "bilinear")
    antialias = resampling[-1].antialias if resampling else True
    if normalize is None and scale and dtype != "uint8":   # ToDtype(float, scale=True): [0, 1]
        lut, perm = make_lut(mean=0.0, std=1.0, dtype=dtype)
    elif normalize is None:   # raw pixel values in the output dtype
        lut, perm = make_lut(dtype=dtype)
    else:
        lut, perm = make_lut(mean=normalize.mean, std=normalize.std, max_value=normalize.max_value,
                             dtype=dtype, order=normalize.order)
    if dtype == "float16":
        lut = lut.view(np.uint16)
    plan = _batch.Plan(
        [g.op() for g in geometry], size[1], size[0],
        # nearest returns source pixels: a DCT-scaled decode has none to return; area takes whole
        # source pixels into each box, so a scaled decode would move the box edges by a source pixel;
        # bilinear without antialiasing reads two source pixels, which a scaled decode has averaged
        filter=INTERPOLATIONS[interp], antialias=antialias,
        max_denom=8 if dct_scale and interp == "bilinear" and antialias else 1,
        reducing_gap=float(reducing_gap),
        exif=exif, max_pixels=max_pixels or 0,
        p_hflip=flips.get(RandomHorizontalFlip, 0.0), p_vflip=flips.get(RandomVerticalFlip, 0.0),
        p_rot90=flips.get(RandomRotate90, 0.0), jitter=jitter,
        dtype=DTYPES[dtype], layout=LAYOUTS[layout], perm=perm, lut=lut,
        names=[f"{type(g).__name__}({g.size!r})" for g in geometry])
    return plan, size


class ImageField(Field):
    """Decode and transform image paths (or encoded bytes) into a (B, C, H, W) or (B, H, W, C) buffer.

    Float outputs without Normalize hold 0..255 unless ``scale=True``; the
    public :class:`Image` scales to [0, 1] by default.
    """

    error_class = DecodeError
    default_scale = False

    def __init__(self, transforms: Sequence, *, dtype="float32", layout: str = "NCHW",
                 exif: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, dct_scale: bool = True,
                 reducing_gap: float = DEFAULT_REDUCING_GAP, interpolation: str | None = None,
                 scale: bool | None = None, name: str = "image"):
        self.name = name
        self.transforms = list(transforms)
        self._options = dict(dtype=dtype, layout=layout, exif=exif, max_pixels=max_pixels, dct_scale=dct_scale,
                             reducing_gap=reducing_gap, interpolation=interpolation, scale=scale)
        self.dtype, self.layout, self.exif, self.max_pixels = _dtype_name(dtype), layout, exif, max_pixels
        self.reducing_gap = reducing_gap
        self.plan, self.size = compile_plan(
            self.transforms, dtype=self.dtype, layout=layout, exif=exif, max_pixels=max_pixels,
            dct_scale=dct_scale, reducing_gap=reducing_gap, interpolation=interpolation,
            scale=self.default_scale if scale is None else scale)
        self._local = threading.local()

    def __reduce__(self):   # the compiled plan does not pickle: made again from what made it
        return _rebuilt, (type(self), self.transforms, {**self._options, "name": self.name})

    @property
    def options(self) -> dict:
        """The image options this field was built with, by keyword (dtype as its name, scale resolved)."""
        scale = self._options["scale"]
        return {**self._options, "dtype": self.dtype, "scale": self.default_scale if scale is None else scale}

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
        indices = np.ascontiguousarray(ctx.indices, dtype=np.uint64)
        failures: dict[int, str] = {}
        items, paths, arrays = _encode(values, failures)
        status = np.full(len(values), _batch.OK, dtype=np.int32)
        route = jpeg_route()
        if route == "pillow":   # JPEGs through Pillow's decoder, driven from the compiled loop
            from PIL import Image
            bomb = float(Image.MAX_IMAGE_PIXELS or 0)

            def run(*args):
                return worker.run_chunk_pillow(self.plan, *args, bomb_pixels=bomb)
        else:
            def run(*args):
                return worker.run_chunk(self.plan, *args)
        if paths is None:   # a mix of paths and payloads, or missing values: one sample at a time
            for i in range(len(values)):
                if i not in failures and i not in arrays:
                    failures.update({i: msg for msg in run(
                        [items[i]], _is_path(values[i]), indices[i:i + 1], ctx.seed, ctx.epoch,
                        out[i:i + 1], status[i:i + 1]).values()})
        else:
            failures.update(run(items, paths, indices, ctx.seed, ctx.epoch, out, status))
        for i in np.flatnonzero((status == _batch.NOT_JPEG) | (status == _batch.UNSUPPORTED)):
            reason = self._pillow_route(worker, values[i], items[i], int(indices[i]), ctx, out[i],
                                        try_jpeg=route == "pillow-python")
            if reason:
                failures[int(i)] = reason
        for i, rgb in arrays.items():   # pixels already decoded: straight to the resample-and-write kernel
            reason = worker.process_rgb(self.plan, rgb, ctx.seed, ctx.epoch, int(indices[i]), out[i])
            if reason:
                failures[i] = reason
        return failures

    def draft_size(self, w: int, h: int, seed: int, epoch: int, index: int) -> tuple[int, int] | None:
        """The size the Pillow route asks ``Image.draft`` for, for sample ``index`` of a w x h
        (shown) image: the whole image scaled so that the crop keeps ``reducing_gap`` times the
        output's pixels; None where it may not scale (an image too small to halve, no DCT scaling)."""
        gap = self.reducing_gap
        if self.plan.max_denom <= 1 or min(w, h) < 2 * gap * min(self.size):
            return None
        try:
            (x0, y0, x1, y1), (oh, ow) = self.plan.box(w, h, seed, epoch, index)
        except ValueError:   # no crop fits: no draft, and process_rgb says why, as every route does
            return None
        return math.ceil(w * gap * ow / max(x1 - x0, 1e-9)), math.ceil(h * gap * oh / max(y1 - y0, 1e-9))

    def _pillow_route(self, worker, value, item, index, ctx, out_row, try_jpeg=True):
        """Decode through Pillow (JPEGs DCT-scaled by draft() as far as the plan allows) and finish in C.

        ``try_jpeg``: try :func:`pillow_jpeg` first (a JPEG run_chunk_pillow has
        declined is left to Pillow's own reader).
        """
        plan = self.plan

        def draft_size(w, h):
            return self.draft_size(w, h, ctx.seed, ctx.epoch, index)

        try:
            data = worker.read_file(item) if _is_path(value) else item
            img, full, scale = try_jpeg and pillow_jpeg(data, _name(value), max_pixels=self.max_pixels,
                                                        draft_size=draft_size) \
                or pillow_decode(data, _name(value), exif=self.exif, max_pixels=self.max_pixels,
                                 draft_size=draft_size)
        except DecodeError as e:
            return e.reason
        except OSError as e:
            return str(e)
        return worker.process_rgb(plan, np.ascontiguousarray(img), ctx.seed, ctx.epoch, index, out_row,
                                  full_size=full, scale=scale)


def _rebuilt(cls, transforms, options):
    return cls(transforms, **options)


class Image(ImageField):
    """An image field: ``fields={"image": fl.Image([fl.RandomResizedCrop(224)], dtype="uint8")}``.

    ``transforms``: geometric ops, then pixel ops, then an optional Normalize.
    ``dtype`` ("uint8", "float16", "float32" or the NumPy types): without
    Normalize, floats hold pixel / 255 in [0, 1] as torchvision's
    ``ToDtype(float32, scale=True)`` (``scale=False`` keeps 0..255).
    ``layout`` "NCHW" or "NHWC". ``exif`` applies the EXIF orientation.
    ``max_pixels`` refuses larger images. ``dct_scale`` lets JPEGs decode at
    1/2, 1/4 or 1/8 scale while the crop keeps ``reducing_gap`` (default 2,
    Pillow's ``thumbnail`` rule) times the output's pixels (bilinear only).
    ``interpolation``
    ("bilinear", "area" = Pillow's BOX, "nearest" = torchvision's
    NEAREST_EXACT) overrides the transforms' own.
    """

    default_scale = True


_ROUTE = None


def jpeg_route() -> str:
    """How JPEGs are decoded: "linked" (libjpeg-turbo compiled in: region and DCT-scaled decode in
    C); "pillow" (Pillow's decoder driven from the compiled chunk loop, writing in place the rows a
    crop reaches); "pillow-python" (a Pillow that cannot export its pixels in place: one Python call
    per JPEG, :func:`~fastload.image.decode.pillow_jpeg`). Decided once per process."""
    global _ROUTE
    if _ROUTE is None:
        _ROUTE = "linked" if _batch.HAVE_LIBJPEG_TURBO else "pillow" if _pillow_direct_works() else "pillow-python"
    return _ROUTE


def _pillow_direct_works() -> bool:
    """Whether this Pillow supports the "pillow" route and gives, through it, the pixels its own
    reader gives for a colour and a grey JPEG (whole and cut short, plain and DCT-scaled)."""
    import io

    from PIL import Image

    from ..synthetic import photo_like
    try:
        if not _batch.pillow_direct_supported():
            return False
        worker = _batch.Worker()
        rgb = photo_like(37, 45, seed=3)
        for pixels in (rgb, rgb[..., 1]):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=90)
            for scale in (1, 2):
                with Image.open(buf) as im:
                    im.draft(im.mode, (im.width // scale, im.height // scale))
                    want = np.asarray(im.convert("RGB"))
                got = worker.decode_pillow(buf.getvalue(), scale)
                part = worker.decode_pillow(buf.getvalue(), scale, 5)
                if got is None or part is None or not np.array_equal(got, want) or \
                        not np.array_equal(part, want[:5]):
                    return False
        return True
    except Exception:   # an older or different Pillow: the per-JPEG Python route
        return False


_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())   # os.fsencode's, without its per-call checks


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _name(value) -> str:
    return os.fspath(value) if _is_path(value) else "<bytes>"


def _encode(values, failures):
    """bytes for the C loop; whether they are all paths (True), all payloads (False) or mixed (None);
    and {i: RGB array} for values that are pixels already."""
    types = set(map(type, values))
    if types <= {str}:      # the common chunks: paths from a folder source,
        return [v.encode(*_FS_CODEC) for v in values], True, {}
    if types == {bytes}:    # or encoded files from shards
        return list(values), False, {}
    items, kinds, arrays = [], set(), {}
    for i, v in enumerate(values):
        if not isinstance(v, (str, bytes)):
            try:
                v = to_image_value(v)
            except (TypeError, ValueError) as e:
                items.append(b"")
                failures[i] = str(e)
                kinds.add(None)
                continue
        if _is_path(v):
            items.append(os.fsencode(v))
            kinds.add(True)
        elif isinstance(v, bytes):
            items.append(v)
            kinds.add(False)
        else:
            items.append(b"")
            kinds.add(None)
            if v is None:
                failures[i] = "missing image"
            else:
                arrays[i] = v
    return items, (kinds.pop() if len(kinds) == 1 else None), arrays
