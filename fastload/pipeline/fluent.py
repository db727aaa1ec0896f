"""Streaming composition: ``source.map(f).filter(p).batch(32).prefetch(2)``.

Every method returns a :class:`Stream`: a re-iterable description of the work.
Nothing runs until it is iterated, and each ``iter()`` starts a fresh pass over
the upstream. Streams give up random access, so a Loader takes a Source, not a
stream.

Threads. Only two operations start threads, and they belong to the iterator of
one pass, never to the Stream; both are nodes of :mod:`fastload.pipeline.node`:

* ``map(fn, workers=N)`` (N > 1) is a :class:`~fastload.pipeline.node.ThreadMap`
  with at most ``2 * N`` records in flight, in input order unless ``ordered=False``;
* ``prefetch(n)`` is a :class:`~fastload.pipeline.node.Prefetcher`: the upstream
  runs in one producer thread feeding a queue of ``n`` items.

Shutdown. Each pass closes the threads it started and its upstream iterator
when it is exhausted, when the consumer calls ``close()``, and when it is
garbage collected, which is what happens on leaving a ``for`` loop early.

Errors. An exception raised by a user function surfaces in the consumer's
thread as :class:`fastload.errors.StageError` naming the function and the
record (its position in the stream and a truncated repr), with the original
exception as ``__cause__``. A :class:`~fastload.errors.FailedRecord` (what a
source yields for a record it could not read) passes ``map`` and ``filter``
untouched, to reach the Loader that reports or skips it.

Epochs. A Loader tells a stream its epoch (``set_epoch``) before each pass, and
a stream passes it upstream: a shuffle then draws from ``(seed, epoch)``, so the
pass the Loader reads again to resume is the pass it left.
"""
from __future__ import annotations

import numbers
import itertools
import math
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import FailedRecord, StageError
from . import rng
from .node import Prefetcher, ThreadMap, close_iterator

__all__ = ["Fluent", "Stream", "buffered_shuffle", "mix", "stage_name", "record_context", "close_iterator"]

#: Records a shuffle buffer holds before the first comes out (a stream's lineage names other values only).
SHUFFLE_INITIAL = 100

def stage_name(fn: Any) -> str:
    """The name a stage is reported under: a Stage's ``name``, else the function's ``__name__``."""
    name = getattr(fn, "name", None)
    if isinstance(name, str):
        return name
    inner = getattr(fn, "func", None)          # functools.partial
    if inner is not None and callable(inner):
        return stage_name(inner)
    return getattr(fn, "__name__", None) or type(fn).__name__


def record_context(index: int, record: Any, width: int = 100) -> str:
    """``"#index <repr>"`` with the repr cut to ``width`` characters, for error messages."""
    try:
        text = repr(record)
    except Exception:   # a broken __repr__ must not hide the real error
        text = f"<{type(record).__name__}>"
    if len(text) > width:
        text = text[: width - 3] + "..."
    return f"#{index} {text}"


def _wrap(fn: Any, index: int, record: Any, exc: BaseException) -> StageError:
    err = StageError(stage_name(fn), record_context(index, record), exc)
    err.__cause__ = exc
    return err


