"""Typing stub for the compiled resampling kernel (src_c/resample.c)."""
import numpy as np
import numpy.typing as npt

NEAREST: int
BILINEAR: int
AREA: int

def simd_level() -> int: ...
def force_portable(on: bool) -> None: ...

class Resampler:
    """Per-thread scratch; not to be shared by threads resizing at the same time."""
    def __init__(self) -> None: ...
    def resize(
        self,
        src: npt.NDArray[np.uint8],
        out: npt.NDArray[np.uint8],
        box: tuple[float, float, float, float],
        filter: int,
        antialias: bool,
    ) -> npt.NDArray[np.uint8]: ...
