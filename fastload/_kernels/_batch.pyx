# cython: language_level=3
"""The compiled sample path, in one extension: what the Loader runs is what the tests call.

* :class:`Worker` runs a whole chunk of image samples, file to batch row, in
  one GIL-free call: read, decode (only the crop's region: DCT-scaled for
  JPEG, stopping after the crop's last row for PNG), crop, resample, augment,
  normalise and write. Built without libjpeg-turbo,
  :meth:`Worker.run_chunk_pillow` does the same with Pillow's own JPEG decoder
  (the leading rows the crop needs, at draft()'s scale, straight into a reused
  Pillow image). The samples they cannot take (other formats, CMYK, a PNG
  libspng finds corrupt, EXIF rotations on the Pillow route, a build without
  libspng) come back with a status so the caller decodes them through Pillow
  and finishes them with :meth:`Worker.process_rgb`, with the same random
  draws.
* The kernels it is built from, for tests and tools: :class:`Resampler`,
  :func:`color_jitter`, :func:`write_sample`, :class:`JpegDecoder`,
  :class:`PngDecoder`.
* One SIMD dispatch (:func:`simd`, :func:`simd_paths`, :func:`set_simd`,
  :func:`simd_kernels`), chosen once when this module is imported.

Only argument checks live here: the loops are the plain C of src_c/.
"""
from libc.stdint cimport uint8_t, uint64_t, int64_t, int32_t
from libc.string cimport memset, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_FORMAT,
                             PyBUF_READ, PyBUF_WRITABLE)
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.pycapsule cimport PyCapsule_GetPointer
cimport numpy as cnp
import numpy as np

from fastload._kernels.fl_c cimport *
from fastload.errors import DecodeError

cnp.import_array()
fl_simd_init()

FL_STATUS = {FL_OK: "ok", FL_NOT_JPEG: "not_jpeg", FL_UNSUPPORTED: "unsupported",
             FL_ERR_DECODE: "decode", FL_ERR_NOMEM: "nomem", FL_ERR_TOO_LARGE: "too_large",
             FL_ERR_IO: "io", FL_ERR_ARG: "arg", FL_ERR_CROP: "crop"}
OK = FL_OK
NOT_JPEG = FL_NOT_JPEG
UNSUPPORTED = FL_UNSUPPORTED
ERR_TOO_LARGE = FL_ERR_TOO_LARGE
ERR_IO = FL_ERR_IO
MAX_OPS = FL_GEOM_MAX_OPS


def jpeg_version():
    return fl_jpeg_version().decode()


def png_version():
    """"libspng 0.7.3 + libdeflate 1.14 + zlib 1.2.13" (the linked libraries' versions; no libdeflate
    where it is not linked) or "none"."""
    return fl_png_version().decode()


