"""Reading one image into an HxWx3 uint8 RGB array.

JPEGs go through the compiled libjpeg-turbo kernel and PNGs through the
compiled libspng kernel, one decoder per thread. Everything else, and the
images those kernels hand back (CMYK/YCCK JPEGs, an EXIF orientation to apply,
a PNG libspng finds corrupt, a build without libjpeg-turbo or libspng), goes
through Pillow, whose verdict on a bad file is therefore the one every build
gives.
(In a Loader, a build without libjpeg-turbo drives Pillow's JPEG decoder from
the compiled loop instead, with the pixels these functions give: see
``Worker.run_chunk_pillow``.)
Both routes give what ``ImageOps.exif_transpose(im).convert("RGB")`` gives,
except for the high-bit-depth modes, where Pillow's conversion clips at 255:

* ``I;16`` (and ``I;16B``/``I;16L``/``I;16N``): ``v / 257`` rounded, mapping
  0..65535 onto 0..255.
* ``I`` (32-bit integers): taken to hold 16-bit samples, as 16-bit PNG and TIFF
  give: clipped to 0..65535, then as ``I;16``.
* ``F`` (float): Pillow's own 0..255 scale (``L`` converts to ``F`` unchanged):
  rounded and clipped to 0..255, NaN as 0.

Alpha is dropped, not composited (as ``convert("RGB")``); animated GIF/WebP/PNG
give their first frame. Every failure raises :class:`~fastload.errors.DecodeError`
naming the file: unreadable, empty, truncated, corrupt, not an image, or over
the pixel limit. JPEGs that Pillow's decoder would take although libjpeg warns
that their pixels are invented (no scan, restart markers where none belong)
are corrupt, as on the libjpeg-turbo route. Pillow's global settings (``MAX_IMAGE_PIXELS``,
``LOAD_TRUNCATED_IMAGES``) are read, never changed.
"""
from __future__ import annotations

import io
import os
import re
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastload._kernels import _batch
from fastload.errors import DecodeError

__all__ = ["DEFAULT_MAX_PIXELS", "image_size", "pillow_decode", "pillow_jpeg", "read_image"]

