"""Run under a chosen KERAS_BACKEND (in a subprocess): what ``model.fit`` sees equals the copy=True batches.

    KERAS_BACKEND=jax python tests/_keras_fit.py IMAGE_FOLDER

A layer and a loss record every batch Keras hands the model (eagerly, so the
values are concrete); they must equal, batch for batch, what a ``copy=True``
loader with the same settings yields, for training (two epochs, the loader's
worker threads), validation, a resumed ``fit`` in a fresh loader, and dict batches
whose ``inputs=``/``targets=`` Keras is given.
"""
import sys
import warnings

import keras
import numpy as np

import fastload as fl
from fastload.integrations.keras import KerasDataset


def make_loader(root, **kw):
    return fl.Loader(fl.ImageFolder(root), batch_size=5, shuffle=True, seed=7, layout="NHWC", workers=2,
                     transforms=[fl.RandomResizedCrop(24), fl.RandomHorizontalFlip(),
                                 fl.Normalize([0.5] * 3, [0.25] * 3)], **kw)


def reference(root, epochs):
    loader = make_loader(root, copy=True)
    return [[(x, y) for x, y in loader] for _ in range(epochs)]


class Recorder(keras.layers.Layer):
    def __init__(self, record, **kw):
        super().__init__(**kw)
        self.record = record   # a function: Keras would track (and copy) a list attribute

    def call(self, x, training=None):
        # Keras also calls the model on symbolic inputs to build it (training=None): not data.
        if training is not None and not isinstance(x, keras.KerasTensor):
            self.record("train" if training else "eval", x)
        return x


class Recording(keras.callbacks.Callback):
    """Records from the first training batch on: ``fit`` first runs one batch to build metrics."""

    def __init__(self, on):
        super().__init__()
        self.start = lambda: on.append(True)

    def on_train_begin(self, logs=None):
        self.start()


