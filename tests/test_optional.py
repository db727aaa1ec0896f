"""Optional packages missing: each integration fails at the call that needs it, naming what to
install (an ImportError from deep inside said nothing of that), and a user kernel made without
Numba warns rather than run hundreds of times slower unseen. Run in a child whose imports of those
packages fail, as on a machine without them."""
import os

import pytest
from _child import run_python

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r'''
import importlib.util, sys, warnings
MISSING = ("fsspec", "torch", "jax", "keras", "tensorflow", "datasets", "aiohttp", "numba")
for m in MISSING:
    sys.modules[m] = None   # import fails, as when not installed
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in MISSING else _find(name, *a)
import fastload as fl
from fastload.ops.numba_ops import NumbaOp
src = fl.ListSource([{"x": [1.0]}] * 4)
L = fl.Loader(src, batch_size=2, fields={"x": fl.Numeric(1)})
calls = {
    "output=torch": lambda: fl.Loader(src, batch_size=2, output="torch", fields={"x": fl.Numeric(1)}),
    "output=jax": lambda: fl.Loader(src, batch_size=2, output="jax", fields={"x": fl.Numeric(1)}),
    "device": lambda: fl.Loader(src, batch_size=2, device="cuda", fields={"x": fl.Numeric(1)}),
    "keras": L.keras, "tf": L.tf_dataset, "hf": lambda: fl.HFDataset([1]),
    "tar": lambda: len(fl.TarShards("s3://b/t-{0000..0003}.tar")),
    "folder": lambda: fl.ImageFolder("http://127.0.0.1:9/train/"),
    "json": lambda: fl.JSONRecords("s3://b/x.jsonl"),
}
for name, call in calls.items():
    try:
        call()
        print(name, "| no error")
    except Exception as e:
        print(name, "|", type(e).__name__, "|", e)
def kernel(x, rng):
    x += 1
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    NumbaOp(kernel)
print("numba |", "; ".join(str(x.message) for x in w))
'''


def said_by(out: str) -> dict:
    return {name: rest.strip() for name, _, rest in (line.partition(" |") for line in out.strip().splitlines())}


def test_missing_optional_packages_are_named_at_the_call():
    out = run_python(["-c", CHILD], env={"FASTLOAD_DISABLE_JIT": ""})
    said = said_by(out)
    # the extras, not "pip install torch", which brings several GB of CUDA libraries on Linux
    expect = {"output=torch": ("torch", "pip install fastload[torch]"), "output=jax": ("jax", "pip install fastload[jax]"),
              "keras": ("keras", "pip install fastload[keras]"), "tf": ("tensorflow", "pip install fastload[tf]"),
              "hf": ("datasets", "pip install fastload[hf]"), "tar": ("fsspec", "pip install fastload[remote]"),
              "folder": ("fsspec", "pip install fastload[remote]"), "json": ("fsspec", "pip install fastload[remote]")}
    for name, (package, install) in expect.items():
        kind, _, message = said[name].partition(" | ")
        assert kind == "ImportError" and f"needs {package}," in message and install in message, (name, said[name])
    kind, _, message = said["device"].partition(" | ")
    assert kind == "RuntimeError" and "needs torch, which cannot be imported" in message and \
        "pip install fastload[torch]" in message, said["device"]
    assert "Numba is not installed, so the kernel 'kernel' runs as plain Python" in said["numba"], said["numba"]
    assert "pip install numba" in said["numba"]
    # asked for (FASTLOAD_DISABLE_JIT=1): plain Python without a word
    quiet = run_python(["-c", CHILD], env={"FASTLOAD_DISABLE_JIT": "1"})
    assert said_by(quiet)["numba"] == "", quiet


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(HERE), "fastload")), reason="needs the checkout")
def test_the_test_extra_holds_the_reference_writer_the_core_tests_use():
    """pip install ".[test]" then pytest failed at collection without webdataset (the reference shard
    writer of the tar tests): the extra names it."""
    import re
    with open(os.path.join(os.path.dirname(HERE), "pyproject.toml")) as f:
        text = f.read()
    test_extra = re.search(r"^test = \[(.*)\]", text, re.M).group(1)
    assert "webdataset" in test_extra


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(HERE), "fastload")), reason="needs the checkout")
def test_importing_an_unbuilt_source_tree_says_so(tmp_path):
    # "cannot import name '_batch' from 'fastload._kernels'" said nothing of why: a checkout's own
    # folder, first on sys.path, was imported instead of the installed package.
    import shutil
    import subprocess
    import sys
    shutil.copytree(os.path.join(os.path.dirname(HERE), "fastload"), tmp_path / "fastload",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    run = subprocess.run([sys.executable, "-c", "import fastload"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastload's compiled kernels are not built in ") and \
        "pip install -e ." in last, run.stderr


def test_public_classes_document_the_options_they_take():
    # fl.Labels showed the base class's one line; Resize's max_size and the Loader's collate and
    # as_tuple were documented nowhere.
    import inspect

    import fastload as fl
    for cls, words in ((fl.Labels, ("num_classes", "onehot", "index")), (fl.Resize, ("max_size", "antialias")),
                       (fl.Loader, ("collate", "as_tuple", "max_memory", "pin_memory", "on_error")),
                       (fl.RandomHorizontalFlip, ("probability",)), (fl.RandomVerticalFlip, ("probability",))):
        doc = inspect.getdoc(cls) or ""
        assert cls.__doc__ and all(w in doc for w in words), (cls.__name__, [w for w in words if w not in doc])
