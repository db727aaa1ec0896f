"""What this build of fastload was compiled with, and which paths it takes at run time."""
from __future__ import annotations

import importlib.util

__all__ = ["features", "jpeg_path"]


def jpeg_path() -> str:
    """A one-line description of how JPEGs are decoded."""
    from ._kernels import _batch
    version = _batch.jpeg_version()
    if version != "none":
        return f"{version} (linked; GIL-free, region + DCT-scaled decode)"
    from PIL import features as pil_features
    turbo = pil_features.version_feature("libjpeg_turbo")
    lib = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {pil_features.version('jpg')}"
    return (f"Pillow's {lib}, DCT-scaled by draft() (fastload was built without libjpeg-turbo; for the "
            f"linked route install its headers, e.g. apt install libjpeg62-turbo-dev or brew install "
            f"jpeg-turbo, then pip install --force-reinstall --no-binary fastload fastload)")


def features() -> dict:
    """Decoder path and version, SIMD path, Pillow flavour, optional integrations present."""
    import PIL

    from . import __version__
    from ._kernels import _batch
    jpeg = _batch.jpeg_version()
    return {
        "fastload": __version__,
        "jpeg_decoder": jpeg_path(),
        "libjpeg_turbo_linked": jpeg != "none",
        "simd": _batch.simd(),               # the path the kernels run
        "simd_paths": _batch.simd_paths(),   # every path this CPU can run (tests force each)
        "pillow": PIL.__version__,
        "pillow_simd": ".post" in PIL.__version__,   # pillow-simd versions read like 9.0.0.post1
        "numba": importlib.util.find_spec("numba") is not None,
        "torch": importlib.util.find_spec("torch") is not None,
    }
