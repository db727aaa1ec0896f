/* Force-included by tools/port_check.py when it compiles src_c/ as MSVC's
 * dialect with clang (x86_64-pc-windows-msvc, FL_MSVC=1) against mingw-w64's
 * headers: every system header the kernels use comes first, then the GNU
 * spellings MSVC lacks are poisoned, so any of them left in the kernels'
 * MSVC build is an error here. */
#include <_mingw.h>
#undef __attribute__   /* _mingw.h drops it for compilers without __GNUC__; clang's intrinsic headers need it */
#undef __MINGW_ATTRIB_NORETURN   /* mingw-w64 puts these __declspecs where only GCC's attributes may go */
#define __MINGW_ATTRIB_NORETURN
#undef __MINGW_ATTRIB_DEPRECATED
#define __MINGW_ATTRIB_DEPRECATED
#include <intrin.h>
#include <immintrin.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <wchar.h>
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#if FL_HAVE_LIBJPEG_TURBO
#include <jpeglib.h>
#include <jerror.h>
#endif
#if FL_HAVE_SPNG
#include <spng.h>
#endif
#pragma GCC poison __attribute__ _Thread_local __thread __asm__ asm __typeof__ typeof __auto_type
#pragma GCC poison __builtin_cpu_init __builtin_cpu_supports __builtin_expect __builtin_unreachable
#pragma GCC poison __builtin_assume_aligned __builtin_prefetch __builtin_clz __builtin_ctz __builtin_popcount
#pragma GCC poison __builtin_bswap32 __builtin_bswap64 __builtin_memcpy __builtin_add_overflow __builtin_mul_overflow