cdef class Plan:
    """The per-sample recipe: geometric ops, resampling, augmentation, output format.

    ``names``: the geometric ops as errors name them (a crop too large for the image it is given)."""
    cdef fl_plan p
    cdef object lut   # keeps the lookup table alive while C holds its pointer
    cdef Py_ssize_t sample_bytes   # what one sample writes: an out row must hold as much, of lut's dtype

    def __init__(self, ops, int out_w, int out_h, *, int filter, bint antialias, int max_denom,
                 double reducing_gap,
                 bint exif, int64_t max_pixels, double p_hflip, double p_vflip, double p_rot90,
                 jitter, int dtype, int layout, perm, lut, names=None):
        if len(ops) > FL_GEOM_MAX_OPS:
            raise ValueError(f"at most {FL_GEOM_MAX_OPS} geometric transforms")
        memset(&self.p, 0, sizeof(fl_plan))
        for i, (kind, h, w, max_size, slo, shi, rlo, rhi, pad, fill) in enumerate(ops):
            self.p.ops[i].kind = kind
            self.p.ops[i].pad = pad
            for c in range(3):
                self.p.ops[i].fill[c] = fill[c]
            self.p.ops[i].h = h
            self.p.ops[i].w = w
            self.p.ops[i].max_size = max_size
            self.p.ops[i].scale_lo = slo
            self.p.ops[i].scale_hi = shi
            self.p.ops[i].log_ratio_lo = rlo
            self.p.ops[i].log_ratio_hi = rhi
            name = (names[i] if names is not None else f"geometric transform {i + 1}").encode()[:39]
            memcpy(self.p.ops[i].name, <const char *>name, len(name))   # NUL-terminated by the memset
        self.p.nops = len(ops)
        self.p.out_w, self.p.out_h = out_w, out_h
        self.p.filter, self.p.antialias, self.p.max_denom = filter, antialias, max_denom
        self.p.reducing_gap = reducing_gap
        self.p.honour_exif, self.p.max_pixels = exif, max_pixels
        self.p.p_hflip, self.p.p_vflip, self.p.p_rot90 = p_hflip, p_vflip, p_rot90
        for i, (lo, hi) in enumerate(jitter):   # brightness, contrast, saturation, hue
            self.p.jitter[i][0], self.p.jitter[i][1] = lo, hi
        self.p.dtype, self.p.layout = dtype, layout
        for c in range(3):
            self.p.perm[c] = perm[c]
        self.lut = np.ascontiguousarray(lut)
        if self.lut.shape[0] != 3 or self.lut.shape[1] != 256:
            raise ValueError("lut must be (3, 256)")
        self.p.lut = cnp.PyArray_DATA(self.lut)
        self.sample_bytes = <Py_ssize_t>out_w * out_h * 3 * self.lut.itemsize

    @property
    def max_denom(self):
        """The largest DCT scale-down a decoder may use for this plan (1: none)."""
        return self.p.max_denom

    def box(self, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index, int orientation=0):
        """The source rectangle (of the part not padded) and output size this plan picks for one sample.
        With an EXIF ``orientation``, ``width`` x ``height`` is the stored image: the plan sees it as
        shown, and the rectangle is in stored coordinates, as the kernels decode it."""
        cdef fl_rng rng = fl_rng_for(seed, epoch, index)
        cdef fl_rect b
        cdef fl_pad pad
        cdef int ow, oh
        cdef fl_geom_fail fail
        cdef char err[FL_ERRLEN]
        cdef bint swap = 5 <= orientation <= 8
        cdef int rc = fl_geom_plan(self.p.ops, self.p.nops, height if swap else width, width if swap else height,
                                   &rng, &b, &ow, &oh, &pad, &fail)
        if rc == FL_ERR_CROP or rc == FL_ERR_TOO_LARGE:
            fl_geom_error(self.p.ops, rc, &fail, err)
            raise ValueError(err.decode("utf-8", "replace"))
        if rc != FL_OK:
            raise ValueError("invalid geometry")
        b = fl_stored_box(orientation, b, width, height)
        return (b.x0, b.y0, b.x1, b.y1), (oh, ow)


def uniform(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t slot):
    """Draw `slot` of the (seed, epoch, index) stream, as the kernels see it."""
    cdef fl_rng rng = fl_rng_for(seed, epoch, index)
    return fl_rng_uniform(&rng, slot)


# The Arrow C data interface (a stable ABI): how Pillow (>= 11.2) hands out a pointer to its pixels.
cdef struct ArrowSchema:
    const char *format
    const char *name
    const char *metadata
    int64_t flags
    int64_t n_children
    ArrowSchema **children
    ArrowSchema *dictionary
    void (*release)(ArrowSchema *)
    void *private_data

cdef struct ArrowArray:
    int64_t length
    int64_t null_count
    int64_t offset
    int64_t n_buffers
    int64_t n_children
    const void **buffers
    ArrowArray **children
    ArrowArray *dictionary
    void (*release)(ArrowArray *)
    void *private_data

_pil_core = None


cdef object _pillow_core():
    global _pil_core
    if _pil_core is None:
        from PIL import Image
        _pil_core = Image.core
    return _pil_core


def pillow_direct_supported():
    """Whether this Pillow lets :meth:`Worker.run_chunk_pillow` decode into memory it can read
    in place: one-block images (``Image.core.new_block``) exported through Arrow (Pillow >= 11.2)."""
    core = _pillow_core()
    return hasattr(core, "new_block") and hasattr(core, "jpeg_decoder") and \
        hasattr(core.new("L", (1, 1)), "__arrow_c_array__")


