# cython: language_level=3
"""Chunk runner: a whole chunk of image samples, file to batch row, in one GIL-free call.

Python hands over the chunk's paths (or encoded bytes), their record indices
and the batch rows they own; the C loop reads, decodes, crops, resamples,
augments and writes every sample without returning to the interpreter. The
samples it cannot take (non-JPEG formats, CMYK, EXIF-rotated photos) come back
with a status so the caller can decode them through Pillow and finish them
with :meth:`Worker.process_rgb`, using the same random draws.
"""
from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
cimport numpy as cnp
import numpy as np

from fastload._kernels.fl_c cimport *

cnp.import_array()

FL_STATUS = {FL_OK: "ok", FL_NOT_JPEG: "not_jpeg", FL_UNSUPPORTED: "unsupported",
             FL_ERR_DECODE: "decode", FL_ERR_NOMEM: "nomem", FL_ERR_TOO_LARGE: "too_large",
             FL_ERR_IO: "io", FL_ERR_ARG: "arg"}
OK = FL_OK
NOT_JPEG = FL_NOT_JPEG
UNSUPPORTED = FL_UNSUPPORTED
ERR_TOO_LARGE = FL_ERR_TOO_LARGE
ERR_IO = FL_ERR_IO
MAX_OPS = FL_GEOM_MAX_OPS


def jpeg_version():
    return fl_jpeg_version().decode()


cdef class Plan:
    """The per-sample recipe: geometric ops, resampling, augmentation, output format."""
    cdef fl_plan p
    cdef object lut   # keeps the lookup table alive while C holds its pointer

    def __init__(self, ops, int out_w, int out_h, *, int filter, bint antialias, int max_denom,
                 bint exif, int64_t max_pixels, double p_hflip, double p_vflip, double p_rot90,
                 jitter, int dtype, int layout, perm, lut):
        if len(ops) > FL_GEOM_MAX_OPS:
            raise ValueError(f"at most {FL_GEOM_MAX_OPS} geometric transforms")
        memset(&self.p, 0, sizeof(fl_plan))
        for i, (kind, h, w, max_size, slo, shi, rlo, rhi) in enumerate(ops):
            self.p.ops[i].kind = kind
            self.p.ops[i].h = h
            self.p.ops[i].w = w
            self.p.ops[i].max_size = max_size
            self.p.ops[i].scale_lo = slo
            self.p.ops[i].scale_hi = shi
            self.p.ops[i].log_ratio_lo = rlo
            self.p.ops[i].log_ratio_hi = rhi
        self.p.nops = len(ops)
        self.p.out_w, self.p.out_h = out_w, out_h
        self.p.filter, self.p.antialias, self.p.max_denom = filter, antialias, max_denom
        self.p.honour_exif, self.p.max_pixels = exif, max_pixels
        self.p.p_hflip, self.p.p_vflip, self.p.p_rot90 = p_hflip, p_vflip, p_rot90
        self.p.brightness, self.p.contrast, self.p.saturation = jitter
        self.p.dtype, self.p.layout = dtype, layout
        for c in range(3):
            self.p.perm[c] = perm[c]
        self.lut = np.ascontiguousarray(lut)
        if self.lut.shape[0] != 3 or self.lut.shape[1] != 256:
            raise ValueError("lut must be (3, 256)")
        self.p.lut = cnp.PyArray_DATA(self.lut)

    def box(self, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index):
        """The source rectangle and output size this plan picks for one sample (for tests)."""
        cdef fl_rng rng = fl_rng_for(seed, epoch, index)
        cdef fl_rect b
        cdef int ow, oh
        if fl_geom_plan(self.p.ops, self.p.nops, width, height, &rng, &b, &ow, &oh) != FL_OK:
            raise ValueError("invalid geometry")
        return (b.x0, b.y0, b.x1, b.y1), (oh, ow)


def uniform(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t slot):
    """Draw `slot` of the (seed, epoch, index) stream, as the kernels see it."""
    cdef fl_rng rng = fl_rng_for(seed, epoch, index)
    return fl_rng_uniform(&rng, slot)


