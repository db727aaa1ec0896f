"""Virtual environments for contenders whose packages conflict with the suite's own.

Each is built on first use under ``<cache>/venvs/<name>`` and reused. It sees the
suite's own site-packages *after* its own (a ``.pth`` line), so torch and NumPy
are shared, never downloaded again, while a package installed in it (pillow-simd
in place of Pillow, say) wins. A build that failed is remembered with its reason
and retried only when asked (``rebuild=True``), so a run never stalls on it twice.
"""
from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig

__all__ = ["ENVS", "EnvUnavailable", "ensure"]


class EnvUnavailable(Exception):
    """The environment cannot be built here; the message says why."""


#: name -> pip requirements, the system libraries its build needs (pkg-config names) and those
#: it loads at run time (as ``ctypes.util.find_library`` names them), and the apt packages that give them
ENVS = {
    "pillow-simd": {"pip": ["pillow-simd"], "pkg_config": [], "libs": [], "apt": ["zlib1g-dev", "libjpeg62-turbo-dev"]},
    "ffcv": {"pip": ["ffcv==1.0.2"], "pkg_config": ["opencv4", "libturbojpeg"], "libs": [],
             "apt": ["libopencv-dev", "libturbojpeg0-dev", "pkg-config"]},
    # SPDL's wheels carry no FFmpeg: they load the system's (versions 4 to 7 and later)
    "spdl": {"pip": ["spdl"], "pkg_config": [],
             "libs": ["avutil", "avcodec", "avformat", "avfilter", "avdevice", "swscale", "swresample"],
             "apt": ["ffmpeg"]},
    "grain": {"pip": ["grain"], "pkg_config": [], "libs": [], "apt": []},
    "dali": {"pip": ["nvidia-dali-cuda120"], "pkg_config": [], "libs": [], "apt": []},
}


def _log_tail(path: str, lines: int = 6) -> str:
    with open(path, errors="replace") as f:
        tail = [line.rstrip() for line in f if line.strip()][-lines:]
    return " | ".join(tail)[-600:]


def ensure(name: str, root: str, *, rebuild: bool = False, log=print) -> str:
    """The Python interpreter of environment ``name``, building it first if needed."""
    spec = ENVS[name]
    env = os.path.join(root, "venvs", name)
    python = os.path.join(env, "bin", "python")
    state_file = os.path.join(env, "fastload-bench.json")
    key = {"pip": spec["pip"], "python": sys.version.split()[0], "base": sys.prefix}
    # looked for on every use: the environment may have been built before they went away
    absent = [lib for lib in spec["libs"] if ctypes.util.find_library(lib) is None]
    if absent:
        raise EnvUnavailable(f"shared libraries missing ({', '.join('lib' + lib for lib in absent)}): "
                             f"apt-get install {' '.join(spec['apt'])}")
    if os.path.exists(state_file) and not rebuild:
        with open(state_file) as f:
            state = json.load(f)
        if state["key"] == key:
            if state["ok"]:
                return python
            raise EnvUnavailable(f"{state['reason']} (remembered from the build of {env}; "
                                 "`fastload bench --rebuild-envs` tries again)")
    missing = [p for p in spec["pkg_config"]
               if shutil.which("pkg-config") is None
               or subprocess.run(["pkg-config", "--exists", p]).returncode != 0]
    if missing:
        raise EnvUnavailable(f"system libraries missing ({', '.join(missing)}): "
                             f"apt-get install {' '.join(spec['apt'])}")
    shutil.rmtree(env, ignore_errors=True)
    log(f"  building the {name} environment in {env} (first use; reused afterwards) ...")
    os.makedirs(env)
    build_log = os.path.join(env, "build.log")
    reason = None
    with open(build_log, "w") as out:
        steps = [[sys.executable, "-m", "venv", env],
                 [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *spec["pip"]]]
        for i, cmd in enumerate(steps):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                reason = f"`{' '.join(os.path.basename(c) if j == 0 else c for j, c in enumerate(cmd))}` failed: "
                break
            if i == 0:   # the suite's packages (torch, NumPy), behind the environment's own
                purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                         capture_output=True, text=True, check=True).stdout.strip()
                with open(os.path.join(purelib, "zz-fastload-bench-base.pth"), "w") as f:
                    f.write(f"import site; site.addsitedir({_base_site()!r})\n")
    if reason:
        reason += _log_tail(build_log)
    with open(state_file, "w") as f:
        json.dump({"key": key, "ok": reason is None, "reason": reason}, f)
    if reason:
        raise EnvUnavailable(reason)
    return python


def _base_site() -> str:
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    return paths[0] if paths else sysconfig.get_paths()["purelib"]
