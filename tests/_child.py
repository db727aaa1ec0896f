"""Run a script in a child Python that imports the fastload under test (installed or built in place)."""
import os
import subprocess
import sys

import fastload as fl

HOME = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))


def run_python(args, *, env=None, timeout=240, cwd=None):
    """``python ARGS`` from ``cwd`` (a neutral directory by default), this fastload first on the path; stdout."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=cwd or os.path.dirname(HOME) or "/")
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout
