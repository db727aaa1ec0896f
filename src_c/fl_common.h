/* Types shared by every fastload kernel. Plain C, no Python.h: kernels never
 * touch Python objects and never take the GIL, so any of them can run on a
 * worker thread. */
#ifndef FL_COMMON_H
#define FL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include "fl_port.h"

/* Status codes. Negative values are errors with a message in the caller's
 * error buffer; positive values ask the caller to take another route. */
enum {
    FL_OK = 0,
    FL_NOT_JPEG = 1,      /* not a JPEG (nor, with libspng, a PNG) stream: decode through Pillow */
    FL_UNSUPPORTED = 2,   /* an image this path does not handle (a CMYK JPEG, an EXIF rotation for the
                           * decoder alone, a PNG libspng rejects, no libjpeg-turbo or libspng) */
    FL_ERR_DECODE = -1,   /* corrupt or truncated data */
    FL_ERR_NOMEM = -2,
    FL_ERR_TOO_LARGE = -3,/* more pixels than the configured limit, or a resize past INT_MAX a side */
    FL_ERR_IO = -4,       /* the file could not be read */
    FL_ERR_ARG = -5,      /* invalid arguments (a bug in the caller) */
    FL_ERR_CROP = -6      /* a crop larger than the image, without padding */
};

#define FL_ERRLEN 256

/* A borrowed view of an interleaved uint8 image. */
typedef struct {
    uint8_t *data;
    int width, height, channels;
    ptrdiff_t stride;     /* bytes between rows */
} fl_view;

/* A growable scratch buffer owned by one thread. It only grows, so after the
 * first few samples a worker stops allocating altogether. */
typedef struct {
    uint8_t *data;
    size_t capacity;
} fl_buffer;

int fl_buffer_reserve(fl_buffer *b, size_t nbytes);   /* FL_OK or FL_ERR_NOMEM */
void fl_buffer_free(fl_buffer *b);

/* printf into a caller's FL_ERRLEN error buffer (nothing when err is NULL). */
void fl_set_err(char *err, const char *fmt, ...) FL_PRINTF(2, 3);

/* A rectangle in continuous pixel coordinates: pixel i covers [i, i+1). */
typedef struct {
    double x0, y0, x1, y1;
} fl_rect;

#endif
