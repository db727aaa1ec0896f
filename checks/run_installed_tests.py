"""Run the whole test suite against the installed fastload, from outside the source tree.

Copies ``tests/`` (with ``tools/``, ``checks/``, ``examples/``, ``README.md``
and ``pyproject.toml``, which tests and pytest's settings use) into a temporary directory, checks that
``import fastload`` there finds the installed package and not the checkout,
runs pytest there with any extra arguments, and removes the copy. A module
missing from the wheel fails the tests that import it.

Usage: ``python checks/run_installed_tests.py [PROJECT] [-- PYTEST ARGS]``
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

COPIED = ("tests", "tools", "checks", "examples", "README.md", "pyproject.toml")


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    project = os.path.abspath(argv[0] if argv else os.path.join(os.path.dirname(__file__), os.pardir))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    with tempfile.TemporaryDirectory(prefix="fastload-installed-tests-") as work:
        ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis", "*.so", "*.pyd")
        for name in COPIED:
            src = os.path.join(project, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(work, name), ignore=ignore)
            elif os.path.exists(src):
                shutil.copy2(src, work)
        where = subprocess.run([sys.executable, "-c", "import fastload; print(fastload.__file__)"], cwd=work,
                               env=env, capture_output=True, text=True)
        if where.returncode:
            print(f"run_installed_tests: fastload is not installed for {sys.executable}:\n{where.stderr}",
                  file=sys.stderr)
            return 2
        location = os.path.realpath(where.stdout.strip())
        if location.startswith(os.path.realpath(project) + os.sep):
            print(f"run_installed_tests: fastload comes from the checkout ({location}), not an installation",
                  file=sys.stderr)
            return 2
        print(f"run_installed_tests: testing {location} from {work}", flush=True)
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                              cwd=work, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
