"""The compiled sample path: chunk runner, its kernels, the JPEG decoder and the SIMD dispatch."""
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

OK: int
NOT_JPEG: int
UNSUPPORTED: int
ERR_TOO_LARGE: int
ERR_IO: int
MAX_OPS: int
FL_STATUS: dict[int, str]
NEAREST: int
BILINEAR: int
AREA: int
NCHW: int
NHWC: int
HAVE_LIBJPEG_TURBO: bool

def jpeg_version() -> str: ...
def jpeg_scan(data: Any) -> tuple[int, int, int, int] | None: ...
def uniform(seed: int, epoch: int, index: int, slot: int) -> float: ...
def simd() -> str: ...
def simd_paths() -> list[str]: ...
def set_simd(name: str) -> None: ...

class Plan:
    def __init__(self, ops: Sequence[tuple], out_w: int, out_h: int, *, filter: int, antialias: bool,
                 max_denom: int, reducing_gap: float, exif: bool, max_pixels: int, p_hflip: float,
                 p_vflip: float, p_rot90: float, jitter: tuple[float, float, float], dtype: int,
                 layout: int, perm: Sequence[int], lut: np.ndarray) -> None: ...
    @property
    def max_denom(self) -> int: ...
    def box(self, width: int, height: int, seed: int, epoch: int,
            index: int) -> tuple[tuple[float, float, float, float], tuple[int, int]]: ...

class Worker:
    def run_chunk(self, plan: Plan, items: list[bytes], paths: bool, indices: np.ndarray, seed: int,
                  epoch: int, out: np.ndarray, status: np.ndarray) -> dict[int, str]: ...
    def process_rgb(self, plan: Plan, img: np.ndarray, seed: int, epoch: int, index: int,
                    out_row: np.ndarray, full_size: tuple[int, int] | None = None) -> str | None: ...
    def read_file(self, path: bytes) -> bytes: ...

class Resampler:
    """Per-thread scratch; not to be shared by threads resizing at the same time."""
    def __init__(self) -> None: ...
    def resize(self, src: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8],
               box: tuple[float, float, float, float], filter: int, antialias: bool) -> npt.NDArray[np.uint8]: ...

def color_jitter(img: npt.NDArray[np.uint8], brightness: float, contrast: float, saturation: float) -> None: ...
def write_sample(src: npt.NDArray[np.uint8], out: np.ndarray, rot90: int, hflip: bool, vflip: bool,
                 perm: npt.NDArray[np.int32], lut: np.ndarray, layout: int) -> np.ndarray: ...

class Unsupported(Exception):
    """This decoder does not take the image; decode it another way (Pillow)."""

class JpegDecoder:
    """A reusable libjpeg-turbo decoder. Not thread-safe: give each thread its own."""
    def __init__(self) -> None: ...
    def info(self, data: Any, name: str = "<bytes>") -> dict[str, Any] | None: ...
    def decoded_shape(self, data: Any, region: tuple[int, int, int, int] | None = None,
                      min_size: tuple[int, int] = (0, 0), max_denom: int = 1, exif: bool = True,
                      max_pixels: int = 0, name: str = "<bytes>") -> tuple[tuple[int, int, int], dict[str, int]]: ...
    def decode(self, data: Any, region: tuple[int, int, int, int] | None = None,
               min_size: tuple[int, int] = (0, 0), max_denom: int = 1, exif: bool = True, max_pixels: int = 0,
               out: npt.NDArray[np.uint8] | None = None, name: str = "<bytes>") -> tuple[npt.NDArray[np.uint8], dict[str, int]]: ...
