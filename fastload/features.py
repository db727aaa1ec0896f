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
    import PIL
    from PIL import features as pil_features
    turbo = pil_features.version_feature("libjpeg_turbo")
    lib = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {pil_features.version('jpg')}"
    pil = "pillow-simd" if _is_pillow_simd(PIL.__version__) else "Pillow"
    return f"{pil}'s {lib} (fastload was built without libjpeg-turbo)"


def _is_pillow_simd(pil_version: str) -> bool:
    """Whether the imported PIL is pillow-simd's: its distribution is installed and PIL carries its version.

    pillow-simd installs the same ``PIL`` package as Pillow under its own
    distribution name, with versions such as ``12.1.1.post0``; comparing the
    versions tells which of the two a mixed environment imports.
    """
    from importlib import metadata
    try:
        return metadata.version("pillow-simd") == pil_version
    except metadata.PackageNotFoundError:
        return False


def features() -> dict:
    """Decoder path and version, SIMD level, Pillow flavour, optional integrations present."""
    import PIL

    from . import __version__
    from ._kernels import _batch
    jpeg = _batch.jpeg_version()
    return {
        "fastload": __version__,
        "jpeg_decoder": jpeg_path(),
        "libjpeg_turbo_linked": jpeg != "none",
        "simd": _batch.simd_level(),
        "pillow": PIL.__version__,
        "pillow_simd": _is_pillow_simd(PIL.__version__),
        "numba": importlib.util.find_spec("numba") is not None,
        "torch": importlib.util.find_spec("torch") is not None,
    }
