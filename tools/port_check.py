"""The compiled kernels' platform layer (src_c/fl_port.h, cpu.c, sample.c's file
reads), checked on Linux for the platforms it also builds for.

1. native: tools/port_check.c, built with the system compiler and run: the SIMD
   path the CPUID check picks, and fl_read_file on a non-ASCII name, a text file,
   an empty file, a missing file and a directory.
2. msvc: every src_c/*.c compiled by clang as MSVC's dialect (x86_64-pc-windows-msvc,
   FL_MSVC=1, mingw-w64's headers, warnings as errors), with the GNU spellings
   poisoned (tools/msvc_shim.h) and no GNU vector-extension operators: no
   arithmetic, subscripts, casts or brace initialisers on __m128/__m256 values,
   which are unions under MSVC. Those are found in clang's AST.
3. windows: tools/port_check.c and tools/simd_check.c built for x86_64 Windows
   (clang, mingw-w64's runtime) and run under Wine: files opened by UTF-16 name,
   CPUID dispatch, and every SIMD path against the portable loops under the
   Windows x64 calling convention.

    python tools/port_check.py [--cases N]

Steps 2 and 3 need clang, gcc-mingw-w64-x86-64 and wine (Debian packages; .ci/run
installs them). Without them they fail with what is missing, or, with
PORT_CHECK_WINDOWS=optional, say so and are left out.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src_c")
KERNELS = sorted(glob.glob(os.path.join(SRC, "*.c")))
SIMD = [os.path.join(SRC, f + ".c") for f in ("cpu", "buffer", "resample", "augment", "png_unfilter")]
MINGW_INCLUDE = "/usr/share/mingw-w64/include"

# GNU vector extensions that MSVC's union types reject (plain assignment and the comma are fine).
VECTOR_OP = re.compile(r"(BinaryOperator|CompoundAssignOperator|UnaryOperator|CStyleCastExpr|InitListExpr)\b"
                       r".*vector_size|vectorcomponent")
ASSIGNMENT = re.compile(r"BinaryOperator\b.*'(=|,)'$")
LOCATION = re.compile(r"<([^<>:, ]+\.[ch]):\d+")


def run(cmd, **kw):
    # errors=: a reason names the file, and the Windows case's path is not UTF-8 (its bytes are shown)
    r = subprocess.run(cmd, capture_output=True, text=True, errors="backslashreplace", **kw)
    if r.returncode != 0:
        sys.exit(f"port_check: failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout


def native(work):
    exe = os.path.join(work, "port_check")
    run([os.environ.get("CC", "cc"), "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
         "-Wno-unused-parameter", "-Wno-sign-compare", "-I" + SRC, "-DFL_HAVE_LIBJPEG_TURBO=0", "-DFL_HAVE_SPNG=0",
         os.path.join(ROOT, "tools", "port_check.c"), *KERNELS, "-lm", "-o", exe])
    out = run([exe], cwd=_fresh_dir(work, "native-files"))
    print(out.rstrip().splitlines()[-1].replace("port_check:", "port_check: native:"))


def codec_headers(work):
    """libjpeg-turbo's, libspng's and libdeflate's headers (portable C) copied where the MSVC-dialect compile finds
    them without the rest of /usr/include; the macros say which were found."""
    inc = _fresh_dir(work, "codec-include")
    found = {}
    for macro, headers in (("FL_HAVE_LIBJPEG_TURBO", ["jpeglib.h", "jmorecfg.h", "jerror.h", "jconfig.h"]),
                           ("FL_HAVE_SPNG", ["spng.h", "zlib.h", "zconf.h"]), ("FL_HAVE_LIBDEFLATE", ["libdeflate.h"])):
        paths = [next(iter(glob.glob(f"/usr/include/{h}") + glob.glob(f"/usr/include/*/{h}")), None)
                 for h in headers]
        found[macro] = all(paths)
        for p in paths if all(paths) else []:
            shutil.copy(p, inc)
    return inc, found


def msvc(work):
    resource = run(["clang", "-print-resource-dir"]).strip()
    inc, found = codec_headers(work)
    flags = ["clang", "--target=x86_64-pc-windows-msvc", "-fms-compatibility", "-fms-extensions",
             "-ffreestanding",   # clang's intrin.h would redeclare mingw-w64's _setjmp
             "-fsyntax-only", "-std=c11", "-mavx2", "-mf16c",   # MSVC compiles intrinsics anywhere; clang needs these
             "-Werror", "-Wall", "-Wextra", "-Wgnu", "-Wvla", "-pedantic", "-Wno-unknown-pragmas",
             "-Wno-unused-function", "-Wno-unused-parameter", "-Wno-sign-compare", "-Wno-pragma-pack",
             "-DFL_MSVC=1", *[f"-D{m}={int(v)}" for m, v in found.items()],
             "-isystem", os.path.join(resource, "include"), "-isystem", MINGW_INCLUDE, "-isystem", inc,
             "-include", os.path.join(ROOT, "tools", "msvc_shim.h"), "-I" + SRC]
    for path in KERNELS:
        run(flags + [path])
        dump = run(flags + ["-Xclang", "-ast-dump", path])
        current, bad = None, []
        for line in dump.splitlines():   # a location names its file only when the file changes
            m = LOCATION.search(line)
            if m:
                current = m.group(1)
            if current and os.path.abspath(current).startswith(SRC) and VECTOR_OP.search(line) \
                    and not ASSIGNMENT.search(line):
                bad.append(f"  {os.path.relpath(current, ROOT)}: {line.strip()[:160]}")
        if bad:
            sys.exit("port_check: GNU vector-extension operations MSVC rejects:\n" + "\n".join(bad[:20]))
    codecs = ", ".join(m for m, v in found.items() if v) or "no codec headers here: codec code not checked"
    print(f"port_check: msvc: {len(KERNELS)} kernel files compile as MSVC's dialect (FL_MSVC, {codecs}), "
          f"no GNU spellings, no vector-extension operators")


def windows(work, cases):
    env = dict(os.environ, WINEPREFIX=os.path.join(work, "wine"), WINEDEBUG="-all",
               WINEDLLOVERRIDES="mscoree,mshtml=")   # no Mono or Gecko install prompts
    objects = {}
    for path in sorted(set(KERNELS) | {os.path.join(ROOT, "tools", t) for t in ("port_check.c", "simd_check.c")}):
        obj = os.path.join(work, os.path.basename(path)[:-2] + ".obj")
        # clang, not mingw-w64's gcc: GCC cannot align the Windows x64 stack for AVX spills
        run(["clang", "--target=x86_64-w64-windows-gnu", "-std=c11", "-O2", "-Wall", "-Werror", "-Wno-unused-function",
             "-I" + SRC, "-DFL_HAVE_LIBJPEG_TURBO=0", "-DFL_HAVE_SPNG=0", "-c", path, "-o", obj])
        objects[os.path.basename(path)] = obj
    for main, parts in (("port_check.c", KERNELS), ("simd_check.c", SIMD)):
        run(["x86_64-w64-mingw32-gcc", objects[main], *[objects[os.path.basename(p)] for p in parts], "-lm",
             "-o", os.path.join(work, main[:-2] + ".exe")])
    out = run(["wine", os.path.join(work, "port_check.exe")], cwd=_fresh_dir(work, "windows-files"), env=env)
    print(out.rstrip().splitlines()[-1].replace("port_check:", "port_check: windows (wine):"))
    out = run(["wine", os.path.join(work, "simd_check.exe"), str(cases)], env=env)
    for line in out.splitlines():
        print("port_check: windows (wine):", line)


def _fresh_dir(work, name):
    d = os.path.join(work, name)
    os.makedirs(d)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="simd_check cases per path under Wine")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastload-port-") as work:
        native(work)
        missing = [t for t in ("clang", "x86_64-w64-mingw32-gcc", "wine") if not shutil.which(t)]
        if not os.path.isdir(MINGW_INCLUDE) and "x86_64-w64-mingw32-gcc" not in missing:
            missing.append(MINGW_INCLUDE)
        if missing:
            msg = f"port_check: the MSVC and Windows steps need {', '.join(missing)} " \
                  "(apt-get install clang gcc-mingw-w64-x86-64 wine)"
            if os.environ.get("PORT_CHECK_WINDOWS") == "optional":
                print(msg + "; left out")
                return
            sys.exit(msg)
        msvc(work)
        windows(work, args.cases)


if __name__ == "__main__":
    main()
