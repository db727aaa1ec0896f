/* The one SIMD dispatch of the compiled kernels. Every kernel with a vector
 * path (resampling, colour jitter, the write into the batch slot) reads
 * fl_simd and runs that path (fl_simd_kernels names them); all
 * paths give the portable loops' results bit for bit. The path is chosen
 * once, when the extension is imported (fl_simd_init), from what the CPU
 * offers, so one wheel runs everywhere and uses the widest path it has.
 *
 * No AVX-512 path: the vertical resampling pass written with 512-bit
 * vectors ran 1.09-1.22x the AVX2 one (224 and 64 px rows, 2 and 6 taps)
 * on AMD Zen 4, which splits 512-bit operations in two, and the vector
 * kernels together take under a fifth of a loader's CPU time: about 2% in
 * all. Intel cores with two 512-bit ports could gain more (at most about
 * 8%); unmeasured, for want of one. */
#ifndef FL_CPU_H
#define FL_CPU_H

#include "fl_port.h"

enum { FL_SIMD_PORTABLE = 0, FL_SIMD_SSE41 = 1, FL_SIMD_AVX2 = 2, FL_SIMD_NEON = 3, FL_SIMD_COUNT = 4 };

/* The path the kernels run now (FL_SIMD_*), and whether it converts to
 * float16 in vectors (AVX2 with F16C). */
extern int fl_simd;
extern int fl_simd_f16c;

/* Choose the widest path this CPU and build support; returns it. */
int fl_simd_init(void);

/* Whether this build has `path` and this CPU can run it. */
int fl_simd_supported(int path);

/* Pin `path` process-wide (tests and benchmarks; not while other threads run
 * kernels). FL_OK, or FL_ERR_ARG when unsupported. */
int fl_simd_set(int path);

/* "portable", "sse4.1", "avx2", "neon"; static storage. */
const char *fl_simd_name(int path);

/* The kernels with a vector path on `path`, comma-separated ("" for the
 * portable path); static storage. */
const char *fl_simd_kernels(int path);

#endif
