"""Samples stored as tar shards in the WebDataset layout, on disk or behind a URL.

A shard is a plain tar file; the members of one sample are consecutive and
share a key: ``n01440764_10026.jpg``, ``n01440764_10026.cls``,
``n01440764_10026.json``. The split follows WebDataset's own rule: the key is
the member's name up to the first dot of its last path component, the
extension is the rest, lower-cased (``a/b.seg.png`` is key ``a/b``, extension
``seg.png``). Names starting and ending with ``__`` and non-regular members
are skipped, as WebDataset does.

Records are dicts, one entry per member plus ``"__key__"`` and ``"__url__"``.
Member bytes are decoded by the last part of the extension, as WebDataset's
``basichandlers`` do: ``cls``/``cls2``/``class``/``count``/``index``/``inx``/``id``
→ ``int``; ``txt``/``text``/``transcript`` → ``str`` (UTF-8); ``json``/``jsn`` →
the parsed value; anything else (images included) stays ``bytes``, which the
loader's image field decodes.

:class:`TarShards` gives random access: on first open each shard is scanned
once for its member offsets, and the index is kept beside the shard (when
that directory is writable) or in ``cache_dir``; a sample is then one ranged
read. Shuffling, splitting, sharding across ranks and resuming work exactly
as for image folders. :meth:`TarShards.stream` reads shards front to back with
a shuffle buffer instead, for storage where building an index is not an option.
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import io
import json
import os
import queue
import re
import threading
import warnings
from concurrent.futures import Future
from typing import Iterator, Sequence

import numpy as np

from .._kernels._tarheader import is_meta as _is_meta   # webdataset's skip_meta
from .._kernels._tarheader import payload_bytes as _payload_bytes
from .._kernels._tarheader import samples as _samples
from ..errors import FailedRecord, RecordError
from ..pipeline import rng as randomness
from ..pipeline.fluent import SHUFFLE_INITIAL, Fluent, buffered_shuffle
from . import _tar
from .base import Source
from .paths import PathTable
from .remote import Storage, StorageError, _racy, cache_name, expand_urls, is_url

__all__ = ["TarShards", "TarStream", "decode_member", "split_key"]

_INDEX_VERSION = 4   # 4: a shard cut inside a member ends with that sample
_INT_EXTS = frozenset("cls cls2 class count index inx id".split())
_TEXT_EXTS = frozenset("txt text transcript".split())
_JSON_EXTS = frozenset("json jsn".split())
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")   # webdataset.tariterators.base_plus_ext


def split_key(name: str) -> tuple[str | None, str | None]:
    """``(key, extension)`` of a member name, by WebDataset's rule; ``(None, None)`` if it has no dot."""
    if "/" not in name:   # the common name, where the rule is: up to the first dot, and the rest
        dot = name.find(".")
        return (name[:dot], name[dot + 1:].lower()) if dot > 0 else (None, None)
    m = _KEY.match(name)
    return (m.group(1), m.group(2).lower()) if m else (None, None)


def _sample_key(name: str) -> tuple[str | None, str | None]:
    """:func:`split_key`, and ``(None, None)`` for metadata: the key and extension a stream groups by."""
    return (None, None) if _is_meta(name) else split_key(name)


def _as_int(data: bytes) -> int:
    return int(data.decode("ascii").strip())


def _as_text(data: bytes) -> str:
    return data.decode("utf-8")


@functools.lru_cache(maxsize=256)
def _decoder(ext: str):
    last = ext.rsplit(".", 1)[-1]
    return _as_int if last in _INT_EXTS else _as_text if last in _TEXT_EXTS else \
        json.loads if last in _JSON_EXTS else None


#: Samples of at least this many bytes in a local shard are read member by member (see gather).
_MEMBER_READS = 64 << 10
#: What a stream queues ahead of its consumer at most, in bytes of members kept as bytes (and 256
#: records), besides the chunk being read and the one being yielded.
READ_AHEAD_BYTES = 64 << 20
#: A stream reads a remote shard in ranges of STREAM_RANGE bytes, requesting the STREAM_AHEAD after
#: the one it reads before it gets to them, and opens the remote shards after it until they request
#: as many ranges again (see TarStream._opened_ahead): a far-off store's latency overlaps the reading.
STREAM_RANGE, STREAM_AHEAD = 4 << 20, 3


def _close_opened(opening: Future) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def decode_member(ext: str, data: bytes):
    """A member's value by the last part of its extension (see the module docstring)."""
    decode = _decoder(ext)
    return data if decode is None else decode(data)


def _tar_error(e: _tar.TarError) -> str:
    return f"not a readable tar archive ({e.reason})" if e.offset == 0 else \
        f"unreadable tar header at byte {e.offset} ({e.reason})"


