/* libjpeg-turbo glue: see jpeg_decode.h for the contract.
 *
 * One jpeg_decompress_struct per decoder, created once and returned to its
 * start state with jpeg_abort_decompress after every image, so a worker does
 * not rebuild libjpeg's tables and pools per sample. libjpeg reports fatal
 * errors through error_exit, which here longjmps back to the public function
 * that called into it; those functions keep no locals live across setjmp. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "exif.h"
#include "jpeg_decode.h"

#ifndef FL_HAVE_LIBJPEG_TURBO
#define FL_HAVE_LIBJPEG_TURBO 1
#endif

/* ---- EXIF orientation ------------------------------------------------- */

/* The orientation of the first APP1 "Exif" payload as fl_exif_orientation
 * gives it; 0 for an empty block (Pillow reads no tags from it). Pillow
 * strips the prefix twice where a writer doubled it. */
static int exif_orientation(const uint8_t *p, size_t n)
{
    p += 6, n -= 6;
    if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0)
        p += 6, n -= 6;
    return n == 0 ? 0 : fl_exif_orientation(p, n);
}

static const char xmp_id[] = "http://ns.adobe.com/xap/1.0/";   /* with its NUL: an APP1 XMP packet */

static int is_xmp(const uint8_t *p, size_t n)
{
    return n >= sizeof(xmp_id) && memcmp(p, xmp_id, sizeof(xmp_id)) == 0;
}

/* What exif_transpose applies (see fl_jpeg_info.orientation), from the first
 * Exif block's tag (fl_exif_orientation; 0 when there is no block) and the
 * last XMP packet's (fl_xmp_orientation), which Pillow's getexif falls back
 * on when the Exif block has no tag. A block that may or may not hold one
 * (malformed, or a value out of range) leaves an XMP turn to Pillow; a tag
 * of another type or count (-2) leaves the file to Pillow. */
static int jpeg_orientation(int exif, int xmp)
{
    if (exif > 0)
        return exif;
    if (exif == -2)
        return -1;
    if (xmp < 2 || xmp > 8)
        return 0;
    return exif == 0 ? xmp : -1;
}

/* ---- header scan without libjpeg ------------------------------------- */

int fl_jpeg_scan(const uint8_t *data, size_t size, fl_jpeg_info *info)
{
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF)
        return FL_NOT_JPEG;
    memset(info, 0, sizeof *info);
    size_t i = 2;
    int exif = 0, xmp = -1, have_exif = 0, have_frame = 0;
    while (i + 4 <= size) {
        if (data[i] != 0xFF) {   /* bytes between segments: skipped, as Pillow's reader and libjpeg do */
            const uint8_t *p = memchr(data + i, 0xFF, size - i);
            if (!p)
                break;
            i = (size_t)(p - data);
            continue;
        }
        uint8_t m = data[i + 1];
        if (m == 0xFF) {            /* fill byte */
            i++;
            continue;
        }
        if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) {   /* no length (FF 00: not a
                                                                                 * marker, as libjpeg and Pillow read it) */
            i += 2;
            continue;
        }
        size_t len = (size_t)data[i + 2] << 8 | data[i + 3];
        if (len < 2 || i + 2 + len > size || m == 0xDA || m == 0xD9)
            break;
        const uint8_t *seg = data + i + 4;
        size_t n = len - 2;
        if (m == 0xE1 && !have_exif && n >= 6 && memcmp(seg, "Exif\0\0", 6) == 0) {
            exif = exif_orientation(seg, n);
            have_exif = 1;
        } else if (m == 0xE1 && is_xmp(seg, n)) {
            xmp = fl_xmp_orientation(seg + sizeof(xmp_id), n - sizeof(xmp_id));
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && !have_frame) {   /* SOFn */
            if (n < 6)
                return FL_ERR_DECODE;
            info->height = seg[1] << 8 | seg[2];
            info->width = seg[3] << 8 | seg[4];
            info->components = seg[5];
            info->progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
            info->colorspace = info->components == 1 ? FL_CS_GRAY : info->components == 3 ? FL_CS_YCC : FL_CS_OTHER;
            if (info->width <= 0 || info->height <= 0)
                return FL_ERR_DECODE;
            have_frame = 1;
        }
        i += 2 + len;
    }
    /* Pillow reads the APP1 segments up to the scan, the frame header's followers too */
    info->orientation = jpeg_orientation(exif, xmp);
    return have_frame ? FL_OK : FL_ERR_DECODE;
}

