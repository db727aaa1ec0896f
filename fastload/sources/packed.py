"""Records packed by ``fastload pack`` into page-aligned shard files, read by index.

A packed dataset is a directory (or URL prefix) holding::

    meta.json            version, fields and their kinds, classes, shard names and sizes
    index.npz            per record: shard number, byte offset, byte size of each blob field,
                         and the value of each integer field (labels live here, not in the shards)
    shard-00000.bin ...  record payloads, each starting on a page boundary (4096 bytes)

Blob fields are stored as they were read: encoded images keep their original
bytes (or a re-encoding at a maximum side, chosen when packing); strings are
UTF-8 and other values JSON. A record's blobs are contiguous, so reading a
record is one positional read (local files, or shards in the disk cache) or one
ranged request (a URL without a cache). Not a memory map: a shard that shrinks
while it is read (rewritten in place, say) is then a short read and an error
naming the record, where a map would kill the process with SIGBUS.

A ``meta.json`` or ``index.npz`` that cannot be read as what it should be (a
garbled download, a half-copied directory) is a ``ValueError`` naming the file
and what is wrong with it.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

import numpy as np

from ..errors import RecordError
from .base import Source
from .remote import Storage, StorageError, _cause, is_url

__all__ = ["PackedDataset", "FORMAT_VERSION", "decode_field"]

FORMAT_VERSION = 1
KINDS = ("bytes", "str", "json", "int", "npy")


def decode_field(kind: str, data: bytes):
    if kind == "bytes":
        return data
    if kind == "str":
        return data.decode("utf-8")
    if kind == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    return json.loads(data)


def _parse_meta(url: str, data: bytes) -> dict:
    """``meta.json``'s object; a ValueError naming ``url`` when it is not one."""
    try:
        meta = json.loads(data)
    except ValueError as e:   # UnicodeDecodeError and JSONDecodeError alike
        raise ValueError(f"PackedDataset: {url} is not valid JSON (damaged, or cut short?): {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"PackedDataset: {url} holds a JSON {type(meta).__name__}, not the object "
                         "`fastload pack` writes")
    return meta


def _parse_index(url: str, data: bytes, fields: list[tuple[str, str]]) -> dict:
    """``index.npz``'s arrays, read whole: one per record for the shard, the offset and each field.
    A ValueError naming ``url`` when it is not a readable archive, or lacks what ``fields`` need."""
    try:
        with np.load(io.BytesIO(data)) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"PackedDataset: {url} is not a readable .npz archive (damaged, or cut short?): "
                         f"{type(e).__name__}: {e}") from None
    need = ["shard", "offset"] + [f"{'int' if kind == 'int' else 'size'}:{name}" for name, kind in fields]
    missing = [name for name in need if name not in arrays]
    if missing:
        raise ValueError(f"PackedDataset: {url} lacks the arrays {missing} that meta.json's fields need")
    lengths = {name: len(arrays[name]) for name in need}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"PackedDataset: {url} holds arrays of different lengths: {lengths}")
    return arrays


