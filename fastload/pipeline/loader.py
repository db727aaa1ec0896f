"""The Loader: records in, preallocated batches out, with threads doing the work.

Orchestration is plain Python in the consumer's thread. For each batch it
splits the batch's records into chunks, one task per chunk on a small thread
pool; each task runs every field's compiled ``fill`` straight into its rows of
a slot of the :class:`~fastload.memory.ring.BatchRing`. At most ``prefetch``
batches are in flight ahead of the one being consumed.

Everything random is a pure function of ``(seed, epoch, record index)``: the
shuffle order (a NumPy Generator seeded with ``[seed, epoch]``) and each
sample's augmentation (a counter-based stream in the kernels). Batches are
therefore identical for any number of workers, and a position
``(epoch, batch)`` is all the state needed to resume exactly.

Batch ``b`` always holds the records at positions ``[b*B, (b+1)*B)`` of the
epoch's order; under ``on_error="skip"`` a failed record is dropped from its
batch (which comes out shorter) rather than replaced by a later record, so
skipping never changes the composition of other batches or the resume point.
"""
from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import RecordError, StageError
from ..image.decode import DEFAULT_MAX_PIXELS
from ..image.field import ImageField
from ..memory.ring import BatchRing
from ..ops.labels import Labels
from .fields import ChunkContext, Field
from .fluent import Fluent

__all__ = ["Loader"]

log = logging.getLogger("fastload")
_STATE_VERSION = 1


class _Binding:
    """A field plus where its value sits in a record (tuple position, dict key, or the record itself)."""
    __slots__ = ("key", "field")

    def __init__(self, key, field):
        self.key, self.field = key, field

    def values(self, records):
        k = self.key
        if k is None:
            return records
        out = []
        for r in records:
            try:
                out.append(r[k])
            except (KeyError, IndexError, TypeError):
                out.append(None)
        return out


