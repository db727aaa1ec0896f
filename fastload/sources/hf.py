"""Hugging Face ``datasets`` as fastload sources, and the image values they carry.

``HFDataset(ds)`` is a random-access :class:`~fastload.Source` over a
``datasets.Dataset``: record ``i`` is the dict of row ``i``. Image columns
(the ``datasets.Image`` feature) are read undecoded, as the Hub stores them
(``{"bytes": ..., "path": ...}``), and handed to the image field as encoded
bytes or a path, so fastload's own decoder (region- and DCT-scaled for JPEG)
does the work on its worker threads instead of Pillow in ``datasets``.
A ``datasets.IterableDataset`` becomes a re-iterable stream of the same records.

Image values of any form users put in a column (paths, bytes, Hub dicts, PIL
images, file objects, arrays) are turned into what the image field reads by
:func:`fastload.image.values.to_image_value`.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial

import numpy as np

from ..errors import RecordError
from ..image.values import to_image_value
from .arrays import IterableRecords
from .._optional import need
from .base import Source

__all__ = ["HFDataset", "to_image_value"]

_REFORMAT = ("arrow", "pandas", "polars", "torch", "tensorflow", "jax")


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
        datasets = need("datasets", "HFDataset", "fastload[hf]")
        if isinstance(dataset, datasets.IterableDataset):
            return cls.stream(dataset, columns)
        return super().__new__(cls)

    def __init__(self, dataset, columns=None):
        import datasets
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"HFDataset needs a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
        dataset, self._images = _prepare(dataset, columns)
        self.dataset = dataset
        # a transform (set_transform, with_transform) makes its own columns: its first row says which
        self.fields = tuple(dataset[0]) if _format_type(dataset) == "custom" and len(dataset) else \
            tuple(dataset.column_names)
        self.classes = _class_names(dataset.features)
        self._name = getattr(dataset.info, "dataset_name", None) or "HFDataset"

    @staticmethod
    def stream(dataset, columns=None) -> IterableRecords:
        """A ``datasets.IterableDataset`` as a re-iterable stream of dict records (image columns as
        above). The epoch a Loader gives the stream reaches the dataset (``set_epoch``), so a
        shuffled one (``ds.shuffle(seed=...)``) draws each epoch's order from its seed and the
        epoch, as it does under Hugging Face's own loop."""
        dataset, images = _prepare(dataset, columns)
        return _Stream(dataset, images)

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


class _Stream(IterableRecords):
    def __init__(self, dataset, images):
        super().__init__(partial(_rows, dataset, images))
        self.dataset = dataset
        self.classes = _class_names(dataset.features)   # as HFDataset's
        node = getattr(dataset, "_distributed", None)   # datasets.distributed.split_dataset_by_node's
        # A Loader under torch.distributed shards the stream by rank itself: once more would drop the rest.
        self.split_by_node = None if node is None else \
            f"split_dataset_by_node(rank={node.rank}, world_size={node.world_size})"

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def lineage(self) -> str:
        """As :meth:`~fastload.pipeline.fluent.Stream.lineage`: the dataset's random draws (its shuffles,
        each by its buffer size) by a digest of the generator the seed made (it keeps no seed): under
        torch.distributed the ranks compare it, as a shuffle seeded per rank reorders each rank's
        share of the stream."""
        shuffles, ex = [], getattr(self.dataset, "_ex_iterable", None)
        while ex is not None:   # the dataset's chain of example iterables, outermost first
            generator = getattr(ex, "generator", None)
            if isinstance(generator, np.random.Generator):
                state = json.dumps(generator.bit_generator.state, sort_keys=True, default=str).encode()
                size = getattr(ex, "buffer_size", None)   # a shuffle buffer's; else the draw is the iterable's own
                what = "shuffle" if size is not None else type(ex).__name__
                shuffles.append(f"{what}({'' if size is None else f'buffer_size={size}, '}"
                                f"generator {hashlib.blake2b(state, digest_size=6).hexdigest()})")
            ex = getattr(ex, "ex_iterable", None)
        return " of ".join(shuffles + [f"HFDataset stream of {self.dataset.n_shards} shards"])


def _rows(dataset, images):
    return (_convert(r, images, f"row {i}") for i, r in enumerate(dataset))


def _prepare(dataset, columns):
    """The dataset with only ``columns``, image columns read undecoded; and the names of those columns."""
    import datasets
    if columns is not None:
        missing = sorted(set(columns) - set(dataset.column_names or ()))
        if missing:
            raise KeyError(f"no column {missing[0]!r}; the dataset has {dataset.column_names}")
        dataset = dataset.select_columns(list(columns))
    # Rows as Python values, collated as the unformatted dataset's are: tables ("arrow", ...) are not
    # a dict of columns, and a framework's ("torch", ...) makes a number column a list of 0-d tensors.
    if _format_type(dataset) in _REFORMAT:
        dataset = dataset.with_format(None)
    features = dataset.features or {}
    images = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    # A transform is written for what datasets hands it, decoded (PIL) images: those stay, and are
    # taken as they come out of it. Otherwise the files' bytes are read, and decoded by the loader.
    transformed = _format_type(dataset) == "custom"
    for name in images:
        if features[name].decode and not transformed:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset, frozenset(images)


def _format_type(dataset):
    """The dataset's output format ("torch", ...; None for Python values)."""
    if hasattr(dataset, "format"):   # a Dataset
        return (dataset.format or {}).get("type")
    return getattr(getattr(dataset, "_formatting", None), "format_type", None)   # an IterableDataset


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
