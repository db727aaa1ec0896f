import importlib.util
import os

import pytest

# Without Numba, user kernels run as plain Python, which fastload warns about unless asked for; the
# suite asks (tests/test_optional.py checks the warning in a child of its own).
if importlib.util.find_spec("numba") is None:
    os.environ.setdefault("FASTLOAD_DISABLE_JIT", "1")

from fastload.synthetic import make_image_folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """3 classes x 8 photo-like JPEGs of assorted sizes (about 90x110)."""
    root = tmp_path_factory.mktemp("folder")
    return make_image_folder(os.path.join(root, "train"), classes=3, per_class=8, size=(90, 110),
                             jitter=0.3, seed=3)
