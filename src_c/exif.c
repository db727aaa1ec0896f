#include "exif.h"

#include <string.h>

static unsigned rd16(const uint8_t *p, int le)
{
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? (uint32_t)rd16(p, 1) | (uint32_t)rd16(p + 2, 1) << 16
              : (uint32_t)rd16(p, 0) << 16 | (uint32_t)rd16(p + 2, 0);
}

int fl_exif_orientation(const uint8_t *p, size_t n)
{
    if (n < 8)
        return -1;
    int le;
    if (p[0] == 'I' && p[1] == 'I')
        le = 1;
    else if (p[0] == 'M' && p[1] == 'M')
        le = 0;
    else
        return -1;
    if (rd16(p + 2, le) != 42)
        return -1;
    uint32_t ifd = rd32(p + 4, le);
    if (ifd > n || n - ifd < 2)
        return -1;
    size_t count = rd16(p + ifd, le), room = (n - ifd - 2) / 12;
    int cut = count > room;   /* entries past the end: read what is there */
    if (cut)
        count = room;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *e = p + ifd + 2 + 12 * i;
        if (rd16(e, le) != 0x0112)
            continue;
        unsigned type = rd16(e + 2, le);
        if ((type != 3 && type != 4) || rd32(e + 4, le) != 1)
            return -2;   /* an SSHORT, a count of 2, ...: Pillow's getexif may still read a turn in it */
        uint32_t v = type == 3 ? rd16(e + 8, le) : rd32(e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : -1;
    }
    return cut ? -1 : 0;
}

int fl_xmp_orientation(const uint8_t *p, size_t n)
{
    static const char key[] = "tiff:Orientation";
    const size_t k = sizeof(key) - 1;
    const uint8_t *end = p + n;
    for (const uint8_t *s = p; (size_t)(end - s) > k + 1;) {
        const uint8_t *t = memchr(s, 't', (size_t)(end - s) - k - 1);
        if (!t)
            break;
        if (memcmp(t, key, k) == 0) {
            const uint8_t *v = t + k;
            if (v[0] == '>' && v[1] >= '0' && v[1] <= '9')
                return v[1] - '0';
            if (v[0] == '=' && v[1] == '"' && end - v > 2 && v[2] >= '0' && v[2] <= '9')
                return v[2] - '0';
        }
        s = t + 1;
    }
    return -1;
}
