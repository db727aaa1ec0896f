/* What C11 leaves to the compiler, spelled once for GCC, Clang (clang-cl
 * included) and MSVC: per-function instruction sets, forced inlining,
 * thread-local storage, printf-format checks, and the vector ISAs a build
 * can dispatch to.
 *
 * GCC and Clang compile an intrinsic only inside a function whose target
 * allows it, so every vector path names its ISA with FL_TARGET and one
 * binary carries all paths (cpu.h picks one at run time). MSVC compiles any
 * intrinsic in any function and has no such attribute. FL_MSVC selects
 * MSVC's spellings; tools/port_check.py sets it under clang to check them
 * where there is no MSVC. */
#ifndef FL_PORT_H
#define FL_PORT_H

#ifndef FL_MSVC
#if defined(_MSC_VER) && !defined(__clang__)
#define FL_MSVC 1
#else
#define FL_MSVC 0
#endif
#endif

#if FL_MSVC
#define FL_TARGET(isa)
#define FL_INLINE __forceinline
#define FL_THREAD_LOCAL __declspec(thread)
#define FL_PRINTF(fmt, args)
#else
#define FL_TARGET(isa) __attribute__((target(isa)))
#define FL_INLINE __attribute__((always_inline)) inline
#define FL_THREAD_LOCAL _Thread_local
#define FL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))   /* -Wformat checks the callers */
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#define FL_X86 1
#else
#define FL_X86 0
#endif
/* GCC and Clang on AArch64, clang-cl included; MSVC's own ARM64 compiler
 * takes the portable loops (no wheel is built for it). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define FL_NEON 1
#else
#define FL_NEON 0
#endif

#endif
