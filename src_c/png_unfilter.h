/* Undoing PNG's row filters (the PNG specification, section 9), in place.
 *
 * A row of n bytes follows its filter type byte; `up` is the row above,
 * already unfiltered (zeros above the first row); bpp is the bytes of one
 * complete pixel, rounded up to 1 (PNG's own definition). None and Up are
 * byte-parallel. Sub, Average and Paeth carry from pixel to pixel: the SSE2
 * (x86) and NEON (AArch64) paths, both part of those targets' baseline, take
 * a whole 3- or 4-byte pixel per step; other widths, and other CPUs, take the
 * portable loops, one byte per step. */
#ifndef FL_PNG_UNFILTER_H
#define FL_PNG_UNFILTER_H

#include <stddef.h>
#include <stdint.h>

/* 0, or -1 for a filter type past 4 (the row is left as it is). */
int fl_png_unfilter(int type, uint8_t *row, const uint8_t *up, size_t n, size_t bpp);

/* The portable loops alone (the reference tools/simd_check.c compares with). */
int fl_png_unfilter_portable(int type, uint8_t *row, const uint8_t *up, size_t n, size_t bpp);

/* "sse2", "neon" or "portable": the path fl_png_unfilter takes for 3- and 4-byte pixels. */
const char *fl_png_unfilter_path(void);

#endif
