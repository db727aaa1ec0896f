"""The Loader: a builder of nodes that turn records into leased batch slots.

For each ``iter(loader)`` it composes (files in ``fastload/pipeline/``)::

    Sampler (sampler.py)        this rank's record indices per batch, from one global order
      -> _chunks (here)         a leased slot per batch (memory/pool.py), split into chunk tasks
      -> ThreadMap (node.py)    worker threads run each field's compiled fill into its rows
      -> _LoaderIter (here)     gathers a batch's chunks, applies the error policy, presents it

At most ``prefetch`` batches are in flight ahead of the consumer. Each yielded
batch holds a lease on its slot (see :mod:`fastload.memory.pool`), so it stays
valid for as long as anyone references it; a synchronous loop cycles through
``prefetch + 2`` slots without copying.

Everything random is a pure function of ``(seed, epoch, record index)``: the
order (:mod:`fastload.pipeline.rng`) and every augmentation (counter-based in
the kernels). Batches are identical for any number of workers and, for the
same global batch, any world size; ``state_dict()`` is an (epoch, global
sample offset) position that resumes exactly, at any worker count or world size.

Batch ``b`` holds the records at its positions of the epoch's order; under
``on_error="skip"`` a failed record is dropped from its batch (which comes out
shorter), never replaced, so skipping changes neither other batches nor the
resume point. A batch whose records all failed is not yielded: another stands in, so that every
rank yields as many batches (README, "Errors").
"""
from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import numbers
import os
import threading
import time
import warnings
from collections.abc import Iterator

import numpy as np

from .._optional import check, need
from ..errors import FailedRecord, RecordError, StageError, named_record
from ..image.field import Image, ImageField, _dtype_name
from ..memory.heap import keep_freed_memory
from ..memory.pool import SlotPool
from ..ops.labels import Labels
from ..sources.base import ListSource
from . import rng
from .collate import collate_values
from .fields import ChunkContext, Field
from .fluent import Fluent
from .node import Node, ThreadMap, check_process, close_iterator, close_unless_running
from .node import usable_cores as _cores   # (a module name, so tests can pin it)
from .ranks import check_same_records
from .sampler import Sampler, distributed_world, epoch_order

__all__ = ["Loader"]

log = logging.getLogger("fastload")
_STATE_VERSION = 2
_IMAGE_OPTIONS = ("dtype", "layout", "exif", "max_pixels", "dct_scale", "reducing_gap", "interpolation", "scale")
_OUTPUTS = ("numpy", "torch", "jax")
_MAX_FAILURES_KEPT = 1000          # failures listed per epoch; the totals count every one
_PREPARE_CHUNK = 2048              # records per read of a preparation pass
_COUNTERS = ("samples", "batches", "skipped", "stand_ins", "ready_batches", "busy_s", "cpu_s", "wait_s",
             "wall_s", "elapsed_s")
_STOP_S = 0.05                     # a worker looks at the stop flag about this often
_WHOLE_BATCH_S = 0.01              # a batch filled faster than this is one worker's task (see _LoaderIter)
_FIRST_TRIES = 100                 # records read, under on_error="skip", to find one that shows the fields
_NAMES = frozenset(("__key__", "__url__"))   # a streamed shard sample's name: a column only when fields= names it


