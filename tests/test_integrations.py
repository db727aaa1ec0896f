"""Framework integrations: what Keras and JAX actually receive equals the copy=True batches."""
import importlib.util
import os
import threading

import numpy as np
import pytest

import fastload as fl
from _child import run_python
from fastload.integrations._compat import batch_at

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSFORMS = [fl.RandomResizedCrop(24), fl.RandomHorizontalFlip(), fl.ColorJitter(0.3, 0.3, 0.3),
              fl.Normalize([0.5] * 3, [0.25] * 3)]


def make_loader(root, **kw):
    kw = {"batch_size": 5, "shuffle": True, "seed": 11, "workers": 2, "transforms": TRANSFORMS, **kw}
    return fl.Loader(fl.ImageFolder(root), **kw)


def reference(root, epochs, **kw):
    loader = make_loader(root, copy=True, **kw)
    return [list(loader) for _ in range(epochs)]


def assert_same(got, want):
    assert type(got) is type(want) and len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_array_equal(g, w)


def test_batch_at_is_iteration_by_index(image_folder):
    ref = reference(image_folder, 2)
    loader = make_loader(image_folder)
    assert len(ref[0]) == len(loader) == 5   # 24 records: four of 5 and a last one of 4
    for epoch in (1, 0):
        for b in reversed(range(len(loader))):
            assert_same(batch_at(loader, b, epoch), ref[epoch][b])
    with pytest.raises(IndexError, match="batch 5 outside"):
        batch_at(loader, 5, 0)


def test_batch_at_from_threads(image_folder):
    ref = reference(image_folder, 2)
    loader = make_loader(image_folder, workers=0)
    jobs = [(e, b) for e in (0, 1) for b in range(len(loader))] * 3
    got, errors = {}, []

    def run(part):
        try:
            for e, b in part:
                got.setdefault((e, b), []).append(batch_at(loader, b, e))
        except Exception as exc:   # reported below with the thread's failure
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(jobs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(got) == sorted(set(jobs))
    for (e, b), batches in got.items():
        for batch in batches:
            assert_same(batch, ref[e][b])


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras_fit_sees_the_reference_batches(image_folder, backend):
    for module in ("keras", backend):   # imported in the child, under the backend chosen there
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    out = run_python([os.path.join(HERE, "_keras_fit.py"), image_folder], env={"KERAS_BACKEND": backend})
    assert out.strip().endswith(f"keras {backend} ok")


@pytest.fixture(scope="module")
def keras_torch():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def test_keras_view_refuses_nchw(image_folder, keras_torch):
    from fastload.integrations.keras import KerasDataset
    if keras_torch.config.image_data_format() != "channels_last":
        pytest.skip("Keras configured for channels_first")
    with pytest.raises(ValueError, match="layout='NHWC'"):
        KerasDataset(make_loader(image_folder))
    view = KerasDataset(make_loader(image_folder, layout="NHWC", drop_last=True))
    assert (view.num_batches, view.batch_size, view.has_partial_batch) == (4, 5, False)


def test_keras_view_of_dict_batches(image_folder, keras_torch):
    from fastload.integrations.keras import KerasDataset
    src = fl.ImageFolder(image_folder)
    records = fl.ListSource([{"img": p, "cls": int(y), "note": "x"} for p, y in
                             (src[i] for i in range(len(src)))])
    loader = fl.Loader(records, batch_size=8, layout="NHWC",
                       fields={"img": [fl.Resize((16, 16))], "cls": "index", "note": None})
    want = list(fl.Loader(records, batch_size=8, layout="NHWC", copy=True,
                          fields={"img": [fl.Resize((16, 16))], "cls": "index", "note": None}))
    view = KerasDataset(loader, inputs="img", targets="cls")
    got = list(view.get_numpy_iterator())
    assert len(got) == 3
    for (x, y), w in zip(got, want):
        assert_same((x, y), (w["img"], w["cls"]))


jax = pytest.importorskip("jax")


def test_jax_device_put_matches_reference(image_folder):
    from fastload.integrations.jax import batch_sharding, device_put
    ref = reference(image_folder, 1, layout="NHWC")
    held = [device_put(batch) for batch in make_loader(image_folder, layout="NHWC", copy=True)]
    assert len(held) == len(ref[0])
    for (x, y), (rx, ry) in zip(held, ref[0]):
        assert isinstance(x, jax.Array) and x.shape == rx.shape and x.shape[-1] == 3
        np.testing.assert_array_equal(np.asarray(x), rx)
        assert y.dtype == (np.int64 if jax.config.jax_enable_x64 else np.int32)
        np.testing.assert_array_equal(np.asarray(y), ry)
    x, y = device_put(ref[0][0], sharding=batch_sharding())
    assert x.sharding.is_equivalent_to(batch_sharding(), x.ndim)
    np.testing.assert_array_equal(np.asarray(x), ref[0][0][0])


def test_jax_jitted_steps_see_every_batch(image_folder):
    from fastload.integrations.jax import device_put
    ref = reference(image_folder, 2, layout="NHWC")

    @jax.jit
    def step(acc, x, y):   # dispatched asynchronously; results read only at the end
        return acc + jax.numpy.sum(x * (y[:, None, None, None] + 1))
    loader = make_loader(image_folder, layout="NHWC", copy=True)
    acc = jax.numpy.zeros((), jax.numpy.float32)
    for _ in range(2):
        for batch in loader:
            acc = step(acc, *device_put(batch))
    want = sum(np.sum(x * (y[:, None, None, None] + 1), dtype=np.float32) for e in ref for x, y in e)
    np.testing.assert_allclose(float(acc), want, rtol=1e-5)


def test_jax_labels_narrowed_only_when_they_fit():
    from fastload.integrations.jax import device_put
    if jax.config.jax_enable_x64:
        pytest.skip("x64 keeps int64")
    y = device_put({"label": np.array([0, 2**31 - 1], dtype=np.int64), "names": ["a", "b"]})
    assert y["label"].dtype == np.int32 and y["names"] == ["a", "b"]
    with pytest.raises(OverflowError, match=r"'label': values in \[0, 2147483648\] do not fit int32"):
        device_put({"label": np.array([0, 2**31], dtype=np.int64)})
