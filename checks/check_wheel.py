"""Check that a built fastload wheel holds what an installation needs, and that it works once installed.

Usage::

    python checks/check_wheel.py [WHEEL] [--python ENV_PYTHON] [--source REPO] [--bundled-jpeg]

Without WHEEL the file list is the installed distribution's record (what
cibuildwheel's test step has). Against the wheel's files it asserts:

* every pure-Python module of the source tree's ``fastload/`` is in it (``--source``);
* every compiled extension is in it: each ``fastload/_kernels/*.pyi`` stub the
  wheel ships has its compiled module beside it, and there is at least one;
* ``--bundled-jpeg`` (a wheel ``auditwheel``/``delocate`` repaired): a
  libjpeg-turbo library is bundled in the wheel.

Against the installed wheel (``--python``: the interpreter of an environment it
is installed in, run from an empty directory so the checkout cannot be
imported) it asserts:

* ``import fastload`` loads it from that environment and imports no optional
  framework (torch, keras, jax, tensorflow, datasets, numba, fsspec, ...);
* ``features()`` names the JPEG decoder route and the SIMD path the kernels
  run; with ``--bundled-jpeg`` the route is the linked libjpeg-turbo, and on
  Linux the process has mapped the wheel's own copy of the library.

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

PROBE = r"""
import json, os, sys
import fastload
imported = sorted(m for m in FRAMEWORKS if m in sys.modules)
f = fastload.features()
imported_after = sorted(m for m in FRAMEWORKS if m in sys.modules)
from fastload._kernels import _batch
import importlib.metadata as md
record = [str(p).replace(os.sep, "/") for p in (md.files("fastload") or [])]
maps = []
if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as fh:
        maps = sorted({line.split()[-1] for line in fh if "jpeg" in line.rsplit("/", 1)[-1]})
print(json.dumps({"file": fastload.__file__, "features": f, "imported": imported,
                  "imported_after_features": imported_after, "jpeg_maps": maps,
                  "record": record}))
"""


def check_contents(names: list[str], source: str | None, bundled_jpeg: bool) -> list[str]:
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
    if bundled_jpeg and not any(JPEG_LIB.search(n) for n in names if not n.startswith("fastload/")
                                or ".libs/" in n or ".dylibs/" in n):
        problems.append("no libjpeg-turbo library bundled in the wheel (was it repaired?)")
    return problems


def check_installed(python: str, wheel_names: list[str], bundled_jpeg: bool) -> tuple[list[str], dict]:
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
    if bundled_jpeg:
        if not f.get("libjpeg_turbo_linked"):
            problems.append(f"the repaired wheel decodes through {f.get('jpeg_decoder')!r}, not linked libjpeg-turbo")
        bundled = [n.rsplit("/", 1)[-1] for n in (wheel_names or report["record"]) if JPEG_LIB.search(n)]
        if report["jpeg_maps"] and not any(os.path.basename(m) in bundled for m in report["jpeg_maps"]):
            problems.append(f"the process mapped {report['jpeg_maps']}, not the wheel's own {bundled}")
    return problems, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", nargs="?", help="the .whl file (default: the files installed for --python)")
    ap.add_argument("--python", help="interpreter of an environment the wheel is installed in")
    ap.add_argument("--source", help="the source checkout, to check no module was left out")
    ap.add_argument("--bundled-jpeg", action="store_true", help="require libjpeg-turbo bundled and used")
    args = ap.parse_args(argv)
    if not args.wheel and not args.python:
        ap.error("give a wheel, --python, or both")
    names, report, problems = [], {}, []
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            names = z.namelist()
    if args.python:
        more, report = check_installed(args.python, names, args.bundled_jpeg)
        problems += more
        if not args.wheel:
            names = report.get("record", [])
            if report and not names:
                problems.append("the installed distribution has no file record")
    if names:
        problems = check_contents(names, args.source, args.bundled_jpeg) + problems
    name = os.path.basename(args.wheel) if args.wheel else f"fastload installed for {args.python}"
    for p in problems:
        print(f"check_wheel: {name}: {p}", file=sys.stderr)
    if problems:
        return 1
    compiled = sorted(n for n in names if EXTENSION.search(n))
    print(f"check_wheel: {name}: ok, {len(compiled)} compiled modules"
          + (f"; jpeg: {report['features']['jpeg_decoder']}; simd: {report['features']['simd']}"
             f"; frameworks imported: none" if report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