cdef class Worker:
    """One thread's scratch space. Not thread-safe: keep one per thread."""
    cdef fl_worker w
    cdef fl_buffer ptrs
    cdef fl_buffer errs

    def __cinit__(self):
        memset(&self.ptrs, 0, sizeof(fl_buffer))
        memset(&self.errs, 0, sizeof(fl_buffer))
        if fl_worker_init(&self.w) != FL_OK:
            raise MemoryError("cannot create a decoder")

    def __dealloc__(self):
        fl_worker_free(&self.w)
        fl_buffer_free(&self.ptrs)
        fl_buffer_free(&self.errs)

    def run_chunk(self, Plan plan, list items, bint paths, const uint64_t[::1] indices,
                  uint64_t seed, uint64_t epoch, cnp.ndarray out, int[::1] status):
        """Process items[i] into out[i]; status[i] gets the code. Returns {i: message} for codes < 0."""
        cdef Py_ssize_t n = len(items), i
        if indices.shape[0] != n or status.shape[0] != n or out.shape[0] < n:
            raise ValueError("items, indices, status and out disagree in length")
        if not out.flags.c_contiguous and not (out.ndim > 1 and out[0].flags.c_contiguous):
            raise ValueError("out rows must be C-contiguous")
        if fl_buffer_reserve(&self.ptrs, n * (sizeof(char *) + sizeof(size_t))) != FL_OK or \
                fl_buffer_reserve(&self.errs, n * FL_ERRLEN) != FL_OK:
            raise MemoryError()
        cdef const char **data = <const char **>self.ptrs.data
        cdef size_t *sizes = <size_t *>(self.ptrs.data + n * sizeof(char *))
        cdef char *errs = <char *>self.errs.data
        cdef char *base = <char *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t row = out.strides[0]
        cdef const uint8_t *payload
        cdef size_t size
        cdef int rc
        for i in range(n):
            item = items[i]
            if type(item) is not bytes:
                raise TypeError(f"chunk items must be bytes, got {type(item).__name__}")
            data[i] = PyBytes_AS_STRING(item)
            sizes[i] = PyBytes_GET_SIZE(item)
        with nogil:
            for i in range(n):
                errs[i * FL_ERRLEN] = 0
                if paths:
                    rc = fl_read_file(&self.w, data[i], &size, errs + i * FL_ERRLEN)
                    payload = self.w.file.data
                else:
                    rc = FL_OK
                    payload = <const uint8_t *>data[i]
                    size = sizes[i]
                if rc == FL_OK:
                    rc = fl_process_jpeg(&self.w, &plan.p, payload, size, seed, epoch, indices[i],
                                         base + i * row, errs + i * FL_ERRLEN)
                status[i] = rc
        failed = {}
        for i in range(n):
            if status[i] < 0:
                failed[i] = (<bytes>(errs + i * FL_ERRLEN)).decode("utf-8", "replace")
        return failed

    def process_rgb(self, Plan plan, const uint8_t[:, :, ::1] img, uint64_t seed, uint64_t epoch,
                    uint64_t index, cnp.ndarray out_row):
        """Finish one already-decoded RGB sample into out_row; returns None or an error message."""
        if img.shape[2] != 3:
            raise ValueError("img must be HxWx3 uint8")
        if not out_row.flags.c_contiguous:
            raise ValueError("out_row must be C-contiguous")
        cdef fl_view v
        view_of(img, &v, "img")
        cdef char err[256]
        cdef void *dst = cnp.PyArray_DATA(out_row)
        cdef int rc
        err[0] = 0
        with nogil:
            rc = fl_process_rgb(&self.w, &plan.p, &v, seed, epoch, index, dst, err)
        return None if rc == FL_OK else err.decode("utf-8", "replace")

    def read_file(self, bytes path):
        """The bytes of a file, read the way run_chunk reads it (for the Pillow route)."""
        cdef size_t size
        cdef char err[256]
        cdef const char *p = path
        cdef int rc
        with nogil:
            rc = fl_read_file(&self.w, p, &size, err)
        if rc != FL_OK:
            raise OSError(err.decode("utf-8", "replace"))
        return (<char *>self.w.file.data)[:size]


def simd_level():
    """The widest SIMD instruction set this CPU offers (chosen at run time)."""
    return fl_simd_level().decode()
