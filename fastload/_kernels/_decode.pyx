# cython: language_level=3
"""JPEG decoding through src_c/jpeg_decode.c, one ``JpegDecoder`` per thread.

Only argument checks and copies live here; every native call runs with the GIL
released. JPEGs the kernel does not take (CMYK, EXIF-rotated, built without
libjpeg-turbo, not a JPEG at all) raise :class:`Unsupported` so that
``fastload.image.decode`` can send them to Pillow.
"""
from libc.stdint cimport uint8_t, int64_t
from libc.string cimport memcpy
import numpy as np

from fastload._kernels.fl_c cimport *
from fastload.errors import DecodeError


_COLORSPACES = {0: "other", 1: "gray", 3: "ycc", 4: "rgb", 5: "cmyk", 6: "ycck"}
_INT_MAX = 2**31 - 1


class Unsupported(Exception):
    """This decoder does not take the image; decode it another way (Pillow)."""


def version():
    """The libjpeg-turbo version compiled in, e.g. ``"libjpeg-turbo 2.1.5"``, or ``"none"``."""
    return fl_jpeg_version().decode()


HAVE_LIBJPEG_TURBO = version() != "none"


cdef raise_for(int rc, char *err, name):
    msg = err.decode("utf-8", "replace")
    if rc == FL_NOT_JPEG or rc == FL_UNSUPPORTED:
        raise Unsupported(msg)
    if rc == FL_ERR_NOMEM:
        raise MemoryError(f"{name}: {msg}")
    if rc == FL_ERR_ARG:
        raise ValueError(msg)
    raise DecodeError(name, msg)


cdef dict region_dict(const fl_jpeg_region *r):
    return {"width": r.width, "height": r.height, "scaled_width": r.scaled_width,
            "scaled_height": r.scaled_height, "off_x": r.off_x, "off_y": r.off_y, "denom": r.denom}


cdef class _Call:
    """The C arguments of region_call, shared by decode and decoded_shape."""
    cdef int x0, y0, x1, y1, min_w, min_h, max_denom, exif
    cdef int64_t max_pixels

    def __init__(self, region, min_size, max_denom, exif, max_pixels):
        self.x0, self.y0, self.x1, self.y1 = (0, 0, _INT_MAX, _INT_MAX) if region is None else region
        self.min_w, self.min_h = min_size
        self.max_denom = max_denom
        self.exif = bool(exif)
        self.max_pixels = max_pixels or 0