def build(seen, labels):
    on = []

    def record(kind, x):
        if on:
            seen.append((kind, keras.ops.convert_to_numpy(x).copy()))

    def loss(y_true, y_pred):
        if on:
            labels.append(keras.ops.convert_to_numpy(y_true).copy())
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    model = keras.Sequential([keras.Input((24, 24, 3)), Recorder(record), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=loss, run_eagerly=True)
    on_train = Recording(on)
    return model, on_train


def check(seen, labels, expected, kind):
    got = [x for k, x in seen if k == kind]
    assert len(got) == len(expected) == len(labels), (kind, len(got), len(expected), len(labels))
    for i, ((x, y), g, lab) in enumerate(zip(expected, got, labels)):
        assert g.shape == x.shape and np.array_equal(g, x), f"{kind} batch {i} images differ"
        assert np.array_equal(np.asarray(lab).reshape(-1).astype(np.int64), y), f"{kind} batch {i} labels differ"


def main(root):
    ref = reference(root, 3)
    val_ref = [(x, y) for x, y in fl.Loader(fl.ImageFolder(root), batch_size=6, layout="NHWC", copy=True,
                                            transforms=[fl.Resize((24, 24)), fl.Normalize([0.5] * 3, [0.25] * 3)])]
    val_loader = fl.Loader(fl.ImageFolder(root), batch_size=6, layout="NHWC",
                           transforms=[fl.Resize((24, 24)), fl.Normalize([0.5] * 3, [0.25] * 3)])

    seen, labels = [], []
    loader = make_loader(root)
    model, recording = build(seen, labels)
    model.fit(KerasDataset(loader), epochs=2, shuffle=False, verbose=0,
              validation_data=KerasDataset(val_loader), callbacks=[recording])
    train_labels = [lab for lab, (k, _) in zip(labels, seen) if k == "train"]
    val_labels = [lab for lab, (k, _) in zip(labels, seen) if k == "eval"]
    check(seen, train_labels, ref[0] + ref[1], "train")
    check(seen, val_labels, val_ref + val_ref, "eval")
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["batch"] == 0, state

    # Resume in a fresh loader, as a new process would, and run the third epoch.
    seen2, labels2 = [], []
    resumed = make_loader(root).load_state_dict(state)
    model, recording = build(seen2, labels2)
    model.fit(KerasDataset(resumed), initial_epoch=2, epochs=3, shuffle=False, verbose=0, callbacks=[recording])
    check(seen2, labels2, ref[2], "train")

    # Resume mid-epoch: the first Keras epoch is the rest of loader epoch 0 (Keras warns that it
    # ran out of data early), the next one is the whole of epoch 1.
    partial = make_loader(root)
    it = iter(partial)
    next(it), next(it)
    state = partial.state_dict()
    it.close()
    seen4, labels4 = [], []
    model, recording = build(seen4, labels4)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your input ran out of data")
        model.fit(KerasDataset(make_loader(root).load_state_dict(state)), epochs=2, shuffle=False, verbose=0,
                  callbacks=[recording])
    check(seen4, labels4, ref[0][2:] + ref[1], "train")

    # steps_per_epoch shorter than the loader's epoch: Keras runs one iterator across its epochs,
    # cutting the one that reaches the loader epoch's end short (it warns), then starts the next
    # loader epoch: every batch once, in order, none again.
    loader = make_loader(root)
    n, expected, (e, b) = len(loader), [], (0, 0)
    for _ in range(4):
        for _ in range(3):
            if b >= n:
                break
            expected.append(ref[e][b])
            b += 1
        if b >= n:
            e, b = e + 1, 0
    seen5, labels5 = [], []
    model, recording = build(seen5, labels5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your input ran out of data")
        model.fit(KerasDataset(loader), epochs=4, steps_per_epoch=3, shuffle=False, verbose=0, callbacks=[recording])
    check(seen5, labels5, expected, "train")
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (e, b), (state, e, b, n)
    # a checkpoint after fit names the next batch Keras has not trained on: nothing read ahead
    # (tf.data's prefetch did, and a resume then skipped a batch on TensorFlow)
    loader = make_loader(root)
    model, recording = build([], [])
    model.fit(KerasDataset(loader), epochs=1, steps_per_epoch=2, shuffle=False, verbose=0, callbacks=[recording])
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (0, 2) and n > 3, (state, n)

    # One batch an epoch: Keras's build pass takes that batch and abandons its iterator, which
    # looked like a finished epoch, so every Keras epoch trained the next loader epoch's batch.
    def one_batch(**kw):
        return fl.Loader(
            fl.ImageFolder(root), batch_size=len(fl.ImageFolder(root)), shuffle=True, seed=7, layout="NHWC", workers=2,
            transforms=[fl.RandomResizedCrop(24), fl.RandomHorizontalFlip(), fl.Normalize([0.5] * 3, [0.25] * 3)],
            **kw)
    ref_one = one_batch(copy=True)
    ref_one = [b for _ in range(3) for b in ref_one]
    assert len(ref_one) == 3 and not np.array_equal(ref_one[0][1], ref_one[1][1])
    seen7, labels7 = [], []
    loader = one_batch()
    model, recording = build(seen7, labels7)
    model.fit(KerasDataset(loader), epochs=3, shuffle=False, verbose=0, callbacks=[recording])
    check(seen7, labels7, ref_one, "train")
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (3, 0), state

    # Dict batches, x and y picked by name (on TensorFlow the batch was picked twice, and fit failed
    # with "tuple indices must be integers"); a column that is neither x nor y is left out.
    src = fl.ImageFolder(root)
    records = fl.ListSource([{"img": p, "cls": int(y), "note": f"r{i}"} for i, (p, y) in enumerate(src)])
    fields = {"img": [fl.RandomResizedCrop(24), fl.Normalize([0.5] * 3, [0.25] * 3)], "cls": "index"}
    dict_loader = lambda **kw: fl.Loader(records, batch_size=5, shuffle=True, seed=7, layout="NHWC", fields=fields,
                                         **kw)
    dict_ref = [(b["img"], b["cls"]) for b in dict_loader(copy=True)]
    seen6, labels6 = [], []
    model, recording = build(seen6, labels6)
    model.fit(KerasDataset(dict_loader(), inputs="img", targets="cls"), epochs=1, shuffle=False, verbose=0,
              callbacks=[recording])
    check(seen6, labels6, dict_ref, "train")

    # One adapter made up front and kept across fits while the loader is moved from outside (a resume,
    # set_epoch, batches taken by hand): it reloaded the position it saw when made, trained another
    # epoch and moved the loader back.
    loader = make_loader(root)
    adapter = KerasDataset(loader)
    moved = make_loader(root)
    it = iter(moved)
    next(it), next(it)
    state = moved.state_dict()   # epoch 0, batch 2
    it.close()
    loader.load_state_dict(state)
    for expected, move in ((ref[0][2:], None), (ref[0], lambda: loader.set_epoch(0)), (ref[1][3:], "by hand")):
        if move == "by hand":   # three batches of epoch 1 taken outside Keras
            it = iter(loader)
            next(it), next(it), next(it)
            it.close()
        elif move is not None:
            move()
        seen8, labels8 = [], []
        model, recording = build(seen8, labels8)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Your input ran out of data")
            model.fit(adapter, epochs=1, shuffle=False, verbose=0, callbacks=[recording])
        check(seen8, labels8, expected, "train")
    assert loader.state_dict()["epoch"] == 2

    # class_weight: fit(class_weight=...) never reaches an adapter (Keras gave the unweighted loss without
    # a word); given to the adapter, the loss is the one Keras computes with it for the same arrays.
    def weighted_loss(adapter_weights, fit_weights, arrays):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loader = fl.Loader(fl.ImageFolder(root), batch_size=5, layout="NHWC",
                           transforms=[fl.Resize((24, 24)), fl.Normalize([0.5] * 3, [0.25] * 3)])
        if arrays:
            xs, ys = zip(*((x.copy(), y.copy()) for x, y in loader))
            return model.fit(np.concatenate(xs), np.concatenate(ys), batch_size=5, shuffle=False, verbose=0,
                             class_weight=fit_weights).history["loss"][0]
        return model.fit(KerasDataset(loader, class_weight=adapter_weights), verbose=0).history["loss"][0]
    weights = {0: 4.0, 1: 0.0, 2: 1.0}
    plain, weighted = weighted_loss(None, None, True), weighted_loss(None, weights, True)
    assert abs(weighted - plain) > 1e-3 * abs(plain), (weighted, plain)
    assert np.isclose(weighted_loss(weights, None, False), weighted, rtol=1e-5), (weighted_loss(weights, None, False),
                                                                                weighted)

    # train_on_batch, as the classic tutorial's loop does.
    seen3, labels3 = [], []
    model, recording = build(seen3, labels3)
    model.train_on_batch(*ref[1][0])   # builds the model (a pass Keras makes once, not data to check)
    recording.on_train_begin()
    for x, y in make_loader(root):
        model.train_on_batch(x, y)
    check(seen3, labels3, ref[0], "train")
    print("keras", keras.backend.backend(), "ok")


if __name__ == "__main__":
    main(sys.argv[1])
