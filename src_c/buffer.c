#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "fl_common.h"

int fl_buffer_reserve(fl_buffer *b, size_t nbytes)
{
    if (nbytes <= b->capacity)
        return FL_OK;
    /* Grow geometrically so a stream of slightly larger images does not
     * reallocate every time. */
    size_t cap = b->capacity ? b->capacity : 4096;
    while (cap < nbytes)
        cap = cap > ((size_t)-1) / 2 ? nbytes : cap * 2;
    uint8_t *p = (uint8_t *)realloc(b->data, cap);
    if (!p)
        return FL_ERR_NOMEM;
    b->data = p;
    b->capacity = cap;
    return FL_OK;
}

void fl_buffer_free(fl_buffer *b)
{
    free(b->data);
    b->data = NULL;
    b->capacity = 0;
}

void fl_set_err(char *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, FL_ERRLEN, fmt, ap);
    va_end(ap);
}
