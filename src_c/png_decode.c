/* libspng glue: see png_decode.h for the contract.
 *
 * libspng keeps its state in a context that cannot be rewound, so each image
 * gets a fresh one (a few small allocations inside libspng and zlib); the
 * decoder's own buffers only grow, and are reused.
 *
 * libspng reads and checks the header and every chunk before the image data.
 * The image data of a non-interlaced PNG is then inflated here, in one zlib
 * call per IDAT chunk into a buffer that takes every row needed, and
 * unfiltered in place: libspng inflates one scanline per call, and zlib's fast
 * loop runs only while 258 bytes of output room are left, so a third of a
 * 256-pixel RGB row went through its slow loop (whole-file decodes of the
 * benchmark's PNGs took 1.3x as long). Interlaced images keep libspng's
 * row-by-row decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "exif.h"
#include "png_decode.h"
#include "png_unfilter.h"

#ifndef FL_HAVE_SPNG
#define FL_HAVE_SPNG 1
#endif
#ifndef FL_HAVE_LIBDEFLATE
#define FL_HAVE_LIBDEFLATE 0
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

static int png_text_chunk(const uint8_t *type)
{
    return memcmp(type, "tEXt", 4) == 0 || memcmp(type, "zTXt", 4) == 0 || memcmp(type, "iTXt", 4) == 0;
}

/* Whether a text chunk's keyword (with its NUL) is `key`. */
static int png_keyword(const uint8_t *body, size_t len, const char *key)
{
    size_t n = strlen(key) + 1;
    return len >= n && memcmp(body, key, n) == 0;
}

/* The text of an XMP chunk as Pillow stores it, when it is there uncompressed
 * (tEXt, or an iTXt whose fields Pillow's parser accepts); NULL otherwise. */
static const uint8_t *png_xmp_text(const uint8_t *type, const uint8_t *body, size_t len, size_t *n)
{
    const uint8_t *p = body + sizeof("XML:com.adobe.xmp"), *end = body + len;
    if (memcmp(type, "tEXt", 4) == 0) {
        *n = (size_t)(end - p);
        return p;
    }
    if (memcmp(type, "iTXt", 4) != 0 || end - p < 2 || p[0] != 0)   /* the compression flag */
        return NULL;
    p += 2;
    for (int field = 0; field < 2; field++) {   /* language tag, translated keyword */
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul)
            return NULL;
        p = nul + 1;
    }
    *n = (size_t)(end - p);
    return p;
}

/* The orientation exif_transpose applies, which loads the image first, so
 * that Pillow's PNG plugin has read every chunk to IEND: the last eXIf chunk's
 * tag (Image.getexif strips an "Exif\0\0" prefix), else XMP's
 * tiff:Orientation (fl_xmp_orientation). 0: none; 1..8; -1: Pillow's answer
 * cannot be told from here (see fl_png_begin): EXIF in a text chunk ("Raw
 * profile type exif", as ImageMagick writes it), compressed or repeated XMP,
 * a malformed eXIf, or an animation's chunks past the image data, where
 * Pillow stops at the next frame. The chunk walk skips the image data by
 * length, trusts nothing and stops at the end of the data; libspng reports
 * whatever is malformed. */
static int png_orientation(const uint8_t *data, size_t size)
{
    static const char xmp_key[] = "XML:com.adobe.xmp";
    const uint8_t *exif = NULL, *xmp = NULL;
    size_t exif_len = 0, xmp_len = 0, pos = 8;
    int xmp_chunks = 0, text_exif = 0, animated = 0, idat = 0, late = 0;
    while (size - pos >= 12) {
        size_t len = be32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (len > size - pos - 12 || memcmp(type, "IEND", 4) == 0)
            break;
        int meta = 0;
        if (memcmp(type, "IDAT", 4) == 0) {
            idat = 1;
        } else if (memcmp(type, "acTL", 4) == 0) {
            animated = 1;
        } else if (memcmp(type, "eXIf", 4) == 0) {
            exif = body;
            exif_len = len;
            meta = 1;
        } else if (png_text_chunk(type)) {
            if (png_keyword(body, len, xmp_key)) {
                xmp = png_xmp_text(type, body, len, &xmp_len);
                xmp_chunks++;
                meta = 1;
            } else if (png_keyword(body, len, "Raw profile type exif") || png_keyword(body, len, "exif")) {
                text_exif = meta = 1;
            }
        }
        late |= meta && idat;
        pos += 12 + len;
    }
    if (text_exif || (late && animated))
        return -1;
    int o = 0;
    if (exif) {
        if (exif_len >= 6 && memcmp(exif, "Exif\0\0", 6) == 0) {
            exif += 6;
            exif_len -= 6;
        }
        if ((o = fl_exif_orientation(exif, exif_len)) != 0)
            return o;
    }
    if (!xmp_chunks)
        return 0;
    if (xmp_chunks > 1 || !xmp)
        return -1;
    o = fl_xmp_orientation(xmp, xmp_len);
    return o >= 1 && o <= 8 ? o : 0;
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
#include <zlib.h>
#if FL_HAVE_LIBDEFLATE
#include <libdeflate.h>
#define FL_LIBDEFLATE_VERSION LIBDEFLATE_VERSION_STRING
#else
#define FL_LIBDEFLATE_VERSION ""
#endif

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
    fl_buffer raw;        /* interlaced: one scanline in the PNG's format (big-endian samples);
                           * else every filtered row, each after its filter type byte */
    fl_buffer zero;       /* a row of zeros: the row above the first */
    fl_buffer rgb;        /* the RGB image; only the rows asked for are written */
    z_stream z;           /* kept from image to image (inflateReset, no allocation) */
    int z_ready;
    int whole_stream;     /* inflate all the image data at once with libdeflate */
#if FL_HAVE_LIBDEFLATE
    struct libdeflate_decompressor *deflate;
    fl_buffer idat;       /* the IDAT chunks' bodies, joined when there are several */
#endif
    uint8_t palette[256][3];
};