cdef class Worker:
    """One thread's scratch space. Not thread-safe: keep one per thread."""
    cdef fl_worker w
    cdef fl_buffer ptrs
    cdef fl_buffer errs
    # The Pillow route's destination: a one-block Pillow RGB image (four bytes a pixel) that
    # Pillow's JPEG decoder writes into, and its Arrow export, which keeps canvas_px valid.
    cdef object canvas
    cdef object canvas_export
    cdef uint8_t *canvas_px
    cdef int canvas_w, canvas_h
    cdef Py_ssize_t staged   # items of the chunk stage() set up

    def __cinit__(self):
        memset(&self.ptrs, 0, sizeof(fl_buffer))
        memset(&self.errs, 0, sizeof(fl_buffer))
        if fl_worker_init(&self.w) != FL_OK:
            raise MemoryError("cannot create a decoder")

    def __dealloc__(self):
        fl_worker_free(&self.w)
        fl_buffer_free(&self.ptrs)
        fl_buffer_free(&self.errs)

    cdef int stage(self, Plan plan, list items, const uint64_t[::1] indices, cnp.ndarray out,
                   int[::1] status) except -1:
        """Check a chunk's arguments and note where each item's bytes are (for payload)."""
        cdef Py_ssize_t n = len(items), i
        if out.ndim < 2:
            raise ValueError(f"out must hold one sample a row, got {out.ndim}-D")
        if indices.shape[0] != n or status.shape[0] != n or out.shape[0] < n:
            raise ValueError("items, indices, status and out disagree in length")
        if n and not out.flags.c_contiguous and not out[0].flags.c_contiguous:
            raise ValueError("out rows must be C-contiguous")
        if n:
            _check_row(plan, out[0])
        if fl_buffer_reserve(&self.ptrs, n * (sizeof(char *) + sizeof(size_t))) != FL_OK or \
                fl_buffer_reserve(&self.errs, n * FL_ERRLEN) != FL_OK:
            raise MemoryError()
        cdef const char **data = <const char **>self.ptrs.data
        cdef size_t *sizes = <size_t *>(self.ptrs.data + n * sizeof(char *))
        for i in range(n):
            item = items[i]
            if type(item) is not bytes:
                raise TypeError(f"chunk items must be bytes, got {type(item).__name__}")
            data[i] = PyBytes_AS_STRING(item)
            sizes[i] = PyBytes_GET_SIZE(item)
        self.staged = n
        return 0

    cdef int payload(self, bint paths, Py_ssize_t i, const uint8_t **payload, size_t *size) noexcept nogil:
        """Item i's encoded bytes: the file it names, read into this worker's buffer (a file of
        another format is left after its first bytes: FL_NOT_JPEG), or the item itself."""
        cdef char *err = <char *>self.errs.data + i * FL_ERRLEN
        err[0] = 0
        cdef int rc
        if paths:
            rc = fl_read_file(&self.w, (<const char **>self.ptrs.data)[i], 1, size, err)
            payload[0] = self.w.file.data   # after the read: it may have grown the buffer
            return rc
        payload[0] = <const uint8_t *>(<const char **>self.ptrs.data)[i]
        size[0] = (<size_t *>(self.ptrs.data + self.staged * sizeof(char *)))[i]
        return FL_OK

    cdef dict failures(self, int[::1] status):
        """{i: message} of the staged items whose status is an error."""
        cdef char *errs = <char *>self.errs.data
        return {i: (<bytes>(errs + i * FL_ERRLEN)).decode("utf-8", "replace")
                for i in range(self.staged) if status[i] < 0}

    def run_chunk(self, Plan plan, list items, bint paths, const uint64_t[::1] indices,
                  uint64_t seed, uint64_t epoch, cnp.ndarray out, int[::1] status):
        """Process items[i] into out[i]; status[i] gets the code. Returns {i: message} for codes < 0."""
        cdef Py_ssize_t n = len(items), i
        self.stage(plan, items, indices, out, status)
        cdef char *errs = <char *>self.errs.data
        cdef char *base = <char *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t row = out.strides[0]
        cdef const uint8_t *payload
        cdef size_t size
        cdef int rc
        with nogil:
            for i in range(n):
                rc = self.payload(paths, i, &payload, &size)
                if rc == FL_OK:
                    rc = fl_process_encoded(&self.w, &plan.p, payload, size, seed, epoch, indices[i],
                                            base + i * row, errs + i * FL_ERRLEN)
                status[i] = rc
        return self.failures(status)

    def run_chunk_pillow(self, Plan plan, list items, bint paths, const uint64_t[::1] indices,
                         uint64_t seed, uint64_t epoch, cnp.ndarray out, int[::1] status,
                         double bomb_pixels=0):
        """run_chunk for a build without libjpeg-turbo: JPEGs are decoded by Pillow's own decoder.

        Per sample, with the GIL released: read the file, plan from the JPEG
        markers (fl_pillow_jpeg_plan: draft() scale, leading rows needed); then
        Pillow's decoder (which releases the GIL too) writes those rows into
        this worker's reused canvas; the next GIL-free stretch resamples and
        writes that sample into its row and reads the next file. PNGs take
        run_chunk's route (libspng where it is linked). (Decoding a
        group of samples into as many canvases before resampling them saves
        GIL hand-overs but measured slower, one and two threads alike: the
        canvases fall out of cache.) What this route leaves to Pillow's reader
        (other formats, CMYK, an EXIF orientation, data Pillow's decoder
        refuses or that is truncated) comes back as NOT_JPEG or UNSUPPORTED, as
        from run_chunk. ``bomb_pixels``: Pillow's ``MAX_IMAGE_PIXELS`` (0:
        none). Needs :func:`pillow_direct_supported`.
        """
        cdef Py_ssize_t n = len(items), i = 0, pending = -1
        self.stage(plan, items, indices, out, status)
        cdef char *errs = <char *>self.errs.data
        cdef char *base = <char *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t row = out.strides[0]
        cdef const uint8_t *payload = NULL
        cdef size_t size = 0
        cdef int rc = FL_OK
        cdef bint jpeg = False
        cdef fl_pillow_jpeg req, done
        cdef fl_view view
        core = _pillow_core()
        i = 0
        while True:
            with nogil:
                if pending >= 0:   # the sample decoded last: resample and write it
                    status[pending] = fl_process_decoded(
                        &self.w, &plan.p, &view, done.scaled_width, done.scaled_height, done.width,
                        done.height, done.scale, seed, epoch, indices[pending], base + pending * row,
                        errs + pending * FL_ERRLEN)
                    pending = -1
                if i < n:
                    rc = self.payload(paths, i, &payload, &size)
                    jpeg = False
                    if rc == FL_OK and fl_png_signature(payload, size):   # PNGs take run_chunk's route
                        rc = fl_process_encoded(&self.w, &plan.p, payload, size, seed, epoch, indices[i],
                                                base + i * row, errs + i * FL_ERRLEN)
                    elif rc == FL_OK:
                        rc = fl_pillow_jpeg_plan(&plan.p, payload, size, bomb_pixels, seed, epoch, indices[i],
                                                 &req, errs + i * FL_ERRLEN)
                        jpeg = rc == FL_OK
                    status[i] = rc
            if i >= n:
                break
            if jpeg:
                if self.pillow_decode(core, items[i] if not paths else
                                      PyMemoryView_FromMemory(<char *>payload, size, PyBUF_READ), &req, &view):
                    pending = i
                    done = req
                else:
                    status[i] = FL_UNSUPPORTED   # Pillow's reader explains, or decodes what it can
            i += 1
        return self.failures(status)

    cdef bint pillow_decode(self, core, buf, const fl_pillow_jpeg *r, fl_view *v) except -1:
        """Pillow's JPEG decoder writes the first r.rows rows of ``buf`` at scale 1/r.scale into
        the canvas; *v views them. False when the decoder wanted more data or failed."""
        cdef Py_ssize_t stride
        cdef uint8_t *last
        if r.scaled_width > self.canvas_w or r.rows > self.canvas_h:
            self.grow_canvas(r.scaled_width, r.rows)
        stride = <Py_ssize_t>self.canvas_w * 4
        last = self.canvas_px + (r.rows - 1) * stride + 3   # the padding byte of the last row's first pixel,
        last[0] = 0                                          # 255 once the decoder has written that row
        try:
            decoder = core.jpeg_decoder("RGB", "RGB", "", r.scale, 0)
            decoder.setimage(self.canvas, (0, 0, r.scaled_width, r.rows))
            try:
                consumed, errcode = decoder.decode(buf)
            finally:
                decoder.cleanup()
        except Exception:   # whatever this Pillow objects to, its own reader handles or explains
            return False
        if consumed >= 0 or last[0] != 255:   # wanted more data (truncated), or stopped early
            return False
        # A decoder that stops short of the image's last row ends in libjpeg's "too few
        # scanlines" error (IMAGING_CODEC_BROKEN, -2) once every row it was given is written.
        if errcode != (0 if r.rows == r.scaled_height else -2):
            return False
        v.data = self.canvas_px
        v.width = r.scaled_width
        v.height = r.rows
        v.channels = 4
        v.stride = stride
        return True

    def decode_pillow(self, data, int scale=1, int rows=0):
        """The first ``rows`` rows (0: all) of the JPEG ``data`` at scale 1/``scale`` as
        run_chunk_pillow decodes them, as a new HxWx3 array; None where that route declines."""
        cdef fl_jpeg_info info
        cdef fl_pillow_jpeg r
        cdef fl_view v
        cdef const uint8_t[::1] buf = data
        if buf.shape[0] == 0 or fl_jpeg_scan(&buf[0], buf.shape[0], &info) != FL_OK:
            return None
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, got {scale}")
        r.width, r.height, r.scale = info.width, info.height, scale
        r.scaled_width = (info.width + scale - 1) // scale
        r.scaled_height = (info.height + scale - 1) // scale
        r.rows = r.scaled_height if rows <= 0 else min(rows, r.scaled_height)
        if not self.pillow_decode(_pillow_core(), data, &r, &v):
            return None
        pixels = np.empty((v.height, v.width, 4), np.uint8)
        cdef uint8_t[:, :, ::1] dst = pixels
        cdef Py_ssize_t y
        for y in range(v.height):
            memcpy(&dst[y, 0, 0], v.data + y * v.stride, v.width * 4)
        return pixels[:, :, :3].copy()

    cdef int grow_canvas(self, int width, int height) except -1:
        cdef ArrowSchema *schema
        cdef ArrowArray *array
        cdef int w = max(width, self.canvas_w), h = max(height, self.canvas_h)
        self.canvas = self.canvas_export = None
        self.canvas_px = NULL
        self.canvas_w = self.canvas_h = 0
        canvas = _pillow_core().new_block("RGB", (w, h))
        exported = (canvas.__arrow_c_schema__(), canvas.__arrow_c_array__())
        schema = <ArrowSchema *>PyCapsule_GetPointer(exported[0], "arrow_schema")
        array = <ArrowArray *>PyCapsule_GetPointer(exported[1], "arrow_array")
        if schema.format != b"+w:4" or schema.n_children != 1 or array.n_children != 1 or \
                array.length != <int64_t>w * h or array.offset != 0 or array.children[0].n_buffers != 2 or \
                array.children[0].offset != 0 or array.children[0].buffers[1] == NULL:
            raise RuntimeError("Pillow's Arrow export of an RGB image is not four bytes a pixel in one buffer")
        self.canvas, self.canvas_export = canvas, exported
        self.canvas_px = <uint8_t *>array.children[0].buffers[1]
        self.canvas_w, self.canvas_h = w, h
        return 0

    def process_rgb(self, Plan plan, const uint8_t[:, :, ::1] img, uint64_t seed, uint64_t epoch,
                    uint64_t index, cnp.ndarray out_row, full_size=None, int scale=1):
        """Finish one already-decoded RGB sample into out_row; returns None or an error message.

        ``full_size`` = (w, h): the image's size before a decode at DCT scale
        1/``scale`` (the crop is planned on it, as on the C route, and
        full-resolution X is X / scale in ``img``); default img's own size.
        """
        cdef int full_w = 0, full_h = 0
        if full_size is not None:
            full_w, full_h = full_size
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, got {scale}")
        if img.shape[2] != 3:
            raise ValueError("img must be HxWx3 uint8")
        if not out_row.flags.c_contiguous:
            raise ValueError("out_row must be C-contiguous")
        _check_row(plan, out_row)
        cdef fl_view v
        view_of(img, &v, "img")
        cdef char err[256]
        cdef void *dst = cnp.PyArray_DATA(out_row)
        cdef int rc
        err[0] = 0
        with nogil:
            rc = fl_process_rgb(&self.w, &plan.p, &v, full_w, full_h, scale, seed, epoch, index, dst, err)
        return None if rc == FL_OK else err.decode("utf-8", "replace")

    def read_file(self, bytes path):
        """The bytes of a file, read the way run_chunk reads it (for the Pillow route)."""
        cdef size_t size
        cdef char err[256]
        cdef const char *p = path
        cdef int rc
        with nogil:
            rc = fl_read_file(&self.w, p, 0, &size, err)
        if rc != FL_OK:
            raise OSError(err.decode("utf-8", "replace"))
        return (<char *>self.w.file.data)[:size]


