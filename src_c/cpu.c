#include "cpu.h"
#include "fl_common.h"
#if FL_X86 && FL_MSVC
#include <intrin.h>
#elif FL_X86
#include <cpuid.h>
#endif

int fl_simd = FL_SIMD_PORTABLE;
int fl_simd_f16c = 0;

#if FL_X86
enum { HAS_SSE41 = 1, HAS_AVX2 = 2, HAS_F16C = 4 };

static void cpuid(unsigned leaf, unsigned r[4])
{
#if FL_MSVC
    int v[4];
    __cpuidex(v, (int)leaf, 0);
    for (int i = 0; i < 4; i++)
        r[i] = (unsigned)v[i];
#else
    __cpuid_count(leaf, 0, r[0], r[1], r[2], r[3]);
#endif
}

/* XCR0: the register state the operating system saves on a context switch. */
static unsigned long long xcr0(void)
{
#if FL_MSVC
    return _xgetbv(0);
#else
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (unsigned long long)hi << 32 | lo;
#endif
}

/* The same CPUID reading on every compiler and OS. AVX2 and F16C count only
 * where the OS saves the YMM registers (OSXSAVE, then XCR0 bits 1-2): a CPU
 * can have them while the kernel or hypervisor has them switched off. */
static int x86_features(void)
{
    unsigned r[4];
    cpuid(0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 1)
        return 0;
    cpuid(1, r);
    int f = r[2] >> 19 & 1 ? HAS_SSE41 : 0;
    const int ymm = (r[2] >> 27 & 1) && (r[2] >> 28 & 1) && (xcr0() & 6) == 6;   /* OSXSAVE, AVX */
    if (ymm && (r[2] >> 29 & 1))
        f |= HAS_F16C;
    if (ymm && max_leaf >= 7) {
        cpuid(7, r);
        if (r[1] >> 5 & 1)
            f |= HAS_AVX2;
    }
    return f;
}
#endif

int fl_simd_supported(int path)
{
    switch (path) {
    case FL_SIMD_PORTABLE:
        return 1;
#if FL_X86
    case FL_SIMD_SSE41:
        return (x86_features() & HAS_SSE41) != 0;
    case FL_SIMD_AVX2:
        return (x86_features() & HAS_AVX2) != 0;
#endif
#if FL_NEON
    case FL_SIMD_NEON:
        return 1;   /* part of the AArch64 base architecture */
#endif
    default:
        return 0;
    }
}

int fl_simd_set(int path)
{
    if (path < 0 || path >= FL_SIMD_COUNT || !fl_simd_supported(path))
        return FL_ERR_ARG;
    fl_simd = path;
#if FL_X86
    /* F16C comes with every AVX2 CPU made so far, but it is a CPUID bit of its own */
    fl_simd_f16c = path == FL_SIMD_AVX2 && (x86_features() & HAS_F16C);
#endif
    return FL_OK;
}

int fl_simd_init(void)
{
    static const int order[] = {FL_SIMD_AVX2, FL_SIMD_NEON, FL_SIMD_SSE41, FL_SIMD_PORTABLE};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (fl_simd_set(order[i]) == FL_OK)
            break;
    return fl_simd;
}

const char *fl_simd_name(int path)
{
    static const char *names[FL_SIMD_COUNT] = {"portable", "sse4.1", "avx2", "neon"};
    return path >= 0 && path < FL_SIMD_COUNT ? names[path] : "unknown";
}

const char *fl_simd_kernels(int path)
{
    /* resample.c: both passes on every path; augment.c: the whole colour
     * jitter on AVX2, its saturation step on SSE4.1 and NEON, the hue turn on
     * AVX2 and NEON, and the write (fl_write_path says which writes) on every path. */
    static const char *kernels[FL_SIMD_COUNT] = {
        "", "resample,saturation,write", "resample,color_jitter,hue,write", "resample,saturation,hue,write"};
    return path >= 0 && path < FL_SIMD_COUNT ? kernels[path] : "";
}