def _members(fileobj, size: int, url: str):
    """``(name, data offset, size, .cls bytes or None)`` of every regular member, in order.

    A tar error ends the listing with ``(None, byte offset, 0, error message)``:
    the members before it are good. A read that fails raises a :class:`StorageError`
    naming ``url``: the shard may be whole, and listing it as cut short would make the
    dataset's length depend on the network (and differ between ranks).
    """
    try:
        for name, off, n in _tar.members(fileobj, size):
            if not _is_meta(name):
                # A class label is a few bytes: keep it in the index, so labels() needs no reads.
                yield name, off, n, fileobj.read(n) if name.endswith(".cls") and n <= 32 else None
    except _tar.TarError as e:
        yield None, e.offset, 0, _tar_error(e)
    except OSError as e:
        reason = e.reason if isinstance(e, StorageError) else str(e)
        raise StorageError(url, f"reading failed at byte {fileobj.tell()} while indexing the shard: "
                                f"{reason}") from e


class _Sample:
    """One sample of a shard: its key, its members as (extension, data offset, size), its .cls label."""
    __slots__ = ("key", "members", "error", "label")

    def __init__(self, key, members, error=None, label=None):
        self.key, self.members, self.error, self.label = key, members, error, label


def _results(futures: list) -> Iterator[list[_Sample]]:
    """Each shard's samples, in order, each let go of once the next is asked for."""
    for k in range(len(futures)):
        f, futures[k] = futures[k], None
        yield f.result()[1]


def _group(members, size: int) -> list[_Sample]:
    """Consecutive members with the same key form a sample (WebDataset's group_by_keys)."""
    samples, cur = [], None
    for name, off, n, extra in members:
        if name is None:   # the rest of the shard is unreadable: one record says so
            samples.append(_Sample(f"@{off}", [], f"{extra}; the rest of the shard is lost"))
            break
        key, ext = split_key(name)
        if key is None:
            continue
        if cur is None or key != cur.key:
            cur = _Sample(key, [])
            samples.append(cur)
        if any(e == ext for e, _, _ in cur.members):
            cur.error = f"two members named {key}.{ext}"
        cur.members.append((ext, off, n))
        if ext == "cls" and extra is not None:
            try:
                cur.label = _as_int(extra)
            except ValueError:
                pass   # reading the sample reports it
        if off + n > size and cur.error is None:
            cur.error = f"member {name} ends at byte {off + n}, past the end of the shard ({size} bytes): truncated"
    return samples


class _Table:
    """Every shard's samples in flat arrays, in order: keys in a :class:`PathTable`, members as
    (extension code, data offset, size) rows: about 115 bytes a sample of two members and a
    30-character key, where an object per sample and member took about 600 (770 MB in every
    process over ImageNet's 1.28M)."""

    def __init__(self, shards: Iterator[list[_Sample]]):
        keys, counts, exts, codes, offsets, sizes, members, labels = [], [], {}, [], [], [], [], []
        self.errors: dict[int, str] = {}   # a sample's own failure, by index (more are found on reading)
        i = 0
        for samples in shards:
            keys.append([smp.key for smp in samples])
            counts.append(len(samples))
            for smp in samples:
                members.append(len(smp.members))
                for ext, off, n in smp.members:
                    codes.append(exts.setdefault(ext, len(exts)))
                    offsets.append(off)
                    sizes.append(n)
                if smp.error is not None:
                    self.errors[i] = smp.error
                labels.append(smp.label)
                i += 1
        self.keys = PathTable(keys)
        self.counts = np.array(counts, dtype=np.int64)
        self.exts = list(exts)
        self.codes = np.array(codes, dtype=np.int32)
        self.offsets, self.sizes = np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(members, dtype=np.int64)])   # sample i: rows [first[i], first[i+1])
        try:   # (a .cls of up to 32 digits may pass int64: then, as for a sample without one, no labels)
            self.labels = None if any(lab is None for lab in labels) else np.array(labels, dtype=np.int64)
        except OverflowError:
            self.labels = None
        # (lo, hi): the bytes a sample's members span, one read where they sit together
        count = np.diff(self.first)
        self.span = np.zeros((len(count), 2), dtype=np.int64)
        has = count > 0
        if has.any():
            at = self.first[:-1][has]
            self.span[has, 0] = np.minimum.reduceat(self.offsets, at)
            self.span[has, 1] = np.maximum.reduceat(self.offsets + self.sizes, at)

    def __len__(self) -> int:
        return len(self.keys)

    def extensions(self, i: int) -> list[str]:
        return [self.exts[c] for c in self.codes[self.first[i]:self.first[i + 1]].tolist()]

    def members(self, idx: np.ndarray) -> list[list[tuple[str, int, int]]]:
        """The (extension, data offset, size) members of each sample of ``idx``, a few array
        lookups for them all."""
        lo, hi = self.first[idx], self.first[idx + 1]
        count = hi - lo
        rows = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        exts = self.exts
        flat = list(zip([exts[c] for c in self.codes[rows].tolist()], self.offsets[rows].tolist(),
                        self.sizes[rows].tolist()))
        out, at = [], 0
        for n in count.tolist():
            out.append(flat[at:at + n])
            at += n
        return out