/* ---- stream check without libjpeg ------------------------------------ */

/* Walk the segments, and each scan's entropy-coded data up to the marker
 * that ends it. Segments and scans that run past the data end the walk
 * (truncated: the decoder reports it); garbage between markers is skipped as
 * libjpeg skips it. */
int fl_jpeg_check_stream(const uint8_t *data, size_t size, int *complete, char *err)
{
    *complete = 0;
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF)
        return FL_NOT_JPEG;
    size_t i = 2;
    unsigned interval = 0;   /* restart interval (DRI) in force */
    int scans = 0;
    while (i + 1 < size) {
        if (data[i] != 0xFF) {
            const uint8_t *p = memchr(data + i, 0xFF, size - i);
            if (!p)
                break;
            i = (size_t)(p - data);
            continue;
        }
        uint8_t m = data[i + 1];
        if (m == 0xFF) {   /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD9) {   /* EOI */
            *complete = scans > 0;
            break;
        }
        if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) {   /* no length */
            i += 2;
            continue;
        }
        if (i + 4 > size)
            break;
        size_t len = (size_t)data[i + 2] << 8 | data[i + 3];
        if (len < 2 || len > size - i - 2)
            break;
        if (m == 0xDD && len >= 4)
            interval = (unsigned)data[i + 4] << 8 | data[i + 5];
        i += 2 + len;
        if (m != 0xDA)
            continue;
        scans++;
        for (;;) {   /* entropy-coded data: FF 00 is a stuffed byte, RSTn a restart marker */
            const uint8_t *p = memchr(data + i, 0xFF, size - i);
            if (!p || (size_t)(p - data) + 1 >= size) {
                i = size;
                break;
            }
            size_t j = (size_t)(p - data);
            uint8_t b = data[j + 1];
            if (b == 0x00 || b == 0xFF) {
                i = j + 1;
                continue;
            }
            if (b >= 0xD0 && b <= 0xD7) {
                /* libjpeg's decoder runs into it mid-scan (JWRN_HIT_MARKER) and pads the
                 * rest of the scan with grey; one that only trails the data is harmless */
                if (interval == 0 && j + 2 < size && data[j + 2] != 0xFF) {
                    fl_set_err(err, "Corrupt JPEG data: RST%d marker inside a scan without a restart interval",
                            b - 0xD0);
                    return FL_ERR_DECODE;
                }
                i = j + 2;
                continue;
            }
            i = j;   /* the marker that ends the scan */
            break;
        }
    }
    if (scans == 0) {
        fl_set_err(err, "premature end of JPEG file: no image data (scan) before the end");
        return FL_ERR_DECODE;
    }
    return FL_OK;
}

#if FL_HAVE_LIBJPEG_TURBO

#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "fastload needs libjpeg-turbo (jpeg_crop_scanline / jpeg_skip_scanlines)"
#endif

#define FL_STR_(x) #x
#define FL_STR(x) FL_STR_(x)

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} fl_jerr;

struct fl_jpeg_decoder {
    struct jpeg_decompress_struct cinfo;
    fl_jerr jerr;
    fl_buffer pixels;
};

static void on_error_exit(j_common_ptr cinfo)
{
    longjmp(((fl_jerr *)cinfo->err)->jump, 1);
}

