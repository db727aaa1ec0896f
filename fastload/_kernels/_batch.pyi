"""Chunk runner: a chunk of image samples, file to batch row, in one GIL-free call."""
from typing import Sequence

import numpy as np

OK: int
NOT_JPEG: int
UNSUPPORTED: int
ERR_TOO_LARGE: int
ERR_IO: int
MAX_OPS: int
FL_STATUS: dict[int, str]

def jpeg_version() -> str: ...
def simd_level() -> str: ...
def uniform(seed: int, epoch: int, index: int, slot: int) -> float: ...

class Plan:
    def __init__(self, ops: Sequence[tuple], out_w: int, out_h: int, *, filter: int, antialias: bool,
                 max_denom: int, exif: bool, max_pixels: int, p_hflip: float, p_vflip: float,
                 p_rot90: float, jitter: tuple[float, float, float], dtype: int, layout: int,
                 perm: Sequence[int], lut: np.ndarray) -> None: ...
    def box(self, width: int, height: int, seed: int, epoch: int,
            index: int) -> tuple[tuple[float, float, float, float], tuple[int, int]]: ...

class Worker:
    def run_chunk(self, plan: Plan, items: list[bytes], paths: bool, indices: np.ndarray, seed: int,
                  epoch: int, out: np.ndarray, status: np.ndarray) -> dict[int, str]: ...
    def process_rgb(self, plan: Plan, img: np.ndarray, seed: int, epoch: int, index: int,
                    out_row: np.ndarray) -> str | None: ...
    def read_file(self, path: bytes) -> bytes: ...
