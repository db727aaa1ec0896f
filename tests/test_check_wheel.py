"""checks/check_wheel.py's contents checks, on file lists shaped like real wheels."""
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "checks", "check_wheel.py")
spec = importlib.util.spec_from_file_location("check_wheel", SCRIPT)
check_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_wheel)

TAG = "cpython-311-x86_64-linux-gnu.so"
WHEEL = ["fastload/__init__.py", "fastload/features.py", "fastload/_kernels/__init__.py",
         "fastload/_kernels/_batch.pyi", f"fastload/_kernels/_batch.{TAG}",
         "fastload/_kernels/_decode.pyi", f"fastload/_kernels/_decode.{TAG}",
         "fastload-0.1.0.dist-info/RECORD"]


def test_a_complete_wheel_passes():
    assert check_wheel.check_contents(WHEEL, None, False) == []
    windows = [n.replace(TAG, "cp311-win_amd64.pyd") for n in WHEEL]
    assert check_wheel.check_contents(windows, None, False) == []


def test_a_stub_without_its_compiled_module_is_named():
    names = [n for n in WHEEL if not n.startswith("fastload/_kernels/_decode.cpython")]
    assert check_wheel.check_contents(names, None, False) == [
        "fastload/_kernels/_decode.pyi has no compiled module beside it"]
    pure = [n for n in WHEEL if not n.endswith(".so")]
    assert "no compiled extension module under fastload/" in check_wheel.check_contents(pure, None, False)


def test_a_module_of_the_source_tree_missing_from_the_wheel_is_named(tmp_path):
    for rel in ("fastload/__init__.py", "fastload/features.py", "fastload/sources/text.py",
                "fastload/__pycache__/x.cpython-311.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    problems = check_wheel.check_contents(WHEEL, str(tmp_path), False)
    assert problems == ["fastload/sources/text.py is in the source tree but not in the wheel"]


@pytest.mark.parametrize("lib, ok", [
    ("fastload.libs/libjpeg-1b2c3d4e.so.62.4.0", True),   # auditwheel
    ("fastload/.dylibs/libjpeg.62.dylib", True),          # delocate
    ("fastload.libs/jpeg62-0a1b2c.dll", True),            # delvewheel
    ("fastload.libs/libpng16-1b2c3d4e.so.16.39.0", False),
])
def test_a_repaired_wheel_must_bundle_libjpeg(lib, ok):
    problems = check_wheel.check_contents(WHEEL + [lib], None, True)
    assert problems == ([] if ok else ["no libjpeg-turbo library bundled in the wheel (was it repaired?)"])


@pytest.mark.parametrize("lib, ok", [
    ("fastload.libs/libspng-5e6f7a8b.so.0.7.3", True),    # auditwheel
    ("fastload/.dylibs/libspng.0.dylib", True),           # delocate
    ("fastload.libs/spng-0a1b2c.dll", True),              # delvewheel
    ("fastload.libs/libpng16-1b2c3d4e.so.16.39.0", False),
    ("fastload/libspng.so.0", False),                     # inside the package: not put there by a repair step
])
def test_a_repaired_wheel_must_bundle_libspng(lib, ok):
    problems = check_wheel.check_contents(WHEEL + [lib], None, False, bundled_png=True)
    assert problems == ([] if ok else ["no libspng library bundled in the wheel (was it repaired?)"])
    assert check_wheel.check_contents(WHEEL + [lib], None, False) == []   # not asked for


def test_import_fastload_imports_no_optional_framework():
    """The property check_wheel asserts of an installed wheel, here of whichever fastload the tests import."""
    import json
    import subprocess
    import sys

    import fastload
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))
    code = ("import json, sys, fastload\nfastload.features()\n"
            f"print(json.dumps([m for m in {check_wheel.FRAMEWORKS!r} if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=120,
                       env=dict(os.environ, PYTHONPATH=home))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
