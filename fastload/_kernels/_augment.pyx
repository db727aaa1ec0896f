"""Thin wrapper over src_c/augment.c: argument plumbing only, no loops.

Readable validation lives in fastload.image.color; this layer only refuses
what would make the C code read or write out of bounds.
"""
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBUF_ND)
from fastload._kernels.fl_c cimport *
from libc.stdint cimport uint8_t, int32_t



NCHW = FL_NCHW
NHWC = FL_NHWC




cdef int _dtype_code(const char *fmt, Py_ssize_t itemsize) except -1:
    # Formats as NumPy exports them; '=' / '<' prefixes mean native here.
    if fmt[0] == b'=' or fmt[0] == b'<' or fmt[0] == b'@':
        fmt += 1
    if fmt[0] == b'B' and itemsize == 1:
        return FL_U8
    if fmt[0] == b'e' and itemsize == 2:
        return FL_F16
    if fmt[0] == b'f' and itemsize == 4:
        return FL_F32
    raise ValueError(f"unsupported output dtype (format {fmt.decode()!r}); use uint8, float16 or float32")


def color_jitter(uint8_t[:, :, :] img not None, float brightness, float contrast, float saturation):
    """Brightness, contrast, saturation in place on an HxWxC uint8 image."""
    cdef fl_view v
    view_of(img, &v, "img")
    with nogil:
        fl_color_jitter(&v, brightness, contrast, saturation)


def write_sample(const uint8_t[:, :, :] src not None, out, int rot90, bint hflip, bint vflip,
                 const int32_t[::1] perm not None, lut, int layout):
    """Rotate/flip src, map channel c through lut[c][src[..., perm[c]]], write C-contiguous out."""
    cdef fl_view s
    cdef fl_out o
    cdef Py_buffer ob, lb
    cdef int rc, oc, lc
    view_of(src, &s, "src")
    if layout != FL_NCHW and layout != FL_NHWC:
        raise ValueError("layout must be NCHW or NHWC")
    PyObject_GetBuffer(out, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    try:
        PyObject_GetBuffer(lut, &lb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        try:
            if ob.ndim != 3:
                raise ValueError("out must be 3-D")
            oc = _dtype_code(ob.format, ob.itemsize)
            lc = _dtype_code(lb.format, lb.itemsize)
            if oc != lc:
                raise ValueError("lut dtype differs from out dtype")
            o.data = ob.buf
            o.dtype = oc
            o.layout = layout
            if layout == FL_NCHW:
                o.channels, o.height, o.width = ob.shape[0], ob.shape[1], ob.shape[2]
            else:
                o.height, o.width, o.channels = ob.shape[0], ob.shape[1], ob.shape[2]
            if perm.shape[0] != o.channels or lb.len != <Py_ssize_t>o.channels * 256 * lb.itemsize:
                raise ValueError(f"perm and lut must cover the {o.channels} output channels")
            with nogil:
                rc = fl_write_sample(&s, rot90, hflip, vflip, <const int *>&perm[0], lb.buf, &o)
        finally:
            PyBuffer_Release(&lb)
    finally:
        PyBuffer_Release(&ob)
    if rc != FL_OK:
        raise ValueError(f"invalid write_sample arguments: src {s.height}x{s.width}x{s.channels}, "
                         f"out {o.height}x{o.width}x{o.channels}, rot90 {rot90}, perm {list(perm)}")
    return out
