"""Typing stub for the compiled pixel kernels (src_c/augment.c)."""
import numpy as np
import numpy.typing as npt

NCHW: int
NHWC: int

def color_jitter(img: npt.NDArray[np.uint8], brightness: float, contrast: float, saturation: float) -> None: ...
def write_sample(
    src: npt.NDArray[np.uint8],
    out: npt.NDArray[np.uint8 | np.float16 | np.float32],
    rot90: int,
    hflip: bool,
    vflip: bool,
    perm: npt.NDArray[np.int32],
    lut: npt.NDArray[np.uint8 | np.float16 | np.float32],
    layout: int,
) -> npt.NDArray[np.uint8 | np.float16 | np.float32]: ...