def _warn_absent(fields: dict, known, whose: str) -> None:
    """Warn of names in fields= that the records do not have: a misspelt name would otherwise be a
    column of None, or a field failing every record over a value it was never given."""
    absent = [k for k in fields if k not in known and k not in _NAMES]
    if absent:
        warnings.warn(f"fastload: fields {absent} are not fields of {whose} {list(known)}: a "
                      "record without one gives None there (or fails, for a field that needs a value)",
                      RuntimeWarning, stacklevel=4)


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
    """Batches of training samples from a :class:`~fastload.Source` (or a re-iterable stream of records).

    ``for images, labels in Loader(fl.ImageFolder(root), batch_size=64, transforms=[...])``
    yields NumPy arrays (torch tensors with ``output="torch"``, JAX arrays with
    ``output="jax"``) that are views of reused buffers, each holding a lease on
    its buffer: a batch stays valid for as long as it is referenced. ``copy=True``
    yields arrays the caller owns outright (each batch filled in a new buffer of its own,
    so nothing is copied).

    Records with several fields (``fl.zip``/``fl.join``, dicts) take
    ``fields={name: spec}``: a list of image transforms, a :class:`Field`
    (``fl.Image``, ``fl.Tokenize``, ``fl.Standardize``, ...), ``"index"``/``"onehot"``
    for labels, or ``None`` for the raw values as a list. Fields not named pass
    through collated (numbers and equal-shape arrays stacked, as tensors of the
    ``output`` framework when they hold numbers; others as lists): a dict
    record's keys, or a tuple record's positions (``fields={1: "index"}``), as
    the first record has them; a key only later records have is left out, with
    a warning naming it. A plain sequence of records (a list, a map-style torch
    ``Dataset``) is read as a :class:`~fastload.ListSource`.

    ``transforms=[...]`` (and a transform list in ``fields=``) is the short form
    of ``fl.Image([...])``, with the image options it owns (``dtype``,
    ``layout``, ``exif``, ``max_pixels``, ``dct_scale``, ``reducing_gap``,
    ``interpolation``, ``scale``) accepted as keywords; ``layout="auto"`` (the
    default) is NHWC for JAX output, else NCHW. A built image field owns its
    options: a keyword (or JAX's NHWC) that differs from its own is refused.

    A batch is a tuple ``(images, labels)`` for a source of ``(path, label)`` records given
    ``transforms=``, else a dict by field name; ``as_tuple=True``/``False`` asks for either
    (a tuple in ``fields=`` order). ``collate``: a function applied to each batch as it is
    yielded (after the framework conversion). ``workers`` threads fill batches, at most
    ``prefetch`` ahead; ``on_error`` ("raise" or "skip") and ``max_failures`` say what a record
    that fails does; ``max_memory`` bounds the reused batch buffers a consumer keeping batches
    makes grow; ``pin_memory`` page-locks them for a GPU (torch output).

    Under ``torchrun`` (or with ``rank=``/``world_size=``) each rank yields its
    part of every global step; see :mod:`fastload.pipeline.sampler`.
    """

    def __init__(self, source, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, transforms=None, fields=None, labels: str = "index",
                 workers: int = 2, prefetch: int = 2, output: str = "numpy", device=None,
                 copy: bool = False, on_error: str | None = None, max_failures=None,
                 as_tuple: bool | None = None, collate=None, rank: int | None = None,
                 world_size: int | None = None, max_memory: int | None = None, pin_memory: bool | None = None,
                 **image_options):
        self._init = dict(source=source, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                          transforms=transforms, fields=fields, labels=labels, workers=workers, prefetch=prefetch,
                          output=output, device=device, copy=copy, on_error=on_error, max_failures=max_failures,
                          as_tuple=as_tuple, collate=collate, rank=rank, world_size=world_size,
                          max_memory=max_memory, pin_memory=pin_memory, **image_options)
        unknown = set(image_options) - set(_IMAGE_OPTIONS)
        if unknown:
            raise TypeError(f"Loader got unexpected keyword argument(s) {sorted(unknown)}")
        self._random_access = hasattr(source, "__len__") and hasattr(source, "__getitem__")
        if self._random_access and not hasattr(source, "gather"):   # a list, a torch map-style Dataset
            source = ListSource(source, type(source).__name__)
        if not self._random_access and not hasattr(source, "__iter__"):
            raise TypeError(f"Loader needs a Source or an iterable of records, got {type(source).__name__}")
        # IterableRecords says so itself: iter() on it would spend the iterator it wraps.
        # Not iter(source) is source: that begins a pass of a stream (a TarStream drops a resumed plan).
        if not self._random_access and (getattr(source, "one_shot", False) or isinstance(source, Iterator)):
            raise TypeError("Loader needs a re-iterable stream (each epoch iterates it again), got a one-shot "
                            "iterator: wrap its factory, e.g. fl.IterableRecords(lambda: cursor_rows())")
        if not self._random_access and shuffle:
            raise ValueError("a stream cannot be shuffled by index: shuffle it with .shuffle(buffer_size, seed) first")
        # Python ints from here on (np.int64(16) made state_dict() unwritable as JSON)
        batch_size = _check_int("batch_size", batch_size, 1)
        workers = _check_int("workers", workers, 0)
        prefetch = _check_int("prefetch", prefetch, 1)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {list(_OUTPUTS)}, got {output!r}")
        if output != "numpy":   # here, not at the first batch
            check(output, f"output={output!r}", f"fastload[{output}]")
        if on_error is None:
            on_error = "skip" if max_failures is not None else "raise"
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if self._random_access and len(source) == 0:
            raise ValueError("the source has no records")
        self.source, self.batch_size, self.seed = source, batch_size, rng.check_seed(seed)
        self.shuffled, self.drop_last, self.workers, self.prefetch_depth = bool(shuffle), drop_last, workers, prefetch
        self.output, self.copy, self.collate = output, copy, collate
        self.on_error, self.max_failures = on_error, _check_budget(max_failures)
        self.rank, self.world_size = distributed_world(rank, world_size)
        self._auto_world = rank is None and world_size is None
        self._ranks_compared = False   # whether the ranks have checked that they hold the same records
        self.max_memory = max_memory
        from .device import DeviceTransfer       # validates device= and pin_memory= now, imports nothing heavy
        # JAX places batches itself: device= is then a jax Device or Sharding (e.g.
        # fl.integrations.jax.batch_sharding() to split the batch over local devices).
        if output == "jax" and (isinstance(device, (str, int)) or type(device).__module__.split(".")[0] == "torch"):
            # "cuda" and torch.device are torch's names: JAX wants its own object
            raise TypeError(f"output='jax' takes a jax Device or Sharding as device=, got {device!r} (e.g. "
                            "jax.devices('gpu')[0], or fl.integrations.jax.batch_sharding())")
        if pin_memory and output != "torch":   # pinned slots serve torch's non-blocking copies alone
            raise ValueError(f"pin_memory=True pins the slots for torch's non-blocking copies to the GPU: use "
                             f"output='torch' (got output={output!r})")
        self._jax_target = device if output == "jax" else None
        self._device = None if output == "jax" else DeviceTransfer.create(device, output, pin_memory)
        given = {k: v for k, v in image_options.items() if not (k == "layout" and v == "auto")}
        if image_options.get("layout", "auto") == "auto":
            image_options["layout"] = "NHWC" if output == "jax" else "NCHW"
        self._passthrough: list[str] = []      # record fields that no spec names: collated as they are
        self._known = None                     # a dict record's fields that have a column (dict batches)
        self._unknown: set = set()             # fields of later records that have none: warned of once
        self._order = None                     # the fields= names in the caller's order
        self._bindings, self._raw, self._shape = self._bind(source, transforms, fields, labels, image_options, given)
        if as_tuple is not None:
            self._shape = "tuple" if as_tuple else "dict"
        self._sampler = Sampler(len(source) if self._random_access else 0, batch_size, drop_last,
                                self.rank, self.world_size)
        if self._random_access and self._sampler.steps(0) == 0:   # a training loop that silently does nothing
            warnings.warn(f"fastload: drop_last=True with batch_size={batch_size} and {len(source)} records"
                          + (f" over {self.world_size} ranks" if self.world_size > 1 else "")
                          + ": no batch is full, so every epoch is empty", RuntimeWarning, stacklevel=2)
        if self._jax_target is not None:   # a sharding must split every batch, the last one too
            from ..integrations.jax import check_batches
            if drop_last or self.world_size > 1:   # every batch full (ranks pad the last step)
                last = batch_size
            else:
                last = len(source) % batch_size or batch_size if self._random_access else None
            check_batches(self._jax_target, batch_size, last, skip=on_error == "skip")
        self._threads = 0      # fill threads the last pass ran (see _LoaderIter._begin)
        self._outputs = None   # declared by the fields once they are prepared
        self._tuple = None     # a tuple batch's array names, in order (see _prepare)
        self._pool: SlotPool | None = None
        self._position = (0, 0)          # (epoch, global sample offset) of the next batch
        self._stream_plan = None         # (epoch, a stream's pass state) loaded, for its resumed pass
        self._kept_order = None          # ((epoch, records, shuffle, seed), order) last drawn
        self._lock = threading.Lock()
        self._epoch_failures: dict[int, _EpochFailures] = {}   # by epoch: a peek at another keeps this one's
        self._report_epoch = None        # whose failures stats() gives: the epoch last iterated
        self._warned = False
        self._stats = collections.Counter()
        self._per_sample_s = 0.0         # running mean fill time of one sample (sizes sub-chunks)
        self._pass_began = (0.0, 0.0, 0)  # busy_s, cpu_s, filled of _stats when the latest pass began
        self._measured = None            # (wall s, CPU s) a sample took in a pass before (see _begin)

    def keras(self, **kwargs):
        """This loader as a Keras 3 data adapter: ``model.fit(loader.keras(), epochs=...)``.

        Keyword arguments (``inputs=``, ``targets=`` for dict batches) go to
        :class:`fastload.integrations.keras.KerasDataset`.
        """
        need("keras", "loader.keras()", "fastload[keras] (and a backend: torch, jax or tensorflow)")
        from ..integrations.keras import KerasDataset
        return KerasDataset(self, **kwargs)

    def tf_dataset(self, **kwargs):
        """This loader as a ``tf.data.Dataset``: each pass is the loader's next epoch.

        Keyword arguments (``prefetch=``) go to :func:`fastload.integrations.tf.as_dataset`.
        """
        need("tensorflow", "loader.tf_dataset()", "fastload[tf]")
        from ..integrations.tf import as_dataset
        return as_dataset(self, **kwargs)

    def __reduce__(self):
        """Pickles as its arguments and position (the compiled plan is rebuilt), e.g. across spawn."""
        return _rebuild, (self._init, self._position, self._stream_plan)

    # -- construction ---------------------------------------------------------------
    def _bind(self, source, transforms, fields, labels, image_options, given):
        """(bindings, raw fields, batch shape). ``given``: the image options the caller set, which
        transform lists take and built image fields must already have."""
        num_classes = len(getattr(source, "classes", ()) or ()) or getattr(source, "num_classes", None)
        if fields is None:
            if transforms is None:
                raise ValueError("give transforms=[...] for image records, or fields={...}")
            first = self._first_record()
            if isinstance(first, dict):
                raise ValueError("records are dicts: say what to do with each field through fields={...}")
            image = self._image_field("image", transforms, image_options)
            if isinstance(first, tuple) and len(first) == 2:
                return [_Binding(0, image), _Binding(1, Labels(num_classes, labels, name="label"))], [], "tuple"
            return [_Binding(None, image)], [], "single"
        if transforms is not None:
            raise ValueError("give either transforms= or fields=, not both")
        bindings, raw, takers = [], [], 0   # takers: fields the image options apply to
        for name, spec in fields.items():
            if spec is None:
                raw.append(name)
                continue
            if isinstance(spec, str):
                field = Labels(num_classes, spec, name=name)
            elif isinstance(spec, Field):
                field = spec
                field.name = name
                takers += _check_built_image(name, field, given, self.output)
            elif isinstance(spec, (list, tuple)):
                takers += 1
                field = self._image_field(name, spec, image_options)
            else:
                raise TypeError(f"fields[{name!r}]: expected a transform list, a Field, "
                                f"'index'/'onehot' or None, got {type(spec).__name__}")
            bindings.append(_Binding(name, field))
        if given and not takers:
            raise TypeError(f"Loader image options {sorted(given)} apply to image fields, and fields= has none")
        declared = set(fields)
        record_fields = getattr(source, "fields", None)
        if record_fields:
            _warn_absent(fields, record_fields, "the source's records, which have")
        else:   # WebDataset's __key__ and __url__ only when fields= names them
            first = self._first_record()
            if isinstance(first, dict):
                record_fields = tuple(k for k in first if k not in _NAMES)
                _warn_absent(fields, first, "the first record, which has")
            elif isinstance(first, (tuple, list)):   # positions, as fields={1: "index"} names them
                bad = [k for k in fields if not (isinstance(k, numbers.Integral) and 0 <= k < len(first))]
                if bad:
                    raise ValueError(f"records are {type(first).__name__}s of {len(first)} values: fields= names "
                                     f"positions 0..{len(first) - 1}, got {bad}")
                record_fields = tuple(range(len(first)))
            elif first is not None and fields:   # one value a record (a path, an array): no field to name
                key = next(iter(fields))
                raise ValueError(f"records are single values ({type(first).__name__}s, such as {first!r:.80}), not "
                                 f"dicts or tuples, so fields= names none of them (got {sorted(map(str, fields))}): "
                                 "give image transforms as transforms=[...], or name the values with "
                                 f"fl.zip({key}=source) and keep fields={{{key!r}: ...}}"
                                 if isinstance(key, str) and key.isidentifier() else
                                 "give image transforms as transforms=[...], or name the values with "
                                 "fl.zip(name=source) and fields={'name': ...}")
            else:
                record_fields = ()
        self._passthrough = [k for k in record_fields if k not in declared]
        self._known = frozenset(record_fields) | declared | _NAMES
        self._order = list(fields)   # a tuple batch's (see _prepare)
        return bindings, raw, "dict"

    def _image_field(self, name, transforms, options):
        transforms = list(transforms)
        if self._device is not None:
            transforms, options = self._device.device_image(name, transforms, options)
        return Image(transforms, name=name, **options)

    def _first_record(self):
        """The first record, whose shape tells the fields apart. Under ``on_error="skip"`` the first of
        the first ``_FIRST_TRIES`` that reads: an unreadable record 0 is skipped like any other."""
        records = self._leading_records()
        tried, failed = 0, None
        try:
            for record in itertools.islice(records, _FIRST_TRIES):
                tried += 1
                if not isinstance(record, FailedRecord):
                    return record
                if self.on_error == "raise":
                    raise record.error()
                failed = failed or record
        finally:
            close_iterator(records)
        if failed is None:
            raise ValueError(f"the source has no records: {self.source!r}")
        raise RecordError(repr(self.source), f"none of its first {tried} records could be read, so its fields "
                                             f"are unknown (the first: {failed.where}: {failed.reason})")

    def _leading_records(self):
        """The source's records in order, a FailedRecord in place of each that cannot be read (under
        ``on_error="raise"`` a random-access source's own error is raised as it is)."""
        if not self._random_access:
            yield from self.source
            return
        for i in range(len(self.source)):
            try:
                yield self.source[i]
            except RecordError as e:
                if self.on_error == "raise":
                    raise
                yield FailedRecord(self._record_id(i), e.reason)
            except Exception as e:   # a bug or an outage, as a batch's read reports it: naming the record
                raise StageError("source", self._record_id(i), e) from e

    # -- sizes and order ------------------------------------------------------------
    def __len__(self) -> int:
        """Batches this rank yields in a whole epoch. For a stream, only one that knows its length
        (``fl.IterableRecords(..., length=n)``, a ``.map`` of it), run on one process: its batches
        when none fails whole."""
        self._check_world()
        if self._random_access:
            return self._sampler.steps(0)
        try:
            n = len(self.source)
        except TypeError:
            raise TypeError(f"a stream has no length known in advance ({type(self.source).__name__})") from None
        if self.world_size > 1:
            raise TypeError(f"a stream's batches per rank are not known in advance ({type(self.source).__name__} "
                            f"of {n} records over {self.world_size} ranks)")
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _check_world(self) -> None:
        """Look an auto-detected world up again: a Loader made, or unpickled, before
        ``init_process_group`` (as under ``mp.spawn``) would otherwise give each rank every record."""
        if self._auto_world:
            world = distributed_world(None, None)
            if world != (self.rank, self.world_size):
                self.rank, self.world_size = world
                self._sampler = Sampler(self._sampler.n, self.batch_size, self.drop_last, *world)

    def order(self, epoch: int) -> np.ndarray:
        """The record indices of ``epoch`` in the global order they are batched."""
        return self._epoch_order(_check_epoch(epoch)).copy()

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """``order(epoch)``, kept for the epoch last asked (read-only): batch_at(b) would otherwise
        draw the whole permutation for each batch, an epoch of them quadratic in its records."""
        key, kept = (epoch, len(self.source), self.shuffled, self.seed), self._kept_order
        if kept is None or kept[0] != key:
            order = epoch_order(key[1], self.shuffled, self.seed, epoch)
            order.flags.writeable = False
            self._kept_order = kept = (key, order)
        return kept[1]

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of ``epoch``.

        Without it a Loader continues where its last iterator stopped: the rest
        of an epoch left early, else the next epoch.
        """
        self._position, self._stream_plan = (_check_epoch(epoch), 0), None

    # -- resumable state ------------------------------------------------------------
    def state_dict(self) -> dict:
        """Where the consumer is: the next batch to be yielded. Small and JSON-serialisable."""
        self._check_world()
        epoch, offset = self._position
        if self._random_access and offset and self._sampler.steps(offset) == 0:
            # after an epoch's last batch: the next epoch's start, as iteration goes on (a Keras
            # fit(initial_epoch=state["epoch"]) would otherwise run the empty rest as an epoch)
            epoch, offset = epoch + 1, 0
        state = {"version": _STATE_VERSION, "epoch": epoch, "batch": self._batches_done(offset), "offset": offset,
                 "seed": self.seed, "shuffle": self.shuffled, "batch_size": self.batch_size,
                 "drop_last": bool(self.drop_last), "world_size": self.world_size,
                 "num_records": self._num_records()}
        lineage = getattr(self.source, "lineage", None)
        if lineage is not None:   # a stream's own draws (shuffle buffers, seeds) order it
            state["lineage"] = lineage()
        pass_state = getattr(self.source, "pass_state", None)
        if offset and pass_state is not None and not self._random_access:   # what the pass gave, to give again
            loaded = self._loaded_plan(epoch)
            state["stream"] = loaded if loaded is not None else pass_state(epoch)
        with self._lock:   # this rank's failures so far this epoch: max_failures bounds the whole epoch
            failures = self._epoch_failures.get(epoch)
            if offset and failures is not None and failures.count:
                state["failed"] = {"count": failures.count, "samples": failures.samples}
        return state

    def load_state_dict(self, state: dict) -> "Loader":
        """Continue exactly where ``state`` was taken (at any worker count or world size)."""
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict needs the dict state_dict() returned, got {type(state).__name__}")
        if state.get("version") not in (1, _STATE_VERSION):
            raise ValueError(f"unknown loader state version {state.get('version')!r}")
        needed = ("epoch", "batch", "seed", "shuffle", "batch_size", "num_records")
        missing = [k for k in needed if k not in state]
        if missing:
            raise ValueError(f"loader state lacks {missing}; pass what state_dict() returned")
        lineage = getattr(self.source, "lineage", None)
        for key, mine in (("seed", self.seed), ("shuffle", self.shuffled), ("batch_size", self.batch_size),
                          ("num_records", self._num_records()), ("drop_last", bool(self.drop_last)),
                          ("lineage", lineage() if lineage is not None else None)):
            if key in state and state[key] != mine:   # drop_last and lineage: states saved since
                what = "a stream made as " if key == "lineage" else f"{key}="
                raise ValueError(f"state was saved with {what}{state[key]!r}, this loader has {mine!r}")
        epoch, batch = _check_epoch(state["epoch"]), state["batch"]
        saved = Sampler(self._sampler.n, self.batch_size, self.drop_last, 0, int(state.get("world_size", 1)))
        total = saved.steps(0) if self._random_access else None
        if not isinstance(batch, numbers.Integral) or batch < 0 or (total is not None and batch > total):
            raise ValueError(f"state batch {batch!r} outside [0, {total}]")
        if "offset" in state:   # the position itself: after a resume on another world size, not a whole step
            offset = state["offset"]
            n = self._sampler.n if self._random_access else None
            if not isinstance(offset, numbers.Integral) or offset < 0 or (n is not None and offset > n) \
                    or math.ceil(offset / saved.global_batch) != batch:
                raise ValueError(f"state offset {offset!r} does not match batch {batch}")
        else:   # version 1: whole global steps
            offset = saved.offset_after(0, batch) if self._random_access else batch * saved.global_batch
        self._position = (epoch, int(offset))
        failed = state.get("failed")
        with self._lock:
            self._epoch_failures.pop(epoch, None)
            if failed and int(state.get("world_size", 1)) == self.world_size:   # per rank: the same ranks
                kept = self._epoch_state(epoch)
                kept.count, kept.samples = int(failed["count"]), int(failed["samples"])
        resume = getattr(self.source, "resume_pass", None)
        self._stream_plan = None
        if state.get("stream") is not None and resume is not None and not self._random_access:
            resume(epoch, state["stream"])   # checked now; applied when the pass resumed begins (_plan),
            self._stream_plan = (epoch, state["stream"])   # after any preparation pass over the stream
        return self

    def _loaded_plan(self, epoch: int) -> dict | None:
        """The stream pass state load_state_dict gave for ``epoch``, not yet resumed."""
        plan = self._stream_plan
        return plan[1] if plan is not None and plan[0] == epoch else None

    def _num_records(self):
        return len(self.source) if self._random_access else None

    def _batches_done(self, offset: int) -> int:
        return math.ceil(offset / self._sampler.global_batch)

    def _record_id(self, index: int, record=None) -> str:
        name = getattr(self.source, "record_id", None)
        if name is not None and self._random_access:
            try:
                return name(index)
            except Exception:   # a dataset's record that cannot be read cannot name itself either
                return f"{getattr(self.source, 'name', type(self.source).__name__)}[{index}]"
        if isinstance(record, FailedRecord):
            return record.where
        if isinstance(record, dict) and "__key__" in record:   # a streamed shard's sample names itself
            return f"{record['__url__']}:{record['__key__']}" if "__url__" in record else str(record["__key__"])
        return named_record(f"record {index}", record)

    # -- statistics -----------------------------------------------------------------
    def stats(self) -> dict:
        """Counters of the work so far, and this epoch's skipped records with their reasons.

        ``wall_s`` is time spent inside the loader (not in the training step),
        ``wait_s`` the part of it spent waiting for workers, ``busy_s`` the
        workers' summed busy time (``cpu_s``: the CPU time of it), ``elapsed_s`` the
        time from the start of each pass to its latest batch (the training step's
        included): ``samples_per_s`` is the rate the loop received,
        ``worker_utilisation`` the busy share of that time of the threads that ran
        (no more than the cores, where the work computes; see ``threads``). ``skipped`` counts every skip since creation;
        ``failures`` lists this epoch's, one per record, at most 1000; ``stand_ins``
        counts batches yielded in place of one whose every record failed.
        """
        with self._lock:   # every counter, 0 before its first count
            s = {k: self._stats[k] for k in _COUNTERS}
            state = self._epoch_failures.get(self._report_epoch, _EpochFailures())
            s["failed_this_epoch"], s["failures"] = state.count, list(state.failures.items())
        busy, wait, wall, elapsed = s["busy_s"], s["wait_s"], s["wall_s"], s["elapsed_s"]
        # over the time the loop ran, not the time inside the loader: with the step the bottleneck,
        # that was 80x the rate received, and the workers' prefetching made them "busy" 250%
        s["samples_per_s"] = s["samples"] / elapsed if elapsed else 0.0
        s["consumer_wait_fraction"] = wait / wall if wall else 0.0
        s["threads"] = self._threads or max(self.workers, 1)
        s["worker_utilisation"] = busy / (elapsed * s["threads"]) if elapsed else 0.0
        # Batches already complete when asked for: near 1, the training step is the bottleneck;
        # near 0 with high worker utilisation, the loader is (more workers or lighter transforms).
        s["ready_fraction"] = s["ready_batches"] / s["batches"] if s["batches"] else 0.0
        s["buffer_bytes"] = self._pool.nbytes() if self._pool else 0
        s["buffer_slots"] = len(self._pool) if self._pool else 0
        return s

    # -- iteration ------------------------------------------------------------------
    def _check_columns(self) -> None:
        """Never a batch of {}: refused at the first read (a Loader asked only for order() is fine)."""
        if self._shape == "dict" and not self._bindings and not self._raw and not self._passthrough:
            raise ValueError(f"fields={self._init['fields']!r} leaves batches without a column: the records are "
                             "not dicts or tuples whose fields pass through; name what to batch, e.g. "
                             "fields={'image': [...]}")

    def _check_ranks(self) -> None:
        """Once, at the first read under a process group: every rank's source holds the same records,
        and every rank cuts them into steps alike (ranks.py). Not at len(), which a rank may ask
        alone (a progress bar on rank 0)."""
        self._check_world()
        if not self._ranks_compared:
            epoch, offset = self._position
            settings = {"seed": self.seed, "shuffle": self.shuffled, "batch_size": self.batch_size,
                        "drop_last": bool(self.drop_last), "start": f"epoch {epoch} record {offset}"}
            lineage = getattr(self.source, "lineage", None)
            if lineage is not None:   # a stream's own draws (a shuffle buffer's seed) order it too
                settings["stream"] = lineage()
            self._ranks_compared = check_same_records(self.source, self.rank, self.world_size, settings)

    def __iter__(self):
        self._check_columns()
        self._check_ranks()
        epoch, offset = self._position
        self._check_stream(offset)
        if self._random_access and offset and self._sampler.steps(offset) == 0:   # resumed at the epoch's end
            epoch, offset = epoch + 1, 0
        return _LoaderIter(self, epoch, offset)

    def _check_stream(self, offset: int) -> None:
        """A stream read by position (a rank's share, a resumed epoch's rest) must give its records in
        one order on every pass, and one sharded by rank must be the whole stream."""
        if self._random_access:
            return
        split = getattr(self.source, "split_by_node", None)
        if split is not None and self.world_size > 1:
            raise ValueError(f"the stream is {split} already, and a Loader on {self.world_size} ranks takes each "
                             "rank's share of what it reads: half the data or more would never be read. Give the "
                             "Loader the dataset before split_dataset_by_node (it shards by rank, keeping every "
                             "rank's batch count equal for DDP)")
        stage = getattr(self.source, "unordered_stage", lambda: None)()
        if stage is None or (self.world_size == 1 and offset == 0):
            return
        why = f"each of the {self.world_size} ranks would take its share" if self.world_size > 1 else \
            "the resumed epoch would skip its first records"
        raise ValueError(f"{stage} gives the records in the order its threads finish them, another order each "
                         f"pass, and {why} of another order: records would be read twice or never. "
                         "Give that map ordered=True (the default)")

    def batch_at(self, b: int, epoch: int | None = None):
        """Batch ``b`` of ``epoch`` (default: the current one), computed in the calling thread.

        A pure function of ``(seed, epoch, b)``: the same batch iteration yields, so
        frameworks can fetch batches by index from their own threads. Under
        ``on_error="skip"`` a batch whose every record failed is stood in for as
        iteration does (by the next batch that reads, or another rank's; not counted in
        ``stand_ins``, which counts batches yielded); RecordError only when no batch of
        the epoch reads, on any rank.
        """
        if not self._random_access:
            raise TypeError("batch_at needs a random-access source")
        self._check_columns()
        self._check_ranks()
        epoch = self._position[0] if epoch is None else _check_epoch(epoch)
        steps = self._sampler.steps(0)
        if not 0 <= b < steps:
            raise IndexError(f"batch {b} out of range for {steps} batches per epoch")
        job, batch = self._fill_now(epoch, b, peek=True)
        if batch is None:
            batch, _ = self._stand_in(epoch, 0, b, count=False)
        if batch is None:
            raise RecordError(self._chunk_ids(job.idx), f"every record of batch {b} failed, and every other "
                              f"batch's of the epoch ({self._none_read(epoch, 0)})")
        return batch

    def __getitem__(self, index):
        # What torch's DataLoader(loader) calls first (and Python's own "not subscriptable" says nothing
        # of batches); iter() and len() never call it.
        raise TypeError("a fastload Loader already yields whole batches: iterate it directly (for batch in "
                        "loader) instead of wrapping it in torch.utils.data.DataLoader; batch_size=, workers=, "
                        "output='torch' and device= do what DataLoader's batching, workers and pinning would, "
                        "and loader.batch_at(b) gives batch b by index")

    def _fill_now(self, epoch: int, b: int, count: bool = True, base: int = 0, peek: bool = False):
        """(job, batch or None) of batch ``b`` of ``epoch`` (counted from global sample ``base``),
        filled in the calling thread (``peek``: for batch_at)."""
        job = _Job(self, self._slots(), epoch, b, self._epoch_order(epoch)[self._sampler.positions(base, b)], None)
        job.peek = peek
        return job, self._fill_whole(job, count)

    def _fill_whole(self, job, count: bool = True):
        """The batch of ``job`` (or None), every chunk filled in the calling thread."""
        failures = {}
        for chunk in job.chunks():
            failures.update(self._fill_chunk(chunk))
        return self._finish(job, failures, count)

    # -- preparation ------------------------------------------------------------------
    def _prepare(self):
        """Statistics passes some fields need (Standardize, a vocabulary), then the output declaration."""
        if self._outputs is not None:
            return
        for b in self._bindings:
            f = b.field
            needs = getattr(f, "needs_prepare", type(f).prepare is not Field.prepare)
            if not needs:
                continue
            chunks = (b.values(records) for records in self._prepare_records())
            if hasattr(f, "prepare_chunks"):
                f.prepare_chunks(chunks)
            else:   # an iterable of values, read lazily: a field may stop early
                f.prepare(v for chunk in chunks for v in chunk)
        by_key = {b.key: b.field.outputs() for b in self._bindings}
        outputs = [o for outs in by_key.values() for o in outs]
        names = [o.name for o in outputs] + list(self._raw) + list(self._passthrough)
        if len(set(names)) != len(names):
            raise ValueError(f"two fields write the same output name: {names}")
        self._outputs = outputs
        # A tuple batch follows fields= order (a field's outputs side by side), then the pass-through
        # columns: ``text, label, x = batch`` binds what fields= names, whatever kind of field each is.
        self._tuple = [name for key in (self._order or by_key)
                       for name in ([o.name for o in by_key[key]] if key in by_key else [key])] + self._passthrough

    def _prepare_records(self):
        """The records in chunks, for a preparation pass; unreadable ones follow the error policy (None)."""
        if not self._random_access:
            it = iter(self.source)
            while True:
                chunk = list(itertools.islice(it, _PREPARE_CHUNK))
                if not chunk:
                    return
                yield chunk
        n = len(self.source)
        for lo in range(0, n, _PREPARE_CHUNK):
            idx = np.arange(lo, min(lo + _PREPARE_CHUNK, n), dtype=np.int64)
            records, failures = self._read(idx)
            for j, reason in failures.items():
                if self.on_error == "raise":
                    raise RecordError(self._record_id(int(idx[j])), reason)
            yield records

    def _slots(self) -> SlotPool:
        with self._lock:
            if self._pool is None:
                self._prepare()
                # copy=True: workers fill buffers the consumer will own (a device's tensors are new anyway)
                owned = self.copy and not (self._device and self._device.to_device)
                self._pool = SlotPool(self._outputs, self.batch_size, self.prefetch_depth + 2,
                                      pin=bool(self._device and self._device.pin),
                                      max_bytes=self.max_memory,
                                      guard_release=self._device.guard_release if self._device else None,
                                      owned=owned)
            return self._pool

    # -- work on worker threads -------------------------------------------------------
    def _read(self, idx):
        """The records at ``idx`` and {position: reason} for those that could not be read."""
        failures = {}
        try:
            records = self.source.gather(idx)
        except RecordError:   # one bad record: fetch one at a time to find it
            records = []
            for j, i in enumerate(idx.tolist()):
                try:
                    records.append(self.source[i])
                except RecordError as e:
                    records.append(None)
                    failures[j] = e.reason
            return records, failures
        except Exception as e:   # a bug or an outage, not a bad record: stop, naming the record that raises
            for i in idx.tolist() if len(idx) > 1 else ():
                try:
                    self.source[i]
                except Exception as one:
                    raise StageError("source", self._record_id(i), one) from one
            raise StageError("source", self._chunk_ids(idx), e) from e
        if not isinstance(records, list):   # a tuple, a generator: one pass, with a length
            records = list(records)
        if len(records) != len(idx):   # short, the batch's last rows would hold an earlier batch's values
            raise StageError("source", self._chunk_ids(idx), ValueError(
                f"{type(self.source).__name__}.gather returned {len(records)} records for {len(idx)} indices"))
        return records, failures

    def _fill_chunk(self, chunk, stop=None):
        """Fetch a chunk's records, fill every field's rows. Returns {batch position: (field, reason, record id)}."""
        job, lo, idx, records = chunk
        t, cpu0 = time.perf_counter(), time.thread_time()
        failures, ids = {}, records
        if records is None:
            records, bad = self._read(idx)
            failures = {j: (None, reason) for j, reason in bad.items()}
            ids = records
        elif any(isinstance(r, FailedRecord) for r in records):   # a stream could not read these
            failures = {j: (None, r.reason) for j, r in enumerate(records) if isinstance(r, FailedRecord)}
            records = [None if j in failures else r for j, r in enumerate(records)]
        # A record that is None (a stage that returned nothing) has no values: every field would
        # report its own symptom (a NaN, a missing key), not the cause.
        failures.update({j: (None, "the record is None") for j, r in enumerate(records)
                         if r is None and j not in failures})
        if self._known is not None:
            self._note_unknown(records, idx, ids)
        indices = idx.astype(np.uint64, copy=False)
        slot = job.lease.arrays
        # Sub-chunks sized to take about _STOP_S each: a stop (close, Ctrl-C) is seen between them,
        # so a chunk of large images never holds shutdown up, and small images still go 64 at a time.
        # Until a sample has been timed, one at a time: the first chunk may be of images taking a
        # second each, and one small sub-chunk costs small images nothing.
        a = 0
        while a < len(idx):
            if stop is not None and stop.is_set():
                return {}
            n = max(1, min(64, int(_STOP_S / self._per_sample_s))) if self._per_sample_s else 1
            b_ = min(a + n, len(idx))
            t_sub = time.perf_counter()
            for r0, r1 in _runs(a, b_, failures):   # a record that could not be read has no values to fill
                ctx = ChunkContext(self.seed, job.epoch, indices[r0:r1])
                part = records[r0:r1]
                for b in self._bindings:
                    outs = {o.name: slot[o.name][lo + r0:lo + r1] for o in b.field.outputs()}
                    try:
                        bad = b.field.fill(b.values(part), outs, ctx)
                    except Exception as e:
                        raise StageError(f"field {b.field.name}", self._chunk_ids(idx[r0:r1], part), e) from e
                    _check_failures(b.field, bad, r1 - r0)
                    for j, reason in bad.items():
                        failures.setdefault(r0 + j, (b.field, self._named(b.field) + reason))
            per = (time.perf_counter() - t_sub) / (b_ - a)
            self._per_sample_s = per if not self._per_sample_s else 0.8 * self._per_sample_s + 0.2 * per
            a = b_
        hi = lo + len(idx)
        for name in job.extra:
            job.extra[name][lo:hi] = _Binding(name, None).values(records)
        wall, cpu = time.perf_counter() - t, time.thread_time() - cpu0
        with self._lock:
            self._stats["busy_s"] += wall
            self._stats["cpu_s"] += cpu
            self._stats["filled"] += len(idx)
        return {lo + j: (field, reason, self._record_id(int(idx[j]), ids[j]))
                for j, (field, reason) in failures.items()}

    def _note_unknown(self, records, idx, ids) -> None:
        """Warn, once per name, of a record field that has no column: the columns are fields= and the
        first record's fields, so one that only later records have would vanish from every batch."""
        known = self._known
        for j, r in enumerate(records):
            if isinstance(r, dict) and not known.issuperset(r):
                with self._lock:
                    new = [k for k in r if k not in known and k not in self._unknown]
                    self._unknown.update(new)
                if new:
                    warnings.warn(f"fastload: {self._record_id(int(idx[j]), ids[j])} has fields {new}, which "
                                  f"the first record lacks: batches leave them out (their columns are the first "
                                  f"record's fields); name them in fields= (None for a list of the values, None "
                                  f"where a record lacks one)", RuntimeWarning, stacklevel=2)

    def _named(self, field) -> str:
        """The prefix naming a failing field: any of fields=, or of an (image, label) pair; not a lone
        transforms= image, whose failure is the record's."""
        return f"field {field.name!r}: " if self._order is not None or len(self._bindings) > 1 else ""

    def _chunk_ids(self, idx, records=None) -> str:
        """The records of a chunk, for an error that cannot be pinned on one of them."""
        ids = [self._record_id(int(i), records[j] if records is not None else None) for j, i in enumerate(idx[:3])]
        return ids[0] if len(idx) == 1 else f"one of {len(idx)} records: {', '.join(ids)}" + (
            ", ..." if len(idx) > 3 else "")

    # -- the error policy and presentation ----------------------------------------------
    def _finish(self, job, failures, count: bool = True):
        """The batch to yield for a filled job, or None when every record of it failed.

        ``count=False``: the failures are not counted, listed or warned about (a stand-in
        batch's, which are counted when that batch comes in its own turn)."""
        n = job.n
        if failures:
            n = job.kept = self._apply_policy(job, failures, count)
        if n == 0:
            return None
        return self._present(job, n)

    def _stand_in(self, epoch: int, start: int, step: int, count: bool = True):
        """(batch, records kept) yielded in place of batch ``step`` of a pass from global sample
        ``start``, every record of which failed: the first batch after it (wrapping round the
        epoch) with a record that reads; when none of this rank's does, the first other rank's
        share of that step, then of the steps after it, that reads; (None, 0) when no batch of the
        epoch reads on any rank.

        So a rank yields len(loader) batches whatever fails: a collective per step (DDP's
        all-reduce) needs the same count on every rank, and Keras the count it was told. The
        batches are those of the epoch's grid the pass is on (from 0, unless it was resumed on
        another world size), so a resumed pass picks what the uninterrupted one would, and the
        choice depends on (seed, epoch, step, rank) alone, as batch_at's does.
        ``count=False``: not counted in ``stand_ins`` (batch_at's, which is not yielded)."""
        G, W = self._sampler.global_batch, self.world_size
        base = start % G
        steps = self._sampler.steps(base)
        b = (start - base) // G + step
        order = self._epoch_order(epoch)
        shares = itertools.chain(((self.rank, (b + k) % steps) for k in range(1, steps)),
                                 (((self.rank + j) % W, (b + k) % steps) for k in range(steps) for j in range(1, W)))
        samplers = {self.rank: self._sampler}   # another rank's made once, when first asked
        for rank, s in shares:
            if rank not in samplers:
                samplers[rank] = Sampler(self._sampler.n, self.batch_size, self.drop_last, rank, W)
            job = _Job(self, self._slots(), epoch, s, order[samplers[rank].positions(base, s)], None)
            batch = self._fill_whole(job, count=False)
            if batch is not None:
                with self._lock:
                    self._stats["stand_ins"] += count
                return batch, job.kept
        return None, 0

    def _none_read(self, epoch: int, start: int) -> str:
        """How many records failed, and the first with its reason, for the error of an epoch (a pass
        from global sample ``start``) none of whose batches reads on any rank."""
        W = self.world_size
        with self._lock:
            state = self._epoch_state(epoch)
            first, failed = next(iter(state.failures.items()), None), state.count
        if self._random_access:   # _stand_in tried every rank's batches of the epoch
            G, n = self._sampler.global_batch, self._num_records()
            base = start % G
            held = min(self._sampler.steps(base) * G, n if W > 1 else n - base)   # ranks pad from the start
            what = f"all {held} records its batches hold" + (" on every rank" if W > 1 else "") + \
                (f", of the source's {n}" if held < n else "")
        else:
            what = f"all {failed} records this rank read" + \
                (", and the other ranks' shares of the same steps" if W > 1 else "")
        return what + (f"; the first: {first[0]}: {first[1]}" if first else "")

    def _refill(self, last):
        """(batch, records kept) of a streamed batch made again from its records, as it was."""
        epoch, step, idx, records = last
        job = _Job(self, self._slots(), epoch, step, idx, records)
        return self._fill_whole(job, count=False), job.kept

    def _stand_in_from_step(self, job):
        """(batch, records kept) in place of a streamed batch every record of which failed: the next
        rank's share of the same global step that reads; (None, 0) when none does. Every rank then
        yields a batch for the step, or (the whole step failed) every rank skips it: their counts
        stay equal, which a collective per step needs."""
        records, start = job.step_records
        B, W = self.batch_size, self.world_size
        for k in range(1, W):
            pos = np.arange(B) + ((self.rank + k) % W) * B
            pos %= len(records)
            other = _Job(self, self._slots(), job.epoch, job.step, (start + pos).astype(np.uint64),
                         [records[p] for p in pos])
            batch = self._fill_whole(other, count=False)
            if batch is not None:
                with self._lock:
                    self._stats["stand_ins"] += 1
                return batch, other.kept
        return None, 0

    def _apply_policy(self, job, failures, count: bool = True) -> int:
        first = min(failures)
        field, reason, rid = failures[first]
        if self.on_error == "raise":
            cls = getattr(field, "error_class", RecordError)
            raise cls(rid, reason)
        if count:
            self._count_failures(job, failures)
        keep = np.array([i for i in range(job.n) if i not in failures], dtype=np.intp)
        for arr in job.lease.arrays.values():
            arr[:len(keep)] = arr[keep]
        for name, values in job.extra.items():
            values[:] = [values[i] for i in keep] + [None] * (len(values) - len(keep))
        return len(keep)

    def _epoch_state(self, epoch: int) -> "_EpochFailures":
        """The failures of ``epoch`` (under the lock); only the last few epochs are kept."""
        state = self._epoch_failures.get(epoch)
        if state is None:
            state = self._epoch_failures[epoch] = _EpochFailures()
            for old in [e for e in self._epoch_failures if e < epoch - 2]:
                del self._epoch_failures[old]
        return state

    def _count_failures(self, job, failures) -> None:
        """List, count and log a batch's failures; over max_failures, raise naming the last."""
        with self._lock:
            state = self._epoch_state(job.epoch)
            if not job.peek or self._report_epoch is None:
                self._report_epoch = job.epoch
            # A batch made again (batch_at, a framework's peek, the epoch replayed, a padded step)
            # fails the same records: each counts once an epoch, or a peek would eat into
            # max_failures. Counted by position, so a file listed twice fails twice.
            new = []
            for pos in sorted(failures):
                key = int(job.idx[pos])
                if key not in state.seen:
                    state.seen.add(key)
                    new.append(failures[pos])
            for field, reason, rid in new:
                if len(state.failures) < _MAX_FAILURES_KEPT:
                    state.failures.setdefault(rid, reason)
                log.info("fastload: skipped %s: %s", rid, reason)
            self._stats["skipped"] += len(new)
            state.count += len(new)
            failed, seen = state.count, state.samples
        field, reason, rid = (new or [failures[max(failures)]])[-1]
        budget = self.max_failures
        if budget is not None:   # per epoch and rank: a fraction is of this rank's records (those seen, streamed)
            n = self._num_records()
            # a stream's records so far: this batch's good ones too (they count once yielded, after
            # this check, and without them a first batch with a failure was over any fraction < 1)
            total = min(n, len(self) * self.batch_size) if n else seen + (job.n - len(failures)) + failed
            allowed = budget if isinstance(budget, int) else math.floor(budget * total)
            # checked again for failures counted before: a pass begun again after the error goes
            # no further than the one that raised it
            if failed > allowed:
                raise RecordError(rid, f"{failed} records failed this epoch, over "
                                  f"max_failures={budget} (last: {reason})")
        if not new:
            return
        if not self._warned:   # naming the first: the one a user looks for first
            self._warned = True
            _, reason, rid = new[0]
            warnings.warn(f"fastload: skipping records that fail ({rid}: {reason}); "
                          "loader.stats()['failures'] lists them", RuntimeWarning, stacklevel=5)

    def _present(self, job, n):
        lease = job.lease
        if self._pool.owned:   # nothing else holds or reuses these buffers (rows of records that failed cut off)
            arrays = {k: a if len(a) == n else a[:n] for k, a in lease.arrays.items()}
        else:
            arrays = {o.name: lease.view(o.name, n) for o in self._pool.outputs}
        for name in self._raw:
            arrays[name] = job.extra[name][:n]
        for name in self._passthrough:
            arrays[name] = collate_values(job.extra[name][:n], name)
        # The fields' arrays become the framework's tensors, and so do pass-through columns of
        # numbers (a consumer calls .to(device) on every one); strings and objects stay lists.
        # (Those inside a column of dicts too, keyed by their path.)
        tensors = {o.name: arrays[o.name] for o in self._pool.outputs}
        for k in self._passthrough:
            tensors.update(_numeric_leaves(arrays[k], k))
        converted = None
        if self._device is not None:
            converted = self._device.transfer(tensors, lease, job.target, job.copied if n == job.n else None)
        elif self.output == "torch":
            import torch
            converted = {k: torch.from_numpy(v) for k, v in tensors.items()}
        elif self.output == "jax":   # int64 narrowed to int32 only after checking it fits (JAX without x64)
            from ..integrations.jax import device_put
            converted = device_put(tensors, self._jax_target)
        for key, value in (converted or {}).items():
            _place(arrays, key, value)
        if self._shape == "single":
            batch = arrays[self._outputs[0].name]
        elif self._shape == "tuple":
            batch = tuple(arrays[name] for name in self._tuple)
        else:
            batch = arrays
        return self.collate(batch) if self.collate is not None else batch


