"""Keras 3: ``model.fit`` on a Loader, on the torch, JAX and TensorFlow backends.

:class:`KerasDataset` is a Keras data adapter (the object ``model.fit`` turns
every input into, and takes as it is when given one), so Keras iterates the
Loader itself: its worker threads and prefetching do the work, and the epoch
Keras trains is the epoch the Loader's resumable state names. Keras first pulls
one batch to build the model and then restarts; an epoch counts only when
Keras has run it to the end, so that extra pull never shifts the epochs::

    loader = fl.Loader(fl.ImageFolder(root), batch_size=64, shuffle=True, layout="NHWC", transforms=[...])
    model.fit(KerasDataset(loader), epochs=5, validation_data=KerasDataset(val_loader))
    state = loader.state_dict()            # {"epoch": 5, "batch": 0, ...}: save it with the weights

    # later, in a new process
    loader.load_state_dict(state)
    model.fit(KerasDataset(loader), initial_epoch=state["epoch"], epochs=10)

A state saved mid-epoch resumes too: Keras's first epoch is then the rest of
that loader epoch (Keras warns that the input ran out of data early) and the
following ones are whole. With ``steps_per_epoch`` shorter than the loader's
epoch, Keras goes on where its last epoch stopped: each loader batch is trained
once, in order, and an epoch of Keras's that reaches the end of the loader's is
cut short there (Keras warns), as for any finite dataset. ``fit(shuffle=...)``
has no effect here (Keras does not reorder an adapter's batches): the Loader
shuffles, by ``(seed, epoch)``. Nor do ``fit(class_weight=...)`` and
``sample_weight=``: Keras hands them to its own adapters only, and takes an
adapter's batches as they are. Give ``class_weight=`` to the adapter
(``loader.keras(class_weight={0: 1.0, 1: 5.0})``): each batch then carries
the weights of its labels, as Keras computes them for arrays.

The adapter base class lives under ``keras.src`` (Keras 3 exports no public
name for it); ``get_data_adapter`` takes any instance of it as it is.
"""
from __future__ import annotations

import weakref

import keras
from keras.src.trainers.data_adapters import data_adapter_utils
from keras.src.trainers.data_adapters.data_adapter import DataAdapter

from ._compat import image_layouts

__all__ = ["KerasDataset"]