_INDEX_SUFFIX = ".idx.json"
_INDEX_FILE = re.compile(r"\.idx\.json(\.\d+\.tmp)?$")   # a shard's index, or one being written


def _local(urls: Sequence[str]) -> list[str]:
    return [u for u in urls if not is_url(u) or u.startswith("file://")]


class TarShards(Source):
    """Samples of WebDataset-style tar shards, by index.

    ``urls``: a brace pattern (``"s3://bucket/train-{00000..01023}.tar"``), a glob
    (``"data/*.tar"``), a path or URL, or a list of them. ``cache_dir`` holds the
    shard indexes (and, for URLs, whole shards, at most ``cache_limit`` bytes);
    ``max_in_flight``, ``retries``, ``backoff``, ``read_timeout`` and ``storage_options`` say how URLs are read
    (see :class:`~fastload.sources.remote.Storage`).

    ``require=("jpg", "cls")`` names members every sample must have: a sample
    without one fails as a record (an error naming shard and key, or a counted
    skip under ``on_error="skip"``) instead of reaching a field as a missing value.
    """

    def __init__(self, urls: str | os.PathLike | Sequence[str | os.PathLike], *,
                 require: Sequence[str] = (), cache_dir: str | os.PathLike | None = None,
                 cache_limit: int | None = None, max_in_flight: int = 16, retries: int = 3,
                 backoff: float = 0.05, read_timeout: float = 30.0, storage_options: dict | None = None):
        self.storage = Storage(cache_dir=cache_dir, cache_limit=cache_limit, max_in_flight=max_in_flight,
                               retries=retries, backoff=backoff, read_timeout=read_timeout,
                               storage_options=storage_options)
        self.index_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.urls = self._resolve(urls)
        if not self.urls:
            raise FileNotFoundError(f"TarShards: no shards match {urls!r}")
        self.require = tuple(e.lstrip(".").lower() for e in require)
        self._table: _Table | None = None   # every shard's samples, once indexed

    def _resolve(self, urls) -> list[str]:
        found = []
        for u in expand_urls(urls):
            web = u.startswith(("http://", "https://"))   # '?' starts a query there, and nothing lists
            if not web and any(c in u.split("://")[-1] for c in "*?["):
                # A glob such as "dir/*" also matches the indexes written beside local shards.
                found += [m for m in self.storage.glob(u) if not _INDEX_FILE.search(m)]
            else:
                found.append(u)
        return found

    # -- the index ------------------------------------------------------------------
    def _index(self):
        if self._table is None:
            workers = min(len(self.urls), self.storage.max_in_flight, 8)
            with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fastload-index") as pool:
                futures = [pool.submit(self._shard_index, u) for u in self.urls]
            failed = [f.exception() for f in futures if f.exception() is not None]
            missing = next((e for e in failed if isinstance(e, ImportError)), None)
            if missing is not None:   # a package to install (fsspec for URLs), not shards that fail
                raise missing
            if failed:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                cls = FileNotFoundError if isinstance(failed[0].__cause__, FileNotFoundError) else OSError
                raise cls(f"TarShards: {len(failed)} of {len(self.urls)} shards cannot be read: "
                          f"{failed[0]}{more}") from failed[0]
            table = _Table(_results(futures))   # each shard's sample objects go once the table holds them
            self._starts = np.concatenate([[0], np.cumsum(table.counts)])
            self._shard_of = np.repeat(np.arange(len(table.counts), dtype=np.int64), table.counts)
            self._bad = np.zeros(len(table), dtype=bool)
            self._bad[list(table.errors)] = True
            self._unchecked = np.full(len(table), bool(self.require))
            self.fields = tuple(sorted(table.exts))
            self._table = table   # last: another thread takes the index as built once it is set

    def _index_path(self, url: str) -> str | None:
        if self.index_dir is not None:
            return os.path.join(self.index_dir, "index", cache_name(url) + _INDEX_SUFFIX)
        if not is_url(url) and os.access(os.path.dirname(os.path.abspath(url)), os.W_OK):
            return url + _INDEX_SUFFIX
        return None

    def _shard_index(self, url: str):
        size = self.storage.size(url)   # a StorageError names the URL
        # A URL's size alone does not tell a rewritten shard (tar pads to 10240-byte blocks): its
        # identity (ETag, version, modification time) must match too; an index without one is rebuilt.
        stamp = {"version": _INDEX_VERSION, "size": size,
                 "mtime_ns": None if is_url(url) else os.stat(url).st_mtime_ns,
                 "remote": self.storage.identity(url) if is_url(url) else None}
        path = self._index_path(url)
        if path is not None and os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
                if all(saved.get(k) == v for k, v in stamp.items()):
                    return size, [_Sample(k, [tuple(m) for m in ms], err, lab) for k, ms, err, lab in saved["samples"]]
            except (OSError, ValueError, KeyError, TypeError):
                pass   # a stale or damaged index is rebuilt
        with self.storage.open_stream(url, local_buffer=io.DEFAULT_BUFFER_SIZE) as f:   # headers only: data skipped
            samples = _group(_members(f, size, url), size)
        if path is not None and not (is_url(url) and _racy(stamp["remote"])):   # racy: see remote._racy
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)   # "" for a shard named from its folder
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    json.dump({**stamp, "samples": [[s.key, s.members, s.error, s.label] for s in samples]}, f)
                os.replace(tmp, path)
            except OSError:
                pass   # an index that cannot be saved is rebuilt next time
        return size, samples

    # -- the Source protocol -----------------------------------------------------------
    def __len__(self) -> int:
        self._index()
        return int(self._starts[-1])

    def record_id(self, index: int) -> str:
        self._index()
        index = self._check_index(index)
        return f"{self.urls[self._shard_of[index]]}:{self._table.keys[index]}"

    def _checked(self, indices) -> np.ndarray:
        """``indices`` as an array, after raising the RecordError of the first sample that has one.

        Whether a sample has every required member is decided once, the first time it is read:
        afterwards a batch's check is one array lookup."""
        self._index()
        idx = np.asarray(indices, dtype=np.int64)
        table = self._table
        if len(idx) and (idx.min() < 0 or idx.max() >= len(table)):
            raise IndexError(f"TarShards indices out of range for {len(table)} records")
        new = idx[self._unchecked[idx]]
        for i in new.tolist():
            have = table.extensions(i)
            missing = [e for e in self.require if e not in have]
            if missing and i not in table.errors:
                error = f"no .{missing[0]} member (the sample has {', '.join('.' + e for e in have)})"
                lost = self._lost_after(i)
                if lost:   # the missing member may be in what could not be read
                    error += f"; the shard is unreadable after them: {lost}"
                table.errors[i] = error
                self._bad[i] = True
        self._unchecked[new] = False
        bad = self._bad[idx]
        if bad.any():
            i = int(idx[bad.argmax()])
            raise RecordError(self.record_id(i), table.errors[i])
        return idx

    def _lost_after(self, i: int) -> str | None:
        """Why the rest of sample ``i``'s shard could not be read, when it is the last sample read."""
        j, table = i + 1, self._table
        if j < len(table) and self._shard_of[j] == self._shard_of[i]:
            if table.first[j] == table.first[j + 1] and table.keys[j].startswith("@"):
                return table.errors.get(j)
        return None

    @staticmethod
    def _record(url: str, key: str, members: list, blobs: list) -> dict:
        rec = {"__key__": key, "__url__": url}
        for (ext, _, _), blob in zip(members, blobs):
            try:
                rec[ext] = decode_member(ext, blob)
            except (ValueError, UnicodeDecodeError) as e:
                raise RecordError(f"{url}:{key}", f"member {key}.{ext} cannot be decoded as "
                                                  f"{ext.rsplit('.', 1)[-1]}: {e}") from None
        return rec

    def __getitem__(self, index: int) -> dict:
        return self.gather([self._check_index(index)])[0]

    def gather(self, indices) -> list:
        # A sample is one read whose members are then sliced out, a copy each. A large sample of a
        # local shard is read member by member instead, straight into the bytes returned: for
        # 150 KB PNGs the second copy, and the page faults of its allocation, cost a third.
        idx = self._checked(indices)
        table, urls, storage = self._table, self.urls, self.storage
        plans = [(urls[s], lo, hi, key, members) for s, (lo, hi), key, members in
                 zip(self._shard_of[idx].tolist(), table.span[idx].tolist(), table.keys.take(idx),
                     table.members(idx))]
        ranges, split = [], []
        for url, lo, hi, _, members in plans:
            each = hi - lo >= _MEMBER_READS and storage.local_path_cached(url) is not None
            split.append(each)
            if each:
                ranges += [(url, off, off + n) for _, off, n in members]
            else:
                ranges.append((url, lo, hi))
        datas = iter(storage.read_ranges(ranges))
        out = []
        for (url, lo, _, key, members), each in zip(plans, split):
            if each:
                blobs = [next(datas) for _ in members]
                bad = next((d for d in blobs if isinstance(d, StorageError)), None)
            else:
                data = next(datas)
                bad = data if isinstance(data, StorageError) else None
                if bad is None:
                    blobs = [data[off - lo:off - lo + n] for _, off, n in members]
            if bad is not None:
                raise RecordError(f"{url}:{key}", f"reading failed: {bad.reason}")
            out.append(self._record(url, key, members, blobs))
        return out

    def labels(self):
        """The ``.cls`` value of every sample, kept in the index; None unless every sample has one."""
        self._index()
        return None if self._table.labels is None else self._table.labels.copy()

    def local_shards(self) -> list[str]:
        """The shards on this machine's disk: under torch.distributed the ranks compare them (name and
        size), each having listed its own."""
        return _local(self.urls)

    def stream(self, shuffle_buffer: int = 0, seed: int = 0,
               shuffle_initial: int = SHUFFLE_INITIAL) -> "TarStream":
        """The same shards read front to back (no index), shuffled through a buffer of that many samples
        (samples come out once ``shuffle_initial`` are buffered: see :func:`~fastload.pipeline.fluent.buffered_shuffle`)."""
        return TarStream(self.urls, self.storage, shuffle_buffer=shuffle_buffer, seed=seed,
                         shuffle_initial=shuffle_initial, require=self.require, indexes=self)

    def __repr__(self):
        n = f"{len(self)} samples" if self._table is not None else "not indexed yet"
        return f"TarShards({len(self.urls)} shards, {n})"


