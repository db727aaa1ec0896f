"""Thread helpers for pipeline tests: leaked-thread checks and a hang guard."""
from __future__ import annotations

import threading
import time

__all__ = ["finishes", "new_threads"]


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
