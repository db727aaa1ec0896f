"""The optional packages fastload's integrations use, imported when used: a missing one is an
ImportError at the call that needs it, saying what to install, not one from deep inside."""
from __future__ import annotations

import importlib
import importlib.util


def need(module: str, what: str, install: str | None = None):
    """``module`` imported, for ``what`` (the call that needs it); ImportError naming ``install``
    (default: the module's package) when it cannot be imported."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs {top}, which cannot be imported ({e}): "
                          f"pip install {install or top}") from e


def check(module: str, what: str, install: str | None = None) -> None:
    """As :func:`need`, without importing ``module`` when it is installed (a check at construction,
    the import left to first use)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        need(module, what, install)