fl_png_decoder *fl_png_decoder_new(void)
{
    fl_png_decoder *d = (fl_png_decoder *)calloc(1, sizeof(fl_png_decoder));
    if (d)
        d->whole_stream = 1;
    return d;
}

void fl_png_decoder_whole_stream(fl_png_decoder *d, int on)
{
    d->whole_stream = on;
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
    if (d->z_ready)
        inflateEnd(&d->z);
#if FL_HAVE_LIBDEFLATE
    if (d->deflate)
        libdeflate_free_decompressor(d->deflate);
    fl_buffer_free(&d->idat);
#endif
    fl_buffer_free(&d->raw);
    fl_buffer_free(&d->zero);
    fl_buffer_free(&d->rgb);
    free(d);
}

int fl_png_available(void)
{
    return 1;
}

const char *fl_png_version(void)
{
    static char version[64];
    if (!version[0])
        snprintf(version, sizeof(version), "libspng %s + %szlib %s", spng_version_string(),
                 FL_HAVE_LIBDEFLATE ? "libdeflate " FL_LIBDEFLATE_VERSION " + " : "", zlibVersion());
    return version;
}

static int spng_failed(fl_png_decoder *d, int rc, const char *what, char *err)
{
    fl_png_abort(d);
    if (rc == SPNG_ECHUNK_CRC) {
        /* A chunk before the image data with a wrong CRC: Pillow refuses the file, or, with
         * LOAD_TRUNCATED_IMAGES, skips an ancillary one; it decides, as on its route. */
        fl_set_err(err, "a chunk's CRC is wrong: Pillow decides");
        return FL_UNSUPPORTED;
    }
    fl_set_err(err, "%s: %s (libspng error %d)", what, spng_strerror(rc), rc);
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
    if (!rc)   /* libspng would drop an ancillary chunk with a wrong CRC without a word (see spng_failed) */
        rc = spng_set_crc_action(d->ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR);
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
        fl_set_err(err, "an orientation only Pillow can read");
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

/* Out of memory for the image's buffers: the image begun is dropped. */
static int no_memory(fl_png_decoder *d, char *err)
{
    fl_png_abort(d);
    fl_set_err(err, "out of memory for a %dx%d PNG", d->info.width, d->info.height);
    return FL_ERR_NOMEM;
}

/* ---- the image data of a non-interlaced PNG ----------------------------------------------- */

/* Where the first IDAT chunk starts (d->size when there is none; fl_png_begin
 * checked that the chunks run whole to IEND). */
static size_t first_idat(const fl_png_decoder *d)
{
    size_t pos = 8;
    while (d->size - pos >= 12 && memcmp(d->data + pos + 4, "IDAT", 4) != 0)
        pos += 12 + (size_t)be32(d->data + pos);
    return d->size - pos >= 12 ? pos : d->size;
}

/* The next IDAT chunk's body at or after *pos, into z's input; 0 when the
 * next chunk is not IDAT (fl_png_begin checked that the chunks run whole to
 * IEND). */
static int next_idat(fl_png_decoder *d, size_t *pos)
{
    while (d->size - *pos >= 12) {
        const uint8_t *c = d->data + *pos;
        size_t len = be32(c);
        *pos += 12 + len;
        if (memcmp(c + 4, "IDAT", 4) == 0) {
            if (len == 0)
                continue;
            d->z.next_in = (Bytef *)(uintptr_t)(c + 8);   /* zlib's API is not const */
            d->z.avail_in = (uInt)len;                    /* a chunk is under 2^31 bytes */
            return 1;
        }
        return 0;
    }
    return 0;
}

/* The row that holds byte `done` of the filtered rows (the last row once past them). */
static int row_at(size_t done, size_t row_len, int h)
{
    return done / row_len < (size_t)h ? (int)(done / row_len) : h - 1;
}

/* Inflate the image data into n bytes at out: the filtered rows [0, rows),
 * each row_len bytes. When they are every row of the image, inflating goes
 * on to the end of the zlib stream, where zlib checks its Adler-32. */
static int inflate_rows(fl_png_decoder *d, uint8_t *out, int rows, size_t row_len, char *err)
{
    const int h = d->info.height;
    int rc = d->z_ready ? inflateReset(&d->z) : inflateInit(&d->z);
    if (rc != Z_OK) {
        fl_set_err(err, "cannot start inflating the PNG image data (zlib error %d)", rc);
        return rc == Z_MEM_ERROR ? FL_ERR_NOMEM : FL_ERR_DECODE;
    }
    d->z_ready = 1;
#if ZLIB_VERNUM >= 0x1290
    /* The Adler-32 is only read at the stream's end: not computed for rows
     * that stop above it (what libpng and libspng do when told to ignore it). */
    inflateValidate(&d->z, rows == h);
#endif
    size_t pos = first_idat(d);
    d->z.avail_in = 0;
    const size_t n = (size_t)rows * row_len;
    size_t done = 0;
    uint8_t spare[64];   /* past the last row: room for zlib to reach the stream's end */
    for (;;) {
        const int tail = done == n;
        if (tail && rows < h)
            return FL_OK;
        if (d->z.avail_in == 0 && !next_idat(d, &pos)) {
            if (tail)
                return FL_OK;   /* the stream's end (and checksum) is missing; Pillow has no use for it */
            fl_set_err(err, "the PNG image data ends in row %d of %d", row_at(done, row_len, h), h);
            return FL_ERR_DECODE;
        }
        size_t room = tail ? sizeof(spare) : n - done;
        d->z.next_out = tail ? spare : out + done;
        d->z.avail_out = room > (1u << 30) ? 1u << 30 : (uInt)room;
        const uInt before = d->z.avail_out;
        rc = inflate(&d->z, Z_NO_FLUSH);
        if (!tail)
            done += before - d->z.avail_out;
        else if (d->z.avail_out != before)
            return FL_OK;   /* data past the last row: ignored, as Pillow does */
        if (rc == Z_STREAM_END) {
            if (done == n)
                return FL_OK;
            fl_set_err(err, "the PNG image data ends in row %d of %d", row_at(done, row_len, h), h);
            return FL_ERR_DECODE;
        }
        if (rc == Z_MEM_ERROR) {
            fl_set_err(err, "out of memory inflating the PNG image data");
            return FL_ERR_NOMEM;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            fl_set_err(err, "corrupt PNG image data in row %d of %d: %s (zlib error %d)", row_at(done, row_len, h), h,
                       d->z.msg ? d->z.msg : "invalid stream", rc);
            return FL_ERR_DECODE;
        }
    }
}

#if FL_HAVE_LIBDEFLATE
/* All the image data inflated at once into n bytes at out, with libdeflate:
 * 1 when it is one zlib stream of exactly n bytes whose Adler-32 matches, and
 * 0 for anything else (then zlib, which stops after the last row needed,
 * finds and names what is wrong, or ignores what Pillow ignores). */
static int inflate_whole(fl_png_decoder *d, uint8_t *out, size_t n)
{
    if (!d->deflate && !(d->deflate = libdeflate_alloc_decompressor()))
        return 0;
    const size_t first = first_idat(d);
    size_t pos = first, total = 0, chunks = 0;
    for (; d->size - pos >= 12 && memcmp(d->data + pos + 4, "IDAT", 4) == 0; chunks++) {
        total += be32(d->data + pos);
        pos += 12 + (size_t)be32(d->data + pos);
    }
    if (!chunks)
        return 0;
    const uint8_t *in = d->data + first + 8;
    if (chunks > 1) {   /* the bodies, joined (a copy, next to inflating, costs little) */
        if (fl_buffer_reserve(&d->idat, total) != FL_OK)
            return 0;
        size_t at = 0;
        for (pos = first; chunks--; pos += 12 + (size_t)be32(d->data + pos)) {
            memcpy(d->idat.data + at, d->data + pos + 8, be32(d->data + pos));
            at += be32(d->data + pos);
        }
        in = d->idat.data;
    }
    return libdeflate_zlib_decompress(d->deflate, in, total, out, n, NULL) == LIBDEFLATE_SUCCESS;
}
#endif

/* Rows [0, y1) of a non-interlaced image, inflated and unfiltered in place in
 * d->raw (each after its filter type byte, row_len bytes apart). */
static int decode_rows(fl_png_decoder *d, int y1, size_t row_bytes, char *err)
{
    const fl_png_info *in = &d->info;
    const size_t row_len = row_bytes + 1;
    const size_t bpp = ((size_t)(in->color_type == 2 ? 3 : in->color_type == 4 ? 2 : in->color_type == 6 ? 4 : 1)
                        * (size_t)in->bit_depth + 7) / 8;
    if ((size_t)in->height > SIZE_MAX / row_len
            || fl_buffer_reserve(&d->raw, row_len * (size_t)in->height) != FL_OK
            || fl_buffer_reserve(&d->zero, row_bytes) != FL_OK)
        return no_memory(d, err);
    int rc = FL_ERR_DECODE;
#if FL_HAVE_LIBDEFLATE
    /* Inflating every row with libdeflate takes less time than zlib takes for
     * the rows down to the crop's (about half as much for a whole image). */
    if (d->whole_stream && inflate_whole(d, d->raw.data, row_len * (size_t)in->height))
        rc = FL_OK;
#endif
    if (rc != FL_OK && (rc = inflate_rows(d, d->raw.data, y1, row_len, err)) != FL_OK)
        return rc;
    memset(d->zero.data, 0, row_bytes);
    const uint8_t *up = d->zero.data;
    for (int y = 0; y < y1; y++) {
        uint8_t *row = d->raw.data + (size_t)y * row_len;
        if (fl_png_unfilter(row[0], row + 1, up, row_bytes, bpp) != 0) {
            fl_set_err(err, "corrupt PNG image data in row %d of %d: filter type %d (0-4 are defined)",
                       y, in->height, row[0]);
            return FL_ERR_DECODE;
        }
        up = row + 1;
    }
    return FL_OK;
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
            || (info.interlaced && fl_buffer_reserve(&d->raw, row_bytes) != FL_OK))
        return no_memory(d, err);
    /* Any getter has libspng read the chunks before the image data and check
     * them, CRCs included, ancillary chunks' too (see open_ctx). Pillow checks
     * no IDAT chunk's CRC; neither does
     * the non-interlaced path, which reads the IDAT chunks itself, nor, once
     * told, libspng (though it still computes the first one's). */
    struct spng_trns trns;
    if ((rc = spng_get_trns(d->ctx, &trns)) != 0 && rc != SPNG_ECHUNKAVAIL)
        return spng_failed(d, rc, "cannot read the PNG", err);
    fl_view whole = {NULL, info.width, info.height, 3, (ptrdiff_t)stride};
    if (!info.interlaced) {
        fl_png_abort(d);   /* the rows below y1 stay compressed */
        if ((rc = decode_rows(d, y1, row_bytes, err)) != FL_OK)
            return rc;
        const size_t row_len = row_bytes + 1;
        if (info.color_type == SPNG_COLOR_TYPE_TRUECOLOR && info.bit_depth == 8) {
            whole.data = d->raw.data + 1;   /* the unfiltered rows are the RGB image */
            whole.stride = (ptrdiff_t)row_len;
        } else {
            /* Formats of at least 3 bytes a pixel (RGBA, 16-bit) are converted in
             * place, top to bottom: RGB row y ends before filtered row y + 1
             * starts, and each pixel is read before its RGB bytes are written
             * (no second image-sized buffer per thread). Narrower ones expand. */
            const int in_place = row_len >= stride;
            if (!in_place && fl_buffer_reserve(&d->rgb, stride * (size_t)info.height) != FL_OK)
                return no_memory(d, err);
            whole.data = in_place ? d->raw.data : d->rgb.data;
            for (int y = y0; y < y1; y++)   /* rows above y0 are inflated, not converted */
                convert_row(d, d->raw.data + (size_t)y * row_len + 1, info.width, whole.data + (size_t)y * stride, 3);
        }
    } else {
        if (fl_buffer_reserve(&d->rgb, stride * (size_t)info.height) != FL_OK)
            return no_memory(d, err);
        spng_set_crc_action(d->ctx, SPNG_CRC_USE, SPNG_CRC_USE);
        if ((rc = spng_decode_image(d->ctx, NULL, 0, SPNG_FMT_RAW, SPNG_DECODE_PROGRESSIVE)) != 0)
            return spng_failed(d, rc, "cannot decode the PNG", err);
        whole.data = d->rgb.data;
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
        fl_png_abort(d);
    }
    if (image)
        *image = whole;
    *out = (fl_view){whole.data + (size_t)y0 * (size_t)whole.stride + (size_t)x0 * 3, x1 - x0, y1 - y0, 3,
                     whole.stride};
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

void fl_png_decoder_whole_stream(fl_png_decoder *d, int on)
{
    (void)d, (void)on;
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
