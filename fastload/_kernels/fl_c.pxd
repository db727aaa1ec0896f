# Declarations of the plain-C kernels in src_c/, shared by the Cython wrappers.
from libc.stdint cimport uint8_t, uint64_t, int64_t

cdef extern from "fl_common.h" nogil:
    enum:
        FL_OK, FL_NOT_JPEG, FL_UNSUPPORTED, FL_ERR_DECODE, FL_ERR_NOMEM,
        FL_ERR_TOO_LARGE, FL_ERR_IO, FL_ERR_ARG, FL_ERRLEN
    ctypedef struct fl_view:
        uint8_t *data
        int width, height, channels
        Py_ssize_t stride
    ctypedef struct fl_buffer:
        uint8_t *data
        size_t capacity
    ctypedef struct fl_rect:
        double x0, y0, x1, y1
    int fl_buffer_reserve(fl_buffer *b, size_t nbytes)
    void fl_buffer_free(fl_buffer *b)

cdef extern from "rng.h" nogil:
    ctypedef struct fl_rng:
        uint64_t key
    fl_rng fl_rng_for(uint64_t seed, uint64_t epoch, uint64_t index)
    double fl_rng_uniform(const fl_rng *r, uint64_t slot)

cdef extern from "geometry.h" nogil:
    enum:
        FL_GEOM_RESIZE, FL_GEOM_CENTER_CROP, FL_GEOM_RANDOM_CROP,
        FL_GEOM_RANDOM_RESIZED_CROP, FL_GEOM_MAX_OPS
    ctypedef struct fl_geom_op:
        int kind, h, w, max_size
        double scale_lo, scale_hi, log_ratio_lo, log_ratio_hi
    int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                     const fl_rng *rng, fl_rect *box, int *out_w, int *out_h)

cdef extern from "jpeg_decode.h" nogil:
    const char *fl_jpeg_version()

cdef extern from "sample.h" nogil:
    ctypedef struct fl_plan:
        fl_geom_op ops[8]
        int nops, out_w, out_h, filter, antialias, max_denom, honour_exif
        int64_t max_pixels
        double p_hflip, p_vflip, p_rot90, brightness, contrast, saturation
        int dtype, layout
        int perm[4]
        const void *lut
    ctypedef struct fl_worker:
        fl_buffer file
    int fl_worker_init(fl_worker *w)
    void fl_worker_free(fl_worker *w)
    int fl_read_file(fl_worker *w, const char *path, size_t *size, char *err)
    int fl_process_jpeg(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                        uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
    int fl_process_rgb(fl_worker *w, const fl_plan *p, const fl_view *img,
                       uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)

cdef extern from "cpu.h" nogil:
    const char *fl_simd_level()