#: Images with more pixels are refused: twice Pillow's default
#: ``MAX_IMAGE_PIXELS``, the size at which Pillow itself raises
#: ``DecompressionBombError``. Pillow's own limit still applies on its route.
DEFAULT_MAX_PIXELS = 178_956_970

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (5, 6, 7, 8)
_INVERSE = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}   # the transpose that undoes each orientation
_REVERSES = {2: (0,), 3: (0, 1), 4: (1,), 6: (1,), 7: (0, 1), 8: (0,)}   # stored axes (x 0, y 1) it runs backwards
_EXIF_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")   # where Image.getexif looks
_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\0"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')   # as Image.getexif reads XMP
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_EXIF_KEYWORDS = (b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp")
_HEADER_BYTES = 1 << 16   # enough for most JPEG headers; image_size reads on if not
_local = threading.local()


def _pillow_turns_tiff() -> str | None:
    """When this Pillow applies a TIFF's orientation tag itself: ``"open"`` (Pillow >= 11:
    ``size`` is already the displayed one), ``"load"`` (Pillow 8.2 to 10: ``size`` is the
    stored one until ``load`` transposes the pixels), or None (older: never)."""
    buf = io.BytesIO()
    Image.new("L", (2, 1)).save(buf, "TIFF", tiffinfo={_ORIENTATION_TAG: 6})
    with Image.open(buf) as im:
        if im.size == (1, 2):
            return "open"
        im.load()
        return "load" if im.size == (1, 2) else None


_PILLOW_TURNS_TIFF = _pillow_turns_tiff()


def read_image(src, *, exif: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               draft: tuple[int, int] | None = None, name: str | None = None) -> np.ndarray:
    """Decode ``src`` (a path, or bytes-like encoded data) to a new HxWx3 uint8 array.

    ``exif`` applies the EXIF orientation. ``max_pixels`` (None or 0: no
    limit) refuses larger images. ``draft=(w, h)`` lets JPEGs decode at 1/2,
    1/4 or 1/8 scale while staying at least w x h (as ``Image.draft``); the
    array's size tells the scale. ``name`` labels bytes in errors.
    """
    data, name = _read(src, name)
    if _is_jpeg(data) and _batch.HAVE_LIBJPEG_TURBO:
        min_size, max_denom = ((0, 0), 1) if draft is None else (_min_size(draft), 8)
        try:
            return _decoder().decode(data, min_size=min_size, max_denom=max_denom, exif=exif,
                                     max_pixels=max_pixels or 0, name=name)[0]
        except _batch.Unsupported:
            pass   # CMYK, or an orientation to apply: Pillow's job
    if _is_png(data) and _batch.HAVE_SPNG:
        try:
            return _png_decoder().decode(data, exif=exif, max_pixels=max_pixels or 0, name=name)
        except (_batch.Unsupported, DecodeError):
            pass   # an orientation to apply, or a file libspng rejects: Pillow's to decode or explain
    if draft is None:
        return pillow_decode(data, name, exif=exif, max_pixels=max_pixels)
    return pillow_decode(data, name, exif=exif, max_pixels=max_pixels, draft_size=draft)[0]


def pillow_decode(data, name: str, *, exif: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  draft_size=None):
    """Decode bytes-like ``data`` through Pillow; ``name`` labels errors.

    Returns a new HxWx3 uint8 array. With ``draft_size=(w, h)`` (in oriented
    pixels), or a function of the oriented (width, height) returning that
    (or None), JPEGs use ``Image.draft`` to decode at the smallest DCT scale
    1/s keeping them at least w x h, and the result is ``(array, (width,
    height), s)``: the oriented full-resolution size, and the scale, by which
    a full-resolution coordinate X maps to ``X / s`` in the array (as
    ``draft()``'s box says; s is 1 for formats without draft mode).

    Pillow's TIFF plugin applies the TIFF orientation tag itself, so for TIFF
    it is not applied again: exactly once whatever the format (and undone with
    ``exif=False``).
    """
    if len(data) == 0:
        raise DecodeError(name, "empty file")
    if _is_jpeg(data):   # what Pillow's decoder, which ignores libjpeg's warnings, lets pass
        problem = _batch.jpeg_check(data)
        if problem:
            raise DecodeError(name, problem)
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(im.size, max_pixels, name)
            if exif and im.format == "PNG":
                im.load()   # chunks after the image data (an eXIf, XMP) are read only then, as exif_transpose sees them
            orientation = _orientation(im) if exif else 1
            if im.format == "TIFF" and _PILLOW_TURNS_TIFF:
                tag = _orientation(im)   # read before load: Pillow drops the tag it applies
                im.load()   # the turned size, whichever Pillow turns it
                orientation = 1 if exif else _INVERSE.get(tag, 1)   # undo the turn for stored pixels
            full = im.size
            shown = full[::-1] if orientation in _SWAPS_AXES else full
            want = draft_size(*shown) if callable(draft_size) else draft_size
            scale = 1
            if want is not None and im.format == "JPEG":
                w, h = _min_size(want)
                s = _draft_scale(full, (h, w) if orientation in _SWAPS_AXES else (w, h),
                                 _REVERSES.get(orientation, ()))
                drafted = im.draft(None, (full[0] // s, full[1] // s)) if s > 1 else None
                if drafted is not None:   # its box: (0, 0, width / scale, height / scale)
                    scale = round(full[0] / drafted[1][2])
            im.load()
            if orientation in _TRANSPOSE:
                im = im.transpose(_TRANSPOSE[orientation])
            pixels = _to_rgb(im)
    except (DecodeError, MemoryError):
        raise
    except Image.DecompressionBombError as e:   # Pillow's own, stricter guard fired first
        raise DecodeError(name, f"over the limit of Pillow's decompression-bomb guard: {e}") from e
    except Exception as e:   # Pillow's plugins raise many types on malformed data
        raise _pillow_failed(e, data, name) from e
    if draft_size is None:
        return pixels
    return pixels, shown, scale


def pillow_jpeg(data, name: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size=None):
    """Pillow's own JPEG decoder, driven without its Python header parser.

    For baseline and progressive grey or YCbCr JPEGs without an EXIF rotation
    (the common case on the route without libjpeg-turbo): the frame header is
    read by fastload's C marker scan, and Pillow's decoder (the same one,
    with the same DCT scale ``draft()`` would pick for ``draft_size``, a size
    or a function of (width, height)) decodes with the GIL released. Gives
    ``pillow_decode``'s pixels, as ``(array, (width, height), scale)``, or None for
    anything else (other formats, CMYK, rotations, truncated or corrupt
    data), which ``pillow_decode`` then handles and explains.
    """
    head = _batch.jpeg_scan(data)
    if head is None:
        return None
    w, h, components, orientation = head
    if components not in (1, 3) or orientation not in (0, 1):   # -1: an orientation only Pillow reads
        return None
    _check_pixels((w, h), max_pixels, name)
    if Image.MAX_IMAGE_PIXELS and w * h > 2 * Image.MAX_IMAGE_PIXELS:
        raise DecodeError(name, f"over the limit of Pillow's decompression-bomb guard: {w}x{h} pixels")
    if _batch.jpeg_check(data):   # what Pillow's decoder, ignoring libjpeg's warnings, lets pass: pillow_decode says
        return None
    want = draft_size(w, h) if callable(draft_size) else draft_size
    scale = 1
    if want is not None:   # as JpegImageFile.draft
        rw, rh = _min_size(want)
        k = min(w // rw, h // rh)
        scale = next((s for s in (8, 4, 2) if k >= s), 1)
    sw, sh = -(-w // scale), -(-h // scale)
    mode = "RGB" if components == 3 else "L"
    core = Image.core.new(mode, (sw, sh))
    decoder = Image.core.jpeg_decoder(mode, mode, "", scale, 0)
    decoder.setimage(core, (0, 0, sw, sh))
    try:
        consumed, status = decoder.decode(bytes(data))
    finally:
        decoder.cleanup()
    if consumed >= 0 or status < 0:   # wanted more data, or failed: Pillow's load explains
        return None
    pixels = np.asarray(Image.Image()._new(core))
    if mode == "L":
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels, (w, h), scale


def image_size(src, *, exif: bool = True, name: str | None = None) -> tuple[int, int]:
    """(width, height) of ``src`` after EXIF orientation (when ``exif``), from its headers."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        try:
            with open(path, "rb") as f:
                return _size_from(f, exif, path)
        except OSError as e:
            raise DecodeError(path, f"cannot read file: {e.strerror or e}") from e
    data, name = _read(src, name)
    return _size_from(io.BytesIO(data), exif, name)


def _size_from(f, exif: bool, name: str) -> tuple[int, int]:
    head = f.read(_HEADER_BYTES)
    if not head:
        raise DecodeError(name, "empty file")
    orientation = None
    if _is_jpeg(head) and _batch.HAVE_LIBJPEG_TURBO:
        try:
            info = _decoder().info(head, name)
        except (DecodeError, _batch.Unsupported):   # the header may go on past what was read
            rest = f.read()
            if not rest:
                raise
            info = _decoder().info(head + rest, name)
        w, h, orientation = info["width"], info["height"], info["orientation"] if exif else 1
    if orientation is None or orientation < 0:   # other formats, and a JPEG's turn only Pillow reads
        f.seek(0)
        try:
            with Image.open(f) as im:
                if exif and im.format == "PNG" and _png_late_metadata(f):
                    im.load()   # Pillow reads the chunks after the image data only then
                (w, h), orientation = im.size, _orientation(im)
                if im.format == "TIFF" and _PILLOW_TURNS_TIFF == "open":   # size is already the displayed one
                    orientation = 1 if exif else _INVERSE.get(orientation, 1)
                elif not exif:
                    orientation = 1
        except MemoryError:
            raise
        except Exception as e:
            raise _pillow_failed(e, head, name) from e
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


def _png_late_metadata(f) -> bool:
    """Whether a PNG chunk after the image data holds what Image.getexif reads (eXIf, EXIF or XMP
    text), which Pillow's plugin reads only on load(). Walks the chunk headers, skipping their data;
    leaves ``f`` where it was."""
    start, pos, idat = f.tell(), 8, False
    try:
        while True:
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8 or head[4:] == b"IEND":
                return False
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IDAT":
                idat = True
            elif idat and (kind == b"eXIf" or kind in _PNG_TEXT
                           and f.read(min(length, 80)).split(b"\0", 1)[0] in _PNG_EXIF_KEYWORDS):
                return True
            pos += 12 + length
    finally:
        f.seek(start)


def _decoder() -> _batch.JpegDecoder:
    d = getattr(_local, "jpeg", None)
    if d is None:
        d = _local.jpeg = _batch.JpegDecoder()
    return d


def _png_decoder() -> _batch.PngDecoder:
    d = getattr(_local, "png", None)
    if d is None:
        d = _local.png = _batch.PngDecoder()
    return d


def _read(src, name):
    """(bytes-like data, name for errors) from a path or a bytes-like object."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DecodeError(path, f"cannot read file: {e.strerror or e}") from e
        name = path
    else:
        try:
            data = memoryview(src).cast("B")
        except TypeError:
            raise TypeError(f"expected a path or a bytes-like object, got {type(src).__name__}") from None
        name = name or "<bytes>"
    if len(data) == 0:
        raise DecodeError(name, "empty file")
    return data, name


def _is_jpeg(data) -> bool:
    return bytes(data[:3]) == b"\xff\xd8\xff"


def _is_png(data) -> bool:
    return bytes(data[:8]) == b"\x89PNG\r\n\x1a\n"


def _draft_scale(full, least, reversed_axes) -> int:
    """The DCT scale draft() picks to keep ``full`` at least ``least`` (1, 2, 4 or 8), lowered until it
    divides each axis the orientation runs backwards: scaled pixel j is pixels [j * s, (j + 1) * s),
    so the last one is a part pixel, and a flip must not move it to the origin, where X / s would
    no longer map full-size X into the flipped array."""
    k = min(full[0] // least[0], full[1] // least[1])
    s = next((s for s in (8, 4, 2) if k >= s), 1)
    while s > 1 and any(full[axis] % s for axis in reversed_axes):
        s //= 2
    return s


def _min_size(size) -> tuple[int, int]:
    w, h = size
    return max(1, int(w)), max(1, int(h))


def _check_pixels(size, max_pixels, name):
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise DecodeError(name, f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
               (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"))


def _pillow_failed(e: Exception, data, name) -> DecodeError:
    if isinstance(e, UnidentifiedImageError):   # its message names a BytesIO, not the file
        head = bytes(data[:12])
        fmt = next((f for sig, f in _SIGNATURES if head.startswith(sig)), None)
        if fmt is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            fmt = "WebP"
        if fmt is not None:   # the plugin rejected its own header (bad CRC, bad size fields)
            return DecodeError(name, f"corrupt or truncated {fmt} header: Pillow cannot identify it")
        return DecodeError(name, f"not an image format Pillow reads (starts with {head[:8]!r})")
    return DecodeError(name, f"{type(e).__name__}: {e}")


def _orientation(im) -> int:
    """The orientation Pillow >= 11.2's ``getexif`` reads, whichever Pillow this is."""
    jpeg_xmp = _jpeg_xmp(im)
    if im.format in ("JPEG", "PNG", "WEBP") and jpeg_xmp is None and not any(k in im.info for k in _EXIF_KEYS):
        return 1   # no EXIF or XMP: skip parsing the metadata (a third of a small JPEG's decode time)
    exif = im.info.get("exif")
    if isinstance(exif, bytes) and exif.startswith(b"Exif\0\0Exif\0\0"):   # a doubled prefix (a PNG eXIf
        tags = Image.Exif()                                                  # holding its own, say): Pillow
        tags.load(exif[6:])                                                  # < 11 strips only one
    else:
        tags = im.getexif()
    value = tags.get(_ORIENTATION_TAG)
    if value is None:   # XMP's, which Pillow < 11.2 reads from a PNG's text chunk only
        xmp = im.info.get("XML:com.adobe.xmp") or jpeg_xmp or im.info.get("xmp") or b""
        match = _XMP_ORIENTATION.search(xmp.encode() if isinstance(xmp, str) else xmp)
        value = int(match[2]) if match else None
    return value if isinstance(value, int) else 1


def _jpeg_xmp(im) -> bytes | None:
    """A JPEG's XMP packet, the last as Pillow >= 11.2 keeps it (older ones keep it in ``applist`` only);
    None for none, or another format."""
    packets = [s.split(b"\0", 1)[1] for app, s in getattr(im, "applist", ())
               if app == "APP1" and s.startswith(_XMP_APP1)]
    return packets[-1] if packets else None


def _to_rgb(im) -> np.ndarray:
    if im.mode.startswith("I"):
        a = np.asarray(im)
        if im.mode == "I":
            a = np.clip(a, 0, 65535)
        gray = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif im.mode == "F":
        gray = np.clip(np.rint(np.nan_to_num(np.asarray(im))), 0, 255).astype(np.uint8)
    else:
        if isinstance(im.info.get("transparency"), bytes):   # per-entry palette alpha: convert("RGB")
            im = im.convert("RGBA")                           # would warn; the colours are the same
        return np.array(im if im.mode == "RGB" else im.convert("RGB"))
    return np.repeat(gray[:, :, None], 3, axis=2)
