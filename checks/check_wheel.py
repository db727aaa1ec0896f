"""Check that a built fastload wheel holds what an installation needs, and that it works once installed.

Usage::

    python checks/check_wheel.py [WHEEL] [--python ENV_PYTHON] [--source REPO] [--bundled-jpeg] [--bundled-png]

Without WHEEL the file list is the installed distribution's record (what
cibuildwheel's test step has). Against the wheel's files it asserts:

* every pure-Python module of the source tree's ``fastload/`` is in it (``--source``);
* every compiled extension is in it: each ``fastload/_kernels/*.pyi`` stub the
  wheel ships has its compiled module beside it, and there is at least one;
* ``--bundled-jpeg`` (a wheel ``auditwheel``/``delocate`` repaired): a
  libjpeg-turbo library is bundled in the wheel;
* ``--bundled-png``: likewise a libspng library.

Against the installed wheel (``--python``: the interpreter of an environment it
is installed in, run from an empty directory so the checkout cannot be
imported) it asserts:

* ``import fastload`` loads it from that environment and imports no optional
  framework (torch, keras, jax, tensorflow, datasets, numba, fsspec, ...);
* ``features()`` names the JPEG and PNG decoder routes and the SIMD path the
  kernels run; with ``--bundled-jpeg`` the JPEG route is the linked
  libjpeg-turbo, with ``--bundled-png`` the PNG route is the linked libspng,
  and on Linux the process has mapped the wheel's own copy of each library
  (and of libdeflate, where the build linked it).

Exits non-zero with one line per failed check.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

FRAMEWORKS = ("torch", "torchvision", "keras", "jax", "jaxlib", "tensorflow", "datasets", "numba",
              "fsspec", "s3fs", "webdataset", "tokenizers", "pandas", "cv2")
EXTENSION = re.compile(r"\.(cpython-[^.]+|cp\d+-[^.]+|abi3)?\.?(so|pyd)$")
JPEG_LIB = re.compile(r"(^|/)(lib)?(turbo)?jpeg[^/]*\.(so[.\d]*|dylib|dll)$")
PNG_LIB = re.compile(r"(^|/)(lib)?spng[^/]*\.(so[.\d]*|dylib|dll)$")
DEFLATE_LIB = re.compile(r"(^|/)(lib)?deflate[^/]*\.(so[.\d]*|dylib|dll)$")

PROBE = r"""
import json, os, sys
import fastload
imported = sorted(m for m in FRAMEWORKS if m in sys.modules)
f = fastload.features()
imported_after = sorted(m for m in FRAMEWORKS if m in sys.modules)
from fastload._kernels import _batch
import importlib.metadata as md
record = [str(p).replace(os.sep, "/") for p in (md.files("fastload") or [])]
maps = {"jpeg": [], "spng": [], "deflate": []}
if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as fh:
        names = {line.split()[-1] for line in fh if "/" in line}
    maps = {k: sorted(n for n in names if k in n.rsplit("/", 1)[-1]) for k in maps}
print(json.dumps({"file": fastload.__file__, "features": f, "imported": imported,
                  "imported_after_features": imported_after, "jpeg_maps": maps["jpeg"],
                  "png_maps": maps["spng"], "deflate_maps": maps["deflate"], "record": record}))