/* Warnings that mean the pixels would be invented rather than decoded: a
 * stream that ends early (libjpeg pads it with grey) or entropy-coded data
 * that cannot be valid. Pillow refuses the first by default; for the others
 * it hands back grey or smeared blocks, which a training set should not
 * silently contain. Everything else (extraneous bytes before a marker, odd
 * ICC or Adobe markers, data after the image) is harmless and ignored. */
static void on_emit_message(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return;   /* trace messages */
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
        on_error_exit(cinfo);
        break;
    default:
        break;
    }
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo;   /* never print to stderr */
}

/* FL_OK, or FL_ERR_NOMEM when libjpeg cannot allocate its object. */
static int create(fl_jpeg_decoder *d)
{
    d->cinfo.err = jpeg_std_error(&d->jerr.pub);
    d->jerr.pub.error_exit = on_error_exit;
    d->jerr.pub.emit_message = on_emit_message;
    d->jerr.pub.output_message = on_output_message;
    if (setjmp(d->jerr.jump)) {
        jpeg_destroy_decompress(&d->cinfo);
        return FL_ERR_NOMEM;
    }
    jpeg_create_decompress(&d->cinfo);
    /* APP1 holds EXIF; the orientation tag decides the route. The setting
     * lives in the object: jpeg_abort drops saved markers, not this. */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xFFFF);
    return FL_OK;
}

fl_jpeg_decoder *fl_jpeg_decoder_new(void)
{
    fl_jpeg_decoder *d = (fl_jpeg_decoder *)calloc(1, sizeof *d);
    if (d && create(d) != FL_OK) {
        free(d);
        d = NULL;
    }
    return d;
}

void fl_jpeg_decoder_free(fl_jpeg_decoder *d)
{
    if (!d)
        return;
    jpeg_destroy_decompress(&d->cinfo);
    fl_buffer_free(&d->pixels);
    free(d);
}

const char *fl_jpeg_version(void)
{
    return "libjpeg-turbo " FL_STR(LIBJPEG_TURBO_VERSION);
}

static int saved_orientation(j_decompress_ptr cinfo)
{
    int exif = 0, xmp = -1, have_exif = 0;
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1)
            continue;
        if (!have_exif && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            exif = exif_orientation(m->data, m->data_length);   /* the first one, as Pillow */
            have_exif = 1;
        } else if (is_xmp(m->data, m->data_length)) {
            xmp = fl_xmp_orientation(m->data + sizeof(xmp_id), m->data_length - sizeof(xmp_id));   /* the last */
        }
    }
    return jpeg_orientation(exif, xmp);
}

/* ---- header ----------------------------------------------------------- */

static int colorspace_of(J_COLOR_SPACE cs)
{
    switch (cs) {
    case JCS_GRAYSCALE: return FL_CS_GRAY;
    case JCS_YCbCr: return FL_CS_YCC;
    case JCS_RGB: return FL_CS_RGB;
    case JCS_CMYK: return FL_CS_CMYK;
    case JCS_YCCK: return FL_CS_YCCK;
    default: return FL_CS_OTHER;
    }
}

/* jpeg_mem_src refuses empty input by error_exit; the SOI check also keeps
 * non-JPEG data away from libjpeg's messages. */
