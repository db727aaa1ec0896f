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
``prefetch=`` asks for it). The loader's worker threads do the work; tf.data
runs the loop that hands batches over. Each batch enters TensorFlow inside
tf.data's generator op, which copies the loader's arrays into tensors
(TensorFlow 2.21), so the slot is free for the next batch once that is done;
were a tensor to share an array's memory, it would keep the array, and with it
the slot's lease, alive.

Batches are tuples or dicts of arrays; the dataset's signature (structure,
dtypes, and every dimension but the batch's) comes from the first batch.
Columns of strings or bytes become ``tf.string`` tensors; a column of other
Python objects cannot enter a tensor, so it is refused with its name. TensorFlow
convolutions take channels-last images by default: give the Loader
``layout="NHWC"``.
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
        first, peeked = _arrays(loader.batch_at(0)), None   # batch_at does not move the loader
    else:   # a stream has no batch by index: the first batch of the first pass, served by that pass
        peeked = iter(loader)
        try:
            first = _arrays(next(peeked))
        except StopIteration:
            raise ValueError("the loader yields no batches") from None
    signature = _signature(first, tf)
    pending = [] if peeked is None else [(first, peeked)]   # a stream's first pass starts from its peeked batch

    def batches():
        head, it = pending.pop() if pending else (None, iter(loader))
        try:
            if head is not None:
                yield head
            for batch in it:
                yield _arrays(batch)
        finally:
            it.close()

    ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if prefetch:
        return ds.prefetch(tf.data.AUTOTUNE if prefetch == -1 else prefetch)
    return _no_read_ahead(ds, tf)


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


def _signature(batch, tf):
    if isinstance(batch, dict):
        return {k: _signature(v, tf) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_signature(v, tf) for v in batch)
    dtype = tf.string if batch.dtype == object else tf.as_dtype(batch.dtype)
    return tf.TensorSpec((None, *batch.shape[1:]), dtype)