class Fluent:
    """Mixin giving sources, loaders and streams their streaming methods."""

    def map(self, fn: Callable[[Any], Any], workers: int = 0, ordered: bool = True) -> "Stream":
        """``fn(record)`` for every record; with ``workers > 1`` in a thread pool (0 or 1: in the
        iterating thread)."""
        _positive("map workers", workers, least=0)
        if getattr(fn, "numbered", False):   # a compiled stage drawing by its batch's key (fastload.stages)
            out = Stream(partial(_map_stage, self, fn, workers, ordered), _length(self), self,
                         f"map({stage_name(fn)}, ordered=False)" if not ordered else f"map({stage_name(fn)})",
                         keyed="epoch")
            out.unordered = workers > 1 and not ordered
            return out
        if workers > 1:
            out = Stream(partial(_map_threaded, self, fn, workers, ordered), _length(self), self,
                         f"map({stage_name(fn)}, ordered=False)" if not ordered else f"map({stage_name(fn)})")
            out.unordered = not ordered
            return out
        return Stream(partial(_map, self, fn), _length(self), self, f"map({stage_name(fn)})")

    def filter(self, pred: Callable[[Any], bool]) -> "Stream":
        """The records for which ``pred(record)`` is true."""
        return Stream(partial(_filter, self, pred), None, self, f"filter({stage_name(pred)})")

    def batch(self, n: int, drop_last: bool = False) -> "Stream":
        """Lists of ``n`` consecutive records; the last one shorter unless ``drop_last``."""
        _positive("batch size", n)
        length = _length(self)
        if length is not None:
            length = length // n if drop_last else math.ceil(length / n)
        return Stream(partial(_batch, self, n, drop_last), length, self,
                      f"batch({n}, drop_last=True)" if drop_last else f"batch({n})")

    def unbatch(self) -> "Stream":
        """The elements of each batch; a tuple batch ``(xs, ys)`` yields ``(x, y)`` pairs, and a dict
        batch ``{"x": xs, "y": ys}`` (a Loader's) yields ``{"x": x, "y": y}``, one per record."""
        return Stream(partial(_unbatch, self), None, self, "unbatch()")

    def shuffle(self, buffer_size: int, seed: int = 0, initial: int = SHUFFLE_INITIAL) -> "Stream":
        """Shuffle through a buffer of ``buffer_size`` records (see :func:`buffered_shuffle`): each record
        out is drawn from the buffer and the record just read, as in WebDataset's shuffle, so even
        ``shuffle(1)`` moves records (by one place at a time).

        Records start coming out once ``initial`` are buffered, so the first batch does not
        wait for a full buffer. A pass draws from ``(seed, epoch)``, the epoch last given to
        ``set_epoch`` (a Loader gives it before each pass); until then pass ``k`` over the
        stream (its k-th ``iter()``) draws from ``(seed, k)``. Each pass differs, and the same
        seed replays the same sequence of passes.
        """
        _positive("buffer_size", buffer_size)
        _positive("initial", initial)
        seed = rng.check_seed(seed)
        # Named with every setting of its draws (initial by the default's absence): ranks compare it.
        more = "" if initial == SHUFFLE_INITIAL else f", initial={initial}"
        return Stream(partial(_shuffle, self, buffer_size, initial, seed), _length(self), self,
                      f"shuffle({buffer_size}, seed={seed}{more})", keyed="pass")

    def take(self, n: int) -> "Stream":
        """The first ``n`` records."""
        _count("take", n)
        length = _length(self)
        # unknown stays unknown: a filtered stream of 17 records was said to have 40 (n) of them
        return Stream(partial(_take, self, n), None if length is None else min(n, length), self, f"take({n})")

    def skip(self, n: int) -> "Stream":
        """All records but the first ``n``."""
        _count("skip", n)
        length = _length(self)
        return Stream(partial(_skip, self, n), None if length is None else max(length - n, 0), self, f"skip({n})")

    def prefetch(self, n: int = 2) -> "Stream":
        """Produce up to ``n`` records ahead in a background thread."""
        _positive("prefetch depth", n)
        return Stream(partial(_prefetch, self, n), _length(self), self, f"prefetch({n})")

    def batches(self, batch_size: int, labels: str = "index", shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, num_classes: int | None = None) -> "Stream":
        """``(list of paths, labels)`` batches from ``(path, label)`` records.

        ``labels="index"`` gives int64 labels of shape (N,); ``"onehot"`` float32 of
        shape (N, num_classes), with num_classes taken from ``self.classes`` unless
        given. ``shuffle`` permutes a random-access source by index, anew each pass: from
        ``(seed, epoch)`` once ``set_epoch`` gave an epoch, else ``(seed, k)`` for the k-th pass,
        as :meth:`shuffle` draws.
        """
        _positive("batch_size", batch_size)
        if labels not in ("index", "onehot"):
            raise ValueError(f"labels must be 'index' or 'onehot', got {labels!r}")
        if labels == "onehot" and num_classes is None:
            classes = getattr(self, "classes", None)
            if classes is None:
                raise ValueError("labels='onehot' needs num_classes= (this source has no .classes)")
            num_classes = len(classes)
        if shuffle and not (hasattr(self, "__getitem__") and _length(self) is not None):
            raise ValueError("shuffle=True needs a random-access source; use .shuffle(buffer_size) on a stream")
        seed = rng.check_seed(seed)
        length = _length(self)
        if length is not None:
            length = length // batch_size if drop_last else math.ceil(length / batch_size)
        depth = num_classes if labels == "onehot" else None
        more = (f", shuffle=True, seed={seed}" if shuffle else "") + (", drop_last=True" if drop_last else "")
        return Stream(partial(_label_batches, self, shuffle, seed, batch_size, drop_last, depth),
                      length, self, f"batches({batch_size}, {labels!r}{more})", keyed="pass")