static int is_jpeg(const uint8_t *data, size_t size)
{
    return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

/* May longjmp: only called under a public function's setjmp. */
/* Does the stream end with an EOI marker (allowing a little trailing padding)?
 * A truncated download does not; such a file is decoded to its last row even
 * when the crop needs fewer, so it fails every time rather than only for the
 * crops that happen to reach the missing rows. */
static int ends_with_eoi(const uint8_t *data, size_t size)
{
    size_t from = size > 64 ? size - 64 : 0;
    for (size_t i = size; i-- > from + 1;)
        if (data[i - 1] == 0xFF && data[i] == 0xD9)
            return 1;
    return 0;
}

static void read_header(fl_jpeg_decoder *d, const uint8_t *data, size_t size, fl_jpeg_info *info)
{
    j_decompress_ptr c = &d->cinfo;
    jpeg_mem_src(c, data, (unsigned long)size);
    jpeg_read_header(c, TRUE);
    info->width = (int)c->image_width;
    info->height = (int)c->image_height;
    info->components = c->num_components;
    info->colorspace = colorspace_of(c->jpeg_color_space);
    info->orientation = saved_orientation(c);
    info->progressive = c->progressive_mode ? 1 : 0;
}

/* A libjpeg error: its own message, and the object back at its start state. A
 * stream that ends early is Pillow's to judge: it refuses it, or with
 * LOAD_TRUNCATED_IMAGES decodes what is there, as on its own route. */
static int libjpeg_failed(fl_jpeg_decoder *d, char *err)
{
    char msg[JMSG_LENGTH_MAX];
    d->jerr.pub.format_message((j_common_ptr)&d->cinfo, msg);
    const int cut = d->cinfo.err->msg_code == JWRN_JPEG_EOF;
    fl_set_err(err, cut ? "%s (truncated): Pillow decides" : "%s", msg);
    jpeg_abort_decompress(&d->cinfo);
    return cut ? FL_UNSUPPORTED : FL_ERR_DECODE;
}

int fl_jpeg_read_info(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                      fl_jpeg_info *info, char *err)
{
    int rc = fl_jpeg_begin(d, data, size, info, err);
    if (rc == FL_OK)
        jpeg_abort_decompress(&d->cinfo);
    return rc;
}

/* ---- region planning -------------------------------------------------- */

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Largest 1/denom (denom <= max_denom) keeping a w x h rectangle at least
 * min_w x min_h pixels. */
static int choose_denom(int64_t w, int64_t h, int min_w, int min_h, int max_denom)
{
    for (int denom = 8; denom > 1; denom /= 2)
        if (denom <= max_denom && w >= (int64_t)min_w * denom && h >= (int64_t)min_h * denom)
            return denom;
    return 1;
}

/* Scaled [floor(a / denom), ceil(b / denom)): the pixels covering the
 * full-resolution span [a, b) at DCT scale 1/denom (see fl_jpeg_region). */
static void scale_span(int64_t a, int64_t b, int64_t denom, int *sa, int *sb)
{
    *sa = (int)(a / denom);
    *sb = (int)((b + denom - 1) / denom);
}

/* Decide everything decode_region will do, from the header alone. */
static int plan(const fl_jpeg_info *info, int x0, int y0, int x1, int y1,
                int min_w, int min_h, int max_denom, int honour_exif, int64_t max_pixels,
                fl_view *out, fl_jpeg_region *r, char *err)
{
    int64_t w = info->width, h = info->height;
    if (max_pixels > 0 && w * h > max_pixels) {
        fl_set_err(err, "image is %lldx%lld = %lld pixels, over the limit of %lld",
                (long long)w, (long long)h, (long long)(w * h), (long long)max_pixels);
        return FL_ERR_TOO_LARGE;
    }
    if (info->colorspace != FL_CS_GRAY && info->colorspace != FL_CS_YCC && info->colorspace != FL_CS_RGB) {
        fl_set_err(err, "JPEG colour space %d (%d components) is not decoded here", info->colorspace,
                info->components);
        return FL_UNSUPPORTED;
    }
    if (honour_exif && (info->orientation > 1 || info->orientation < 0)) {
        fl_set_err(err, info->orientation < 0 ? "an orientation only Pillow can read"
                                              : "EXIF orientation %d needs a transpose", info->orientation);
        return FL_UNSUPPORTED;
    }
    int64_t rx0 = clamp64(x0, 0, w), rx1 = clamp64(x1, 0, w);
    int64_t ry0 = clamp64(y0, 0, h), ry1 = clamp64(y1, 0, h);
    if (rx1 <= rx0 || ry1 <= ry0 || min_w < 0 || min_h < 0 || max_denom < 1) {
        fl_set_err(err, "empty region [%d, %d) x [%d, %d) of a %lldx%lld image, or bad min size/denom",
                x0, x1, y0, y1, (long long)w, (long long)h);
        return FL_ERR_ARG;
    }
    int denom = choose_denom(rx1 - rx0, ry1 - ry0, min_w, min_h, max_denom);
    r->width = (int)w;
    r->height = (int)h;
    r->scaled_width = (int)((w + denom - 1) / denom);   /* as jpeg_calc_output_dimensions */
    r->scaled_height = (int)((h + denom - 1) / denom);
    r->denom = denom;
    int sx1, sy1;
    scale_span(rx0, rx1, denom, &r->off_x, &sx1);
    scale_span(ry0, ry1, denom, &r->off_y, &sy1);
    out->data = NULL;
    out->width = sx1 - r->off_x;
    out->height = sy1 - r->off_y;
    out->channels = 3;
    out->stride = (ptrdiff_t)out->width * 3;
    return FL_OK;
}

int fl_jpeg_plan_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                        int x0, int y0, int x1, int y1,
                        int min_w, int min_h, int max_denom,
                        int honour_exif, int64_t max_pixels,
                        fl_view *out, fl_jpeg_region *region, char *err)
{
    fl_jpeg_info info;
    int rc = fl_jpeg_read_info(d, data, size, &info, err);
    if (rc != FL_OK)
        return rc;
    return plan(&info, x0, y0, x1, y1, min_w, min_h, max_denom, honour_exif, max_pixels,
                out, region, err);
}

