"""Thin wrapper over src_c/resample.c: argument plumbing only, no loops.

Validation with readable messages lives in fastload.image.resize; this layer
only refuses what would make the C code read or write out of bounds.
"""
from fastload._kernels.fl_c cimport *
from libc.stdint cimport uint8_t
from libc.string cimport memset



NEAREST = FL_NEAREST
BILINEAR = FL_BILINEAR
AREA = FL_AREA


def simd_level():
    """2 when the AVX2 loops run, 0 for the portable C loops."""
    return fl_resample_simd_level()


def force_portable(bint on):
    """Pin the portable loops process-wide (tests and benchmarks only)."""
    fl_resample_force_portable(on)




cdef class Resampler:
    """Scratch space for one thread; resize() releases the GIL.

    Concurrent calls on one instance are refused rather than corrupting the
    shared scratch; use one Resampler per thread.
    """
    cdef fl_resampler r
    cdef bint busy

    def __cinit__(self):
        memset(&self.r, 0, sizeof(self.r))
        self.busy = False

    def __dealloc__(self):
        fl_resampler_free(&self.r)

    def resize(self, const uint8_t[:, :, :] src not None, uint8_t[:, :, :] out not None,
               tuple box, int filter, bint antialias):
        """Resample src[box] (x0, y0, x1, y1) into out; same channel count."""
        cdef fl_view s, d
        cdef fl_rect b
        cdef int rc
        if src.shape[0] == 0 or src.shape[1] == 0 or out.shape[0] == 0 or out.shape[1] == 0:
            raise ValueError("empty image")
        view_of(src, &s, "src")
        view_of(out, &d, "out")
        b.x0, b.y0, b.x1, b.y1 = box
        if self.busy:
            raise RuntimeError("Resampler is in use by another thread; use one per thread")
        self.busy = True
        try:
            with nogil:
                rc = fl_resample(&self.r, &s, b, filter, antialias, &d)
        finally:
            self.busy = False
        if rc == FL_ERR_NOMEM:
            raise MemoryError("resample scratch")
        if rc != FL_OK:
            raise ValueError(f"invalid resample arguments: src {s.height}x{s.width}x{s.channels}, "
                             f"out {d.height}x{d.width}x{d.channels}, box {box}, filter {filter}")
        return out
