#include "cpu.h"
#include "fl_common.h"

int fl_simd = FL_SIMD_PORTABLE;

int fl_simd_supported(int path)
{
    switch (path) {
    case FL_SIMD_PORTABLE:
        return 1;
#if FL_X86
    case FL_SIMD_SSE41:
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse4.1");
    case FL_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
#endif
#if FL_NEON
    case FL_SIMD_NEON:
        return 1;   /* part of the AArch64 base architecture */
#endif
    default:
        return 0;
    }
}

int fl_simd_init(void)
{
    static const int order[] = {FL_SIMD_AVX2, FL_SIMD_NEON, FL_SIMD_SSE41};
    fl_simd = FL_SIMD_PORTABLE;
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (fl_simd_supported(order[i])) {
            fl_simd = order[i];
            break;
        }
    return fl_simd;
}

int fl_simd_set(int path)
{
    if (path < 0 || path >= FL_SIMD_COUNT || !fl_simd_supported(path))
        return FL_ERR_ARG;
    fl_simd = path;
    return FL_OK;
}

const char *fl_simd_name(int path)
{
    static const char *names[FL_SIMD_COUNT] = {"portable", "sse4.1", "avx2", "neon"};
    return path >= 0 && path < FL_SIMD_COUNT ? names[path] : "unknown";
}

const char *fl_simd_kernels(int path)
{
    /* resample.c: both passes on every path; augment.c: the whole colour
     * jitter on AVX2, its saturation step on SSE4.1 and NEON, and the write
     * (fl_write_path says which writes) on every path. */
    static const char *kernels[FL_SIMD_COUNT] = {
        "", "resample,saturation,write", "resample,color_jitter,write", "resample,saturation,write"};
    return path >= 0 && path < FL_SIMD_COUNT ? kernels[path] : "";
}
