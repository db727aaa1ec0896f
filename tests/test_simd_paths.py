"""Every SIMD path of the C kernels (resampling, colour jitter, the write into the
batch slot, PNG unfiltering) against the portable loops, bit for bit, in C (tools/simd_check.sh):
natively here, and NEON under qemu-user where the AArch64 cross-compiler is
installed (CI installs it and runs the script with the Arm part required); the
CPU check against Linux's flags; and the platform layer (tools/port_check.py):
natively, as MSVC's dialect, and as a Windows build run under Wine."""
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "simd_check.sh")


@pytest.mark.skipif(not (os.path.exists(SCRIPT) and os.path.isdir(os.path.join(ROOT, "src_c"))),
                    reason="needs the source tree's tools/ and src_c/ (not beside an installed wheel's tests)")
def test_simd_paths_match_portable_in_c():
    env = dict(os.environ, SIMD_CHECK_ARM="optional")
    r = subprocess.run(["bash", SCRIPT, "300"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    from fastload._kernels import _batch
    for path in _batch.simd_paths():
        if path != "portable":
            assert f"simd_check: {path} = portable on 300 resample + jitter + hue cases" in r.stdout, r.stdout
            assert f"simd_check: {path} = portable on 300 write cases" in r.stdout, r.stdout
    # SSE2 is x86-64's baseline, so the vector path is always built there
    unfilter = "sse2" if platform.machine().lower() in ("x86_64", "amd64") else ""
    assert f"simd_check: PNG unfilter {unfilter}" in r.stdout and " = portable on 300 rows" in r.stdout, r.stdout


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or platform.machine() not in ("x86_64", "i686"),
                    reason="compares with Linux's x86 CPU flags")
def test_cpu_check_agrees_with_the_kernels_flags():
    """The CPUID reading (src_c/cpu.c, the same on every OS and compiler) offers exactly the paths
    Linux reports usable; AVX2 and F16C count only with the OS saving YMM state, as Linux's flags."""
    import numpy as np
    from fastload._kernels import _batch
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    paths = _batch.simd_paths()
    assert ("sse4.1" in paths) == ("sse4_1" in flags) and ("avx2" in paths) == ("avx2" in flags), (paths, flags)
    assert paths[0] == _batch.simd() and paths[-1] == "portable"
    if "avx2" in paths:   # the float16 write converts in vectors only with F16C
        img = np.zeros((16, 16, 3), np.uint8)
        lut = np.zeros((3, 256), np.float16)
        route = _batch.write_path(img, np.empty((3, 16, 16), np.float16), 0, False, False,
                                  np.arange(3, dtype=np.int32), lut, 0)
        assert route == ("avx2" if "f16c" in flags else "portable"), (route, "f16c" in flags)


PORT = os.path.join(ROOT, "tools", "port_check.py")


@pytest.mark.skipif(not (os.path.exists(PORT) and os.path.isdir(os.path.join(ROOT, "src_c"))),
                    reason="needs the source tree's tools/ and src_c/ (not beside an installed wheel's tests)")
def test_platform_layer_natively_as_msvc_and_on_windows():
    """tools/port_check.py: natively always; MSVC's dialect and a Windows build run under Wine where
    clang, mingw-w64 and Wine are installed (CI installs them and runs the script with them required)."""
    from fastload._kernels import _batch
    env = dict(os.environ, PORT_CHECK_WINDOWS="optional")
    r = subprocess.run([sys.executable, PORT, "--cases", "200"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "port_check: native: passed, 0 failure(s)" in r.stdout, r.stdout
    if "left out" not in r.stdout:
        assert "compile as MSVC's dialect" in r.stdout, r.stdout
        assert "port_check: windows (wine): passed, 0 failure(s)" in r.stdout, r.stdout
        for path in ("sse4.1", "avx2"):
            if path in _batch.simd_paths():
                assert f"windows (wine): simd_check: {path} = portable on 200 write cases" in r.stdout, r.stdout
        assert "windows (wine): simd_check: PNG unfilter sse2 = portable on 200 rows" in r.stdout, r.stdout