# ---- SIMD dispatch -----------------------------------------------------------

def simd():
    """The SIMD path the kernels run: "avx2", "sse4.1", "neon" or "portable"."""
    return fl_simd_name(fl_simd).decode()


def simd_paths():
    """Every path this build and CPU can run, widest first; all give the same bytes."""
    return [fl_simd_name(p).decode() for p in (FL_SIMD_AVX2, FL_SIMD_NEON, FL_SIMD_SSE41, FL_SIMD_PORTABLE)
            if fl_simd_supported(p)]


def simd_kernels():
    """The kernels with a vector path on the current path: "resample", "color_jitter" (AVX2; SSE4.1
    and NEON vectorise its "saturation" step), "hue" (ColorJitter's hue turn; AVX2 and NEON), "write" (the
    normalise/convert write into the batch slot, for the writes :func:`write_path` names)."""
    k = fl_simd_kernels(fl_simd).decode()
    return k.split(",") if k else []


def set_simd(str name):
    """Pin the path every kernel runs, process-wide (tests and benchmarks; not while kernels run)."""
    for p in range(FL_SIMD_COUNT):
        if fl_simd_name(p).decode() == name:
            if fl_simd_set(p) != FL_OK:
                raise ValueError(f"SIMD path {name!r} is not available here; available: {simd_paths()}")
            return
    raise ValueError(f"unknown SIMD path {name!r}; available: {simd_paths()}")


