/* Which SIMD instruction sets this CPU offers, decided at run time so one
 * wheel runs everywhere and still uses the wide paths where they exist. */
#ifndef FL_CPU_H
#define FL_CPU_H

/* "avx512", "avx2", "sse4.1", "sse2", "neon" or "generic"; static storage. */
const char *fl_simd_level(void);

#endif
