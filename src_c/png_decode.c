/* libspng glue: see png_decode.h for the contract.
 *
 * libspng keeps its state in a context that cannot be rewound, so each image
 * gets a fresh one (a few small allocations inside libspng and zlib); the
 * decoder's own buffers (one scanline in the PNG's format, the RGB image)
 * only grow, and are reused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "exif.h"
#include "png_decode.h"

#ifndef FL_HAVE_SPNG
#define FL_HAVE_SPNG 1
#endif

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

int fl_png_signature(const uint8_t *data, size_t size)
{
    return size >= 8 && memcmp(data, png_signature, 8) == 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The EXIF orientation as Pillow's PNG plugin sees it on open: the last eXIf
 * chunk before the first IDAT (Image.getexif strips an "Exif\0\0" prefix).
 * 0: no eXIf; 1..8; -1: Pillow's answer cannot be told from here (see
 * fl_png_begin). The chunk walk trusts nothing: it stops at the end of the
 * data, and libspng reports whatever is malformed. */
static int png_orientation(const uint8_t *data, size_t size)
{
    static const char xmp[] = "XML:com.adobe.xmp";   /* Pillow falls back on its tiff:Orientation */
    const uint8_t *exif = NULL;
    size_t exif_len = 0, pos = 8;
    int have_xmp = 0;
    while (size - pos >= 12) {
        size_t len = be32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (memcmp(type, "IDAT", 4) == 0 || len > size - pos - 12)
            break;
        if (memcmp(type, "eXIf", 4) == 0) {
            exif = body;
            exif_len = len;
        } else if ((memcmp(type, "tEXt", 4) == 0 || memcmp(type, "zTXt", 4) == 0 || memcmp(type, "iTXt", 4) == 0)
                   && len >= sizeof(xmp) && memcmp(body, xmp, sizeof(xmp)) == 0) {   /* keyword + NUL */
            have_xmp = 1;
        }
        pos += 12 + len;
    }
    if (!exif)
        return 0;
    if (exif_len >= 6 && memcmp(exif, "Exif\0\0", 6) == 0) {
        exif += 6;
        exif_len -= 6;
    }
    int o = fl_exif_orientation(exif, exif_len);
    return o == 0 && have_xmp ? -1 : o == 0 ? 0 : o;
}

/* Whether the chunks run whole from the signature to an IEND chunk. A region
 * decode never reads the rows below its crop, so a file cut short there
 * would pass; such a file goes to Pillow instead, which reads every row and
 * fails it as a truncated image (or decodes it, under its
 * LOAD_TRUNCATED_IMAGES), whatever the crop. Walking the chunk lengths costs
 * nothing next to inflating them. */
static int png_complete(const uint8_t *data, size_t size)
{
    size_t pos = 8;
    while (size - pos >= 12) {
        size_t len = be32(data + pos);
        if (len > size - pos - 12)
            return 0;
        if (memcmp(data + pos + 4, "IEND", 4) == 0)
            return 1;
        pos += 12 + len;
    }
    return 0;
}

#if FL_HAVE_SPNG

#include <spng.h>

/* Pillow's limits on decompressed text and ICC chunks
 * (PngImagePlugin.MAX_TEXT_CHUNK and MAX_TEXT_MEMORY; libspng's defaults are
 * far larger). A file over them fails on Pillow's route, so it must not
 * decode here: with these limits libspng refuses it (and some a little
 * under them, which Pillow then decodes). */
#define FL_PNG_CHUNK_LIMIT ((size_t)1 << 20)
#define FL_PNG_CACHE_LIMIT ((size_t)64 << 20)

struct fl_png_decoder {
    spng_ctx *ctx;        /* the image begun, or NULL */
    const uint8_t *data;  /* its bytes */
    size_t size;
    fl_png_info info;
    fl_buffer raw;        /* one scanline in the PNG's format (big-endian samples) */
    fl_buffer rgb;        /* the RGB image; only the rows asked for are written */
    uint8_t palette[256][3];
};

fl_png_decoder *fl_png_decoder_new(void)
{
    return (fl_png_decoder *)calloc(1, sizeof(fl_png_decoder));
}

void fl_png_abort(fl_png_decoder *d)
{
    if (d && d->ctx) {
        spng_ctx_free(d->ctx);
        d->ctx = NULL;
    }
}

void fl_png_decoder_free(fl_png_decoder *d)
{
    if (!d)
        return;
    fl_png_abort(d);
    fl_buffer_free(&d->raw);
    fl_buffer_free(&d->rgb);
    free(d);
}