cdef class JpegDecoder:
    """A reusable libjpeg-turbo decoder. Not thread-safe: give each thread its own."""
    cdef fl_jpeg_decoder *d
    cdef bint busy   # set while the GIL is released: a second thread gets an error, not a crash

    def __cinit__(self):
        self.d = fl_jpeg_decoder_new()
        if self.d is NULL:
            raise MemoryError("cannot create a JPEG decoder")

    def __dealloc__(self):
        fl_jpeg_decoder_free(self.d)

    cdef enter(self):
        if self.busy:
            raise RuntimeError("JpegDecoder used from two threads at once; create one per thread")
        self.busy = True

    def info(self, data, name="<bytes>"):
        """Header facts as a dict, or None when ``data`` is not a JPEG."""
        cdef const uint8_t[::1] buf = data
        cdef size_t n = buf.shape[0]
        cdef const uint8_t *p = &buf[0] if n else NULL
        cdef fl_jpeg_info info
        cdef char err[FL_ERRLEN]
        cdef int rc
        err[0] = 0
        self.enter()
        try:
            with nogil:
                rc = fl_jpeg_read_info(self.d, p, n, &info, err)
        finally:
            self.busy = False
        if rc == FL_NOT_JPEG:
            return None
        if rc != FL_OK:
            raise_for(rc, err, name)
        return {"width": info.width, "height": info.height, "components": info.components,
                "colorspace": _COLORSPACES.get(info.colorspace, "other"),
                "orientation": info.orientation, "progressive": bool(info.progressive)}

    cdef int region_call(self, bint decode, data, region, min_size, max_denom, exif, max_pixels, name,
                         fl_view *view, fl_jpeg_region *r) except -1:
        """Plan (``decode`` false) or decode ``region`` of ``data`` into *view and *r.

        The argument handling shared by decoded_shape and decode. On success the
        decoder is left busy, because ``view.data`` points into its memory: the
        caller reads what it needs, then clears ``self.busy``. On error it is
        cleared here and the error raised.
        """
        cdef const uint8_t[::1] buf = data
        cdef size_t n = buf.shape[0]
        cdef const uint8_t *p = &buf[0] if n else NULL
        cdef _Call a = _Call(region, min_size, max_denom, exif, max_pixels)
        cdef char err[FL_ERRLEN]
        cdef int rc
        err[0] = 0
        self.enter()
        try:
            with nogil:
                if decode:
                    rc = fl_jpeg_decode_region(self.d, p, n, a.x0, a.y0, a.x1, a.y1, a.min_w, a.min_h,
                                               a.max_denom, a.exif, a.max_pixels, view, r, err)
                else:
                    rc = fl_jpeg_plan_region(self.d, p, n, a.x0, a.y0, a.x1, a.y1, a.min_w, a.min_h,
                                             a.max_denom, a.exif, a.max_pixels, view, r, err)
            if rc != FL_OK:
                raise_for(rc, err, name)
        except BaseException:
            self.busy = False
            raise
        return 0

    def decoded_shape(self, data, region=None, min_size=(0, 0), max_denom=1, exif=True,
                      max_pixels=0, name="<bytes>"):
        """The (height, width, 3) that :meth:`decode` would return, and its region dict,
        from the header alone."""
        cdef fl_view view
        cdef fl_jpeg_region r
        self.region_call(False, data, region, min_size, max_denom, exif, max_pixels, name, &view, &r)
        self.busy = False
        return (view.height, view.width, 3), region_dict(&r)

    def decode(self, data, region=None, min_size=(0, 0), max_denom=1, exif=True, max_pixels=0,
               out=None, name="<bytes>"):
        """Decode ``region`` = (x0, y0, x1, y1) in full-resolution pixels (None: all).

        Returns ``(pixels, region_info)``: an HxWx3 uint8 array covering the
        region rounded outward at scale 1/denom, and the dict of
        ``fl_jpeg_region`` (full-res X maps to column
        ``X * scaled_width / width - off_x``). With ``out`` (uint8, at least
        HxWx3, pixel rows contiguous) the pixels go there and the result is the
        view ``out[:H, :W]``; otherwise a new array. Raises Unsupported,
        DecodeError (bad data, over ``max_pixels``), ValueError (bad arguments)
        or MemoryError.
        """
        cdef fl_view view
        cdef fl_jpeg_region r
        cdef uint8_t[:, :, :] dst   # rows may be strided (a corner of a larger out)
        cdef Py_ssize_t y, row_bytes
        self.region_call(True, data, region, min_size, max_denom, exif, max_pixels, name, &view, &r)
        try:                        # the decoder stays busy until its pixels are copied out
            result = np.empty((view.height, view.width, 3), np.uint8) if out is None \
                else _checked_out(out, view.height, view.width)
            dst = result
            row_bytes = view.width * 3
            with nogil:
                for y in range(view.height):
                    memcpy(&dst[y, 0, 0], view.data + y * view.stride, row_bytes)
        finally:
            self.busy = False
        return result, region_dict(&r)


def _checked_out(out, int h, int w):
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"out must be a uint8 array of shape (H, W, 3), got {getattr(out, 'shape', type(out))}")
    if out.shape[0] < h or out.shape[1] < w:
        raise ValueError(f"out of shape {out.shape} is smaller than the decoded {h}x{w}x3")
    if out.strides[1] != 3 or out.strides[2] != 1 or not out.flags.writeable:
        raise ValueError("out must be writable with each pixel row contiguous")
    return out[:h, :w]
