"""TensorFlow: what a tf.data.Dataset of the loader yields equals the copy=True batches, pass by pass,
for indexed sources and streams, tuples and dicts; a GradientTape loop on it learns."""
import json
import os

import numpy as np
import pytest

import fastload as fl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

TRANSFORMS = [fl.RandomResizedCrop(24), fl.RandomHorizontalFlip(), fl.Normalize([0.5] * 3, [0.25] * 3)]


def make_loader(root, **kw):
    return fl.Loader(fl.ImageFolder(root), **{"batch_size": 5, "shuffle": True, "seed": 5, "workers": 2,
                                              "layout": "NHWC", "transforms": TRANSFORMS, **kw})


def reference(root, epochs):
    loader = make_loader(root, copy=True)
    return [list(loader) for _ in range(epochs)]


def numpy(batch):
    if isinstance(batch, dict):
        return {k: numpy(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and not isinstance(batch, np.ndarray):
        return tuple(numpy(v) for v in batch)
    return batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)


def assert_batches(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g = numpy(g)
        if isinstance(w, dict):
            assert sorted(g) == sorted(w), i
            pairs = [(g[k], w[k]) for k in w]
        else:
            pairs = list(zip(g, w))
        for a, b in pairs:
            b = np.asarray(b, dtype=object) if isinstance(b, list) else b
            if b.dtype == object:   # strings come back from TensorFlow as bytes
                b = np.array([v.encode() if isinstance(v, str) else v for v in b], dtype=object)
            assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, a.dtype, b.shape, b.dtype)
            np.testing.assert_array_equal(a, b)


def test_every_pass_is_the_loaders_next_epoch(image_folder):
    want = reference(image_folder, 2)
    loader = make_loader(image_folder)
    ds = loader.tf_dataset()
    assert ds.element_spec == (tf.TensorSpec((None, 24, 24, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    held = [list(ds), list(ds)]   # every tensor of two epochs kept: their slots must not be refilled
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batch"] == 0
    assert_batches(held[0], want[0])
    assert_batches(held[1], want[1])
    assert len(held[0][-1][0]) == 24 % 5   # the last, partial batch
    for x, y in ds:   # a plain loop over the dataset: the third epoch
        assert x.dtype == tf.float32 and y.dtype == tf.int64
    assert loader.state_dict()["epoch"] == 3


def test_leaving_a_pass_early_resumes_where_it_stopped(image_folder):
    want = reference(image_folder, 2)
    loader = make_loader(image_folder)
    ds = loader.tf_dataset()   # no tf.data buffer: the loader stops where the loop left
    got = []
    for batch in ds:
        got.append(batch)
        if len(got) == 2:
            break
    assert loader.state_dict()["batch"] == 2
    rest = list(ds)
    assert_batches(got + rest, want[0])
    assert_batches(list(ds), want[1])
    # with tf.data's prefetch the pass holds leases on buffered batches and, left early, skips them
    buffered = make_loader(image_folder).tf_dataset(prefetch=3)
    held = list(buffered)
    assert_batches(held, want[0])


def test_keras_fit_knows_the_steps_and_trains_every_batch(image_folder):
    """fit on the dataset warned "Your input ran out of data" at the end of the first epoch (tf.data
    told it no cardinality), and that epoch trained 4 of 5 batches: fit's build pass takes a batch
    and starts over, and the pass it left had moved the loader. The dataset now has len(loader) as
    its cardinality, and a pass left after its first batch leaves the loader where it was."""
    import warnings
    keras = pytest.importorskip("keras")
    loader = make_loader(image_folder)
    ds = loader.tf_dataset()
    assert int(ds.cardinality()) == len(loader) == 5
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ds, epochs=2, shuffle=False, verbose=0, callbacks=[Steps()])
    assert not [str(w.message) for w in caught if "ran out of data" in str(w.message)
                or "cardinality" in str(w.message)]
    assert steps == [5, 5] and loader.state_dict()["epoch"] == 2 and loader.state_dict()["batch"] == 0
    want = reference(image_folder, 3)[2]
    assert_batches([next(iter(ds))], want[:1])      # a look at the next pass's first batch takes nothing
    assert loader.state_dict()["batch"] == 0
    assert_batches(list(ds), want)
    whole = make_loader(image_folder, batch_size=30)   # one batch an epoch: each pass takes it
    ds = whole.tf_dataset()
    assert [len(list(ds)) for _ in range(2)] == [1, 1] and whole.state_dict()["epoch"] == 2


def test_a_stream_of_dict_records_with_a_string_column(image_folder):
    src = fl.ImageFolder(image_folder)
    rows = [{"img": p, "cls": int(y), "name": os.path.basename(p)} for p, y in (src[i] for i in range(len(src)))]
    stream = fl.IterableRecords(lambda: iter(rows))
    kw = dict(batch_size=7, layout="NHWC", fields={"img": [fl.Resize((16, 16))], "cls": "index", "name": None})
    want = list(fl.Loader(stream, copy=True, **kw))
    ds = fl.Loader(stream, **kw).tf_dataset()
    assert ds.element_spec == {"img": tf.TensorSpec((None, 16, 16, 3), tf.float32),
                               "cls": tf.TensorSpec((None,), tf.int64), "name": tf.TensorSpec((None,), tf.string)}
    first, second = list(ds), list(ds)   # the first pass starts from the batch the signature was read from
    assert_batches(first, want)
    assert_batches(second, want)
    assert [len(b["cls"]) for b in first] == [7, 7, 7, 3]


def test_what_tensorflow_cannot_take_is_refused_by_name(image_folder):
    src = fl.ImageFolder(image_folder)
    records = fl.ListSource([{"img": p, "meta": {"i": i}} for i, (p, _) in enumerate(src[i] for i in range(len(src)))])
    loader = fl.Loader(records, batch_size=4, layout="NHWC", fields={"img": [fl.Resize((8, 8))], "meta": None})
    with pytest.raises(TypeError, match=r"batch column 'meta' holds dict values"):
        loader.tf_dataset()
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"output='numpy'.*got output='torch'"):
        make_loader(image_folder, output="torch").tf_dataset()


def test_a_gradient_tape_loop_learns(tmp_path):
    from fastload.synthetic import make_image_folder
    root = make_image_folder(str(tmp_path / "train"), classes=4, per_class=40, size=(48, 48), seed=1)
    loader = fl.Loader(fl.ImageFolder(root), batch_size=32, shuffle=True, seed=0, layout="NHWC",
                       transforms=[fl.RandomResizedCrop(32, scale=(0.5, 1.0)), fl.RandomHorizontalFlip(),
                                   fl.Normalize([0.5] * 3, [0.25] * 3)])
    # Plain TensorFlow ops: tf.keras is Keras 3, which follows KERAS_BACKEND (torch in CI).
    init = tf.random.stateless_normal
    params = [tf.Variable(init((3, 3, 3, 16), (0, 1), stddev=0.3)), tf.Variable(tf.zeros(16)),
              tf.Variable(init((3, 3, 16, 32), (0, 2), stddev=0.1)), tf.Variable(tf.zeros(32)),
              tf.Variable(init((32, 4), (0, 3), stddev=0.1)), tf.Variable(tf.zeros(4))]
    w1, b1, w2, b2, wd, bd = params

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            h = tf.nn.relu(tf.nn.conv2d(x, w1, 2, "SAME") + b1)
            h = tf.nn.relu(tf.nn.conv2d(h, w2, 2, "SAME") + b2)
            logits = tf.reduce_mean(h, axis=[1, 2]) @ wd + bd
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        for p, g in zip(params, tape.gradient(loss, params)):
            p.assign_sub(0.2 * g)
        return loss

    ds = loader.tf_dataset()
    losses = []
    for _ in range(8):
        losses.append(float(np.mean([step(x, y) for x, y in ds])))
    assert min(losses[1:]) < 0.75 * losses[0], losses


def test_a_first_batch_every_record_of_which_fails(tmp_path):
    """on_error="skip", batch 0 wholly failed: iterating stands batch 1 in for it, but tf_dataset read
    its signature from batch_at(0), which raised. The dataset yields what iteration yields."""
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"x": [float("nan") if i < 4 else i], "label": i % 2}) + "\n"
                            for i in range(12)))   # NaN features: every record of batch 0 fails
    make = lambda **kw: fl.Loader(fl.JSONRecords(str(path)), batch_size=4, on_error="skip",
                                  fields={"x": fl.Numeric(1), "label": "index"}, **kw)
    with pytest.warns(RuntimeWarning, match="skipping"):
        want = list(make(copy=True))
        loader = make()
        got = list(loader.tf_dataset())
    assert [b["x"][:, 0].tolist() for b in want] == [[4, 5, 6, 7], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert_batches(got, want)
    assert loader.stats()["stand_ins"] == 1   # the one iteration yielded: reading the signature is no stand-in


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_pass_through_column_of_whole_numbers_then_fractions(tmp_path):
    """The signature came from the first batch: a pass-through JSON number column whose first batch
    held whole numbers was signed int64, and the later batches' 8.5, 9.5, ... came out 8, 9, ...
    A pass-through column of numbers is signed float64; the Keras adapter signs it the same way."""
    from fastload.integrations.keras import KerasDataset
    pytest.importorskip("keras")
    path = write_jsonl(tmp_path / "r.jsonl", [{"x": [i], "score": i if i < 8 else i + 0.5, "n": i}
                                              for i in range(16)])
    make = lambda: fl.Loader(fl.JSONRecords(path), batch_size=8, fields={"x": fl.Numeric(1)})
    want = list(make())
    assert want[0]["score"].dtype == np.int64 and want[1]["score"].dtype == np.float64
    ds = make().tf_dataset()
    assert ds.element_spec["score"] == ds.element_spec["n"] == tf.TensorSpec((None,), tf.float64)
    got = list(ds)
    assert [v for b in got for v in b["score"].numpy().tolist()] == list(range(8)) + [i + 0.5 for i in range(8, 16)]
    assert [v for b in got for v in b["n"].numpy().tolist()] == list(range(16))
    keras_ds = KerasDataset(make(), inputs="x", targets="score").get_tf_dataset()
    assert keras_ds.element_spec[1] == tf.TensorSpec((None,), tf.float64)
    assert [v for _, y in keras_ds for v in y.numpy().tolist()] == list(range(8)) + [i + 0.5 for i in range(8, 16)]


def test_a_batch_the_signature_cannot_hold_is_refused_by_name(tmp_path):
    """A later batch whose values the signature would change is refused, naming the column, both
    dtypes and the way out, where it was cast silently; as is an integer float64 cannot hold."""
    path = write_jsonl(tmp_path / "r.jsonl", [{"x": [i], "score": i if i < 4 else i + 0.5} for i in range(8)])
    loader = fl.Loader(fl.JSONRecords(path), batch_size=4, fields={"x": fl.Numeric(1), "score": None})
    ds = loader.tf_dataset()   # a raw column (None) keeps its first batch's dtype: int64
    assert ds.element_spec["score"] == tf.TensorSpec((None,), tf.int64)
    with pytest.raises(tf.errors.OpError, match=r"column .score.: batch 1 of the pass holds float64 values which "
                                               r"would change if cast to int64, .* fields=.*fl.Numeric\(1\)"):
        list(ds)
    path = write_jsonl(tmp_path / "big.jsonl", [{"x": [i], "id": 2**53 + i} for i in range(4)])
    with pytest.raises(tf.errors.OpError, match=r"column .id.: batch 0 of the pass holds int64 values beyond "
                                               r"2\*\*53, which float64, .* cannot hold exactly"):
        list(fl.Loader(fl.JSONRecords(path), batch_size=4, fields={"x": fl.Numeric(1)}).tf_dataset())


def test_a_tuple_batchs_pass_through_numbers_are_float64_too(tmp_path):
    """Signed float64 in dict batches only: in tuple batches the column was int64 and the pass
    failed at the first batch of fractions, naming the column 'batch[2]'."""
    path = write_jsonl(tmp_path / "r.jsonl", [{"x": [i], "y": i % 3, "weight": 1 if i < 8 else 0.5}
                                              for i in range(16)])
    loader = fl.Loader(fl.JSONRecords(path), batch_size=8, as_tuple=True, fields={"x": fl.Numeric(1), "y": "index"})
    ds = loader.tf_dataset()
    assert ds.element_spec[2] == tf.TensorSpec((None,), tf.float64)
    assert [w for _, _, b in ds for w in b.numpy().tolist()] == [1.0] * 8 + [0.5] * 8
    kept = fl.Loader(fl.JSONRecords(path), batch_size=8, as_tuple=True,
                     fields={"x": fl.Numeric(1), "y": "index", "weight": None})   # named: the first batch's int64
    with pytest.raises(tf.errors.OpError, match=r"column 'batch\[2\] \(weight\)': batch 1 of the pass holds float64"):
        list(kept.tf_dataset())


def test_a_streams_dataset_only_looks_at_the_batch_that_signs_it(tmp_path):
    """A stream's first batch was taken from the loader to sign the dataset: the loader stood one
    batch on before anything was read, and after next(iter(ds)) the first pass missed that batch
    (so did model.fit's first epoch on the JAX and torch backends, whose build pass reads one)."""
    rows = [{"x": [i], "y": i % 3} for i in range(50)]
    loader = fl.Loader(fl.IterableRecords(lambda: iter(rows)), batch_size=16,
                       fields={"x": fl.Numeric(1), "y": "index"})
    ds = loader.tf_dataset()
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (0, 0)
    next(iter(ds))   # a look
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (0, 0)
    for epoch in (0, 1):
        assert [v for b in ds for v in b["x"].numpy()[:, 0].tolist()] == list(range(50))
        assert loader.state_dict()["epoch"] == epoch + 1