int fl_png_available(void)
{
    return 1;
}

const char *fl_png_version(void)
{
    static char version[32];
    if (!version[0])
        snprintf(version, sizeof(version), "libspng %s", spng_version_string());
    return version;
}

static int spng_failed(fl_png_decoder *d, int rc, const char *what, char *err)
{
    fl_set_err(err, "%s: %s (libspng error %d)", what, spng_strerror(rc), rc);
    fl_png_abort(d);
    return rc == SPNG_EMEM ? FL_ERR_NOMEM : FL_ERR_DECODE;
}

/* A libspng context on d->data holding its header: d->ctx, and *ihdr. */
static int open_ctx(fl_png_decoder *d, int flags, struct spng_ihdr *ihdr, char *err)
{
    d->ctx = spng_ctx_new(flags);
    if (!d->ctx) {
        fl_set_err(err, "out of memory creating a PNG decoder");
        return FL_ERR_NOMEM;
    }
    int rc = spng_set_chunk_limits(d->ctx, FL_PNG_CHUNK_LIMIT, FL_PNG_CACHE_LIMIT);
    if (!rc)
        rc = spng_set_png_buffer(d->ctx, d->data, d->size);
    if (rc)
        return spng_failed(d, rc, "cannot read the PNG", err);
    if ((rc = spng_get_ihdr(d->ctx, ihdr)) != 0)
        return spng_failed(d, rc, "bad PNG header", err);
    return FL_OK;
}

int fl_png_begin(fl_png_decoder *d, const uint8_t *data, size_t size, int want_exif,
                 fl_png_info *info, char *err)
{
    fl_png_abort(d);
    if (!fl_png_signature(data, size)) {
        fl_set_err(err, "not a PNG stream (no signature)");
        return FL_UNSUPPORTED;
    }
    if (!png_complete(data, size)) {
        fl_set_err(err, "the PNG ends before its IEND chunk (truncated): Pillow decides");
        return FL_UNSUPPORTED;
    }
    d->data = data;
    d->size = size;
    struct spng_ihdr ihdr;
    int rc = open_ctx(d, 0, &ihdr, err);
    if (rc != FL_OK)
        return rc;
    fl_png_info *in = &d->info;
    memset(in, 0, sizeof(*in));
    in->width = (int)ihdr.width;     /* libspng caps both at 2^31 - 1 */
    in->height = (int)ihdr.height;
    in->bit_depth = ihdr.bit_depth;
    in->color_type = ihdr.color_type;
    in->interlaced = ihdr.interlace_method != 0;
    if (want_exif && (in->orientation = png_orientation(data, size)) < 0) {
        fl_png_abort(d);
        fl_set_err(err, "an eXIf chunk whose orientation only Pillow can read");
        return FL_UNSUPPORTED;
    }
    *info = *in;
    return FL_OK;
}

/* Row conversion: pixels [0, n) of one scanline in the PNG's own format
 * (big-endian samples, sub-byte samples packed from the high bit) to RGB
 * pixels `step` bytes apart (3 for a row; 3 x the pass's column step for an
 * Adam7 pass). */
