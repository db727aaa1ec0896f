"""Normalisation: the last step, fused with dtype conversion into a lookup table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Normalize"]


@dataclass(frozen=True)
class Normalize:
    """out[c] = (pixel / max_value - mean[c]) / std[c], channels in ``order``.

    torchvision style: ``Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])``
    (pixels scaled to [0, 1] first). Caffe style, as in the classic
    generator-pipeline tutorial: ``Normalize([103.939, 116.779, 123.68],
    max_value=1.0, order="BGR")`` subtracts a BGR mean from raw 0..255 pixels.
    """
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    max_value: float = 255.0
    order: str = "RGB"

    def __post_init__(self):
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("Normalize needs 3 means and 3 stds")
        if any(s == 0 for s in self.std):
            raise ValueError("Normalize std must be non-zero")
        if self.order not in ("RGB", "BGR"):
            raise ValueError(f"order must be 'RGB' or 'BGR', got {self.order!r}")
        if self.max_value <= 0:
            raise ValueError("max_value must be positive")