/* ---- decoding --------------------------------------------------------- */

/* Decode the planned rectangle into d->pixels; out gets the view of exactly
 * the planned columns. May longjmp: only called under decode_region's setjmp. */
static int decode_planned(fl_jpeg_decoder *d, fl_view *out, const fl_jpeg_region *r,
                          int complete, char *err)
{
    j_decompress_ptr c = &d->cinfo;
    c->scale_num = 1;
    c->scale_denom = (unsigned)r->denom;
    c->out_color_space = JCS_RGB;   /* libjpeg-turbo also expands grayscale */
    jpeg_start_decompress(c);
    if ((int)c->output_width != r->scaled_width || (int)c->output_height != r->scaled_height ||
        c->output_components != 3) {
        fl_set_err(err, "libjpeg scaled %dx%d to %ux%u, expected %dx%d", r->width, r->height,
                c->output_width, c->output_height, r->scaled_width, r->scaled_height);
        jpeg_abort_decompress(c);
        return FL_ERR_DECODE;
    }

    /* Columns: libjpeg-turbo moves the start left to an iMCU boundary and
     * upsamples chroma as if the cropped columns were the whole image, so the
     * outermost decoded columns differ from a full decode. One more column on
     * each side keeps those out of the view (fancy upsampling reaches one
     * chroma sample, i.e. two pixels at most, and h2 covers this). */
    JDIMENSION xoff = (JDIMENSION)(r->off_x > 0 ? r->off_x - 1 : 0);
    JDIMENSION xend = (JDIMENSION)r->off_x + (JDIMENSION)out->width + 1;
    if (xend > c->output_width)
        xend = c->output_width;
    JDIMENSION cols = xend - xoff;
    /* libjpeg-turbo 2.1 decodes a cropped, DCT-scaled 4x2 or 2x4 sampled image
     * with wrong colours that change with what the decoder decoded before:
     * beyond 2x2 sampling, a scaled decode keeps every column. */
    if (cols < c->output_width && (r->denom == 1 || (c->max_h_samp_factor <= 2 && c->max_v_samp_factor <= 2)))
        jpeg_crop_scanline(c, &xoff, &cols);
    else
        xoff = 0, cols = c->output_width;
    size_t row_bytes = (size_t)cols * 3, rows = (size_t)out->height;
    /* one row more: scratch for the last row of a stream decoded to its end (below) */
    if (rows >= ((size_t)-1) / row_bytes || fl_buffer_reserve(&d->pixels, row_bytes * (rows + 1)) != FL_OK) {
        fl_set_err(err, "cannot allocate %zu x %zu bytes for decoded pixels", rows, row_bytes);
        jpeg_abort_decompress(c);
        return FL_ERR_NOMEM;
    }

    /* Rows: skip to the first needed one, read only those needed. */
    JDIMENSION first = (JDIMENSION)r->off_y, end = first + (JDIMENSION)rows;
    if (first > 0 && jpeg_skip_scanlines(c, first) != first) {
        fl_set_err(err, "could not skip to row %u", first);
        jpeg_abort_decompress(c);
        return FL_ERR_DECODE;
    }
    JSAMPROW ptrs[16];
    while (c->output_scanline < end) {
        JDIMENSION n = end - c->output_scanline;
        if (n > 16)
            n = 16;
        for (JDIMENSION i = 0; i < n; i++)
            ptrs[i] = d->pixels.data + (size_t)(c->output_scanline - first + i) * row_bytes;
        if (jpeg_read_scanlines(c, ptrs, n) == 0) {   /* cannot suspend on a memory source */
            fl_set_err(err, "libjpeg returned no rows at row %u", c->output_scanline);
            jpeg_abort_decompress(c);
            return FL_ERR_DECODE;
        }
    }

    /* A stream without its EOI marker is entropy-decoded to the end, which
     * raises the premature-end error a truncated file deserves. Skipping to
     * the very end returns without decoding anything, so skip to the last
     * row and read that one. */
    if (!complete && c->output_scanline < c->output_height) {
        JDIMENSION left = c->output_height - c->output_scanline;
        if (left > 1 && jpeg_skip_scanlines(c, left - 1) != left - 1) {
            fl_set_err(err, "could not skip to row %u", c->output_height - 1);
            jpeg_abort_decompress(c);
            return FL_ERR_DECODE;
        }
        JSAMPROW scratch = d->pixels.data + rows * row_bytes;
        if (jpeg_read_scanlines(c, &scratch, 1) == 0) {
            fl_set_err(err, "libjpeg returned no rows at row %u", c->output_scanline);
            jpeg_abort_decompress(c);
            return FL_ERR_DECODE;
        }
    }
    /* The whole height was read: check the stream really ends (EOI), as
     * Pillow does. Otherwise stop here without decoding the rest. */
    if (c->output_scanline == c->output_height)
        jpeg_finish_decompress(c);
    else
        jpeg_abort_decompress(c);

    out->data = d->pixels.data + (size_t)(r->off_x - (int)xoff) * 3;
    out->stride = (ptrdiff_t)row_bytes;
    return FL_OK;
}

