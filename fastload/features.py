"""What this build of fastload was compiled with, and which paths it takes at run time."""
from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["features", "jpeg_path", "png_path"]


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
    return (f"{pil}'s {lib}, DCT-scaled by draft() (fastload was built without libjpeg-turbo; for the "
            f"linked route install its headers, e.g. apt install libjpeg62-turbo-dev or brew install "
            f"jpeg-turbo, then pip install --force-reinstall --no-binary fastload fastload)")


def png_path() -> str:
    """A one-line description of how PNGs are decoded."""
    from ._kernels import _batch
    version = _batch.png_version()
    if version != "none":
        return f"{version} (linked; GIL-free, stops after the crop's last row)"
    import PIL
    from PIL import features as pil_features
    pil = "pillow-simd" if _is_pillow_simd(PIL.__version__) else "Pillow"
    ng = "zlib_ng" in pil_features.features and pil_features.version_feature("zlib_ng")
    lib = f"zlib-ng {ng}" if ng else f"zlib {pil_features.version('zlib')}"
    return (f"{pil}'s {lib} (fastload was built without libspng; for the linked "
            f"route install its headers, e.g. apt install libspng-dev or brew install libspng, then pip "
            f"install --force-reinstall --no-binary fastload fastload)")


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
    """Decoder path and version, SIMD path, Pillow flavour, optional integrations present."""
    import PIL

    from . import __version__
    from ._kernels import _batch
    jpeg = _batch.jpeg_version()
    return {
        "fastload": __version__,
        "jpeg_decoder": jpeg_path(),
        "libjpeg_turbo_linked": jpeg != "none",
        "png_decoder": png_path(),
        "libspng_linked": _batch.HAVE_SPNG,
        "simd": _batch.simd(),               # the path the kernels run
        "simd_paths": _batch.simd_paths(),   # every path this CPU can run (tests force each)
        "simd_kernels": _batch.simd_kernels(),   # the kernels with a vector path on "simd"
        "pillow": PIL.__version__,
        "pillow_simd": _is_pillow_simd(PIL.__version__),
        "numba": importlib.util.find_spec("numba") is not None,
        "torch": importlib.util.find_spec("torch") is not None,
        "cuda": _cuda_device(),              # a GPU for device="cuda" and pinned slots
    }


def _cuda_device() -> bool:
    """torch's answer when torch is imported already; else whether an NVIDIA driver is loaded
    (features() imports no framework)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    return os.path.exists("/proc/driver/nvidia/version")