class Loader(Fluent):
    """Batches of training samples from a random-access :class:`~fastload.Source`.

    ``for images, labels in Loader(fl.ImageFolder(root), batch_size=64, transforms=[...])``
    yields NumPy arrays (or torch tensors with ``output="torch"``) that are views of
    reused buffers: a batch stays valid until the batch after the next one is
    requested. ``copy=True`` yields arrays the caller owns.

    Multi-field records (``fl.zip``/``fl.join``) take ``fields={name: spec}`` where a
    spec is a list of image transforms, a :class:`~fastload.pipeline.fields.Field`
    (``fl.Tokenize``, ``fl.Standardize``, ...), ``"index"``/``"onehot"`` for labels, or
    ``None`` to pass the raw values through as a list.

    Fluent methods (``.map``, ``.filter``, ``.take``, ...) apply to batches. Those
    that hold several batches at once (``.prefetch``, ``.shuffle``, ``.batch``,
    threaded ``.map``) need ``copy=True``, since buffered views would be overwritten.
    """

    def __init__(self, source, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, transforms=None, fields=None, dtype: str = "float32",
                 layout: str = "NCHW", labels: str = "index", workers: int = 2, prefetch: int = 2,
                 output: str = "numpy", device=None, copy: bool = False, on_error: str | None = None,
                 max_failures: int | float | None = None, as_tuple: bool | None = None, collate=None,
                 exif: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, dct_scale: bool = True):
        self._random_access = hasattr(source, "__len__") and hasattr(source, "__getitem__")
        if not self._random_access and not hasattr(source, "__iter__"):
            raise TypeError(f"Loader needs a Source or an iterable of records, got {type(source).__name__}")
        if not self._random_access and iter(source) is source:
            raise TypeError("Loader needs a re-iterable stream (each epoch iterates it again), got a one-shot "
                            "iterator: wrap its factory, e.g. fl.IterableRecords(lambda: cursor_rows())")
        if not self._random_access and shuffle:
            raise ValueError("a stream cannot be shuffled by index: shuffle it with .shuffle(buffer_size, seed) first")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if workers < 0 or prefetch < 1:
            raise ValueError("workers must be >= 0 and prefetch >= 1")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {output!r}")
        if on_error is None:
            on_error = "skip" if max_failures is not None else "raise"
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if self._random_access and len(source) == 0:
            raise ValueError("the source has no records")
        self.source, self.batch_size, self.shuffle, self.seed = source, batch_size, shuffle, int(seed)
        self.drop_last, self.workers, self.prefetch_depth = drop_last, workers, prefetch
        self.output, self.device, self.copy, self.collate = output, device, copy, collate
        self.on_error, self.max_failures = on_error, max_failures
        image_kw = dict(dtype=dtype, layout=layout, exif=exif, max_pixels=max_pixels, dct_scale=dct_scale)
        self._bindings, self._raw, self._shape = self._bind(source, transforms, fields, labels, image_kw)
        if as_tuple is not None:
            self._shape = "tuple" if as_tuple else "dict"
        self._outputs = None   # declared by the fields once they are prepared
        self._ring = None
        self._next_epoch, self._resume_batch = 0, 0
        self._position = (0, 0)
        self._lock = threading.Lock()
        self._failures: list[tuple[str, str]] = []
        self._warned = False
        self._stats = collections.Counter()

    # -- construction ---------------------------------------------------------------
    @staticmethod
    def _bind(source, transforms, fields, labels, image_kw):
        num_classes = len(getattr(source, "classes", ()) or ()) or getattr(source, "num_classes", None)
        if fields is None:
            if transforms is None:
                raise ValueError("give transforms=[...] for image records, or fields={...}")
            first = source[0] if hasattr(source, "__getitem__") else next(iter(source))
            if isinstance(first, dict):
                raise ValueError("records are dicts: say what to do with each field through fields={...}")
            image = ImageField(transforms, name="image", **image_kw)
            if isinstance(first, tuple) and len(first) == 2:
                return [_Binding(0, image), _Binding(1, Labels(num_classes, labels, name="label"))], [], "tuple"
            return [_Binding(None, image)], [], "single"
        if transforms is not None:
            raise ValueError("give either transforms= or fields=, not both")
        bindings, raw = [], []
        for name, spec in fields.items():
            if spec is None:
                raw.append(name)
                continue
            if isinstance(spec, str):
                field = Labels(num_classes, spec, name=name)
            elif isinstance(spec, Field):
                field = spec
                field.name = name
            elif isinstance(spec, (list, tuple)):
                field = ImageField(spec, name=name, **image_kw)
            else:
                raise TypeError(f"fields[{name!r}]: expected a transform list, a Field, "
                                f"'index'/'onehot' or None, got {type(spec).__name__}")
            bindings.append(_Binding(name, field))
        return bindings, raw, "dict"

    # -- sizes and order ------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.source)   # a stream without a length raises TypeError here
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The record indices of ``epoch`` in the order they are batched."""
        n = len(self.source)
        if not self.shuffle:
            return np.arange(n, dtype=np.uint64)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, int(epoch)])))
        return rng.permutation(n).astype(np.uint64)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration runs (epochs also advance on their own)."""
        self._next_epoch, self._resume_batch = int(epoch), 0
        self._position = (int(epoch), 0)

    # -- resumable state ------------------------------------------------------------
    def state_dict(self) -> dict:
        """Where the consumer is: the next batch to be yielded. Small and JSON-serialisable."""
        epoch, batch = self._position
        return {"version": _STATE_VERSION, "epoch": epoch, "batch": batch, "seed": self.seed,
                "shuffle": self.shuffle, "batch_size": self.batch_size, "num_records": self._num_records()}

    def load_state_dict(self, state: dict) -> "Loader":
        """Continue exactly where ``state`` was taken: the next iteration yields the remaining batches."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown loader state version {state.get('version')!r}")
        for key, mine in (("seed", self.seed), ("shuffle", self.shuffle), ("batch_size", self.batch_size),
                          ("num_records", self._num_records())):
            if state[key] != mine:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this loader has {mine!r}")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        total = len(self) if self._num_records() is not None else None
        if batch < 0 or (total is not None and batch > total):
            raise ValueError(f"state batch {batch} outside [0, {total}]")
        if batch == total:
            epoch, batch = epoch + 1, 0
        self._next_epoch, self._resume_batch, self._position = epoch, batch, (epoch, batch)
        return self

    def _num_records(self):
        return len(self.source) if hasattr(self.source, "__len__") else None

    def _record_id(self, index: int) -> str:
        name = getattr(self.source, "record_id", None)
        return name(index) if name is not None and self._random_access else f"record {index}"

    # -- statistics -----------------------------------------------------------------
    def stats(self) -> dict:
        """Counters of the work so far, and every record skipped with its reason.

        ``wall_s`` is time spent inside the loader (not in the training step),
        ``wait_s`` the part of it spent waiting for workers, ``busy_s`` the
        workers' summed busy time.
        """
        s = dict(self._stats)
        busy, wait, wall = s.get("busy_s", 0.0), s.get("wait_s", 0.0), s.get("wall_s", 0.0)
        s["samples_per_s"] = s.get("samples", 0) / wall if wall else 0.0
        s["consumer_wait_fraction"] = wait / wall if wall else 0.0
        s["worker_utilisation"] = busy / (wall * max(self.workers, 1)) if wall else 0.0
        # Batches already complete when asked for: near 1, the training step is the bottleneck;
        # near 0 with high worker utilisation, the loader is (more workers or lighter transforms).
        s["ready_fraction"] = s.get("ready_batches", 0) / s["batches"] if s.get("batches") else 0.0
        s["failures"] = list(self._failures)
        s["buffer_bytes"] = self._ring.nbytes() if self._ring else 0
        return s

    # -- fluent methods that buffer batches -------------------------------------------
    def _buffering(self, what: str) -> None:
        if not self.copy:
            raise ValueError(f"{what} holds several batches at once, but batches are views of reused "
                             "buffers: create the Loader with copy=True")

    def prefetch(self, n: int = 2):
        self._buffering(".prefetch()")
        return super().prefetch(n)

    def shuffle(self, buffer_size: int, seed: int = 0):
        self._buffering(".shuffle()")
        return super().shuffle(buffer_size, seed)

    def batch(self, n: int, drop_last: bool = False):
        self._buffering(".batch()")
        return super().batch(n, drop_last)

    def map(self, fn, workers: int = 0, ordered: bool = True):
        if workers > 1:
            self._buffering("a threaded .map()")
        return super().map(fn, workers, ordered)

    # -- iteration ------------------------------------------------------------------
    def __iter__(self):
        epoch, start = self._next_epoch, self._resume_batch
        self._next_epoch, self._resume_batch = epoch + 1, 0
        return self._run(epoch, start)

    def _prepare(self):
        """Statistics passes some fields need (Standardize, a vocabulary), then the output declaration."""
        if self._outputs is not None:
            return
        needy = [b for b in self._bindings if type(b.field).prepare is not Field.prepare]
        if needy:   # one read of the records serves every field that needs a pass
            records = self.source.gather(np.arange(len(self.source), dtype=np.int64)) \
                if self._random_access else list(self.source)
            for b in needy:
                b.field.prepare(b.values(records))
        outputs = [o for b in self._bindings for o in b.field.outputs()]
        names = [o.name for o in outputs] + list(self._raw)
        if len(set(names)) != len(names):
            raise ValueError(f"two fields write the same output name: {names}")
        self._outputs = outputs

    def _slots(self) -> BatchRing:
        self._prepare()
        if self._ring is None:
            pin = self.output == "torch" and _cuda_available()
            self._ring = BatchRing(self._outputs, self.batch_size, self.prefetch_depth + 2, pin=pin)
        return self._ring

    def _plan(self, epoch: int, start: int):
        """(batch number, record indices, records or None) for each batch of the epoch from `start`."""
        B = self.batch_size
        if self._random_access:
            order = self.order(epoch)
            for b in range(start, len(self)):
                yield b, order[b * B:(b + 1) * B], None
            return
        # A stream: records in iteration order, indexed by position; resuming re-reads and skips.
        it = iter(self.source)
        for _ in itertools.islice(it, start * B):
            pass
        for b in itertools.count(start):
            records = list(itertools.islice(it, B))
            if not records or (self.drop_last and len(records) < B):
                return
            yield b, np.arange(b * B, b * B + len(records), dtype=np.uint64), records

    def _run(self, epoch: int, start: int):
        ring = self._slots()
        self._epoch_failures = 0
        plan = self._plan(epoch, start)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastload") if self.workers else None
        pending = collections.deque()
        self._position = (epoch, start)
        finished = False
        t0 = time.perf_counter()
        try:
            while True:
                # Up to `prefetch` batches ahead of the one consumed; batch b + prefetch
                # reuses the slot of b - 2, which the consumer has released.
                while len(pending) <= self.prefetch_depth:
                    nxt = next(plan, None)
                    if nxt is None:
                        break
                    pending.append(self._submit(pool, ring, epoch, *nxt))
                if not pending:
                    finished = True
                    break
                b, slot, futures, raw, n = pending.popleft()
                self._stats["ready_batches"] += all(f.done() for f in futures)
                tw = time.perf_counter()
                failures = {}
                for f in futures:
                    failures.update(f.result())
                self._stats["wait_s"] += time.perf_counter() - tw
                if failures:
                    n = self._apply_policy(slot, raw, n, failures)
                self._stats["batches"] += 1
                self._stats["samples"] += n
                self._position = (epoch, b + 1)
                self._stats["wall_s"] += time.perf_counter() - t0
                yield self._present(ring, b, slot, raw, n)
                t0 = time.perf_counter()
        finally:
            for *_, futures, _, _ in pending:
                for f in futures:
                    f.cancel()
            if pool is not None:
                pool.shutdown(wait=True)   # no thread writes into a slot after this returns
            plan.close()
        if finished:
            self._position = (epoch + 1, 0)

    def _submit(self, pool, ring, epoch, b, idx, records):
        slot = ring.acquire(b)
        raw = {name: [None] * len(idx) for name in self._raw}
        step = max(1, math.ceil(len(idx) / max(self.workers, 1)))
        futures = []
        for lo in range(0, len(idx), step):
            args = (slot, raw, lo, idx[lo:lo + step], None if records is None else records[lo:lo + step], epoch)
            if pool is None:
                f = Future()
                try:
                    f.set_result(self._fill_chunk(*args))
                except BaseException as e:  # surfaced by f.result() like a worker's error
                    f.set_exception(e)
            else:
                f = pool.submit(self._fill_chunk, *args)
            futures.append(f)
        return b, slot, futures, raw, len(idx)

    def _fill_chunk(self, slot, raw, lo, idx, records, epoch):
        """Runs on a worker thread: fetch a chunk's records, fill every field's rows. Returns {batch pos: (field, reason)}."""
        t = time.perf_counter()
        failures = {}
        try:
            if records is None:
                records = self.source.gather(idx)
        except RecordError:   # one bad record: fetch one at a time to find it
            records = []
            for j, i in enumerate(idx.tolist()):
                try:
                    records.append(self.source[i])
                except RecordError as e:
                    records.append(None)
                    failures[lo + j] = (None, e.reason)
        except Exception as e:   # a bug or an outage, not a bad record: stop, saying where
            raise StageError("source", self._chunk_ids(idx), e) from e
        ctx = ChunkContext(self.seed, epoch, idx)
        hi = lo + len(idx)
        for b in self._bindings:
            outs = {o.name: slot[o.name][lo:hi] for o in b.field.outputs()}
            try:
                bad = b.field.fill(b.values(records), outs, ctx)
            except Exception as e:
                raise StageError(f"field {b.field.name}", self._chunk_ids(idx), e) from e
            for j, reason in bad.items():
                failures.setdefault(lo + j, (b.field, reason))
        for name in self._raw:
            raw[name][lo:hi] = _Binding(name, None).values(records)
        with self._lock:
            self._stats["busy_s"] += time.perf_counter() - t
        return {pos: (field, reason, int(idx[pos - lo])) for pos, (field, reason) in failures.items()}

    def _chunk_ids(self, idx) -> str:
        """The records of a chunk, for an error that cannot be pinned on one of them."""
        ids = [self._record_id(int(i)) for i in idx[:3]]
        return ids[0] if len(idx) == 1 else f"one of {len(idx)} records: {', '.join(ids)}" + (
            ", ..." if len(idx) > 3 else "")

    def _apply_policy(self, slot, raw, n, failures) -> int:
        first = min(failures)
        field, reason, index = failures[first]
        if self.on_error == "raise":
            cls = getattr(field, "error_class", RecordError)
            where = f"field {field.name!r}: " if field is not None and len(self._bindings) > 1 else ""
            raise cls(self._record_id(index), where + reason)
        for pos in sorted(failures):
            field, reason, index = failures[pos]
            rid = self._record_id(index)
            self._failures.append((rid, reason))
            log.info("fastload: skipped %s: %s", rid, reason)
        self._stats["skipped"] += len(failures)
        self._epoch_failures += len(failures)
        budget = self.max_failures
        if budget is not None:   # per epoch: a fraction is of the epoch's records (or those seen, for a stream)
            total = self._num_records() or self._stats["samples"] + self._epoch_failures
            allowed = budget if isinstance(budget, int) else math.floor(budget * total)
            if self._epoch_failures > allowed:
                raise RecordError(self._record_id(index),
                                  f"{self._epoch_failures} records failed this epoch, over "
                                  f"max_failures={budget} (last: {reason})")
        if not self._warned:
            self._warned = True
            warnings.warn(f"fastload: skipping records that fail ({self._record_id(index)}: {reason}); "
                          "loader.stats()['failures'] lists them all", RuntimeWarning, stacklevel=3)
        keep = np.array([i for i in range(n) if i not in failures], dtype=np.intp)
        for arr in slot.values():
            arr[:len(keep)] = arr[keep]
        for name, values in raw.items():
            raw[name][:] = [values[i] for i in keep] + [None] * (len(values) - len(keep))
        return len(keep)

    def _present(self, ring, b, slot, raw, n):
        arrays = {o.name: slot[o.name][:n] for o in self._outputs}
        if self.copy:
            arrays = {k: v.copy() for k, v in arrays.items()}
        if self.output == "torch":
            arrays = _to_torch(arrays, self.device, ring, b, self.copy)
        for name in self._raw:
            arrays[name] = raw[name][:n]
        if self._shape == "single":
            batch = arrays[self._outputs[0].name]
        elif self._shape == "tuple":
            batch = tuple(arrays.values())
        else:
            batch = arrays
        return self.collate(batch) if self.collate is not None else batch


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _to_torch(arrays, device, ring, b, owned):
    import torch
    out = {k: torch.from_numpy(v) for k, v in arrays.items()}
    if device is not None and torch.device(device).type != "cpu":
        out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        if not owned and torch.device(device).type == "cuda":
            ev = torch.cuda.Event()
            ev.record()
            ring.guard(b, ev)   # the slot is refilled only after this copy has read it
    elif device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out
