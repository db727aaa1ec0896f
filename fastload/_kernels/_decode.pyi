from typing import Any

import numpy as np
from numpy.typing import NDArray

HAVE_LIBJPEG_TURBO: bool

def version() -> str: ...

class Unsupported(Exception):
    """This decoder does not take the image; decode it another way (Pillow)."""

class JpegDecoder:
    """A reusable libjpeg-turbo decoder. Not thread-safe: give each thread its own."""

    def __init__(self) -> None: ...
    def info(self, data: Any, name: str = "<bytes>") -> dict[str, Any] | None: ...
    def decoded_shape(
        self,
        data: Any,
        region: tuple[int, int, int, int] | None = None,
        min_size: tuple[int, int] = (0, 0),
        max_denom: int = 1,
        exif: bool = True,
        max_pixels: int = 0,
        name: str = "<bytes>",
    ) -> tuple[tuple[int, int, int], dict[str, int]]: ...
    def decode(
        self,
        data: Any,
        region: tuple[int, int, int, int] | None = None,
        min_size: tuple[int, int] = (0, 0),
        max_denom: int = 1,
        exif: bool = True,
        max_pixels: int = 0,
        out: NDArray[np.uint8] | None = None,
        name: str = "<bytes>",
    ) -> tuple[NDArray[np.uint8], dict[str, int]]: ...