class KerasDataset(DataAdapter):
    """The Keras view of a :class:`~fastload.Loader`; ``model.fit(KerasDataset(loader))``.

    Batches reach the model as the Loader gives them: ``(inputs, targets)``
    tuples, or dicts. For a dict batch, ``inputs=``/``targets=`` name the keys
    to pass as ``x`` and ``y`` (a name, or a tuple of names for several).
    ``class_weight``: {class index: weight}, the targets' sample weights
    (``(x, y, sample_weight)`` batches; a class not named weighs 1).
    """

    def __init__(self, loader, *, inputs=None, targets=None, class_weight=None):
        nchw = [name for name, layout in image_layouts(loader).items() if layout == "NCHW"]
        if nchw and keras.config.image_data_format() == "channels_last":
            raise ValueError(f"the loader's {', '.join(map(repr, nchw))} images are NCHW but Keras expects "
                             "channels_last (NHWC): create the Loader with layout='NHWC'")
        if (inputs is None) != (targets is None):
            raise ValueError("give both inputs= and targets= (the batch keys for x and y), or neither")
        if class_weight is not None and not (isinstance(class_weight, dict) and all(
                isinstance(k, int) and not isinstance(k, bool) for k in class_weight)):
            raise TypeError(f"class_weight must be a dict of class index -> weight, got {class_weight!r}")
        self.loader, self.inputs, self.targets, self.class_weight = loader, inputs, targets, class_weight
        self._start = loader.state_dict()   # where the next iterator Keras asks for begins
        self._live = None                   # the loader iterator of the last one (a weak reference)
        # How an epoch Keras finished is told from its build pass, which takes one batch and
        # abandons the iterator (see on_epoch_end): the iterators asked for, and how many had
        # been when the last batch was given; whether the last iterator ran to its end.
        self._asked = self._asked_at_last = 0
        self._ran_out = False
        self._left = loader._position       # where this adapter last left the loader (see _follow)

    # -- what Keras reads -------------------------------------------------------------
    @property
    def num_batches(self):
        if not self.loader._random_access:   # a stream: Keras runs each epoch until it ends
            return None
        return len(self.loader)

    @property
    def batch_size(self):
        return self.loader.batch_size

    @property
    def has_partial_batch(self):
        n = self._num_records()
        return None if n is None else (not self.loader.drop_last and n % self.loader.batch_size != 0)

    @property
    def partial_batch_size(self):
        n = self._num_records()
        return (n % self.loader.batch_size or None) if self.has_partial_batch else None

    def get_numpy_iterator(self):
        self._asked += 1
        return data_adapter_utils.get_numpy_iterator(self._batches())

    def get_jax_iterator(self):
        self._asked += 1
        return data_adapter_utils.get_jax_iterator(self._batches())

    def get_torch_dataloader(self):
        self._asked += 1
        return data_adapter_utils.get_torch_dataloader(self._batches())

    def get_tf_dataset(self):
        import tensorflow as tf

        from .tf import _dataset, _no_read_ahead

        # signed and checked by column name, as the loader gives a batch; x and y are picked after
        def batches():
            return data_adapter_utils.get_numpy_iterator(self._batches(pick=False, asked=False))
        self._follow()
        first = next(batches())
        # the batch that signs the dataset is not one trained on: the first epoch starts over
        self._stop_live()
        self._load(self._start)
        # the loader's threads already work ahead; what tf.data read ahead, a resume would skip
        return _no_read_ahead(_dataset(self.loader, first, batches, self._structure), tf)

    # -- iteration ----------------------------------------------------------------------
    def _num_records(self):
        try:
            return len(self.loader.source)
        except TypeError:
            return None

    def _batches(self, pick: bool = True, asked: bool = True):
        """The batches from ``self._start`` to the end of that loader epoch (``pick``: as ``x, y``
        when ``inputs=`` and ``targets=`` name them; ``asked``: Keras asks for a new iterator
        for each epoch, as it does on every backend but TensorFlow's, which reruns one dataset).

        Keras asks for a new iterator after its build pass (one batch, then abandoned: the
        next starts over) and once an iterator has given the loader epoch's last batch (the
        next starts the next epoch). With ``steps_per_epoch`` it runs one iterator across
        its epochs, so ``on_epoch_end`` leaves an unfinished one running."""
        self._follow()
        self._stop_live()
        if self._epoch_done():
            self._next_epoch()
        self._load(self._start)
        it = iter(self.loader)
        self._live = weakref.ref(it)   # Keras dropping the iterator closes it (and its threads)
        self._ran_out = not asked      # without a request per epoch, an ended epoch is always run
        # Keras's JAX backend transfers the next batch while the step runs, and a device_put
        # on CPU keeps the host memory: safe without copies, since a batch holds its slot's
        # lease for as long as anything views it.
        for batch in it:
            self._asked_at_last = self._asked
            self._left = self.loader._position
            yield self._structure(batch) if pick else batch
        self._ran_out = True
        self._left = self.loader._position

    def on_epoch_end(self):
        self._follow()   # Keras calls this before a fit's first epoch too
        if not self._epoch_done():
            return
        self._stop_live()
        if self._ran_out or self._asked > self._asked_at_last:
            self._next_epoch()
        else:
            # The loader epoch's last batch was given, but Keras neither asked for the next
            # iterator nor ran this one out: the build pass abandoned it, having taken the
            # epoch's only batch. The next iterator starts the same epoch again.
            self._load(self._start)

    def _follow(self):
        """Begin where the loader stands if it was moved since this adapter last left it: a
        load_state_dict (a resume), a set_epoch, batches taken by hand. The position saved
        when the adapter was made would train another epoch, and move the loader back."""
        if self.loader._position != self._left:
            self._stop_live()
            self._start = self.loader.state_dict()
            self._asked = self._asked_at_last = 0
            self._ran_out = False
            self._left = self.loader._position

    def _load(self, state):
        self.loader.load_state_dict(state)
        self._left = self.loader._position

    def _stop_live(self):
        it = self._live() if self._live is not None else None
        if it is not None:
            it.close()   # stops its threads
        self._live = None

    def _epoch_done(self) -> bool:
        """Whether the loader has yielded the last batch of the epoch ``self._start`` is in."""
        state = self.loader.state_dict()
        if state["epoch"] > self._start["epoch"]:
            return True
        if not self.loader._random_access:   # a stream: done when it has ended, which moves the epoch on
            return False
        return state["batch"] >= len(self.loader)

    def _next_epoch(self):
        # Keras stops asking after the last batch, so the loader may stand at
        # (epoch, len) rather than at the start of the next epoch: move it there.
        self.loader.set_epoch(self._start["epoch"] + 1)
        self._start = self.loader.state_dict()
        self._left = self.loader._position

    def _structure(self, batch):
        if self.inputs is not None:
            def pick(keys):
                return batch[keys] if isinstance(keys, str) else {k: batch[k] for k in keys}
            batch = pick(self.inputs), pick(self.targets)
        if self.class_weight is None:
            return batch
        if not (isinstance(batch, tuple) and len(batch) == 2):
            raise ValueError("class_weight= weighs the targets of (inputs, targets) batches: give a dict batch's "
                             "inputs= and targets=, or a loader of (image, label) batches")
        x, y = batch
        if type(y).__name__ == "TensorSpec":   # tf.data's signature of the batches (get_tf_dataset)
            import tensorflow as tf
            return x, y, tf.TensorSpec((None,), keras.backend.floatx())
        return x, y, data_adapter_utils.class_weight_to_sample_weights(y, self.class_weight)