class Stream(Fluent):
    """A re-iterable stream: ``iter()`` calls ``make_iter`` for a fresh pass.

    ``upstream``: what it reads, or a tuple of them (a mix). ``keyed``: a pass whose draws
    change with it gets, fixed at ``iter()``, ``make_iter(key)``: ``"pass"``, the epoch last
    given to :meth:`set_epoch`, else the count of passes so far; ``"epoch"``, that epoch or None.
    Made of picklable parts (``functools.partial`` of module functions), a stream pickles when
    what it reads and the functions it was given do (a Loader over it crosses ``spawn``).
    """

    unordered = False   # whether its order depends on threads (a map with ordered=False)

    def __init__(self, make_iter: Callable[..., Iterator[Any]], length: int | None = None,
                 upstream: Any = None, name: str = "stream", keyed: str | None = None):
        self._make_iter = make_iter
        self._length = length
        self._upstream = upstream
        self._epoch = None
        self.name = name
        self._keyed = keyed
        self._passes = 0   # passes begun (an int, not itertools.count: Python 3.14 cannot pickle that)

    # What a Loader asks of the stream it reads, answered by what this one reads: its steps
    # give the records of the same pass of their sources in the same order, so a source's
    # pass state, split, shards and order hold for them too.
    def _ups(self) -> tuple:
        ups = self._upstream if isinstance(self._upstream, tuple) else (self._upstream,)
        return tuple(up for up in ups if up is not None)

    def lineage(self) -> str:
        """What the stream is made of, down to its sources, with every setting that changes which
        records come out, in what order and how many (seeds, weights, buffers, counts): under
        torch.distributed the ranks compare it (a shuffle seeded per rank would give each rank
        its share of another order)."""
        parts = [getattr(up, "lineage", lambda: type(up).__name__)() for up in self._ups()]
        return f"{self.name} of {' + '.join(parts)}" if parts else self.name

    @property
    def split_by_node(self) -> str | None:
        """How a source it reads is split by node already, if one is (see :class:`~fastload.HFDataset`)."""
        return next((s for s in (getattr(up, "split_by_node", None) for up in self._ups()) if s), None)

    def pass_state(self, epoch: int):
        """What its sources' pass of ``epoch`` gave (see :meth:`~fastload.sources.shards.TarStream.pass_state`),
        one state per source it reads; None when none keeps one."""
        states = [getattr(up, "pass_state", lambda e: None)(epoch) for up in self._ups()]
        return None if all(st is None for st in states) else {"parts": states}

    def resume_pass(self, epoch: int, state: dict | None = None) -> None:
        """Its sources' next pass of ``epoch`` continues the one ``state`` describes (by default their last)."""
        parts = state["parts"] if state is not None else [None] * len(self._ups())
        for up, part in zip(self._ups(), parts):
            resume = getattr(up, "resume_pass", None)
            if resume is not None and (state is None or part is not None):
                resume(epoch, part)

    def local_shards(self) -> list[str]:
        """The local shards of what it reads (see :meth:`~fastload.TarShards.local_shards`)."""
        return [u for up in self._ups() for u in getattr(up, "local_shards", list)()]

    def local_listing(self):
        """The local files what it reads lists itself (see :meth:`~fastload.Source.local_listing`): one
        source's listing; of several (a mix) where one lists its files, each one's files, else its
        local shards by name and size, each name after its input's number, so a difference names
        the input. None when none lists its files (their local shards stand in, as alone)."""
        ups = self._ups()
        if len(ups) == 1:
            return getattr(ups[0], "local_listing", lambda: None)()
        from ..sources.paths import labelled
        from .ranks import listing_of   # here: ranks imports the sources, which import this module
        listed = [listing_of(up) for up in ups]
        if all(noun != "record" for _, noun in listed):
            return None
        return labelled({f"input {i}": listing.relative() for i, (listing, _) in enumerate(listed)
                         if listing is not None})

    def unordered_stage(self) -> str | None:
        """The name of a stage here or upstream whose order depends on threads, or None: each pass
        then gives the records in another order, so a position in it names no particular record."""
        if self.unordered:
            return self.name
        return next((s for s in (getattr(up, "unordered_stage", lambda: None)() for up in self._ups()) if s), None)

    def __iter__(self) -> Iterator[Any]:
        if self._keyed is None:
            return self._make_iter()
        if self._keyed == "epoch":
            return self._make_iter(self._epoch)
        if self._epoch is not None:
            return self._make_iter(self._epoch)
        p, self._passes = self._passes, self._passes + 1
        return self._make_iter(p)

    def set_epoch(self, epoch: int) -> None:
        """Draw the shuffles of later passes, here and upstream, from ``epoch`` instead of the pass count."""
        self._epoch = int(epoch)
        for up in self._upstream if isinstance(self._upstream, tuple) else (self._upstream,):
            set_epoch = getattr(up, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(f"the length of {self.name} is not known in advance")
        return self._length

    @property
    def classes(self):
        """The upstream source's class names, when it has them."""
        return getattr(self._upstream, "classes", None)

    def __repr__(self) -> str:
        return f"<Stream {self.name}>"


def mix(streams: Sequence[Iterable[Any]], weights: Sequence[float] | None = None, seed: int = 0,
        stop: str = "first") -> Stream:
    """Interleave ``streams``, drawing the next record from stream i with probability
    proportional to ``weights[i]`` (equal by default), deterministically from ``seed``
    (and, once ``set_epoch`` gave one, the epoch: each epoch of a Loader mixes anew).

    ``stop="first"`` ends the mix when any stream is exhausted, so the proportions
    hold to the end; ``stop="all"`` drops exhausted streams and renormalises the
    remaining weights until every stream is exhausted.
    """
    if not streams:
        raise ValueError("mix needs at least one stream")
    w = np.ones(len(streams)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(streams),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(streams)} non-negative numbers with a positive sum")
    if stop not in ("first", "all"):
        raise ValueError(f"stop must be 'first' or 'all', got {stop!r}")
    # The weights as given, each float's shortest exact repr: two weightings named alike draw alike.
    more = "" if (w == 1).all() else f", weights={[float(x) for x in w]}"
    return Stream(partial(_mix, list(streams), w, seed, stop), None, tuple(streams),
                  f"mix({len(streams)}{more}, seed={seed}" + (", stop='all')" if stop == "all" else ")"),
                  keyed="epoch")


# ---------------------------------------------------------------- passes


def _length(it: Any) -> int | None:
    try:
        return len(it)
    except TypeError:
        return None


def _positive(what: str, n: int, least: int = 1) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {type(n).__name__} {n!r}")
    if n < least:
        raise ValueError(f"{what} must be >= {least}, got {n}")


def _count(what: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{what} needs a count of records >= 0, got {n!r}")


def _records(upstream) -> Iterator[Any]:
    """What a record-level step reads: a source's records as :meth:`~fastload.Source.stream_records`
    gives them (a record that cannot be read as a FailedRecord), anything else as it iterates."""
    return upstream.stream_records() if hasattr(upstream, "stream_records") else iter(upstream)


def _map(upstream, fn) -> Iterator[Any]:
    it = _records(upstream)
    try:
        for i, rec in enumerate(it):
            if isinstance(rec, FailedRecord):
                yield rec
                continue
            try:
                out = fn(rec)
            except Exception as e:
                raise _wrap(fn, i, rec, e) from e
            yield out
    finally:
        close_iterator(it)


def _map_stage(upstream, stage, workers: int, ordered: bool, epoch: int | None) -> Iterator[Any]:
    """A map of a numbered compiled stage: with an epoch, the record at position ``p`` of the pass is
    keyed ``(epoch, p)`` (the same batches however the epoch is reached, resumed or interrupted);
    without one, batches are numbered by the stage's own count, in stream order (see
    :mod:`fastload.stages`)."""
    if epoch is None:
        return _map_numbered(upstream, stage, workers, ordered) if workers > 1 else _map(upstream, stage)
    call = partial(_keyed_call, stage, epoch)
    if workers > 1:
        return ThreadMap(_positions(upstream), call, workers, window=2 * workers, ordered=ordered,
                         name=f"map-{stage_name(stage)}", wrap=lambda i, item, e: _wrap(stage, i, item[1], e))
    return _map_keyed(upstream, stage, call)


def _positions(upstream) -> Iterator[tuple[int, Any]]:
    """(position, record) of a pass."""
    it = _records(upstream)
    try:
        yield from enumerate(it)
    finally:
        close_iterator(it)


def _map_keyed(upstream, stage, call) -> Iterator[Any]:
    it = _positions(upstream)
    try:
        for p, rec in it:
            try:
                out = call((p, rec))
            except Exception as e:
                raise _wrap(stage, p, rec, e) from e
            yield out
    finally:
        close_iterator(it)


def _keyed_call(stage, epoch: int, item):
    """``stage(record)`` for ``item = (position, record)``, keyed ``(epoch, position)``."""
    from ..stages import _call
    p, rec = item
    if isinstance(rec, FailedRecord):
        return rec
    _call.index = (epoch, p)
    try:
        return stage(rec)
    finally:
        _call.index = None


def _map_threaded(upstream, fn, workers: int, ordered: bool) -> Iterator[Any]:
    from ..stages import _call

    def apply(rec):
        if isinstance(rec, FailedRecord):
            return rec
        _call.threaded = True   # a numbered stage fn calls would be numbered in thread order: it refuses
        try:
            return fn(rec)
        finally:
            _call.threaded = False
    return ThreadMap(_records(upstream), apply, workers, window=2 * workers, ordered=ordered,
                     name=f"map-{stage_name(fn)}", wrap=lambda i, rec, e: _wrap(fn, i, rec, e))


def _map_numbered(upstream, stage, workers: int, ordered: bool) -> Iterator[Any]:
    """A threaded map of a numbered compiled stage: each record's number drawn in stream order as the
    map reads it, the stage told it on the thread that runs it. Numbers drawn for records read ahead
    and never yielded (a take(), a break) go back when the pass ends, so the next pass numbers on
    from the last record yielded, as a sequential map's would."""
    from ..stages import _call
    drawn = []   # the first number this pass drew

    def numbered():
        it = _records(upstream)
        try:
            for rec in it:
                index = None if isinstance(rec, FailedRecord) else stage._next_index()
                if index is not None and not drawn:
                    drawn.append(index)
                yield index, rec
        finally:
            close_iterator(it)

    def apply(item):
        index, rec = item
        if isinstance(rec, FailedRecord):
            return None, rec
        _call.index = index
        try:
            return index, stage(rec)
        finally:
            _call.index = None
    run = ThreadMap(numbered(), apply, workers, window=2 * workers, ordered=ordered, name=f"map-{stage_name(stage)}",
                    wrap=lambda i, item, e: _wrap(stage, i, item[1], e))
    after = None   # the number after the last one yielded
    try:
        for index, out in run:
            if index is not None:
                after = index + 1
            yield out
    finally:
        close_iterator(run)
        if ordered and drawn:   # in order, the numbers from `after` on were drawn but not yielded
            stage._rewind(drawn[0] if after is None else after)


def _filter(upstream, pred) -> Iterator[Any]:
    it = _records(upstream)
    try:
        for i, rec in enumerate(it):
            if isinstance(rec, FailedRecord):   # kept: the Loader counts it
                yield rec
                continue
            try:
                keep = pred(rec)
            except Exception as e:
                raise _wrap(pred, i, rec, e) from e
            if keep:
                yield rec
    finally:
        close_iterator(it)


def _batch(upstream, n: int, drop_last: bool) -> Iterator[list]:
    it = iter(upstream)
    try:
        while True:
            chunk = list(itertools.islice(it, n))
            if not chunk or (drop_last and len(chunk) < n):
                return
            yield chunk
    finally:
        close_iterator(it)


def _unbatch(upstream) -> Iterator[Any]:
    it = iter(upstream)
    try:
        for b in it:
            if isinstance(b, dict):
                yield from _rows(b, "dict batch's value", "")
            elif isinstance(b, tuple):
                yield from (tuple(row.values()) for row in _rows(dict(enumerate(b)), "tuple batch's element", ""))
            else:   # a batch of one array (a Loader's: rows copied out of its slot), or a list
                yield from _own_rows(b)
    finally:
        close_iterator(it)


def _rows(batch: dict, what: str, prefix: str) -> list[dict]:
    """One dict per record of a batch's columns (``what`` they are, for errors); a column that is
    itself a dict (a collated column of dicts) gives each record its own. Iterating a dict would
    give its keys, and zip would silently drop the longer columns' tails."""
    columns = {k: _rows(v, what, f"{prefix}{k}.") if isinstance(v, dict) else v for k, v in batch.items()}
    lengths = {}
    for k, v in columns.items():
        try:
            lengths[f"{prefix}{k}"] = len(v)
        except TypeError:
            raise ValueError(f"unbatch: the {what} {prefix + str(k)!r} ({type(v).__name__}) has no "
                             "length; each needs one value per record") from None
    if len(set(lengths.values())) > 1:
        raise ValueError(f"unbatch: the {what}s differ in length {lengths}; each needs one value per record")
    return [dict(zip(columns, row)) for row in zip(*(_own_rows(v) for v in columns.values()))]


def _own_rows(column):
    """A column's values, one per record, each a copy where iterating would give views: a row view
    keeps its whole batch (a Loader's pooled buffer) alive, so a shuffle buffer of S rows from
    batches of B would hold about S * ln(B) / B whole batches. (A NumPy vector's values are
    scalars, copies already; a torch vector's are 0-d views.)"""
    ndim = getattr(column, "ndim", 0)
    if ndim > 1 and isinstance(column, np.ndarray):
        return [row.copy() for row in column]
    if ndim > 0 and type(column).__module__.startswith("torch"):
        return [row.clone() for row in column]
    return column


def buffered_shuffle(records: Iterable, size: int, gen: np.random.Generator,
                     initial: int = SHUFFLE_INITIAL) -> Iterator:
    """``records`` through a shuffle buffer of ``size``: each one out is drawn uniformly from the buffer.

    The first record comes out when record ``min(initial, size) + 1`` goes in, as in
    WebDataset's shuffle: waiting for a full buffer would hold the first batch (and every
    pass's start) until ``size`` records were read, a whole epoch of a small set. Until the
    buffer holds ``size`` it takes two records in for each one out; then one for one; at
    the end it is emptied in a random order. The draws come from ``gen`` a block at a time:
    one call per record cost more than reading a small record.
    """
    buf: list = []
    target = min(initial, size)
    draws: Iterator[float] = iter(())
    for rec in records:
        buf.append(rec)
        if len(buf) <= target:
            continue
        u = next(draws, None)
        if u is None:
            draws = iter(gen.random(1024).tolist())
            u = next(draws)
        j = min(int(u * len(buf)), len(buf) - 1)   # u * n may round up to n
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()
        target = min(target + 1, size)
    for j in gen.permutation(len(buf)).tolist():
        out, buf[j] = buf[j], None
        yield out


def _shuffle(upstream, size: int, initial: int, seed: int, pass_: int) -> Iterator[Any]:
    it = _records(upstream)
    try:
        yield from buffered_shuffle(it, size, rng.generator(seed, rng.SHUFFLE, pass_), initial)
    finally:
        close_iterator(it)


def _take(upstream, n: int) -> Iterator[Any]:
    if n <= 0:
        return
    it = _records(upstream)
    try:
        for i, rec in enumerate(it, 1):
            yield rec
            if i >= n:
                return
    finally:
        close_iterator(it)


def _skip(upstream, n: int) -> Iterator[Any]:
    it = _records(upstream)
    try:
        for _ in itertools.islice(it, n):
            pass
        yield from it
    finally:
        close_iterator(it)


def _prefetch(upstream, n: int) -> Iterator[Any]:
    return Prefetcher(partial(_records, upstream), n,
                      name=f"prefetch-{getattr(upstream, 'name', type(upstream).__name__)}")


def _label_batches(upstream, shuffle: bool, seed: int, size: int, drop_last: bool, num_classes: int | None,
                   pass_: int):
    if shuffle:   # a random-access source, by index in the pass's order
        order = rng.generator(seed, rng.BATCHES, pass_).permutation(len(upstream))
        records = (upstream[int(i)] for i in order)
    else:
        records = iter(upstream)
    try:
        while True:
            chunk = list(itertools.islice(records, size))
            if not chunk or (drop_last and len(chunk) < size):
                return
            paths = [r[0] for r in chunk]
            idx = np.fromiter((r[1] for r in chunk), dtype=np.int64, count=len(chunk))
            if num_classes is None:
                yield paths, idx
                continue
            if len(idx) and (idx.min() < 0 or idx.max() >= num_classes):
                raise ValueError(f"label out of range for {num_classes} classes in batch starting at {paths[0]!r}")
            onehot = np.zeros((len(idx), num_classes), dtype=np.float32)
            onehot[np.arange(len(idx)), idx] = 1.0
            yield paths, onehot
    finally:
        close_iterator(records)


def _mix(streams: list, weights: np.ndarray, seed: int, stop: str, epoch: int | None) -> Iterator[Any]:
    gen = rng.generator(seed, rng.MIX) if epoch is None else rng.generator(seed, rng.MIX, epoch)
    its = [_records(s) for s in streams]
    active = list(range(len(its)))
    try:
        while active:
            p = weights[active]
            if p.sum() <= 0:
                return
            for k in gen.choice(len(active), size=1024, p=p / p.sum()):
                src = active[k]
                try:
                    rec = next(its[src])
                except StopIteration:
                    if stop == "first":
                        return
                    active.remove(src)
                    break   # redraw with the remaining weights
                yield rec
    finally:
        for it in its:
            close_iterator(it)
