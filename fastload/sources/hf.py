"""Hugging Face ``datasets`` as fastload sources, and the image values they carry.

``HFDataset(ds)`` is a random-access :class:`~fastload.Source` over a
``datasets.Dataset``: record ``i`` is the dict of row ``i``. Image columns
(the ``datasets.Image`` feature) are read undecoded, as the Hub stores them
(``{"bytes": ..., "path": ...}``), and handed to the image field as encoded
bytes or a path, so fastload's own decoder (region- and DCT-scaled for JPEG)
does the work on its worker threads instead of Pillow in ``datasets``.
A ``datasets.IterableDataset`` becomes a re-iterable stream of the same records.

:func:`to_image_value` is the one place that turns what users put in an image
column into what the image field reads: a path, encoded bytes, or an HWC
uint8 RGB array of pixels already decoded.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import RecordError
from .arrays import IterableRecords
from .base import Source

__all__ = ["HFDataset", "to_image_value"]


def to_image_value(v):
    """A path (str), encoded bytes, an (H, W, 3) uint8 C-contiguous array, or None for a missing image.

    Accepts paths, bytes-like objects, the Hub's ``{"bytes", "path"}`` dicts,
    PIL images, binary file-like objects and NumPy arrays (HW grey, HWC with 1,
    3 or 4 channels, uint8). Raises TypeError or ValueError naming what was wrong.
    """
    if v is None or isinstance(v, (str, bytes)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, dict):
        if not {"bytes", "path"} & v.keys():
            raise TypeError(f"an image dict needs 'bytes' or 'path', got keys {sorted(v)}")
        data, path = v.get("bytes"), v.get("path")
        return bytes(data) if data is not None else (to_image_value(path) if path is not None else None)
    if isinstance(v, np.ndarray):
        return _rgb_array(v)
    if hasattr(v, "getvalue"):   # io.BytesIO: the whole buffer, wherever its position is
        return v.getvalue()
    if hasattr(v, "read"):
        if hasattr(v, "seekable") and v.seekable():
            v.seek(0)
        data = v.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"an image file object must be opened in binary mode, read gave {type(data).__name__}")
        return bytes(data)
    if _is_pil_image(v):
        return _rgb_array(np.asarray(v.convert("RGB") if v.mode not in ("RGB", "L", "RGBA") else v))
    raise TypeError(f"expected an image path, bytes, a {{'bytes', 'path'}} dict, a PIL image, a file object "
                    f"or an HWC uint8 array, got {type(v).__name__}")


def _is_pil_image(v) -> bool:
    try:
        from PIL import Image
    except ImportError:   # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(v, Image.Image)


def _rgb_array(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or 0 in a.shape:
        raise ValueError(f"an image array must be (H, W), or (H, W, C) with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]   # alpha dropped, as a JPEG decoder would see the colour
    return np.ascontiguousarray(a)


class HFDataset(Source):
    """A ``datasets.Dataset`` as a Source of dict records; ``columns=`` keeps only those named.

    ``classes`` holds the names of the ``ClassLabel`` column (when there is
    exactly one), so ``"onehot"`` labels know their width. Use it with
    ``fields=``::

        ds = datasets.load_dataset("beans", split="train")
        loader = fl.Loader(fl.HFDataset(ds), batch_size=64, as_tuple=True,
                           fields={"image": [fl.RandomResizedCrop(224), fl.Normalize(...)], "labels": "index"})

    A ``datasets.IterableDataset`` gives a stream instead (:meth:`stream`).
    """

    def __new__(cls, dataset, columns=None):
        import datasets
        if isinstance(dataset, datasets.IterableDataset):
            return cls.stream(dataset, columns)
        return super().__new__(cls)

    def __init__(self, dataset, columns=None):
        import datasets
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"HFDataset needs a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
        dataset, self._images = _prepare(dataset, columns)
        self.dataset = dataset
        self.fields = tuple(dataset.column_names)
        self.classes = _class_names(dataset.features)
        self._name = getattr(dataset.info, "dataset_name", None) or "HFDataset"

    @staticmethod
    def stream(dataset, columns=None) -> IterableRecords:
        """A ``datasets.IterableDataset`` as a re-iterable stream of dict records (image columns as above)."""
        dataset, images = _prepare(dataset, columns)
        return IterableRecords(lambda: (_convert(r, images, f"row {i}") for i, r in enumerate(dataset)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        index = self._check_index(index)
        return _convert(self.dataset[index], self._images, self.record_id(index))

    def gather(self, indices: np.ndarray) -> list:
        # One columnar read (Arrow) for the chunk, then rows.
        cols = self.dataset[indices.tolist()]
        names = list(cols)
        return [_convert(dict(zip(names, row)), self._images, self.record_id(i))
                for i, row in zip(indices.tolist(), zip(*(cols[n] for n in names)))]

    def record_id(self, index: int) -> str:
        return f"{self._name}[{index}]"

    def __repr__(self):
        return f"HFDataset({self._name!r}, {len(self)} rows, columns {list(self.fields)})"


def _prepare(dataset, columns):
    """The dataset with only ``columns``, image columns read undecoded; and the names of those columns."""
    import datasets
    if columns is not None:
        missing = sorted(set(columns) - set(dataset.column_names or ()))
        if missing:
            raise KeyError(f"no column {missing[0]!r}; the dataset has {dataset.column_names}")
        dataset = dataset.select_columns(list(columns))
    features = dataset.features or {}
    images = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    for name in images:
        if features[name].decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset, frozenset(images)


def _convert(record: dict, images, record_id: str) -> dict:
    for name in images:
        try:
            record[name] = to_image_value(record[name])
        except (TypeError, ValueError) as e:   # the record fails, under the loader's error policy
            raise RecordError(record_id, f"column {name!r}: {e}") from None
    return record


def _class_names(features):
    import datasets
    labels = [f for f in (features or {}).values() if isinstance(f, datasets.ClassLabel)]
    return list(labels[0].names) if len(labels) == 1 else None
