# Declarations of the plain-C kernels in src_c/, shared by every Cython wrapper,
# plus the one helper they all need: viewing a NumPy image as an fl_view.
from libc.stdint cimport uint8_t, uint64_t, int64_t

cdef extern from "fl_common.h" nogil:
    enum:
        FL_OK, FL_NOT_JPEG, FL_UNSUPPORTED, FL_ERR_DECODE, FL_ERR_NOMEM,
        FL_ERR_TOO_LARGE, FL_ERR_IO, FL_ERR_ARG, FL_ERR_CROP, FL_ERRLEN
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
        int kind, h, w, max_size, pad
        uint8_t fill[3]
        double scale_lo, scale_hi, log_ratio_lo, log_ratio_hi
        char name[40]
    ctypedef struct fl_pad:
        int x0, y0, x1, y1
        uint8_t fill[3]
    ctypedef struct fl_geom_fail:
        int op, w, h
    int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                     const fl_rng *rng, fl_rect *box, int *out_w, int *out_h, fl_pad *pad, fl_geom_fail *fail)
    void fl_geom_error(const fl_geom_op *ops, int rc, const fl_geom_fail *fail, char *err)
    fl_rect fl_stored_box(int orientation, fl_rect b, int sw, int sh)

cdef extern from "jpeg_decode.h" nogil:
    ctypedef struct fl_jpeg_info:
        int width, height, components, colorspace, orientation, progressive
    ctypedef struct fl_jpeg_region:
        int width, height, scaled_width, scaled_height, off_x, off_y, denom
    ctypedef struct fl_jpeg_decoder:
        pass
    fl_jpeg_decoder *fl_jpeg_decoder_new()
    void fl_jpeg_decoder_free(fl_jpeg_decoder *d)
    const char *fl_jpeg_version()
    int fl_jpeg_read_info(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                          fl_jpeg_info *info, char *err)
    int fl_jpeg_scan(const uint8_t *data, size_t size, fl_jpeg_info *info)
    int fl_jpeg_check_stream(const uint8_t *data, size_t size, int *complete, char *err)
    int fl_jpeg_decode_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                              int x0, int y0, int x1, int y1, int min_w, int min_h, int max_denom,
                              int honour_exif, int64_t max_pixels,
                              fl_view *out, fl_jpeg_region *region, char *err)
    int fl_jpeg_plan_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                            int x0, int y0, int x1, int y1, int min_w, int min_h, int max_denom,
                            int honour_exif, int64_t max_pixels,
                            fl_view *out, fl_jpeg_region *region, char *err)

cdef extern from "png_decode.h" nogil:
    ctypedef struct fl_png_info:
        int width, height, bit_depth, color_type, interlaced, orientation
    ctypedef struct fl_png_decoder:
        pass
    fl_png_decoder *fl_png_decoder_new()
    void fl_png_decoder_free(fl_png_decoder *d)
    void fl_png_decoder_whole_stream(fl_png_decoder *d, int on)
    const char *fl_png_version()
    int fl_png_available()
    int fl_png_signature(const uint8_t *data, size_t size)
    int fl_png_begin(fl_png_decoder *d, const uint8_t *data, size_t size, int want_exif,
                     fl_png_info *info, char *err)
    void fl_png_abort(fl_png_decoder *d)
    int fl_png_decode_region(fl_png_decoder *d, const uint8_t *data, size_t size,
                             int x0, int y0, int x1, int y1, int honour_exif, int64_t max_pixels,
                             fl_view *out, char *err)

cdef extern from "resample.h" nogil:
    enum:
        FL_NEAREST, FL_BILINEAR, FL_AREA
    ctypedef struct fl_resampler:
        fl_buffer taps
        fl_buffer tmp
    void fl_resampler_free(fl_resampler *r)
    int fl_resample(fl_resampler *r, const fl_view *src, fl_rect box,
                    int filter, int antialias, fl_view *dst)

cdef extern from "augment.h" nogil:
    enum:
        FL_U8, FL_F16, FL_F32
        FL_NCHW, FL_NHWC
    ctypedef struct fl_out:
        void *data
        int dtype, layout
        int height, width, channels
    void fl_color_jitter(fl_view *img, float brightness, float contrast, float saturation)
    void fl_adjust_hue(fl_view *img, float factor)
    int fl_write_sample(const fl_view *src, int rot90, int hflip, int vflip,
                        const int *perm, const void *lut, fl_out *out)
    enum:
        FL_WRITE_LOOPS, FL_WRITE_COPY, FL_WRITE_VECTOR
    int fl_write_path(const fl_view *src, int rot90, int hflip, int vflip,
                      const int *perm, const void *lut, const fl_out *out)

cdef extern from "sample.h" nogil:
    ctypedef struct fl_plan:
        fl_geom_op ops[8]
        int nops, out_w, out_h, filter, antialias, max_denom, honour_exif
        double reducing_gap
        int64_t max_pixels
        double p_hflip, p_vflip, p_rot90
        double jitter[4][2]
        int dtype, layout
        int perm[4]
        const void *lut
    ctypedef struct fl_worker:
        fl_buffer file
    int fl_worker_init(fl_worker *w)
    void fl_worker_free(fl_worker *w)
    int fl_read_file(fl_worker *w, const char *path, int known_only, size_t *size, char *err)
    int fl_process_encoded(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                           uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
    int fl_process_jpeg(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                        uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
    int fl_process_png(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                       uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
    int fl_process_rgb(fl_worker *w, const fl_plan *p, const fl_view *img, int full_w, int full_h, int scale,
                       uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
    int fl_process_decoded(fl_worker *w, const fl_plan *p, const fl_view *img, int img_w, int img_h,
                           int full_w, int full_h, int scale, uint64_t seed, uint64_t epoch, uint64_t index,
                           void *out, char *err)
    ctypedef struct fl_pillow_jpeg:
        int width, height, scale, scaled_width, scaled_height, rows
    int fl_pillow_jpeg_plan(const fl_plan *p, const uint8_t *data, size_t size, double bomb_pixels,
                            uint64_t seed, uint64_t epoch, uint64_t index, fl_pillow_jpeg *r, char *err)

cdef extern from "cpu.h" nogil:
    enum:
        FL_SIMD_PORTABLE, FL_SIMD_SSE41, FL_SIMD_AVX2, FL_SIMD_NEON, FL_SIMD_COUNT
    int fl_simd
    int fl_simd_init()
    int fl_simd_supported(int path)
    int fl_simd_set(int path)
    const char *fl_simd_name(int path)
    const char *fl_simd_kernels(int path)


cdef inline int view_of(const uint8_t[:, :, :] a, fl_view *v, str name) except -1:
    """Point v at an HxWxC uint8 array whose pixels are contiguous (rows may be strided)."""
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"{name} is empty")
    if (a.strides[2] != 1 and a.shape[2] != 1) or a.strides[1] != a.shape[2] or a.strides[0] < a.shape[1] * a.shape[2]:
        raise ValueError(f"{name} must have contiguous pixels (strides (row, channels, 1))")
    v.data = <uint8_t *>&a[0, 0, 0]
    v.height = <int>a.shape[0]
    v.width = <int>a.shape[1]
    v.channels = <int>a.shape[2]
    v.stride = a.strides[0]
    return 0