class PackedDataset(Source):
    """The records of a dataset written by ``fastload pack``.

    ``root`` is a directory or a URL prefix (``s3://bucket/train-packed``);
    ``cache_dir``, ``cache_limit``, ``max_in_flight``, ``retries``, ``backoff``
    and ``storage_options`` say how a URL is read (see
    :class:`~fastload.sources.remote.Storage`). Records come back in the shape
    they were packed from: ``(image bytes, label)`` for an image folder, the
    image bytes for plain image files, a dict otherwise.
    """

    def __init__(self, root: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 cache_limit: int | None = None, max_in_flight: int = 16, retries: int = 3,
                 backoff: float = 0.05, read_timeout: float = 30.0, storage_options: dict | None = None):
        self.root = os.fspath(root).rstrip("/")
        self.storage = Storage(cache_dir=cache_dir, cache_limit=cache_limit, max_in_flight=max_in_flight,
                               retries=retries, backoff=backoff, read_timeout=read_timeout,
                               storage_options=storage_options)
        meta_url, index_url = self._url("meta.json"), self._url("index.npz")
        try:
            meta = self.storage.read(meta_url, 0, self.storage.size(meta_url))
            index = self.storage.read(index_url, 0, self.storage.size(index_url))
        except StorageError as e:
            if not isinstance(_cause(e.__cause__ or e), FileNotFoundError):   # credentials, an outage: as it is
                raise
            raise FileNotFoundError(f"PackedDataset: {self.root!r} is not a finished packed dataset "
                                    f"(write one with `fastload pack`): {e}") from e
        meta = _parse_meta(meta_url, meta)
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"PackedDataset: {meta_url} has format version {meta.get('version')!r}, "
                             f"this fastload reads {FORMAT_VERSION}")
        try:
            self._shape = meta["record"]
            self._fields = [(f["name"], f["kind"]) for f in meta["fields"]]
            self._shard_urls = [self._url(s["name"]) for s in meta["shards"]]
            self._shard_sizes = [int(s["size"]) for s in meta["shards"]]
        except (KeyError, TypeError, ValueError) as e:
            what = f"has no entry {e}" if isinstance(e, KeyError) else f"is malformed ({type(e).__name__}: {e})"
            raise ValueError(f"PackedDataset: {meta_url} {what}: not what `fastload pack` writes") from None
        index = _parse_index(index_url, index, self._fields)
        self.meta = meta
        self.classes = meta.get("classes")
        self.fields = tuple(name for name, _ in self._fields)
        self._shard = index["shard"]
        self._offset = index["offset"]
        self._sizes = {n: index[f"size:{n}"] for n, k in self._fields if k != "int"}
        self._ints = {n: index[f"int:{n}"] for n, k in self._fields if k == "int"}
        self._keys = index.get("key")

    def _url(self, name: str) -> str:
        return f"{self.root}/{name}" if is_url(self.root) else os.path.join(self.root, name)

    # -- the Source protocol -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._shard)

    def record_id(self, index: int) -> str:
        index = self._check_index(index)
        url = self._shard_urls[self._shard[index]]
        return f"{url}:{self._keys[index]}" if self._keys is not None else f"{url}#{index}"

    def labels(self):
        for name in ("label", "cls"):
            if name in self._ints:
                return self._ints[name]
        return None

    def __getitem__(self, index: int):
        return self.gather(np.array([self._check_index(index)]))[0]

    def gather(self, indices: np.ndarray) -> list:
        # Offsets, sizes and labels come from the index arrays for the whole batch at once; per
        # record there is one read.
        idx = np.asarray(indices, dtype=np.int64)
        shards, los = self._shard[idx], self._offset[idx].astype(np.int64)
        blobs = [(name, kind) for name, kind in self._fields if kind != "int"]
        sizes = [self._sizes[name][idx].astype(np.int64) for name, _ in blobs]
        his = los + (np.sum(sizes, axis=0) if sizes else 0)
        over = np.flatnonzero(his > np.asarray(self._shard_sizes, dtype=np.int64)[shards])
        if len(over):
            j = int(over[0])
            raise RecordError(self.record_id(int(idx[j])), f"record ends at byte {int(his[j])}, past the end of the shard")
        ids, shard_list = idx.tolist(), shards.tolist()
        urls = self._shard_urls
        fetched = set()
        for j, s in enumerate(shard_list):
            if s in fetched:
                continue
            fetched.add(s)
            try:   # into the disk cache, where there is one (again, if it was evicted)
                self.storage.local_path(urls[s])
            except StorageError as e:
                raise RecordError(self.record_id(ids[j]), f"reading failed: {e.reason}") from e
        datas = self.storage.read_ranges([(urls[s], lo, hi) for s, lo, hi in zip(shard_list, los.tolist(),
                                                                                 his.tolist())])
        for j, d in enumerate(datas):
            if isinstance(d, StorageError):
                raise RecordError(self.record_id(ids[j]), f"reading failed: {d.reason}")
        columns = {name: self._ints[name][idx].tolist() for name in self._ints}
        pos = [0] * len(ids)
        for (name, kind), size in zip(blobs, sizes):
            if len(blobs) == 1:   # the record is that one field's bytes
                values = datas
            else:
                ends = (np.asarray(pos) + size).tolist()
                values = [bytes(d[p:e]) for d, p, e in zip(datas, pos, ends)]
                pos = ends
            if kind != "bytes":
                values = [self._decode(ids[j], name, kind, v) for j, v in enumerate(values)]
            columns[name] = values
        columns = [columns[name] for name in self.fields]
        if self._shape == "tuple":
            return list(zip(*columns))
        if self._shape == "single":
            return columns[0]
        return [dict(zip(self.fields, values)) for values in zip(*columns)]

    def _decode(self, index: int, name: str, kind: str, data: bytes):
        try:
            return decode_field(kind, data)
        except (ValueError, UnicodeDecodeError, EOFError) as e:   # EOFError: an array cut short
            raise RecordError(self.record_id(index), f"field {name!r} cannot be decoded: {e}") from None

    def __repr__(self):
        return f"PackedDataset({self.root!r}, {len(self)} records, fields {list(self.fields)})"