int fl_jpeg_begin(fl_jpeg_decoder *d, const uint8_t *data, size_t size, fl_jpeg_info *info, char *err)
{
    if (!is_jpeg(data, size)) {
        fl_set_err(err, "not a JPEG stream (no SOI marker)");
        return FL_NOT_JPEG;
    }
    if (size > ULONG_MAX) {   /* jpeg_mem_src's length is an unsigned long: 32 bits on Windows */
        fl_set_err(err, "a %zu-byte JPEG stream is more than libjpeg can read from memory", size);
        return FL_ERR_TOO_LARGE;
    }
    if (setjmp(d->jerr.jump))
        return libjpeg_failed(d, err);
    read_header(d, data, size, info);
    return FL_OK;
}

void fl_jpeg_abort(fl_jpeg_decoder *d)
{
    jpeg_abort_decompress(&d->cinfo);
}

int fl_jpeg_decode_begun(fl_jpeg_decoder *d, const uint8_t *data, size_t size, const fl_jpeg_info *info,
                         int x0, int y0, int x1, int y1,
                         int min_w, int min_h, int max_denom,
                         int honour_exif, int64_t max_pixels,
                         fl_view *out, fl_jpeg_region *region, char *err)
{
    int rc = plan(info, x0, y0, x1, y1, min_w, min_h, max_denom, honour_exif, max_pixels,
                  out, region, err);
    if (rc != FL_OK) {
        jpeg_abort_decompress(&d->cinfo);
        return rc;
    }
    if (setjmp(d->jerr.jump))
        return libjpeg_failed(d, err);
    return decode_planned(d, out, region, ends_with_eoi(data, size), err);
}

