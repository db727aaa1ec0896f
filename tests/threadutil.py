"""Thread helpers for pipeline tests: leaked-thread checks and a hang guard."""
from __future__ import annotations

import os
import signal
import threading
import time
import warnings

__all__ = ["finishes", "in_fork", "new_threads"]


def new_threads(before, timeout=5.0):
    """Threads started since ``before`` that are still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.01)


def finishes(fn, timeout=20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it takes longer than ``timeout``."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:
            result["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout}s: the pipeline hung"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def in_fork(fn, timeout=10.0):
    """What ``fn()`` returned (its repr) or raised ("Type: message") in a child made by ``os.fork()``;
    "hung" when the child took longer than ``timeout`` seconds (it is killed)."""
    r, w = os.pipe()
    with warnings.catch_warnings():   # what a fork is expected to bring: JAX's and Python 3.12's own warnings
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:   # the child: report, then leave without running the parent's exit handlers
        try:
            try:
                out = repr(fn())
            except BaseException as e:
                out = f"{type(e).__name__}: {e}"
            os.write(w, out.encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "hung"
        time.sleep(0.02)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()