"""


def _bundled(names: list[str], pattern) -> list[str]:
    """The libraries matching ``pattern`` that a repair step put in the wheel (beside, not in, the package)."""
    return [n for n in names if pattern.search(n) and (not n.startswith("fastload/") or ".libs/" in n
                                                        or ".dylibs/" in n)]


def check_contents(names: list[str], source: str | None, bundled_jpeg: bool, bundled_png: bool = False) -> list[str]:
    problems = []
    files = set(names)
    stubs = [n for n in names if n.startswith("fastload/_kernels/") and n.endswith(".pyi")]
    compiled = [n for n in names if n.startswith("fastload/") and EXTENSION.search(n)]
    if not compiled:
        problems.append("no compiled extension module under fastload/")
    for stub in stubs:
        module = stub[: -len(".pyi")]
        if not any(c.startswith(module + ".") and c[len(module) + 1:].count("/") == 0 for c in compiled):
            problems.append(f"{stub} has no compiled module beside it")
    if source:
        pkg = os.path.join(source, "fastload")
        for root, dirs, fnames in os.walk(pkg):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for fname in fnames:
                if fname.endswith((".py", ".pyi")):
                    rel = os.path.relpath(os.path.join(root, fname), source).replace(os.sep, "/")
                    if rel not in files:
                        problems.append(f"{rel} is in the source tree but not in the wheel")
    if bundled_jpeg and not _bundled(names, JPEG_LIB):
        problems.append("no libjpeg-turbo library bundled in the wheel (was it repaired?)")
    if bundled_png and not _bundled(names, PNG_LIB):
        problems.append("no libspng library bundled in the wheel (was it repaired?)")
    return problems


def check_installed(python: str, wheel_names: list[str], bundled_jpeg: bool,
                    bundled_png: bool = False) -> tuple[list[str], dict]:
    code = f"FRAMEWORKS = {FRAMEWORKS!r}\n" + PROBE
    with tempfile.TemporaryDirectory() as empty:   # not the checkout: the installed package only
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        run = subprocess.run([python, "-c", code], cwd=empty, env=env, capture_output=True, text=True)
    if run.returncode:
        return [f"import fastload failed in {python}: {run.stderr.strip().splitlines()[-1:]}"], {}
    report = json.loads(run.stdout.strip().splitlines()[-1])
    problems = []
    where = report["file"]
    if not re.search(r"(site|dist)-packages", where):
        problems.append(f"fastload was imported from {where}, not from an installed wheel")
    for key in ("imported", "imported_after_features"):
        if report[key]:
            problems.append(f"import fastload imported optional frameworks: {report[key]}")
    f = report["features"]
    if not isinstance(f.get("simd"), str) or not f["simd"]:
        problems.append(f"features() names no SIMD path: {f.get('simd')!r}")
    elif "simd_paths" in f and f["simd"] not in f["simd_paths"]:
        problems.append(f"features() says simd={f['simd']!r}, not one of its compiled paths {f['simd_paths']}")
    if not f.get("jpeg_decoder"):
        problems.append("features() names no JPEG decoder route")
    if not f.get("png_decoder"):
        problems.append("features() names no PNG decoder route")
    for wanted, linked, route, lib, pattern, maps in (
            (bundled_jpeg, "libjpeg_turbo_linked", "jpeg_decoder", "libjpeg-turbo", JPEG_LIB, "jpeg_maps"),
            (bundled_png, "libspng_linked", "png_decoder", "libspng", PNG_LIB, "png_maps"),
            (bundled_png and f.get("libdeflate_linked"), "libdeflate_linked", "png_decoder", "libdeflate",
             DEFLATE_LIB, "deflate_maps")):
        if not wanted:
            continue
        if not f.get(linked):
            problems.append(f"the repaired wheel decodes through {f.get(route)!r}, not linked {lib}")
        bundled = [n.rsplit("/", 1)[-1] for n in (wheel_names or report["record"]) if pattern.search(n)]
        if report.get(maps) and not any(os.path.basename(m) in bundled for m in report[maps]):
            problems.append(f"the process mapped {report[maps]}, not the wheel's own {bundled}")
    return problems, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", nargs="?", help="the .whl file (default: the files installed for --python)")
    ap.add_argument("--python", help="interpreter of an environment the wheel is installed in")
    ap.add_argument("--source", help="the source checkout, to check no module was left out")
    ap.add_argument("--bundled-jpeg", action="store_true", help="require libjpeg-turbo bundled and used")
    ap.add_argument("--bundled-png", action="store_true", help="require libspng bundled and used")
    args = ap.parse_args(argv)
    if not args.wheel and not args.python:
        ap.error("give a wheel, --python, or both")
    names, report, problems = [], {}, []
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            names = z.namelist()
    if args.python:
        more, report = check_installed(args.python, names, args.bundled_jpeg, args.bundled_png)
        problems += more
        if not args.wheel:
            names = report.get("record", [])
            if report and not names:
                problems.append("the installed distribution has no file record")
    if names:
        problems = check_contents(names, args.source, args.bundled_jpeg, args.bundled_png) + problems
    name = os.path.basename(args.wheel) if args.wheel else f"fastload installed for {args.python}"
    for p in problems:
        print(f"check_wheel: {name}: {p}", file=sys.stderr)
    if problems:
        return 1
    compiled = sorted(n for n in names if EXTENSION.search(n))
    print(f"check_wheel: {name}: ok, {len(compiled)} compiled modules"
          + (f"; jpeg: {report['features']['jpeg_decoder']}; png: {report['features']['png_decoder']}"
             f"; simd: {report['features']['simd']}"
             f"; frameworks imported: none" if report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