int fl_jpeg_decode_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                          int x0, int y0, int x1, int y1,
                          int min_w, int min_h, int max_denom,
                          int honour_exif, int64_t max_pixels,
                          fl_view *out, fl_jpeg_region *region, char *err)
{
    fl_jpeg_info info;
    int rc = fl_jpeg_begin(d, data, size, &info, err);
    if (rc != FL_OK)
        return rc;
    return fl_jpeg_decode_begun(d, data, size, &info, x0, y0, x1, y1, min_w, min_h, max_denom,
                                honour_exif, max_pixels, out, region, err);
}

#else /* !FL_HAVE_LIBJPEG_TURBO: every call asks for the Pillow route. */

struct fl_jpeg_decoder {
    int unused;
};

fl_jpeg_decoder *fl_jpeg_decoder_new(void)
{
    return (fl_jpeg_decoder *)calloc(1, sizeof(fl_jpeg_decoder));
}

void fl_jpeg_decoder_free(fl_jpeg_decoder *d)
{
    free(d);
}

const char *fl_jpeg_version(void)
{
    return "none";
}

int fl_jpeg_read_info(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                      fl_jpeg_info *info, char *err)
{
    (void)d, (void)data, (void)size, (void)info;
    fl_set_err(err, "built without libjpeg-turbo");
    return FL_UNSUPPORTED;
}

int fl_jpeg_begin(fl_jpeg_decoder *d, const uint8_t *data, size_t size, fl_jpeg_info *info, char *err)
{
    return fl_jpeg_read_info(d, data, size, info, err);
}

void fl_jpeg_abort(fl_jpeg_decoder *d)
{
    (void)d;
}

int fl_jpeg_decode_begun(fl_jpeg_decoder *d, const uint8_t *data, size_t size, const fl_jpeg_info *info,
                         int x0, int y0, int x1, int y1,
                         int min_w, int min_h, int max_denom,
                         int honour_exif, int64_t max_pixels,
                         fl_view *out, fl_jpeg_region *region, char *err)
{
    (void)info;
    return fl_jpeg_plan_region(d, data, size, x0, y0, x1, y1, min_w, min_h, max_denom,
                               honour_exif, max_pixels, out, region, err);
}

int fl_jpeg_plan_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                        int x0, int y0, int x1, int y1,
                        int min_w, int min_h, int max_denom,
                        int honour_exif, int64_t max_pixels,
                        fl_view *out, fl_jpeg_region *region, char *err)
{
    (void)d, (void)data, (void)size, (void)x0, (void)y0, (void)x1, (void)y1, (void)min_w;
    (void)min_h, (void)max_denom, (void)honour_exif, (void)max_pixels, (void)out, (void)region;
    fl_set_err(err, "built without libjpeg-turbo");
    return FL_UNSUPPORTED;
}

int fl_jpeg_decode_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                          int x0, int y0, int x1, int y1,
                          int min_w, int min_h, int max_denom,
                          int honour_exif, int64_t max_pixels,
                          fl_view *out, fl_jpeg_region *region, char *err)
{
    return fl_jpeg_plan_region(d, data, size, x0, y0, x1, y1, min_w, min_h, max_denom,
                               honour_exif, max_pixels, out, region, err);
}

#endif
