"""Declares fastload's compiled extensions; all metadata lives in pyproject.toml.

Four extensions: ``_batch``, the whole sample path (decode, resample, augment,
write), ``_tokenize``, ``_tarheader`` and ``_pread``. Each C source is compiled once, and the sources of
all extensions compile in parallel (one job per CPU, or FASTLOAD_BUILD_JOBS).
Builds are kept in build/ext-cache, keyed by their inputs, so installing the same
checkout again (pip builds in the tree) copies them instead of compiling.

libjpeg-turbo is linked when its headers are found (FASTLOAD_JPEG_PREFIX, pkg-config,
or the usual prefixes). Without it (or with FASTLOAD_NO_LIBJPEG=1) the build still
succeeds: JPEGs then go through Pillow, and ``fastload.features()`` says so. libspng
(the GIL-free PNG route; zlib, its own dependency, is linked with it) is found the
same way (FASTLOAD_PNG_PREFIX, pkg-config ``spng``, the usual prefixes) and left out
with FASTLOAD_NO_SPNG=1: PNGs then go through Pillow. With libspng, libdeflate
(FASTLOAD_DEFLATE_PREFIX, pkg-config ``libdeflate``; FASTLOAD_NO_LIBDEFLATE=1 leaves it
out) inflates a PNG's image data in one call, about twice as fast as zlib.
"""
import filecmp
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from glob import glob

import Cython
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, "build", "ext-cache")


def _prefixes(prefix_env, pkg, extra):
    """Where to look for a library: the prefix the environment names, pkg-config's, the usual ones."""
    prefixes = [os.environ[prefix_env]] if os.environ.get(prefix_env) else []
    try:
        cflags = subprocess.run(["pkg-config", "--cflags-only-I", pkg],
                                capture_output=True, text=True, check=True).stdout
        prefixes += [os.path.dirname(f[2:]) for f in shlex.split(cflags) if f.startswith("-I")]
    except (OSError, subprocess.CalledProcessError):
        pass
    return prefixes + [sys.prefix, "/usr/local", "/usr", *extra]


def _multiarch():
    if not sys.platform.startswith("linux"):
        return ""
    try:
        return subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _lib_dirs(prefix, multiarch):
    libs = [os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]
    if multiarch:
        libs.append(os.path.join(prefix, "lib", multiarch))
    return [p for p in libs if os.path.isdir(p)]


def left_out(variable):
    """Whether FASTLOAD_NO_<LIB> asks to build without the library: 1, true, yes or on ("0" or
    "false" leave it in)."""
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def find_libjpeg_turbo():
    """Return (include_dirs, library_dirs, version) or None."""
    if left_out("FASTLOAD_NO_LIBJPEG"):
        return None
    multiarch = _multiarch()
    for prefix in _prefixes("FASTLOAD_JPEG_PREFIX", "libjpeg", ["/opt/libjpeg-turbo"]):
        inc = os.path.join(prefix, "include")
        if not os.path.exists(os.path.join(inc, "jpeglib.h")):
            continue
        incs = [inc] + ([os.path.join(inc, multiarch)] if multiarch else [])
        for d in incs:
            cfg = os.path.join(d, "jconfig.h")
            if os.path.exists(cfg):
                m = re.search(r"#define\s+LIBJPEG_TURBO_VERSION\s+(\S+)", open(cfg).read())
                if m:  # only libjpeg-turbo has the crop/skip API we rely on
                    return incs, _lib_dirs(prefix, multiarch), m.group(1)
    return None