class _EpochFailures:
    """One epoch's failed records: each counted once, by its position; the first reasons kept."""
    __slots__ = ("failures", "seen", "count", "samples")

    def __init__(self):
        self.failures: dict[str, str] = {}   # record name -> reason, capped
        self.seen: set[int] = set()           # positions counted
        self.count = self.samples = 0         # records failed; records yielded (streams' fraction)


class _Job:
    """One batch being filled: its lease, record indices and the raw values collected alongside.
    ``peek``: made for batch_at, not for the pass being iterated. ``target``, ``copied``: where a
    pass sends its batches, and the copies queued there once every chunk was filled."""
    __slots__ = ("epoch", "step", "idx", "records", "lease", "extra", "n", "kept", "step_records", "peek",
                 "left", "failed", "target", "copied")

    def __init__(self, loader, pool, epoch, step, idx, records):
        self.epoch, self.step, self.idx, self.records = epoch, step, idx, records
        self.step_records = None
        self.peek = self.failed = False
        self.left = self.target = self.copied = None
        self.lease = pool.acquire(len(idx))
        self.n = self.kept = len(idx)
        names = list(loader._raw) + list(loader._passthrough)
        self.extra = {name: [None] * self.n for name in names}

    def chunks(self, rows: int | None = None, target=None):
        """(job, first row, indices, records) per chunk of ``rows`` (the whole batch by default);
        ``target``: where the pass sends the batch."""
        step = rows or self.n
        self.left, self.target = -(-self.n // step), target
        for lo in range(0, self.n, step):
            yield self, lo, self.idx[lo:lo + step], None if self.records is None else self.records[lo:lo + step]

    def chunk_filled(self, failed: bool, lock) -> bool:
        """Counts one filled chunk: True for the last of a job none of whose records failed."""
        with lock:
            self.failed |= failed
            self.left -= 1
            return self.left == 0 and not self.failed


def _fill(loader, stop, chunk):
    """A worker's task: (job, rows, failures) of one chunk. With a target (a device), the thread
    that fills a job's last chunk queues its copy there at once, not when the consumer asks for the
    batch. A job with failures is copied when it is presented: the error policy may rewrite its rows."""
    job = chunk[0]
    failures = loader._fill_chunk(chunk, stop)
    if job.target is not None and job.chunk_filled(bool(failures), loader._lock) and not stop.is_set():
        job.copied = loader._device.prefetch({k: a[:job.n] for k, a in job.lease.arrays.items()}, job.lease,
                                             job.target)
    return job, len(chunk[2]), failures


def _plan(L, pool, epoch, offset):
    """The jobs (leased slot + record indices) of an epoch from ``offset``."""
    if L._random_access:
        order = L._epoch_order(epoch)
        for step, idx in L._sampler.batches(order, offset):
            yield _Job(L, pool, epoch, step, idx, None)
        return
    # A stream: records in iteration order, numbered by position; resuming re-reads and skips,
    # so a stream that shuffles is told the epoch to draw its order from.
    set_epoch = getattr(L.source, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    resume = getattr(L.source, "resume_pass", None)
    loaded, L._stream_plan = L._loaded_plan(epoch), None
    if offset and resume is not None:   # the records skipped must be those the pass left had given
        resume(epoch, loaded)
    it = iter(L.source)
    try:
        G, B, r = L._sampler.global_batch, L.batch_size, L.rank
        for _ in itertools.islice(it, offset):
            pass
        for step in itertools.count():
            records = list(itertools.islice(it, G))
            if not records or (L.drop_last and len(records) < G):
                return
            pos = np.arange(r * B, r * B + B)
            pos = pos[pos < len(records)] if L.world_size == 1 else pos % len(records)
            start = offset + step * G
            job = _Job(L, pool, epoch, step, (start + pos).astype(np.uint64), [records[p] for p in pos])
            job.step_records = (records, start)   # every rank's share: a stand-in comes from another
            yield job
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _LoaderIter(Node):
    """One pass of a Loader from (epoch, offset) to the end of that epoch."""

    def __init__(self, loader: Loader, epoch: int, offset: int):
        self.loader, self.name = loader, "loader"
        keep_freed_memory()   # once per process: see fastload.memory.heap
        self._busy = threading.Lock()
        self._pid = os.getpid()
        self._begin(epoch, offset)

    def _begin(self, epoch: int, offset: int):
        loader = self.loader
        self.epoch, self.offset, self.start = epoch, offset, offset
        pool = loader._slots()
        pool.trim()   # slots grown for batches a consumer kept, now released
        loader._position = (epoch, offset)
        # Nothing the threads or the job generator hold refers back to this iterator, so
        # dropping it (leaving a for loop early) closes it at once.
        self._jobs = _plan(loader, pool, epoch, offset)
        # A fill that computes gains nothing from more threads than cores: they only take turns on
        # them, each batch finishing late, in chunks that each pay their Python (16 workers on 2
        # cores were 1.7x slower at 64 px). Its CPU time is near its wall time once the stretch of
        # threads sharing the cores is allowed for; then as many threads run as there are cores. A
        # fill that waits (on reads, the source's included) keeps every worker. Judged by a pass's
        # totals, not by the last few chunks: these, taking turns with 7 others for the GIL, read
        # as waiting one pass in four. A pass of under a batch (a peek) keeps the judgement before.
        with loader._lock:
            now = tuple(loader._stats[k] for k in ("busy_s", "cpu_s", "filled"))
            wall, cpu, n = (a - b for a, b in zip(now, loader._pass_began))
            if n >= loader.batch_size or (n and loader._measured is None):
                loader._measured = (wall / n, cpu / n)
            loader._pass_began = now
        wall, cpu = loader._measured or (0.0, 0.0)
        cores, workers = _cores(), loader.workers
        computes = bool(wall) and workers > 0 and cpu >= 0.5 * min(1.0, cores / workers) * wall
        threads = min(workers, cores) if computes else workers
        loader._threads = max(threads, 1)   # what stats() divides the busy time by
        # Cheap samples (small images; known from the epochs before): each batch is one thread's
        # task and the threads fill different batches, so the per-chunk work in Python and the
        # hand-offs are paid once a batch rather than once per thread (5% of the CPU at 64 px).
        # Only where the window still keeps every thread busy; otherwise a batch is split across
        # the threads, which also gives the first batch soonest.
        per = loader._per_sample_s
        whole = bool(per) and per * loader.batch_size <= _WHOLE_BATCH_S \
            and loader.prefetch_depth + 1 >= threads > 1
        rows = self.rows_per_chunk = loader.batch_size if whole else math.ceil(loader.batch_size / max(threads, 1))
        target = loader._device.target() if loader._device is not None else None
        chunks = (c for job in self._jobs for c in job.chunks(rows, target))   # (not self: dropping it closes it)
        per_batch = math.ceil(loader.batch_size / self.rows_per_chunk)
        stop = threading.Event()
        self.upstream = ThreadMap(chunks, functools.partial(_fill, loader, stop), threads,
                                  window=(loader.prefetch_depth + 1) * per_batch, name="fill", kind="compiled",
                                  stop=stop, inside="a chunk fill (reading its records, or one sample's decode "
                                  "or Field.fill)")
        self._yielded = self.failed = 0
        self.unreadable = False   # no batch of the epoch reads, on any rank: nothing can stand in
        # A distributed stream's step none of whose shares read here: this rank's last batch made
        # again from its records (_last: epoch, step, indices, records; not the batch, whose slot
        # would stay leased), or, before it had one, its next batch twice (_owed, then _again).
        self._last, self._owed, self._again = None, 0, 0
        self._closed = False
        self._since = time.perf_counter()   # elapsed_s counts from here to each batch

    def state_dict(self) -> dict:
        """The Loader's (:meth:`Loader.state_dict`): where its next iterator would begin."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        raise RuntimeError("a Loader resumes before it is iterated: loader.load_state_dict(state), then iter(loader)")

    def __next__(self):
        check_process(self._pid, "this Loader iterator", "create a new iterator in the child: iter(loader)")
        # Two threads advancing one iterator would take each other's chunks: refused, as a
        # generator refuses it.
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this Loader iterator is being advanced in another thread; give each "
                               "thread its own iter(loader), or hand batches over through a queue")
        try:
            return self._next()
        finally:
            self._busy.release()

    def _next(self):
        L = self.loader
        if self._closed:
            raise StopIteration
        t0 = time.perf_counter()
        if self._again:
            self._again -= 1
            batch, kept = L._refill(self._last)
            if batch is not None:
                return self._yield(batch, kept, t0, stand_in=True)
        try:
            while True:
                ready = self.upstream.ready()
                tw = time.perf_counter()
                job, rows, failures = None, 0, {}
                while job is None or rows < job.n:     # the chunks of one job arrive together, in order
                    # Top up only at a batch's first chunk: batch b + prefetch starts while the consumer
                    # still holds b - 1, so a synchronous loop needs prefetch + 2 slots, no more.
                    job, n, bad = next(self.upstream) if job is None else self.upstream.take()
                    rows += n
                    failures.update(bad)
                if self._closed:        # closed from another thread meanwhile: the slot is incomplete
                    raise StopIteration
                L._stats["wait_s"] += time.perf_counter() - tw
                L._stats["ready_batches"] += ready
                batch, kept = L._finish(job, failures), job.kept
                self.failed += bool(failures)
                self.offset = L._sampler.offset_after(self.offset, 1) if L._random_access else \
                    self.offset + L._sampler.global_batch
                L._position = (self.epoch, self.offset)
                if batch is None and L._random_access:   # every record failed: another batch stands in
                    # unless a search found no batch of the epoch that reads, on any rank: none will
                    batch, kept = (None, 0) if self.unreadable else L._stand_in(self.epoch, self.start, job.step)
                    self.unreadable = batch is None
                elif batch is None and L.world_size > 1:   # a stream's: another rank's share of the step
                    batch, kept = L._stand_in_from_step(job)
                    if batch is None:
                        # No share of the step reads here, which another rank's copy may (bit rot on
                        # one machine): skipping would leave this rank a step short and DDP's next
                        # all-reduce waiting, so this rank's last batch stands in, or its next one.
                        if self._last is None:
                            self._owed += 1
                            continue
                        batch, kept = L._refill(self._last)
                        if batch is not None:
                            return self._yield(batch, kept, t0, stand_in=True)
                elif not L._random_access and L.world_size > 1:   # its own share read: a later stand-in
                    self._last = (job.epoch, job.step, job.idx, job.records)
                    self._again, self._owed = self._owed, 0
                if batch is None:   # nothing to yield: a stream alone
                    continue
                return self._yield(batch, kept, t0)
        except StopIteration:
            closed = self._closed   # by another thread: not the epoch's end, which stays to be read
            self.close()
            if closed:
                raise
            L._position = (self.epoch + 1, 0)
            if self._yielded == 0 and not self.failed and self.start > 0 and not L._random_access:
                # A stream resumed after its last batch (a break there): it has no length to
                # tell that in advance, so the pass that found nothing left is the next epoch's.
                self._begin(self.epoch + 1, 0)
                return self._next()
            if self._yielded == 0 and self.failed:
                what = L._none_read(self.epoch, self.start)
                whose = "them" if L.world_size == 1 else "this rank's"
                raise RecordError(f"epoch {self.epoch}", f"every record failed ({what}); loader.stats()['failures'] "
                                  f"lists {whose}") from None
            raise
        except BaseException:
            self.close()
            raise

    def _yield(self, batch, kept: int, t0: float, stand_in: bool = False):
        L = self.loader
        L._stats["batches"] += 1
        L._stats["samples"] += kept
        L._stats["stand_ins"] += stand_in
        if not L._random_access:   # a streamed epoch's max_failures fraction is of the records seen
            with L._lock:
                L._epoch_state(self.epoch).samples += kept
        self._yielded += 1
        now = time.perf_counter()
        L._stats["wall_s"] += now - t0
        L._stats["elapsed_s"] += now - self._since
        self._since = now
        return batch

    def close(self):
        if not self._closed:
            self._closed = True
            self._last = None
            self.upstream.close()
        close_unless_running(self._jobs)   # else the consumer's thread is in it: its own close() closes it


def _check_built_image(name, field, given: dict, output: str) -> bool:
    """Whether ``field`` is a built image field (``fl.Image``, or a KernelField around one). Its
    options were fixed when it was built: a Loader option (or JAX's NHWC) that differs is refused,
    where it used to be ignored without a word."""
    image = getattr(field, "inner", field)   # a KernelField runs its kernels on its inner field's rows
    if not isinstance(image, ImageField):
        return False
    wanted = dict(given)
    if output == "jax":   # what layout="auto" means: JAX batches are NHWC
        wanted.setdefault("layout", "NHWC")
    own = image.options
    differ = [k for k, v in wanted.items() if (_dtype_name(v) if k == "dtype" else v) != own[k]]
    if differ:
        asked = ", ".join(f"{k}={wanted[k]!r}" + (" (output='jax')" if k not in given else "") for k in differ)
        has = ", ".join(f"{k}={own[k]!r}" for k in differ)
        raise ValueError(f"fields[{name!r}] is a built {type(field).__name__} with {has}, but the Loader asks for "
                         f"{asked}: a built field owns its image options, so give them to the fl.Image([...]) or "
                         "transform list it is built from")
    return True


def _numeric(column) -> bool:
    """Whether a collated pass-through column is an array every framework takes (bool or numbers)."""
    return isinstance(column, np.ndarray) and column.dtype.kind in "biufc"


class _Path(tuple):
    """The keys down to an array inside a collated column of dicts (a tuple no record key can be)."""


def _numeric_leaves(column, key):
    """(key, array) for a collated pass-through column of numbers, or for each one inside a column
    of dicts, keyed by its :class:`_Path`."""
    if isinstance(column, dict):
        for k, v in column.items():
            yield from _numeric_leaves(v, _Path((*key, k) if isinstance(key, _Path) else (key, k)))
    elif _numeric(column):
        yield key, column


def _place(arrays: dict, key, value) -> None:
    if not isinstance(key, _Path):
        arrays[key] = value
        return
    inner = arrays[key[0]]   # the batch's own collated dicts: made for this batch alone
    for k in key[1:-1]:
        inner = inner[k]
    inner[key[-1]] = value


def _rebuild(init: dict, position: tuple, stream_plan=None) -> Loader:
    loader = Loader(**init)
    loader._position, loader._stream_plan = tuple(position), stream_plan
    return loader


def _runs(a: int, b: int, failed) -> Iterator[tuple[int, int]]:
    """The runs of rows in [a, b) that are not in ``failed``, as (start, end)."""
    if not failed:   # the common case, without a look at each row
        yield a, b
        return
    start = a
    for j in range(a, b):
        if j in failed:
            if j > start:
                yield start, j
            start = j + 1
    if b > start:
        yield start, b


def _check_failures(field, bad, n: int) -> None:
    """What ``field.fill`` returned is a dict of failures keyed by the rows it was given: a bug in the
    field otherwise, not in a record (a row out of range would blame another record, or none)."""
    if not isinstance(bad, dict):
        raise TypeError(f"field {field.name!r}: {type(field).__name__}.fill returned {bad!r}; fill "
                        "must return a dict of failures, {row: reason} ({} when none)")
    wrong = [j for j in bad if isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 0 <= j < n]
    if wrong:
        raise TypeError(f"field {field.name!r}: {type(field).__name__}.fill returned failures keyed {wrong[:3]!r}; "
                        f"the keys are rows of the {n} values it was given, 0..{n - 1}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise TypeError(f"epoch must be an integer, got {type(epoch).__name__} {epoch!r}")
    if not 0 <= epoch < 2**32:
        raise ValueError(f"epoch must be in [0, 2**32), got {epoch}")
    return int(epoch)


def _check_budget(max_failures):
    """A count (any integer >= 0) or a fraction of the epoch's records in (0, 1]."""
    if max_failures is None:
        return None
    if isinstance(max_failures, bool):
        raise TypeError("max_failures must be a count or a fraction, got a bool")
    if isinstance(max_failures, numbers.Integral):
        return _check_int("max_failures", max_failures, 0)
    if isinstance(max_failures, numbers.Real):
        f = float(max_failures)
        if not 0 < f <= 1:
            raise ValueError(f"max_failures as a fraction must be in (0, 1], got {max_failures!r}; "
                             "give an integer for a count")
        return f
    raise TypeError(f"max_failures must be a count or a fraction, got {type(max_failures).__name__}")
