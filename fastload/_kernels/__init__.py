"""The compiled kernels (_batch, _pread, _tarheader, _tokenize), built by setup.py."""
import importlib.util as _util
import os as _os

if _util.find_spec(f"{__name__}._batch") is None:   # a source tree, found before the installed package
    raise ImportError(
        f"fastload's compiled kernels are not built in {_os.path.dirname(_os.path.abspath(__file__))}: this "
        "is fastload's source tree, imported instead of the installed fastload (run from another folder), "
        "or a checkout to build in place: pip install -e . (or python setup.py build_ext --inplace)")