class TarStream(Fluent):
    """Samples of tar shards read sequentially, without an index.

    A pass reads the shards in an order drawn from ``(seed, epoch)`` and passes
    samples through a shuffle buffer drawn from the same stream; ``shuffle_buffer=0``
    keeps the stored order. The epoch is the one last given to :meth:`set_epoch` (a
    Loader gives it before each pass); until then pass ``p`` of the stream draws
    from ``(seed, p)``.

    What cannot be read does not end the pass. A shard that cannot be opened, or
    read past some byte (truncated, an unreadable header, a failed read), gives one
    :class:`~fastload.FailedRecord` naming the shard after the samples before the
    damage, and the pass goes on with the next shard; a sample with a member that
    does not decode, two members of one name or no ``require``d member gives one
    naming the shard and key. A Loader turns each into a :class:`~fastload.RecordError`,
    or a counted skip under ``on_error="skip"``; iterated directly, the stream
    yields the FailedRecord objects among the records.

    A Loader numbers a stream's records by position and resumes by reading the pass
    again and skipping what it yielded, so each pass keeps what every shard gave: how
    many records, and where its read failed (:meth:`pass_state`; a Loader's
    ``state_dict()`` holds it). A resumed pass (:meth:`resume_pass`) gives as many
    records for each of those shards: a failure again where the shard failed before
    (however it reads now), and a shard that fails now where it did not gives a
    FailedRecord for each record it gave then. A shard that gives another number of
    records without failing (rewritten since) is an error naming it.

    A thread reads and parses the shards ahead of the consumer: it queues up to 256 records
    and ``READ_AHEAD_BYTES`` (64 MiB) of their undecoded members, or one record where that is
    larger (a long video clip), besides a chunk of up to 8 MiB it reads and the one the
    consumer takes from. It reads a shard 1 MiB at a time (``_tar.CHUNK``; a larger member
    alone) and makes the records of that MiB at once. The shuffle buffer holds its
    ``shuffle_buffer`` records besides. A remote shard (no ``cache_dir``) comes in ranges of
    ``STREAM_RANGE`` (4 MiB) bytes, the ``STREAM_AHEAD`` (3) after the one being read requested
    before the thread gets to them; and while it reads a shard, the remote shards after it are
    opened, as many as request that many ranges again together (at most ``max_in_flight``;
    with a ``cache_dir``, their downloads begin): a store 25 ms away costs a pass its latency
    about once, not once a range and once a shard. That is up to 32 MiB more in flight.
    """

    def __init__(self, urls: Sequence[str], storage: Storage, *, shuffle_buffer: int = 0, seed: int = 0,
                 shuffle_initial: int = SHUFFLE_INITIAL, require: Sequence[str] = (), indexes: TarShards | None = None):
        if shuffle_buffer < 0:
            raise ValueError("shuffle_buffer must be >= 0")
        if shuffle_initial < 1:
            raise ValueError("shuffle_initial must be >= 1")
        self.urls, self.storage = list(urls), storage
        self.shuffle_buffer, self.shuffle_initial, self.seed = int(shuffle_buffer), int(shuffle_initial), int(seed)
        self.require = tuple(e.lstrip(".").lower() for e in require)
        self._pass, self._epoch, self._fields = 0, None, None
        self._indexes = indexes   # whose shard indexes give the fields (see fields)
        self._partial = None      # why the fields may lack members of later samples, if they may
        self._memo = None      # what the shards of the last pass begun gave (see pass_state)
        self._resume = None    # the pass the next one of its epoch continues (see resume_pass)

    def local_shards(self) -> list[str]:
        """As :meth:`TarShards.local_shards`."""
        return _local(self.urls)

    def lineage(self) -> str:
        """As :meth:`~fastload.pipeline.fluent.Stream.lineage`."""
        # shuffle_initial only where a buffer draws; require, by what it fails, changes what a Loader skips.
        more = ""
        if self.shuffle_buffer and self.shuffle_initial != SHUFFLE_INITIAL:
            more += f", shuffle_initial={self.shuffle_initial}"
        if self.require:
            more += f", require={sorted(set(self.require))}"
        return f"TarStream(shuffle_buffer={self.shuffle_buffer}, seed={self.seed}{more})"

    def set_epoch(self, epoch: int) -> None:
        """Draw every later pass from ``(seed, epoch)``. A Loader resumes, or finishes an epoch left
        early, by reading a pass again and skipping what it has already yielded: that pass must be
        the same one, however many passes came before it."""
        self._epoch = int(epoch)

    @property
    def fields(self) -> tuple[str, ...]:
        """The member extensions of the samples, as :attr:`TarShards.fields` gives them (``__key__`` and
        ``__url__`` are not among them): the ``require``d ones and every one of every sample, from the
        shards' indexes (kept beside local shards or in ``cache_dir``; a local shard without one is
        indexed, a scan of its headers). A remote shard without an index kept adds those of its first
        sample only, read from its headers (a scan of every header is a request per member), and a
        member another sample has besides is a warning. A Loader passes through those ``fields=``
        does not name, so a stream's batches have the fields of the indexed source's: a sample
        without one has None there, as read by index."""
        if self._fields is None:
            exts, rest = set(self.require), self.urls
            if self._indexes is not None:
                kept = {u for u in self.urls if self.storage._direct(u) is not None
                        or os.path.exists(self._indexes._index_path(u) or "")}
                for samples in self._indexed([u for u in self.urls if u in kept]):
                    exts.update(e for smp in samples for e, _, _ in smp.members)
                rest = [u for u in self.urls if u not in kept]
            exts.update(self._first_extensions(rest))
            self._fields = tuple(sorted(exts))
            if rest:   # set after the fields: a pass's thread reads both
                self._partial = f"the first sample of {len(rest)} shard(s) without an index kept"
        return self._fields

    def _indexed(self, urls: list[str]) -> Iterator[list]:
        """The samples of each shard's index, built where none is kept; a shard that cannot be read has
        none (a pass reports it)."""
        if not urls:
            return
        workers = min(len(urls), self.storage.max_in_flight, 8)
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fastload-index") as pool:
            for f in [pool.submit(self._indexes._shard_index, u) for u in urls]:
                if f.exception() is None:
                    yield f.result()[1]

    def _first_extensions(self, urls: list[str]) -> list[str]:
        for url in urls:
            try:
                with self.storage.open_stream(url, 1 << 16, local_buffer=io.DEFAULT_BUFFER_SIZE) as f:
                    first, exts = None, []
                    for name, _, _ in _tar.members(f, self.storage.size(url)):
                        key, ext = _sample_key(name)
                        if key is None:
                            continue
                        if first is not None and key != first:
                            break
                        first = key
                        exts.append(ext)
                    if exts:
                        return exts
            except (_tar.TarError, OSError):
                continue   # a pass reports the shard
        return []

    def pass_state(self, epoch: int) -> dict | None:
        """What the shards of the pass of ``epoch`` gave so far, in read order (JSON-serialisable):
        ``counts`` (records of each shard begun), ``done`` (shards read to their end) and ``failed``
        (``[shard, record, reason]`` where a read failed), with the shards it read: ``shards``, how
        many, and ``names``, a digest of their names below their common directory (the same shards
        elsewhere give the same). None if that pass was not read last."""
        memo = self._resume if self._resume is not None and self._resume["epoch"] == epoch else self._memo
        if memo is None or memo["epoch"] != epoch:
            return None
        # Read in this order while the pass goes on: each later part is at least as far along.
        done, failed, counts = memo["done"], dict(memo["failed"]), list(memo["counts"])
        return {"epoch": epoch, "done": done, "counts": counts,
                "failed": [[i, at, reason] for i, (at, reason) in sorted(failed.items())],
                "shards": len(self.urls), "names": self._names()}

    def _names(self) -> str:
        return PathTable.of(self.urls).digest().hex()

    def resume_pass(self, epoch: int, state: dict | None = None) -> None:
        """Make the next pass of ``epoch`` continue the one ``state`` (from :meth:`pass_state`)
        describes, by default the last pass of ``epoch`` read: each shard read then gives as many
        records as then, so a position names the record it named then (see the class)."""
        if state is None:
            state = self.pass_state(epoch)
            if state is None:
                return
        try:
            plan = {"epoch": int(state["epoch"]), "done": int(state["done"]),
                    "counts": [int(n) for n in state["counts"]],
                    "failed": {int(i): (int(at), str(reason)) for i, at, reason in state["failed"]}}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a TarStream pass state: {state!r}") from e
        # A pass reads the shards in a permutation of their positions and its counts go by read
        # position: over other shards each count would be applied to another shard. (A state
        # without these entries, an older fastload's, is taken as it is.)
        if "shards" in state and state["shards"] != len(self.urls):
            other = f"{state['shards']} shards, this stream has {len(self.urls)}"
        elif "names" in state and state["names"] != self._names():
            other = f"{len(self.urls)} shards of other names than this stream's"
        else:
            other = None
        if other:
            raise ValueError(f"the state was saved over {other}: the pass resumed would read other records; "
                             "load it into a stream of the same shards")
        if plan["epoch"] == int(epoch):
            self._resume = plan

    def __iter__(self) -> Iterator[dict]:
        # The pass is fixed here, not at the first next(): the Loader may create a pass and set
        # the next epoch before it reads from it.
        if self._epoch is None:
            p, self._pass = self._pass, self._pass + 1
        else:
            p = self._epoch
        plan = self._resume if self._resume is not None and self._resume["epoch"] == p else None
        self._resume = None
        # Begun from the pass it continues: a state taken early in this one still holds all of that.
        self._memo = {"epoch": p, "done": 0, "counts": list(plan["counts"]) if plan else [],
                      "failed": dict(plan["failed"]) if plan else {}}
        return self._pass_records(p, plan, self._memo)

    def _pass_records(self, p: int, plan: dict | None, memo: dict) -> Iterator[dict]:
        rng = randomness.generator(self.seed, randomness.SHUFFLE, p)
        urls = [self.urls[i] for i in rng.permutation(len(self.urls))] if self.shuffle_buffer else self.urls
        records = self._read_ahead(urls, plan, memo)
        if not self.shuffle_buffer:
            yield from records
            return
        yield from buffered_shuffle(records, self.shuffle_buffer, rng, self.shuffle_initial)

    def _read_ahead(self, urls: list[str], plan: dict | None, memo: dict, chunk: int = 32,
                    chunks: int = 8) -> Iterator[dict]:
        """The records of ``urls`` in order, read and parsed on a thread up to ``chunk * chunks``
        records ahead, and ``READ_AHEAD_BYTES`` of their members (always one record: a larger one
        waits alone for the consumer).

        Network waits and tar parsing then overlap the consumer; the order is the
        shards' own, so the pass stays a pure function of (seed, epoch).
        """
        q, stop, max_bytes = queue.Queue(), threading.Event(), READ_AHEAD_BYTES
        room = threading.Condition()
        held = [0, 0]   # bytes and chunks queued, not yet taken

        def put(item, size: int = 0) -> bool:
            with room:
                while held[1] and (held[1] >= chunks or held[0] + size > max_bytes) and not stop.is_set():
                    room.wait(0.1)
                if stop.is_set():
                    return False
                held[0] += size
                held[1] += 1
            q.put((item, size))
            return True

        def produce():
            batch, size, counts, failed = [], 0, memo["counts"], memo["failed"]
            shards = self._opened_ahead(urls)
            try:
                for i, (url, opened) in enumerate(zip(urls, shards)):
                    if plan is not None and i < len(plan["counts"]):
                        records = self._again(url, opened, plan["counts"][i], i < plan["done"],
                                              plan["failed"].get(i))
                    else:
                        records = self._read(url, opened)
                    if i == len(counts):
                        counts.append(0)
                    n = 0
                    for r in records:
                        # Kept before the consumer can see the record: a state never lags what it was given.
                        if i not in failed and isinstance(r, FailedRecord) and r.where == url:
                            failed[i] = (n, r.reason)
                        n += 1
                        counts[i] = max(counts[i], n)
                        batch.append(r)
                        size += _payload_bytes(r)
                        if len(batch) == chunk or size * chunks >= max_bytes:
                            if not put(batch, size):
                                return
                            batch, size = [], 0
                    memo["done"] = i + 1
                put(batch, size)
                put(None)
            except BaseException as e:   # handed to the consumer after the records before it
                if put(batch, size):
                    put(e)
            finally:
                shards.close()

        t = threading.Thread(target=produce, name="fastload-tar-stream", daemon=True)
        t.start()
        try:
            while True:
                item, size = q.get()
                with room:
                    held[0] -= size
                    held[1] -= 1
                    room.notify()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            stop.set()
            t.join()

    def _unlisted(self, url: str, name: str, ext: str) -> None:
        warnings.warn(f"{url}: member {name}: .{ext} is not among the stream's fields {list(self._fields)}, taken "
                      f"from {self._partial}, so a Loader's batches leave it out: name it in fields= "
                      f"({ext!r}: None passes it through), or keep the shards' indexes (cache_dir=)",
                      RuntimeWarning, stacklevel=2)
        self._partial = None   # once

    def _again(self, url: str, opened: Future, count: int, whole: bool,
               failure: tuple | None) -> Iterator[dict | FailedRecord]:
        """The records of one shard in a resumed pass: ``count`` of them, as it gave in the pass resumed
        (at least that many unless ``whole``); where its read failed then (``failure``: record, reason),
        the same failure, where it fails now, a FailedRecord for each record it gave then."""
        n, lost = 0, None
        records = self._read(url, opened)
        try:
            for r in records:
                if failure is not None and n == failure[0]:
                    break
                if isinstance(r, FailedRecord) and r.where == url:   # the rest of the shard is lost
                    lost = r.reason
                    break
                yield r
                n += 1
        finally:
            records.close()
        if failure is not None and lost is None and n == failure[0]:
            yield FailedRecord(url, failure[1])   # where the pass resumed failed: the rest was not read then
            return
        if lost is None:
            if n < count or (n > count and whole):
                raise StorageError(url, f"the shard gave {count} records in the pass being resumed and {n} now: it "
                                        "changed since, and the records after it would not be those resumed")
            return
        yield FailedRecord(url, lost)
        for _ in range(n + 1, count):
            yield FailedRecord(url, f"{lost} (a record the pass resumed read here)")

    def _opened_ahead(self, urls: list[str]) -> Iterator[Future]:
        """Each of ``urls`` opened (:meth:`Storage.opening`), the remote shards after the one taken
        while it is read: as many as request ``STREAM_AHEAD + 1`` ranges together, at most
        ``max_in_flight``. Many small shards of a far-off store are then on their way together,
        where one at a time each cost the consumer the store's latency. A local shard is opened
        when its turn comes."""
        budget, most = (STREAM_AHEAD + 1) * STREAM_RANGE, self.storage.max_in_flight
        ahead, nxt = collections.deque(), 0   # (opening, bytes it requests) of shards not yet taken

        def more() -> bool:
            """Whether the shard at ``nxt`` is opened now: the next to take, or a remote one within the
            budget of those after it."""
            if nxt == len(urls):
                return False
            return not ahead or (self.storage._direct(urls[nxt]) is None and len(ahead) <= most
                    and sum(n for _, n in ahead) - ahead[0][1] < budget)

        try:
            for _ in urls:
                while more():
                    try:
                        n = min(self.storage.size(urls[nxt]), budget)
                    except StorageError:   # opening it says so, in its place
                        n = budget
                    ahead.append((self.storage.opening(urls[nxt], buffer_size=STREAM_RANGE,
                                                       ahead=STREAM_AHEAD), n))
                    nxt += 1
                yield ahead.popleft()[0]
        finally:   # a pass left early: the shards opened for it are closed once open
            for opening, _ in ahead:
                opening.add_done_callback(_close_opened)

    def _read(self, url: str, opened: Future) -> Iterator[dict | FailedRecord]:
        """The samples of one shard, ``opened`` by :meth:`_opened_ahead`; what cannot be read is a
        FailedRecord in its place (see the class)."""
        try:
            f = opened.result()
        except StorageError as e:
            yield FailedRecord(url, f"cannot open the shard: {e.reason}")
            return
        with f:
            rec, error, lost = None, None, None   # the sample being gathered, why it fails, why the rest is lost
            decoders = {}   # extension -> its decoder
            try:
                total = self.storage.size(url)
                for run in _tar.member_runs(f, total):
                    if self._partial is not None:   # a member no field lists: a warning, once
                        for name, *_ in run:
                            key, ext = _sample_key(name)
                            if key is not None and ext not in self._fields:
                                self._unlisted(url, name, ext)
                                break
                    done, i, rec, error = _samples(run, 0, url, rec, error, decoders, _decoder, split_key,
                                                   self.require, self._sample)
                    yield from done
                    if i == len(run):
                        continue
                    # A member cut short, the shard's last: lost with its sample and the rest of the
                    # shard, which one record says.
                    name, off, size, data = run[i]
                    key, _ = _sample_key(name)
                    if key is None:
                        continue
                    if rec is not None and rec["__key__"] != key:
                        yield self._sample(rec, error)
                    got = max(0, total - off) if data is None else len(data)
                    yield FailedRecord(url, f"member {name}: {got} of {size} bytes (truncated shard)")
                    return
            except _tar.TarError as e:
                lost = FailedRecord(url, _tar_error(e))
            except OSError as e:   # a StorageError too
                # The sample being read may have more members: it is lost with the rest of the shard.
                within = f", within sample {rec['__key__']}" if rec is not None else ""
                lost, rec = FailedRecord(url, f"reading failed at byte {f.tell()}{within}: {e}"), None
            # The members read before an unreadable header are a sample, as in the index.
            if rec is not None:
                yield self._sample(rec, error, lost)
            if lost is not None:
                yield lost

    def _sample(self, rec: dict, error: str | None, lost: FailedRecord | None = None) -> dict | FailedRecord:
        """``rec``, or a FailedRecord naming its shard and key when it has an ``error`` or lacks a
        required member (``lost``: why the shard could not be read after it, which may be where it is)."""
        if error is None:
            missing = [e for e in self.require if e not in rec]
            if missing:
                have = ", ".join("." + e for e in list(rec)[2:])
                error = f"no .{missing[0]} member (the sample has {have})"
                if lost is not None:
                    error += f"; the shard is unreadable after them: {lost.reason}"
        return rec if error is None else FailedRecord(f"{rec['__url__']}:{rec['__key__']}", error)
