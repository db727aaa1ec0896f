/* The platform layer of the compiled kernels at run time: the SIMD path the
 * CPU check picks, and fl_read_file on the names, kinds and sizes of file a
 * loader meets (a non-ASCII name, a directory, a missing or empty file,
 * a file that is no image). Built natively and for Windows (run under Wine)
 * by tools/port_check.py. Exits non-zero on the first wrong answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "sample.h"
#ifdef _WIN32
#include <wchar.h>
#endif

static int failures;

static void expect(int ok, const char *what, const char *detail)
{
    printf("port_check: %s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail ? ": " : "", detail ? detail : "");
    failures += !ok;
}

/* Write n bytes to a UTF-8 path (through its UTF-16 form on Windows). */
static int write_file(const char *utf8, const wchar_t *wide, const uint8_t *data, size_t n)
{
#ifdef _WIN32
    (void)utf8;
    FILE *f = _wfopen(wide, L"wb");
#else
    (void)wide;
    FILE *f = fopen(utf8, "wb");
#endif
    if (!f)
        return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

int main(void)
{
    char line[128];
    int chosen = fl_simd_init();
    snprintf(line, sizeof line, "%s (f16c %d)", fl_simd_name(chosen), fl_simd_f16c);
    expect(fl_simd_supported(chosen) && fl_simd == chosen, "simd path", line);
    for (int p = 0; p < FL_SIMD_COUNT; p++)
        if (fl_simd_supported(p))
            expect(fl_simd_set(p) == FL_OK && fl_simd == p, "supported path can be set", fl_simd_name(p));
    fl_simd_set(chosen);

    fl_worker w;
    if (fl_worker_init(&w) != FL_OK) {
        expect(0, "worker", "init failed");
        return 1;
    }
    char err[FL_ERRLEN];
    size_t size = 0;

    /* "photo-é画像.jpg": Latin-1 and CJK, no single code page has both */
    const char *name = "photo-\xC3\xA9\xE7\x94\xBB\xE5\x83\x8F.jpg";
    const wchar_t wname[] = {'p', 'h', 'o', 't', 'o', '-', 0xE9, 0x753B, 0x50CF, '.', 'j', 'p', 'g', 0};
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    data[0] = 0xFF, data[1] = 0xD8, data[2] = 0xFF;
    expect(write_file(name, wname, data, sizeof data), "write a non-ASCII name", name);
    int r = fl_read_file(&w, name, 1, &size, err);
    expect(r == FL_OK && size == sizeof data && memcmp(w.file.data, data, size) == 0,
           "read a non-ASCII name back, every byte", r == FL_OK ? NULL : err);

    /* over 256 KiB: the first bytes are read and checked before the rest */
    size_t big_n = 300 * 1024;
    uint8_t *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    big[0] = 0xFF, big[1] = 0xD8, big[2] = 0xFF;
    expect(write_file("big.jpg", L"big.jpg", big, big_n), "write a 300 KiB file", NULL);
    r = fl_read_file(&w, "big.jpg", 1, &size, err);
    expect(r == FL_OK && size == big_n && memcmp(w.file.data, big, big_n) == 0, "read a 300 KiB file back",
           r == FL_OK ? NULL : err);
    big[0] = 'x';
    expect(write_file("big.txt", L"big.txt", big, big_n), "write a 300 KiB text file", NULL);
    r = fl_read_file(&w, "big.txt", 1, &size, err);
    expect(r == FL_NOT_JPEG && strstr(err, "not a JPEG or PNG"), "a 300 KiB text file is no image", err);
    free(big);

    const char *text = "not-an-image.txt";
    const wchar_t wtext[] = L"not-an-image.txt";
    expect(write_file(text, wtext, (const uint8_t *)"hello, world\n", 13), "write a text file", NULL);
    r = fl_read_file(&w, text, 1, &size, err);
    expect(r == FL_NOT_JPEG && strstr(err, "not a JPEG or PNG"), "a text file is no image", err);
    r = fl_read_file(&w, text, 0, &size, err);
    expect(r == FL_OK && size == 13 && memcmp(w.file.data, "hello, world\n", 13) == 0, "read any file whole", NULL);

    expect(write_file("empty.jpg", L"empty.jpg", data, 0), "write an empty file", NULL);
    r = fl_read_file(&w, "empty.jpg", 1, &size, err);
    expect(r == FL_ERR_DECODE && strstr(err, "empty file"), "an empty file", err);

    r = fl_read_file(&w, "missing.jpg", 1, &size, err);
    expect(r == FL_ERR_IO && strstr(err, "cannot open"), "a missing file", err);

    r = fl_read_file(&w, ".", 1, &size, err);
    expect(r == FL_ERR_IO, "a directory", err);

#ifdef _WIN32
    r = fl_read_file(&w, "bad-\xC3(.jpg", 1, &size, err);
    expect(r == FL_ERR_IO && strstr(err, "cannot open"), "a path that is not UTF-8", err);
#endif

    fl_worker_free(&w);
    printf("port_check: %s, %d failure(s)\n", failures ? "FAILED" : "passed", failures);
    return failures != 0;
}