# ---- resampling ---------------------------------------------------------------

NEAREST = FL_NEAREST
BILINEAR = FL_BILINEAR
AREA = FL_AREA


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


# ---- colour jitter and the write into a batch row ---------------------------------

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


def color_jitter(uint8_t[:, :, :] img not None, float brightness, float contrast, float saturation,
                 float hue=0):
    """Brightness, contrast, saturation, then hue, in place on an HxWxC uint8 image."""
    cdef fl_view v
    view_of(img, &v, "img")
    with nogil:
        fl_color_jitter(&v, brightness, contrast, saturation)
        fl_adjust_hue(&v, hue)


def write_sample(const uint8_t[:, :, :] src not None, out, int rot90, bint hflip, bint vflip,
                 const int32_t[::1] perm not None, lut, int layout):
    """Rotate/flip src, map channel c through lut[c][src[..., perm[c]]], write C-contiguous out."""
    _write(src, out, rot90, hflip, vflip, perm, lut, layout, True)
    return out


def write_path(const uint8_t[:, :, :] src not None, out, int rot90, bint hflip, bint vflip,
               const int32_t[::1] perm not None, lut, int layout):
    """How :func:`write_sample` would write these arguments on the current SIMD path: the path's
    name (its vector write), "copy" (uint8 NHWC rows as they are) or "portable" (the plain loops).
    Writes nothing."""
    route = _write(src, out, rot90, hflip, vflip, perm, lut, layout, False)
    return fl_simd_name(fl_simd).decode() if route == FL_WRITE_VECTOR else \
        "copy" if route == FL_WRITE_COPY else "portable"