static void convert_row(const fl_png_decoder *d, const uint8_t *src, int n, uint8_t *dst, size_t step)
{
    const int bd = d->info.bit_depth;
    int x;
    switch (d->info.color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        if (bd == 16) {
            for (x = 0; x < n; x++, dst += step) {
                unsigned v = (unsigned)src[2 * x] << 8 | src[2 * x + 1];
                dst[0] = dst[1] = dst[2] = (uint8_t)((v + 128) / 257);   /* v / 257 rounded */
            }
        } else if (bd == 8) {
            for (x = 0; x < n; x++, dst += step)
                dst[0] = dst[1] = dst[2] = src[x];
        } else {
            const unsigned mask = (1u << bd) - 1, scale = 255 / mask;
            for (x = 0; x < n; x++, dst += step) {
                unsigned bit = (unsigned)x * bd;
                unsigned v = (src[bit >> 3] >> (8 - bd - (bit & 7))) & mask;
                dst[0] = dst[1] = dst[2] = (uint8_t)(v * scale);
            }
        }
        break;
    case SPNG_COLOR_TYPE_INDEXED:
        if (bd == 8) {
            for (x = 0; x < n; x++, dst += step)
                memcpy(dst, d->palette[src[x]], 3);
        } else {
            const unsigned mask = (1u << bd) - 1;
            for (x = 0; x < n; x++, dst += step) {
                unsigned bit = (unsigned)x * bd;
                memcpy(dst, d->palette[(src[bit >> 3] >> (8 - bd - (bit & 7))) & mask], 3);
            }
        }
        break;
    case SPNG_COLOR_TYPE_TRUECOLOR:
        if (bd == 8 && step == 3) {
            memcpy(dst, src, (size_t)n * 3);
        } else {
            const int k = bd == 16 ? 2 : 1;   /* the (high) byte of each sample */
            for (x = 0; x < n; x++, dst += step) {
                const uint8_t *s = src + 3 * k * x;
                dst[0] = s[0], dst[1] = s[k], dst[2] = s[2 * k];
            }
        }
        break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: {
        const int k = bd == 16 ? 4 : 2;
        for (x = 0; x < n; x++, dst += step)
            dst[0] = dst[1] = dst[2] = src[k * x];
        break;
    }
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: {
        const int k = bd == 16 ? 2 : 1;
        for (x = 0; x < n; x++, dst += step) {
            const uint8_t *s = src + 4 * k * x;
            dst[0] = s[0], dst[1] = s[k], dst[2] = s[2 * k];
        }
        break;
    }
    }
}

static int row_failed(fl_png_decoder *d, int rc, int y, char *err)
{
    fl_set_err(err, "corrupt PNG image data in row %d of %d: %s (libspng error %d)", y, d->info.height,
            spng_strerror(rc), rc);
    fl_png_abort(d);
    return rc == SPNG_EMEM ? FL_ERR_NOMEM : FL_ERR_DECODE;
}

int fl_png_decode_begun(fl_png_decoder *d, int x0, int y0, int x1, int y1, fl_view *out, fl_view *image,
                        char *err)
{
    if (!d->ctx) {
        fl_set_err(err, "no PNG begun");
        return FL_ERR_ARG;
    }
    const fl_png_info info = d->info;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > info.width) x1 = info.width;
    if (y1 > info.height) y1 = info.height;
    if (x1 <= x0 || y1 <= y0) {
        fl_png_abort(d);
        fl_set_err(err, "empty region after clamping to the %dx%d image", info.width, info.height);
        return FL_ERR_ARG;
    }
    int rc;
    if (!info.interlaced && y1 < info.height) {
        /* The stream's end, and the Adler-32 checksum it carries, will not be
         * reached: a context that does not compute it. */
        struct spng_ihdr ihdr;
        spng_ctx_free(d->ctx);
        if ((rc = open_ctx(d, SPNG_CTX_IGNORE_ADLER32, &ihdr, err)) != FL_OK)
            return rc;
    }
    if (info.color_type == SPNG_COLOR_TYPE_INDEXED) {
        struct spng_plte plte;
        if ((rc = spng_get_plte(d->ctx, &plte)) != 0)
            return spng_failed(d, rc, "bad palette", err);
        memset(d->palette, 0, sizeof(d->palette));   /* Pillow: indices past the palette are black */
        for (uint32_t i = 0; i < plte.n_entries && i < 256; i++) {
            d->palette[i][0] = plte.entries[i].red;
            d->palette[i][1] = plte.entries[i].green;
            d->palette[i][2] = plte.entries[i].blue;
        }
    }
    size_t total;
    if ((rc = spng_decoded_image_size(d->ctx, SPNG_FMT_RAW, &total)) != 0)
        return spng_failed(d, rc, "bad PNG header", err);
    const size_t row_bytes = total / (size_t)info.height, stride = (size_t)info.width * 3;
    if ((size_t)info.height > SIZE_MAX / stride
            || fl_buffer_reserve(&d->rgb, stride * (size_t)info.height) != FL_OK
            || fl_buffer_reserve(&d->raw, row_bytes) != FL_OK) {
        fl_png_abort(d);
        fl_set_err(err, "out of memory for a %dx%d PNG", info.width, info.height);
        return FL_ERR_NOMEM;
    }
    if ((rc = spng_decode_image(d->ctx, NULL, 0, SPNG_FMT_RAW, SPNG_DECODE_PROGRESSIVE)) != 0)
        return spng_failed(d, rc, "cannot decode the PNG", err);
    /* The chunks before the image data have been read and their CRCs checked.
     * Pillow checks no IDAT chunk's CRC; from here on neither does libspng
     * (which would have computed each over the whole compressed stream). */
    spng_set_crc_action(d->ctx, SPNG_CRC_USE, SPNG_CRC_USE);
    if (info.interlaced) {
        /* Seven passes, each over the whole height: every scanline is read,
         * and the pixels of the rows asked for are put in place. */
        static const int xs[7] = {0, 4, 0, 2, 0, 1, 0}, dx[7] = {8, 8, 4, 4, 2, 2, 1};
        for (;;) {
            struct spng_row_info ri;
            if ((rc = spng_get_row_info(d->ctx, &ri)) != 0)
                return row_failed(d, rc, -1, err);
            rc = spng_decode_scanline(d->ctx, d->raw.data, row_bytes);
            if (rc != 0 && rc != SPNG_EOI)
                return row_failed(d, rc, (int)ri.row_num, err);
            int y = (int)ri.row_num, pass = ri.pass;
            if (y >= y0 && y < y1 && pass >= 0 && pass < 7 && xs[pass] < info.width)
                convert_row(d, d->raw.data, (info.width - xs[pass] + dx[pass] - 1) / dx[pass],
                            d->rgb.data + (size_t)y * stride + (size_t)xs[pass] * 3, (size_t)dx[pass] * 3);
            if (rc == SPNG_EOI)
                break;
        }
    } else {
        for (int y = 0; y < y1; y++) {   /* rows above y0 are inflated, not converted */
            rc = spng_decode_row(d->ctx, d->raw.data, row_bytes);
            if (rc != 0 && !(rc == SPNG_EOI && y == info.height - 1))
                return row_failed(d, rc, y, err);
            if (y >= y0)
                convert_row(d, d->raw.data, info.width, d->rgb.data + (size_t)y * stride, 3);
        }
    }
    fl_png_abort(d);   /* the rows below y1 stay compressed */
    fl_view whole = {d->rgb.data, info.width, info.height, 3, (ptrdiff_t)stride};
    if (image)
        *image = whole;
    *out = (fl_view){whole.data + (size_t)y0 * stride + (size_t)x0 * 3, x1 - x0, y1 - y0, 3, whole.stride};
    return FL_OK;
}

