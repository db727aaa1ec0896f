/* PNG decoding through libspng and zlib into a reused per-thread buffer.
 *
 * A PNG is one zlib stream of filtered rows, so a row can only be had by
 * inflating every row above it; but nothing below the last row a crop needs
 * has to be touched. Decoding therefore runs row by row and stops after that
 * row: for a RandomResizedCrop the rows below the crop are never inflated,
 * and the rows above it are inflated but not converted. Interlaced (Adam7)
 * images spread every row over seven passes, so all of them are inflated.
 *
 * The conversion to RGB8 is Pillow's ``convert("RGB")`` of what Pillow's PNG
 * plugin opens, exactly (fastload.image.decode documents the semantics):
 * 1/2/4-bit grey scaled to 0..255 (x 255, 85, 17), palette entries past the
 * PLTE chunk black, alpha and tRNS dropped (never composited), 16-bit grey
 * v / 257 rounded, other 16-bit samples their high byte (Pillow's RGB;16B,
 * LA;16B and RGBA;16B unpackers); gAMA, cHRM, sRGB, iCCP and sBIT ignored.
 *
 * Every error is reported through the return code and `err`. Built without
 * libspng (FL_HAVE_SPNG == 0), decoding returns FL_UNSUPPORTED and the Python
 * layer decodes through Pillow. */
#ifndef FL_PNG_DECODE_H
#define FL_PNG_DECODE_H

#include "fl_common.h"

typedef struct {
    int width, height;     /* as stored (before EXIF orientation) */
    int bit_depth;         /* 1, 2, 4, 8 or 16 */
    int color_type;        /* 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA */
    int interlaced;        /* Adam7 */
    int orientation;       /* what exif_transpose applies, 1..8: an eXIf chunk's, or XMP's;
                            * 0 when there is none (or it was not looked for) */
} fl_png_info;

typedef struct fl_png_decoder fl_png_decoder;   /* one per thread; not thread-safe */

fl_png_decoder *fl_png_decoder_new(void);
void fl_png_decoder_free(fl_png_decoder *d);

/* Whether a non-interlaced image's data is inflated whole, with libdeflate
 * where it is linked (the default), or by zlib down to the last row asked for
 * only, as builds without libdeflate do (and as every decode falls back to
 * when libdeflate finds the stream damaged, or longer than the image). */
void fl_png_decoder_whole_stream(fl_png_decoder *d, int on);

/* "libspng 0.7.3 + libdeflate 1.14 + zlib 1.2.13" (the libraries' own version
 * strings; no libdeflate where it is not linked) or "none"; static
 * storage, filled on the first call: make that call from one thread. */
const char *fl_png_version(void);

/* Whether `data` starts with the 8-byte PNG signature (any build). */
int fl_png_signature(const uint8_t *data, size_t size);

/* Whether this build decodes PNGs (libspng linked). */
int fl_png_available(void);

/* Read the header (IHDR) and leave the decoder holding the image; then
 * exactly one of fl_png_decode_begun or fl_png_abort must follow, with
 * `data` unchanged. With want_exif, every chunk's header is walked (the
 * image data skipped by length) for what exif_transpose reads once Pillow
 * has loaded the image (eXIf, XMP text): the orientation lands in
 * info->orientation, and one that cannot be read for certain (a malformed
 * block, a tag out of range, EXIF in a text chunk, compressed XMP) is
 * FL_UNSUPPORTED so that Pillow decides. FL_OK, FL_UNSUPPORTED (not a PNG, no libspng, no whole IEND chunk),
 * FL_ERR_DECODE or FL_ERR_NOMEM, with `err` filled. */
int fl_png_begin(fl_png_decoder *d, const uint8_t *data, size_t size, int want_exif,
                 fl_png_info *info, char *err);

/* Decode the rectangle [x0, x1) x [y0, y1) (clamped to the image; empty after
 * clamping is FL_ERR_ARG) as interleaved RGB into the decoder's own buffer,
 * which has the whole image's geometry: rows [y0, y1) are decoded whole,
 * the rows above them are inflated but not converted, and decoding stops
 * after row y1 - 1, so corruption below it goes unnoticed (a file cut
 * short never gets here: fl_png_begin hands a PNG without a whole IEND chunk
 * to Pillow). `out` views the rectangle; `image` (may be NULL) views the
 * whole image, of which only rows [y0, y1) hold pixels: a resampler given
 * `image` and a box inside those rows computes exactly what it would on the
 * fully decoded image. Both stay valid until the next call on `d`. A corrupt
 * or truncated stream in the rows read is FL_ERR_DECODE. Ends the image
 * begun. */
int fl_png_decode_begun(fl_png_decoder *d, int x0, int y0, int x1, int y1, fl_view *out, fl_view *image,
                        char *err);

/* Drop the image begun (a no-op when there is none). */
void fl_png_abort(fl_png_decoder *d);

/* Begin + decode in one call. Checked in this order: not a PNG is
 * FL_UNSUPPORTED; images over max_pixels (0 = no limit) are
 * FL_ERR_TOO_LARGE; with honour_exif, an orientation other than 1 (or one
 * that cannot be read for certain) is FL_UNSUPPORTED, and the caller
 * decodes another way. */
int fl_png_decode_region(fl_png_decoder *d, const uint8_t *data, size_t size,
                         int x0, int y0, int x1, int y1, int honour_exif, int64_t max_pixels,
                         fl_view *out, char *err);

#endif
