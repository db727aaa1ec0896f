"""What this build of fastload was compiled with, and which paths it takes at run time."""
from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["features", "how_to_link", "jpeg_path", "png_path"]


def jpeg_path() -> str:
    """A one-line description of how JPEGs are decoded."""
    from ._kernels import _batch
    version = _batch.jpeg_version()
    if version != "none":
        return f"{version} (linked; GIL-free, region + DCT-scaled decode)"
    import PIL
    from PIL import features as pil_features

    from .image.field import jpeg_route
    turbo = pil_features.version_feature("libjpeg_turbo")
    lib = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {pil_features.version('jpg')}"
    pil = "pillow-simd" if _is_pillow_simd(PIL.__version__) else "Pillow"
    how = "leading rows into reused buffers from the compiled loop" if jpeg_route() == "pillow" else \
        "one Python call per image (Pillow < 11.2)"
    why = "without libjpeg-turbo: left out by FASTLOAD_NO_LIBJPEG, or its headers installed since" \
        if _jpeg_headers() else "without libjpeg-turbo's headers"
    return f"{pil} {PIL.__version__}'s {lib}, DCT-scaled by draft(), {how}; no region decode (fastload was built {why})"


# A rebuild from fastload's own source: "pip install --no-binary fastload fastload" would fetch another
# project of that name from PyPI.
_REINSTALL = "pip install --force-reinstall --no-deps <fastload's source folder: a checkout or an unpacked sdist>"


def how_to_link() -> str | None:
    """One line saying how to get the linked libjpeg-turbo route on this system (None when it is
    compiled in): the headers to install, then a rebuild of fastload, which finds them through
    FASTLOAD_JPEG_PREFIX, pkg-config, the environment's prefix or /usr/local, /usr, /opt/libjpeg-turbo."""
    from ._kernels import _batch
    if _batch.jpeg_version() != "none":
        return None
    found = _jpeg_headers()
    if found:
        return (f"for the faster linked JPEG route (libjpeg-turbo's headers are in {found}), rebuild fastload "
                f"without FASTLOAD_NO_LIBJPEG set: {_REINSTALL}")
    prefix = ""
    if os.environ.get("CONDA_PREFIX") or os.path.isdir(os.path.join(sys.prefix, "conda-meta")):
        step = "conda install -c conda-forge libjpeg-turbo"
    elif sys.platform == "darwin":
        step = "brew install jpeg-turbo"
        prefix = 'FASTLOAD_JPEG_PREFIX="$(brew --prefix jpeg-turbo)" '
    elif sys.platform == "win32":
        step = "vcpkg install libjpeg-turbo"
        prefix = "set FASTLOAD_JPEG_PREFIX=<vcpkg>\\installed\\x64-windows, then "
    else:
        step = _linux_package_step()
    return f"for the faster linked JPEG route: {step}, then {prefix}{_REINSTALL}"


def _linux_package_step() -> str:
    import shutil
    distro = ""
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        distro = " ".join((fields.get("ID", ""), fields.get("ID_LIKE", ""))).replace('"', "").lower()
    except OSError:
        pass
    if shutil.which("apt-get"):
        package = "libjpeg-turbo8-dev" if "ubuntu" in distro else "libjpeg62-turbo-dev"
        return f"sudo apt-get install {package}"
    if shutil.which("dnf") or shutil.which("yum"):
        return f"sudo {'dnf' if shutil.which('dnf') else 'yum'} install libjpeg-turbo-devel"
    if shutil.which("apk"):
        return "apk add libjpeg-turbo-dev"
    if shutil.which("pacman"):
        return "sudo pacman -S libjpeg-turbo"
    if shutil.which("zypper"):
        return "sudo zypper install libjpeg8-devel"
    return "install libjpeg-turbo's headers (or set FASTLOAD_JPEG_PREFIX to a libjpeg-turbo install)"


def _jpeg_headers() -> str | None:
    """A folder holding libjpeg-turbo's jpeglib.h among those the build looks in, or None."""
    import sysconfig
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    prefixes = [os.environ.get("FASTLOAD_JPEG_PREFIX"), sys.prefix, "/usr/local", "/usr", "/opt/libjpeg-turbo"]
    for prefix in filter(None, prefixes):
        inc = os.path.join(prefix, "include")
        if not os.path.exists(os.path.join(inc, "jpeglib.h")):
            continue
        for folder in (inc, os.path.join(inc, multiarch)):   # jconfig.h may sit in a multiarch folder
            try:
                with open(os.path.join(folder, "jconfig.h")) as f:
                    if "LIBJPEG_TURBO_VERSION" in f.read():
                        return inc
            except OSError:
                pass
    return None


def png_path() -> str:
    """A one-line description of how PNGs are decoded."""
    from ._kernels import _batch
    version = _batch.png_version()
    if version != "none":
        if "libdeflate" in version:
            return f"{version} (linked; GIL-free, image data inflated in one call)"
        return (f"{version} (linked; GIL-free, stops after the crop's last row; built with libdeflate's headers, "
                f"e.g. apt install libdeflate-dev, it would inflate about twice as fast)")
    import PIL
    from PIL import features as pil_features
    pil = "pillow-simd" if _is_pillow_simd(PIL.__version__) else "Pillow"
    ng = "zlib_ng" in pil_features.features and pil_features.version_feature("zlib_ng")
    lib = f"zlib-ng {ng}" if ng else f"zlib {pil_features.version('zlib')}"
    found = _headers("spng.h", "FASTLOAD_PNG_PREFIX")
    step = (f"libspng's headers are in {found}: rebuild without FASTLOAD_NO_SPNG set" if found else
            "install its headers, e.g. apt install libspng-dev or brew install libspng, then rebuild")
    return f"{pil}'s {lib} (fastload was built without libspng; for the linked route {step}: {_REINSTALL})"


def _headers(name: str, prefix_variable: str) -> str | None:
    """The include folder holding ``name`` among those the build looks in, or None."""
    for prefix in filter(None, (os.environ.get(prefix_variable), sys.prefix, "/usr/local", "/usr", "/opt/homebrew")):
        if os.path.exists(os.path.join(prefix, "include", name)):
            return os.path.join(prefix, "include")
    return None


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
        "jpeg_how_to_link": how_to_link(),  # one line; None when linked
        "png_decoder": png_path(),
        "libspng_linked": _batch.HAVE_SPNG,
        "libdeflate_linked": _batch.HAVE_LIBDEFLATE,   # inflates the linked PNG route's image data
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