cdef int _write(const uint8_t[:, :, :] src, out, int rot90, bint hflip, bint vflip,
                const int32_t[::1] perm, lut, int layout, bint run) except -1:
    cdef fl_view s
    cdef fl_out o
    cdef Py_buffer ob, lb
    cdef int rc, oc, lc
    view_of(src, &s, "src")
    if layout != FL_NCHW and layout != FL_NHWC:
        raise ValueError("layout must be NCHW or NHWC")
    PyObject_GetBuffer(out, &ob, (PyBUF_WRITABLE if run else 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
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
                if run:
                    rc = fl_write_sample(&s, rot90, hflip, vflip, <const int *>&perm[0], lb.buf, &o)
                else:
                    rc = fl_write_path(&s, rot90, hflip, vflip, <const int *>&perm[0], lb.buf, &o)
        finally:
            PyBuffer_Release(&lb)
    finally:
        PyBuffer_Release(&ob)
    if rc < 0:
        raise ValueError(f"invalid write_sample arguments: src {s.height}x{s.width}x{s.channels}, "
                         f"out {o.height}x{o.width}x{o.channels}, rot90 {rot90}, perm {list(perm)}")
    return rc


# ---- JPEG decoding ------------------------------------------------------------

_COLORSPACES = {0: "other", 1: "gray", 3: "ycc", 4: "rgb", 5: "cmyk", 6: "ycck"}
_INT_MAX = 2**31 - 1


class Unsupported(Exception):
    """This decoder does not take the image; decode it another way (Pillow)."""


HAVE_LIBJPEG_TURBO = jpeg_version() != "none"
HAVE_SPNG = bool(fl_png_available())
HAVE_LIBDEFLATE = "libdeflate" in png_version()


def pillow_jpeg_plan(Plan plan, data, uint64_t seed, uint64_t epoch, uint64_t index, double bomb_pixels=0):
    """What run_chunk_pillow asks Pillow's decoder for, for one sample: a dict of the stored
    ``width``/``height``, ``scale`` (1/scale), ``scaled_width``/``scaled_height`` and the leading
    ``rows`` decoded; or the status code (UNSUPPORTED, or an error) with its message."""
    cdef const uint8_t[::1] buf = data
    cdef fl_pillow_jpeg r
    cdef char err[FL_ERRLEN]
    cdef int rc
    if buf.shape[0] == 0:
        return FL_UNSUPPORTED, ""
    err[0] = 0
    with nogil:
        rc = fl_pillow_jpeg_plan(&plan.p, &buf[0], buf.shape[0], bomb_pixels, seed, epoch, index, &r, err)
    if rc != FL_OK:
        return rc, err.decode("utf-8", "replace")
    return {"width": r.width, "height": r.height, "scale": r.scale, "scaled_width": r.scaled_width,
            "scaled_height": r.scaled_height, "rows": r.rows}


def jpeg_check(data):
    """None, or why the JPEG ``data`` is corrupt in a way Pillow's decoder lets pass
    (fl_jpeg_check_stream: no scan, restart markers where none belong)."""
    cdef const uint8_t[::1] buf = data
    cdef size_t n = buf.shape[0]
    cdef int complete, rc
    cdef char err[FL_ERRLEN]
    if n == 0:
        return None
    err[0] = 0
    with nogil:
        rc = fl_jpeg_check_stream(&buf[0], n, &complete, err)
    return err.decode("utf-8", "replace") if rc == FL_ERR_DECODE else None


def jpeg_scan(data):
    """(width, height, components, orientation) from a JPEG's markers alone (no libjpeg
    needed), or None when ``data`` is not a JPEG or its header is malformed. ``orientation``
    is what exif_transpose applies (EXIF, else XMP; 0: none), -1 where only Pillow can tell."""
    cdef const uint8_t[::1] buf = data
    cdef size_t n = buf.shape[0]
    cdef fl_jpeg_info info
    cdef int rc
    if n == 0:
        return None
    with nogil:
        rc = fl_jpeg_scan(&buf[0], n, &info)
    return (info.width, info.height, info.components, info.orientation) if rc == FL_OK else None


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


cdef class _OneThread:
    """A decoder handle for one thread at a time: busy while a call runs with the GIL released, so
    a second thread gets an error, not a crash."""
    cdef bint busy

    cdef enter(self):
        if self.busy:
            raise RuntimeError(f"{type(self).__name__} used from two threads at once; create one per thread")
        self.busy = True


cdef class JpegDecoder(_OneThread):
    """A reusable libjpeg-turbo decoder. Not thread-safe: give each thread its own."""
    cdef fl_jpeg_decoder *d

    def __cinit__(self):
        self.d = fl_jpeg_decoder_new()
        if self.d is NULL:
            raise MemoryError("cannot create a JPEG decoder")

    def __dealloc__(self):
        fl_jpeg_decoder_free(self.d)

    def info(self, data, name="<bytes>"):
        """Header facts as a dict, or None when ``data`` is not a JPEG. ``width`` and ``height`` are
        as stored; ``orientation`` is what exif_transpose applies (the Exif tag, else XMP's; 0:
        none; -1: one only Pillow can tell)."""
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
        ``fl_jpeg_region`` (full-res X maps to column ``X / denom - off_x``).
        With ``out`` (uint8, at least
        HxWx3, pixel rows contiguous) the pixels go there and the result is the
        view ``out[:H, :W]``; otherwise a new array. Raises Unsupported,
        DecodeError (bad data, over ``max_pixels``), ValueError (bad arguments)
        or MemoryError.
        """
        cdef fl_view view
        cdef fl_jpeg_region r
        self.region_call(True, data, region, min_size, max_denom, exif, max_pixels, name, &view, &r)
        try:                        # the decoder stays busy until its pixels are copied out
            result = _copied(&view, out)
        finally:
            self.busy = False
        return result, region_dict(&r)


cdef int _check_row(Plan plan, cnp.ndarray row) except -1:
    """An out row the plan's sample fits: what the kernels write is not checked again."""
    if row.itemsize != plan.lut.itemsize or row.nbytes < plan.sample_bytes:
        raise ValueError(f"an out row of {row.nbytes} bytes of {row.dtype} cannot hold a {plan.p.out_w}x"
                         f"{plan.p.out_h} sample of {plan.lut.dtype} ({plan.sample_bytes} bytes)")
    return 0


cdef object _copied(const fl_view *view, out):
    """The pixels a decoder's *view shows, in a new HxWx3 array or in ``out`` (see _checked_out)."""
    result = np.empty((view.height, view.width, 3), np.uint8) if out is None \
        else _checked_out(out, view.height, view.width)
    cdef uint8_t[:, :, :] dst = result   # rows may be strided (a corner of a larger out)
    cdef Py_ssize_t y, row_bytes = view.width * 3
    with nogil:
        for y in range(view.height):
            memcpy(&dst[y, 0, 0], view.data + y * view.stride, row_bytes)
    return result


def _checked_out(out, int h, int w):
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"out must be a uint8 array of shape (H, W, 3), got {getattr(out, 'shape', type(out))}")
    if out.shape[0] < h or out.shape[1] < w:
        raise ValueError(f"out of shape {out.shape} is smaller than the decoded {h}x{w}x3")
    if out.strides[1] != 3 or out.strides[2] != 1 or not out.flags.writeable:
        raise ValueError("out must be writable with each pixel row contiguous")
    return out[:h, :w]


# ---- PNG decoding -------------------------------------------------------------

_PNG_COLOR_TYPES = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgba"}


cdef class PngDecoder(_OneThread):
    """A reusable libspng decoder. Not thread-safe: give each thread its own.

    Decodes to RGB exactly as Pillow's ``convert("RGB")`` of the opened PNG
    (16-bit grey: v / 257 rounded, see fastload.image.decode). A
    non-interlaced image's data is inflated whole by libdeflate where it is
    linked (``whole_stream``, faster than zlib's stopping after a region's last
    row); with ``whole_stream=False``, or when libdeflate finds the stream
    damaged, zlib stops after the last row asked for, as the loader's decode
    does in a build without libdeflate.
    """
    cdef fl_png_decoder *d

    def __cinit__(self, whole_stream=True):
        self.d = fl_png_decoder_new()
        if self.d is NULL:
            raise MemoryError("cannot create a PNG decoder")
        fl_png_decoder_whole_stream(self.d, bool(whole_stream))

    def __dealloc__(self):
        fl_png_decoder_free(self.d)

    def info(self, data, exif=True, name="<bytes>"):
        """Header facts as a dict, or None when ``data`` is not a PNG. ``orientation`` is what
        exif_transpose applies (an eXIf chunk's, else XMP text's; 0: none, or with ``exif=False``
        not looked for); one only Pillow can tell raises :class:`Unsupported`."""
        cdef const uint8_t[::1] buf = data
        cdef size_t n = buf.shape[0]
        cdef const uint8_t *p = &buf[0] if n else NULL
        cdef fl_png_info info
        cdef char err[FL_ERRLEN]
        cdef int rc, want = bool(exif)
        err[0] = 0
        if not fl_png_signature(p, n):
            return None
        self.enter()
        try:
            with nogil:
                rc = fl_png_begin(self.d, p, n, want, &info, err)
                fl_png_abort(self.d)
        finally:
            self.busy = False
        if rc != FL_OK:
            raise_for(rc, err, name)
        return {"width": info.width, "height": info.height, "bit_depth": info.bit_depth,
                "color_type": _PNG_COLOR_TYPES.get(info.color_type, "other"),
                "interlaced": bool(info.interlaced), "orientation": info.orientation}

    def decode(self, data, region=None, exif=True, max_pixels=0, out=None, name="<bytes>"):
        """Decode ``region`` = (x0, y0, x1, y1) (None: all) to an HxWx3 uint8 array.

        Rows below the region are not decoded. With ``out`` (uint8, at least
        HxWx3, pixel rows contiguous) the pixels go there and the result is the
        view ``out[:H, :W]``; otherwise a new array. Raises Unsupported (not a
        PNG, no libspng, an EXIF orientation to apply when ``exif``),
        DecodeError (corrupt or truncated data, over ``max_pixels``),
        ValueError (bad arguments) or MemoryError.
        """
        cdef const uint8_t[::1] buf = data
        cdef size_t n = buf.shape[0]
        cdef const uint8_t *p = &buf[0] if n else NULL
        cdef int x0, y0, x1, y1, honour = bool(exif)
        cdef int64_t limit = max_pixels or 0
        cdef fl_view view
        cdef char err[FL_ERRLEN]
        cdef int rc
        x0, y0, x1, y1 = (0, 0, _INT_MAX, _INT_MAX) if region is None else region
        err[0] = 0
        self.enter()
        try:
            with nogil:
                rc = fl_png_decode_region(self.d, p, n, x0, y0, x1, y1, honour, limit, &view, err)
            if rc != FL_OK:
                raise_for(rc, err, name)
            return _copied(&view, out)   # the decoder stays busy until its pixels are copied out
        finally:
            self.busy = False