#else  /* built without libspng: every PNG takes the Pillow route */

struct fl_png_decoder {
    int unused;
};

fl_png_decoder *fl_png_decoder_new(void)
{
    return (fl_png_decoder *)calloc(1, sizeof(fl_png_decoder));
}

void fl_png_decoder_free(fl_png_decoder *d)
{
    free(d);
}

void fl_png_abort(fl_png_decoder *d)
{
    (void)d;
}

int fl_png_available(void)
{
    return 0;
}

const char *fl_png_version(void)
{
    return "none";
}

int fl_png_begin(fl_png_decoder *d, const uint8_t *data, size_t size, int want_exif,
                 fl_png_info *info, char *err)
{
    (void)d, (void)data, (void)size, (void)want_exif, (void)info;
    (void)png_orientation, (void)png_complete;
    fl_set_err(err, "built without libspng");
    return FL_UNSUPPORTED;
}

int fl_png_decode_begun(fl_png_decoder *d, int x0, int y0, int x1, int y1, fl_view *out, fl_view *image,
                        char *err)
{
    (void)d, (void)x0, (void)y0, (void)x1, (void)y1, (void)out, (void)image;
    fl_set_err(err, "built without libspng");
    return FL_UNSUPPORTED;
}

#endif

int fl_png_decode_region(fl_png_decoder *d, const uint8_t *data, size_t size,
                         int x0, int y0, int x1, int y1, int honour_exif, int64_t max_pixels,
                         fl_view *out, char *err)
{
    fl_png_info info;
    int rc = fl_png_begin(d, data, size, honour_exif, &info, err);
    if (rc != FL_OK)
        return rc;
    if (max_pixels > 0 && (int64_t)info.width * info.height > max_pixels) {
        fl_png_abort(d);
        fl_set_err(err, "image is %dx%d = %lld pixels, over the limit of %lld", info.width, info.height,
                (long long)info.width * info.height, (long long)max_pixels);
        return FL_ERR_TOO_LARGE;
    }
    if (honour_exif && info.orientation > 1) {
        fl_png_abort(d);
        fl_set_err(err, "EXIF orientation %d to apply", info.orientation);
        return FL_UNSUPPORTED;
    }
    return fl_png_decode_begun(d, x0, y0, x1, y1, out, NULL, err);
}
