"""Every SIMD path of the C kernels (resampling, colour jitter, the write into the
batch slot) against the portable loops, bit for bit, in C (tools/simd_check.sh):
natively here, and NEON under qemu-user where the AArch64 cross-compiler is
installed (CI installs it and runs the script with the Arm part required)."""
import os
import subprocess

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
            assert f"simd_check: {path} = portable on 300 resample + jitter cases" in r.stdout, r.stdout
            assert f"simd_check: {path} = portable on 300 write cases" in r.stdout, r.stdout
