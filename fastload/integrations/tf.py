"""TensorFlow: a Loader as a ``tf.data.Dataset``.

``loader.tf_dataset()`` (or :func:`as_dataset`) is a dataset whose every pass
is the loader's next epoch (the rest of the current one, if the loader stands
mid-epoch), so ``model.fit(ds, epochs=5)`` and ``for x, y in ds`` loops train
the epochs the loader's resumable state names::

    loader = fl.Loader(fl.ImageFolder(root), batch_size=64, shuffle=True, layout="NHWC", transforms=[...])
    ds = loader.tf_dataset()
    for epoch in range(5):
        for images, labels in ds:       # tf.Tensor batches: float32 NHWC images, int64 labels
            train_step(images, labels)

Leaving a pass early leaves the loader after the last batch the loop took, as a
``break`` out of the loader itself does (tf.data's own read-ahead is off unless
``prefetch=`` asks for it), except that a pass left after its first batch, short
of the epoch's end, takes nothing: ``next(iter(ds))`` only looks, and so does the
one batch ``model.fit`` reads to build the model before it starts over. For an
indexed source the dataset's cardinality is ``len(loader)``, so Keras knows its
steps per epoch (a pass that ends short, the rest of an epoch resumed
mid-way, just ends early). The loader's worker threads do the work; tf.data
runs the loop that hands batches over. Each batch enters TensorFlow inside
tf.data's generator op, which copies the loader's arrays into tensors
(TensorFlow 2.21), so the slot is free for the next batch once that is done;
were a tensor to share an array's memory, it would keep the array, and with it
the slot's lease, alive.

Batches are tuples or dicts of arrays; the dataset's signature (structure,
dtypes, and every dimension but the batch's) comes from the first batch, and
every batch is checked against it: a column of another dtype is cast where the
cast keeps every value, and refused, naming the column, where it would not (a
float64 batch under an int64 signature would be truncated). A pass-through
column (one ``fields=`` does not name; in a tuple batch, one after those it
names) that is int64 in the first batch is signed float64: it holds whatever
the records hold, and JSON writes
``8.0`` as ``8``, so a column of numbers collates to int64 in a batch of whole
numbers and to float64 in the next. Integers up to 2**53 are exact in float64;
a larger one is refused. To keep a column's integers, name it in ``fields=``
(``"index"`` for class labels; ``None`` keeps the values as they are, with the
first batch's dtype). Columns of strings or bytes become ``tf.string`` tensors;
a column of other Python objects cannot enter a tensor, so it is refused with
its name. TensorFlow convolutions take channels-last images by default: give
the Loader ``layout="NHWC"``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_dataset"]


def as_dataset(loader, *, prefetch: int | None = None):
    """``loader`` as a ``tf.data.Dataset`` of its batches; see the module docstring.

    ``prefetch``: batches tf.data buffers ahead of the consumer (``-1``:
    ``tf.data.AUTOTUNE``). By default none: the loader's worker threads already
    work ahead, and a pass left early then leaves the loader exactly after the
    last batch the loop took. Batches tf.data had buffered are skipped instead.
    """
    import tensorflow as tf
    if loader.output != "numpy":
        raise ValueError(f"as_dataset needs a loader with output='numpy' (TensorFlow takes NumPy arrays), "
                         f"got output={loader.output!r}")
    if loader._random_access:
        first = loader.batch_at(0)   # batch_at does not move the loader
    else:   # a stream has no batch by index: its first, read and put back (the dataset only looks)
        start = loader.state_dict()
        peek = iter(loader)
        try:
            first = next(peek)
        except StopIteration:
            raise ValueError("the loader yields no batches") from None
        finally:
            peek.close()
        loader.load_state_dict(start)
    indexed = loader._random_access
    ran_out = [False]   # whether the last pass of an indexed loader ended short (see below)

    def batches():
        if ran_out[0]:   # what repeat() asks for after a pass that ended short: nothing, which ends it
            ran_out[0] = False
            return
        start = loader.state_dict()
        it = iter(loader)
        taken, ended = 0, False
        try:
            for batch in it:
                taken += 1
                yield batch
            ended = True
            ran_out[0] = indexed
        finally:
            it.close()
            _after_pass(loader, start, looked=taken == 1 and not ended)

    ds = _dataset(loader, first, batches)
    if indexed:
        # len(loader) batches a pass, so that Keras knows its steps per epoch. assert_cardinality would
        # fail a pass that ends short (a loader resumed mid-epoch); take() ends it quietly.
        ds = ds.repeat().take(len(loader))
    if prefetch:
        return ds.prefetch(tf.data.AUTOTUNE if prefetch == -1 else prefetch)
    return _no_read_ahead(ds, tf)


def _dataset(loader, first, batches, structure=None):
    """A ``tf.data.Dataset`` of what ``batches()`` yields, signed from ``first`` (a batch of
    ``loader``, as it gives them); ``structure`` picks what the consumer gets of a batch (Keras's
    ``(x, y)``), after the batch is checked by column name."""
    import tensorflow as tf
    first = _arrays(first)
    passthrough = set(getattr(loader, "_passthrough", ()))
    names = getattr(loader, "_tuple", None) if isinstance(first, tuple) else None   # a tuple's columns
    if names is not None and len(names) != len(first):
        names = None
    if isinstance(first, dict):   # see the module docstring: a pass-through column of numbers is float64
        signature = {k: _signature(v, tf, widen=k in passthrough) for k, v in first.items()}
    elif names is not None:       # the same for a tuple batch's pass-through columns, by position
        signature = tuple(_signature(v, tf, widen=name in passthrough) for v, name in zip(first, names))
    else:
        signature = _signature(first, tf)
    structure = structure or (lambda batch: batch)

    def checked():
        for i, batch in enumerate(batches()):
            yield structure(_conform(_arrays(batch), signature, i, names=names))

    return tf.data.Dataset.from_generator(checked, output_signature=structure(signature))


def _after_pass(loader, start: dict, looked: bool) -> None:
    """Where a pass of an indexed loader leaves it. A pass that take() ended after the epoch's last
    batch never asked for more, so the loader stands at the end of that epoch: it moves to the next.
    ``looked``: the pass was left after its first batch (``next(iter(ds))``, or Keras's build pass
    before it starts over); short of the epoch's end, that takes nothing: the loader goes back to
    ``start``."""
    state = loader.state_dict()
    if state["epoch"] > start["epoch"]:   # the epoch's last batch was taken: state_dict says the next
        loader.set_epoch(state["epoch"])
    elif looked:
        loader.load_state_dict(start)


def _no_read_ahead(ds, tf):
    """``ds`` without the prefetch tf.data otherwise injects: a batch it buffered would count as
    taken, and a pass left early (or a state_dict() after it) would skip it."""
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return ds.with_options(options)


def _arrays(batch, where="batch"):
    """The batch with every column an array TensorFlow takes (lists of numbers or strings converted)."""
    if isinstance(batch, dict):
        return {k: _arrays(v, k) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_arrays(v, f"{where}[{i}]") for i, v in enumerate(batch))
    if isinstance(batch, np.ndarray) and batch.dtype != object:
        return batch
    values = list(batch)
    if all(isinstance(v, (str, bytes)) for v in values):
        return np.array(values, dtype=object)
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind in "USV":
        kinds = sorted({type(v).__name__ for v in values})
        raise TypeError(f"batch column {where!r} holds {', '.join(kinds)} values, which TensorFlow cannot take "
                        "as a tensor: give it a field spec (fields={...}) that makes arrays, or leave it out")
    return arr


def _signature(batch, tf, widen=False):
    """The TensorSpecs of a batch of arrays; ``widen``: integer columns signed float64."""
    if isinstance(batch, dict):
        return {k: _signature(v, tf, widen) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_signature(v, tf, widen) for v in batch)
    if batch.dtype == object:
        dtype = tf.string
    else:
        dtype = tf.float64 if widen and batch.dtype.kind in "iu" else tf.as_dtype(batch.dtype)
    return tf.TensorSpec((None, *batch.shape[1:]), dtype)


def _conform(batch, signature, step, where="batch", names=None):
    """The batch with every column of the signature's dtype, or TypeError naming the column whose
    values that dtype cannot hold (tf.data would cast them silently, truncating 8.5 to 8);
    ``names``: a tuple batch's columns, to name them by."""
    if isinstance(batch, dict):
        return {k: _conform(v, signature[k], step, k) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_conform(v, spec, step, f"{where}[{i}]" + (f" ({names[i]})" if names else ""))
                     for i, (v, spec) in enumerate(zip(batch, signature)))
    want = np.dtype(signature.dtype.as_numpy_dtype)
    if batch.dtype == want:
        return batch
    signed = f"{want}, the column's dtype in the dataset's signature (read from the first batch)"
    problem = f"which would change if cast to {signed}"
    if want != object and batch.dtype != object and np.can_cast(batch.dtype, want, "safe"):
        cast = batch.astype(want)
        if want.kind != "f" or batch.dtype.kind not in "iu" or np.array_equal(cast.astype(batch.dtype), batch):
            return cast
        problem = f"beyond 2**53, which {signed} cannot hold exactly"
    raise TypeError(f"column {where!r}: batch {step} of the pass holds {batch.dtype} values {problem}: name the "
                    "column in fields= with a spec that gives every batch one dtype (for numbers, fl.Numeric(1): "
                    "float32 rows of one value)")