def find_libspng():
    """Return (include_dirs, library_dirs, version) or None."""
    if left_out("FASTLOAD_NO_SPNG"):
        return None
    multiarch = _multiarch()
    for prefix in _prefixes("FASTLOAD_PNG_PREFIX", "spng", ["/opt/libspng", "/opt/homebrew"]):
        header = os.path.join(prefix, "include", "spng.h")
        if not os.path.exists(header):
            continue
        text = open(header).read()
        parts = [re.search(rf"#define\s+SPNG_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts) and "spng_decode_row" in text:   # the row-by-row API arrived in 0.6
            return [os.path.join(prefix, "include")], _lib_dirs(prefix, multiarch), \
                ".".join(m.group(1) for m in parts)
    return None


def find_libdeflate():
    """Return (include_dirs, library_dirs, version) or None."""
    if left_out("FASTLOAD_NO_LIBDEFLATE"):
        return None
    multiarch = _multiarch()
    for prefix in _prefixes("FASTLOAD_DEFLATE_PREFIX", "libdeflate", ["/opt/homebrew"]):
        header = os.path.join(prefix, "include", "libdeflate.h")
        if os.path.exists(header):
            m = re.search(r'#define\s+LIBDEFLATE_VERSION_STRING\s+"([^"]+)"', open(header).read())
            if m:
                return [os.path.join(prefix, "include")], _lib_dirs(prefix, multiarch), m.group(1)
    return None


jpeg = find_libjpeg_turbo()
spng = find_libspng()
deflate = find_libdeflate() if spng else None   # only the linked PNG route inflates with it
common = dict(
    include_dirs=["src_c", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # -ffp-contract=off: clang (and GCC outside ISO C) would fuse a * b + c into one FMA where the
    # target has it (Arm), rounding once where the vector paths and x86 round twice.
    extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno", "-Wall",
                        "-Wno-unused-function"],
)
MSVC_ARGS = ["/O2", "/std:c11", "/W3"]   # /fp:precise (the default) keeps the SIMD paths bit-exact


def ext(name, c_sources, use_codecs=False):
    kw = {k: list(v) for k, v in common.items()}
    kw["sources"] = [f"fastload/_kernels/{name}.pyx"] + [f"src_c/{s}.c" for s in c_sources]
    kw["depends"] = sorted(glob("src_c/*.h")) + ["fastload/_kernels/fl_c.pxd"]
    kw["library_dirs"], kw["libraries"] = [], []
    if use_codecs:   # each codec linked when found, else its macro is 0 and Pillow decodes that format
        default = ("/usr/include", "/usr/lib", "/usr/lib64")   # already searched; -I them breaks #include_next
        for found, lib, macro in ((jpeg, "jpeg", "FL_HAVE_LIBJPEG_TURBO"), (spng, "spng", "FL_HAVE_SPNG"),
                                  (deflate, "deflate", "FL_HAVE_LIBDEFLATE")):
            if found:
                incs, libdirs, version = found
                kw["include_dirs"] += [d for d in incs if not d.startswith(default) and d not in kw["include_dirs"]]
                kw["library_dirs"] += [d for d in libdirs if not d.startswith(default) and d not in kw["library_dirs"]]
                kw["libraries"].append(lib)
                if lib == "spng":   # the PNG route inflates with zlib too (vcpkg's is zlib.lib)
                    kw["libraries"].append("zlib" if sys.platform == "win32" else "z")
            kw["define_macros"] += [(macro, "1" if found else "0")]
    return Extension(f"fastload._kernels.{name}", **kw)


extensions = [
    ext("_batch", ["buffer", "cpu", "exif", "jpeg_decode", "png_decode", "png_unfilter", "resample", "augment",
                   "geometry", "sample"], use_codecs=True),
    ext("_tokenize", []),
    ext("_tarheader", []),
    ext("_pread", []),
]
only = os.environ.get("FASTLOAD_EXTENSIONS")  # development: rebuild a subset, e.g. "_batch"
if only:
    extensions = [e for e in extensions if e.name.rsplit(".", 1)[1] in only.split(",")]


class ParallelBuildExt(build_ext):
    """Compile every source of every extension at once, then link each extension.

    setuptools compiles one extension's sources one after another; here all of
    them go through a thread pool (the compiler is a subprocess, so threads
    suffice) and each extension is then linked from those objects.
    """

    def build_extensions(self):
        self.check_extensions_list(self.extensions)
        if self.compiler.compiler_type == "msvc":   # src_c/fl_port.h has MSVC's spellings of the GNU ones
            for ext in self.extensions:
                ext.extra_compile_args = MSVC_ARGS
                ext.define_macros = ext.define_macros + [("_CRT_SECURE_NO_WARNINGS", "1")]
        # A build is kept under build/ext-cache, keyed by everything that goes into it (the
        # sources' bytes, macros, libraries, flags, numpy and Python): a later `pip install .`
        # of the same checkout (pip builds in the tree) copies it instead of compiling again.
        todo = []
        for ext in self.extensions:
            cached = os.path.join(CACHE, self._key(ext), os.path.basename(self.get_ext_filename(ext.name)))
            target = self.get_ext_fullpath(ext.name)
            if self.force or not os.path.exists(cached):
                todo.append((ext, cached))
            elif not (os.path.exists(target) and filecmp.cmp(cached, target, shallow=False)):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(cached, target)
        jobs = int(os.environ.get("FASTLOAD_BUILD_JOBS") or self.parallel or os.cpu_count() or 1)
        compile_one = self.compiler.compile

        def compile_source(ext, src):
            return compile_one([src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                               macros=list(ext.define_macros) + [(u,) for u in ext.undef_macros],
                               debug=self.debug, extra_postargs=ext.extra_compile_args or [],
                               depends=ext.depends)

        # From here on as if forced: setuptools would skip linking a module newer than its sources
        # and, in place, copying one older than the tree's, although both may be another
        # configuration's (FASTLOAD_NO_SPNG=1, ...); what is to build was decided above.
        self.force = True
        work = [(ext, src) for ext, _ in todo for src in ext.sources]
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            objects = dict(zip([(ext.name, src) for ext, src in work],
                               pool.map(lambda w: compile_source(*w), work)))
        for ext, cached in todo:
            self.compiler.compile = lambda sources, *a, _n=ext.name, **k: \
                [o for src in sources for o in objects[(_n, src)]]
            try:
                self.build_extension(ext)
            finally:
                self.compiler.compile = compile_one
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            shutil.copy2(self.get_ext_fullpath(ext.name), cached + ".tmp")
            os.replace(cached + ".tmp", cached)
        for old in sorted(glob(os.path.join(CACHE, "*")), key=os.path.getmtime)[:-8]:   # the 8 newest stay
            shutil.rmtree(old, ignore_errors=True)

    def _key(self, ext) -> str:
        h = hashlib.sha256(repr((ext.name, sorted(ext.define_macros), ext.undef_macros, ext.libraries,
                                 ext.library_dirs, ext.extra_compile_args, ext.extra_link_args,
                                 [d for d in ext.include_dirs if d != numpy.get_include()],
                                 numpy.__version__, sys.version, sysconfig.get_config_var("EXT_SUFFIX"),
                                 self.debug, os.environ.get("CC"), os.environ.get("CFLAGS"),
                                 os.environ.get("LDFLAGS"))).encode())
        # Cython's .c output embeds the (temporary) paths of the build environment: hash its .pyx
        pyx = [p[:-2] + ".pyx" if os.path.exists(p[:-2] + ".pyx") else p for p in ext.sources]
        h.update(Cython.__version__.encode())
        for path in sorted(pyx) + sorted(ext.depends):
            with open(path, "rb") as f:   # headers outside the tree (numpy's) by name: their path is temporary
                h.update((os.path.basename(path) if os.path.isabs(path) else path).encode() + b"\0" + f.read())
        return h.hexdigest()[:24]


setup(
    ext_modules=cythonize(extensions, language_level=3, cache=os.path.join(HERE, "build", "cython-cache"),
                          compiler_directives={
            "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False}),
    cmdclass={"build_ext": ParallelBuildExt},
)
