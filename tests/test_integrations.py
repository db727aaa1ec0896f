"""Framework integrations: what Keras and JAX actually receive equals the copy=True batches."""
import importlib.util
import io
import os
import pathlib
import re
import threading

import numpy as np
import pytest

import fastload as fl
from _child import run_python

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
            assert_same(loader.batch_at(b, epoch), ref[epoch][b])
    with pytest.raises(IndexError, match="batch 5 out of range"):
        loader.batch_at(5, 0)


def test_batch_at_draws_an_epochs_order_once(image_folder, monkeypatch):
    """An epoch read through batch_at (a Keras PyDataset) draws its permutation once, not once a
    batch (quadratic in the records); order() still gives a copy of its own."""
    import fastload.pipeline.loader as loader_module
    ref = reference(image_folder, 2)
    drawn = []
    real = loader_module.epoch_order
    monkeypatch.setattr(loader_module, "epoch_order", lambda *a: drawn.append(a[3]) or real(*a))
    loader = make_loader(image_folder)
    for epoch in (0, 1):
        for b in range(len(loader)):
            assert_same(loader.batch_at(b, epoch), ref[epoch][b])
    assert drawn == [0, 1]
    order = loader.order(1)
    order[:] = 0   # the caller's own
    np.testing.assert_array_equal(loader.order(1), real(len(loader.source), loader.shuffled, loader.seed, 1))
    assert_same(loader.batch_at(0, 1), ref[1][0])


def test_batch_at_from_threads(image_folder):
    ref = reference(image_folder, 2)
    loader = make_loader(image_folder, workers=0)
    jobs = [(e, b) for e in (0, 1) for b in range(len(loader))] * 3
    got, errors = {}, []

    def run(part):
        try:
            for e, b in part:
                got.setdefault((e, b), []).append(loader.batch_at(b, e))
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


@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
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
    # class weights: a third element, each target's weight (a class not named weighs 1)
    weighted = list(KerasDataset(loader, inputs="img", targets="cls", class_weight={0: 0.5, 2: 3.0})
                    .get_numpy_iterator())
    for (x, y, sw), w in zip(weighted, want):
        assert_same((x, y), (w["img"], w["cls"]))
        np.testing.assert_array_equal(sw, [{0: 0.5, 2: 3.0}.get(int(c), 1.0) for c in w["cls"]])
    with pytest.raises(ValueError, match="class_weight= weighs the targets of \\(inputs, targets\\) batches"):
        list(KerasDataset(loader, class_weight={0: 2.0}).get_numpy_iterator())
    with pytest.raises(TypeError, match="class_weight must be a dict of class index -> weight"):
        KerasDataset(loader, inputs="img", targets="cls", class_weight=[1.0, 2.0])


def test_torch_dataloader_around_a_loader_says_to_iterate_it(image_folder):
    """DataLoader(loader) failed with Python's "'Loader' object is not subscriptable", which does
    not say that the Loader already batches; it now says so, and iter() and len() are as before."""
    torch = pytest.importorskip("torch")
    loader = make_loader(image_folder, output="torch")
    for kw in ({}, {"batch_size": None}, {"batch_size": 5, "shuffle": True}):
        with pytest.raises(TypeError, match=r"already yields whole batches.*iterate it directly"):
            next(iter(torch.utils.data.DataLoader(loader, **kw)))
    with pytest.raises(TypeError, match="already yields whole batches"):
        loader[0]
    assert len(loader) == 5 and [len(x) for x, _ in loader] == [5, 5, 5, 5, 4]


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


def test_jax_output_refuses_a_device_name_when_the_loader_is_made(image_folder):
    """device="cuda" is torch's spelling: with output="jax" it failed only at the first batch, in
    JAX's words. It is refused at once, saying what JAX takes."""
    with pytest.raises(TypeError, match=r"output='jax' takes a jax Device or Sharding as device=, got 'cuda'"):
        make_loader(image_folder, output="jax", device="cuda")


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


# -- Hugging Face datasets -------------------------------------------------------------
datasets = pytest.importorskip("datasets")
from PIL import Image  # noqa: E402

from fastload.errors import RecordError  # noqa: E402
from fastload.image.values import to_image_value  # noqa: E402
from fastload.synthetic import encode, photo_like  # noqa: E402

HF_FIELDS = {"image": [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip()], "label": "index"}


@pytest.fixture(scope="module")
def hf_images(tmp_path_factory):
    """Six photo-like images: as arrays, as JPEG files on disk, and their labels."""
    root = tmp_path_factory.mktemp("hf")
    arrays = [photo_like(30 + 3 * i, 40 - 2 * i, seed=i) for i in range(6)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(str(root / f"{i}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(encode(a, quality=90))
    return arrays, paths, [i % 3 for i in range(6)]


def hf_reference(paths, labels, **kw):
    records = fl.ListSource([{"image": p, "label": y} for p, y in zip(paths, labels)])
    return list(fl.Loader(records, batch_size=4, fields=HF_FIELDS, copy=True, **kw))


def assert_dict_batches(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert sorted(g) == sorted(w)
        for k in w:
            assert_same((g[k],), (w[k],))


def test_hf_dataset_image_column_forms(hf_images):
    arrays, paths, labels = hf_images
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    want = hf_reference(paths, labels, shuffle=True, seed=2)
    jpeg_bytes = [pathlib.Path(p).read_bytes() for p in paths]
    forms = {
        "hub dicts": [{"bytes": b, "path": None} for b in jpeg_bytes],
        "paths": paths,
        "path dicts": [{"bytes": None, "path": p} for p in paths],
    }
    for name, column in forms.items():
        ds = datasets.Dataset.from_dict({"image": column, "label": labels}, features=features)
        src = fl.HFDataset(ds)
        assert src.classes == ["a", "b", "c"] and len(src) == 6 and src.fields == ("image", "label")
        got = list(fl.Loader(src, batch_size=4, fields=HF_FIELDS, shuffle=True, seed=2))
        assert_dict_batches(got, want)
    # PIL images in a column are stored losslessly (PNG): the reference reads the same pixels from PNG files.
    pngs = []
    for i, a in enumerate(arrays):
        pngs.append(paths[i] + ".png")
        Image.fromarray(a).save(pngs[-1])
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in arrays], "label": labels},
                                    features=features)
    assert_dict_batches(list(fl.Loader(fl.HFDataset(ds), batch_size=4, fields=HF_FIELDS)),
                        hf_reference(pngs, labels))


def test_hf_dataset_in_every_format_gives_the_same_batches(hf_images):
    """with_format("arrow") made a chunk read a pyarrow Table, which gather read as a dict of columns:
    a TypeError at the first batch. Every format now gives the plain dataset's batches."""
    _, paths, labels = hf_images
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features)
    want = hf_reference(paths, labels, shuffle=True, seed=2)
    for fmt in (None, "numpy", "arrow", "pandas"):
        src = fl.HFDataset(ds.with_format(fmt))
        assert_dict_batches(list(fl.Loader(src, batch_size=4, fields=HF_FIELDS, shuffle=True, seed=2)), want)
        assert src[1]["label"] == labels[1], fmt


def test_hf_dataset_with_a_transform_hands_it_decoded_images_and_keeps_its_columns(hf_images):
    """A set_transform written for PIL images (Hugging Face's recipe) was handed the undecoded bytes
    dicts fastload had cast the column to, and a column the transform adds was dropped."""
    arrays, paths, labels = hf_images
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features)

    def grey(batch):
        return {"image": [im.convert("L").convert("RGB") for im in batch["image"]], "label": batch["label"],
                "label10": [y * 10 for y in batch["label"]]}
    src = fl.HFDataset(ds.with_transform(grey))
    assert src.fields == ("image", "label", "label10") and src.classes == ["a", "b", "c"]
    fields = {"image": [fl.CenterCrop(20)], "label": "index"}
    got = list(fl.Loader(src, batch_size=4, fields=fields, dtype="uint8", layout="NHWC"))
    want = []
    for p in paths:   # the transform's own pixels: Pillow's decode, greyed, centre-cropped
        with Image.open(p) as im:
            a = np.asarray(im.convert("L").convert("RGB"))
        top, left = int(round((a.shape[0] - 20) / 2)), int(round((a.shape[1] - 20) / 2))   # torchvision's
        want.append(a[top:top + 20, left:left + 20])
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in got]), np.stack(want))
    assert [y for b in got for y in b["label10"].tolist()] == [y * 10 for y in labels]


def test_hf_framework_formats_collate_as_plain_values():
    """with_format("torch") (as Hugging Face's tutorials set it) made a number column that no field
    names a list of 0-d tensors, not the float64 array the plain dataset gives; so for jax, and for
    an IterableDataset in torch format."""
    base = datasets.Dataset.from_dict({"label": [i % 2 for i in range(8)], "score": [i * 0.25 for i in range(8)]})
    want = np.array([i * 0.25 for i in range(8)], np.float64)

    def scores(ds):
        batches = list(fl.Loader(fl.HFDataset(ds), batch_size=4, fields={"label": "index"}))
        for b in batches:
            assert isinstance(b["score"], np.ndarray) and b["score"].dtype == np.float64, type(b["score"])
            assert b["label"].dtype == np.int64
        return np.concatenate([b["score"] for b in batches])

    formats = ["torch", "jax"] if importlib.util.find_spec("jax") else ["torch"]
    for fmt in formats if importlib.util.find_spec("torch") else []:
        np.testing.assert_array_equal(scores(base.with_format(fmt)), want)
        np.testing.assert_array_equal(scores(base.to_iterable_dataset().with_format(fmt)), want)
    np.testing.assert_array_equal(scores(base), want)


def test_hf_shuffled_iterable_dataset_draws_each_epoch_from_the_epoch():
    """A shuffled IterableDataset gave the same order every epoch: the Loader told the stream the
    epoch, but not the dataset, which reshuffles only on set_epoch. Each epoch is now the order
    Hugging Face's own loop gives after set_epoch(epoch), also for a loader resumed mid-epoch."""
    ds = datasets.Dataset.from_dict({"i": list(range(40))}).to_iterable_dataset(num_shards=4)
    ds = ds.shuffle(seed=1, buffer_size=8)
    loader = fl.Loader(fl.HFDataset(ds), batch_size=10, fields={"i": None})
    got = [[int(x) for b in loader for x in b["i"]] for _ in range(3)]
    ref = []
    for e in range(3):
        ds.set_epoch(e)
        ref.append([r["i"] for r in ds])
    assert got == ref and ref[0] != ref[1] != ref[2] and sorted(ref[1]) == list(range(40))
    loader.set_epoch(1)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    it.close()
    resumed = fl.Loader(fl.HFDataset(ds), batch_size=10, fields={"i": None}).load_state_dict(state)
    assert [int(x) for b in resumed for x in b["i"]] == ref[1][20:]


def test_hf_stream_lineage_names_its_shuffle_for_the_ranks_to_compare():
    """A shuffle seeded per rank (ds.shuffle(seed=rank)) gave each rank its share of another order,
    records twice and others never; the ranks compared nothing of it. The stream's lineage, which
    they compare with the Loader's settings, now holds each shuffle's buffer and seed's generator."""
    ds = datasets.Dataset.from_dict({"i": list(range(40))}).to_iterable_dataset(num_shards=4)

    def lineage(seed, buffer_size=8):
        return fl.HFDataset(ds.shuffle(seed=seed, buffer_size=buffer_size)).lineage()
    assert fl.HFDataset(ds).lineage() == "HFDataset stream of 4 shards"
    assert lineage(1) == lineage(1) and lineage(1) != lineage(2) and lineage(1) != lineage(1, 16)
    assert re.fullmatch(r"shuffle\(buffer_size=8, generator [0-9a-f]{12}\) of HFDataset stream of 4 shards",
                        lineage(1)), lineage(1)
    stream = fl.HFDataset(ds.shuffle(seed=1, buffer_size=8))
    assert stream.map(dict).lineage() == f"map(dict) of {lineage(1)}"
    before = stream.lineage()
    for epoch in (0, 1):   # reading a pass leaves it as it was
        stream.set_epoch(epoch)
        assert len(list(stream)) == 40 and stream.lineage() == before


def test_hf_stream_split_by_node_is_not_sharded_again():
    """Hugging Face's DDP recipe, split_dataset_by_node, then a Loader sharding by rank: each rank read
    half of its half, and half the data was never read, silently. Refused, naming the split."""
    from datasets.distributed import split_dataset_by_node
    ds = datasets.Dataset.from_dict({"i": list(range(16))}).to_iterable_dataset(num_shards=4)
    part = fl.HFDataset(split_dataset_by_node(ds, rank=1, world_size=2))
    for stream in (part, part.map(dict), part.prefetch(2).filter(bool)):   # through a stream's steps too
        with pytest.raises(ValueError, match=r"split_dataset_by_node\(rank=1, world_size=2\) already.*2 ranks"):
            iter(fl.Loader(stream, batch_size=4, fields={"i": None}, rank=1, world_size=2))
    # the whole stream, sharded by the Loader: every record once across the ranks
    shares = [[int(v) for b in fl.Loader(fl.HFDataset(ds), batch_size=4, fields={"i": None}, rank=r, world_size=2)
               for v in b["i"]] for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(16))
    # read by one process, the split is that process's data
    assert sorted(int(v) for b in fl.Loader(part, batch_size=4, fields={"i": None}) for v in b["i"]) == \
        sorted(r["i"] for r in split_dataset_by_node(ds, rank=1, world_size=2))


def test_hf_iterable_dataset_and_columns(hf_images):
    _, paths, labels = hf_images
    ds = datasets.Dataset.from_dict({"image": paths, "label": labels, "text": ["x"] * 6},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64"),
                                                                "text": datasets.Value("string")}))
    stream = fl.HFDataset(ds.to_iterable_dataset(), columns=["image", "label"])
    assert isinstance(stream, fl.IterableRecords)
    want = hf_reference(paths, labels)
    for _ in range(2):   # re-iterable: each epoch reads the stream again
        assert_dict_batches(list(fl.Loader(stream, batch_size=4, fields=HF_FIELDS)), want)
    src = fl.HFDataset(ds, columns=["image", "label"])
    assert src.fields == ("image", "label") and src.classes is None
    with pytest.raises(KeyError, match="no column 'pixels'"):
        fl.HFDataset(ds, columns=["pixels"])
    with pytest.raises(TypeError, match="datasets.Dataset or IterableDataset"):
        fl.HFDataset([1, 2])


def test_hf_bad_image_value_is_a_record_error(hf_images):
    _, paths, labels = hf_images
    ds = datasets.Dataset.from_dict({"image": paths, "label": labels},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    src = fl.HFDataset(ds)
    src._images = frozenset({"image", "label"})   # an int where an image belongs
    with pytest.raises(RecordError, match=r"HFDataset\[0\]: column 'label': expected an image path"):
        src[0]


def test_hf_missing_image_file_is_named(hf_images, tmp_path):
    """A row whose image path could not be opened was reported as "HFDataset[2]: cannot open: No such
    file or directory", which names neither file: the report now names the path, under both policies."""
    _, paths, labels = hf_images
    missing = str(tmp_path / "gone.jpg")
    column = paths[:2] + [missing] + paths[3:]
    ds = datasets.Dataset.from_dict({"image": column, "label": labels},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    with pytest.raises(fl.DecodeError, match=r"HFDataset\[2\]: .*cannot open: No such file .*: .*gone\.jpg"):
        list(fl.Loader(fl.HFDataset(ds), batch_size=3, fields=HF_FIELDS))
    loader = fl.Loader(fl.HFDataset(ds), batch_size=3, fields=HF_FIELDS, on_error="skip")
    with pytest.warns(RuntimeWarning, match="gone.jpg"):
        assert [len(b["label"]) for b in loader] == [2, 3]
    [(record, reason)] = loader.stats()["failures"]
    assert record == "HFDataset[2]" and missing in reason


def test_to_image_value_forms(tmp_path):
    rgb = photo_like(9, 7, seed=1)
    png = encode(rgb, "PNG")
    assert to_image_value(None) is None and to_image_value("a.jpg") == "a.jpg"
    assert to_image_value(tmp_path / "b.jpg") == str(tmp_path / "b.jpg")
    assert to_image_value(bytearray(png)) == png and to_image_value(memoryview(png)) == png
    assert to_image_value({"bytes": png, "path": "x.png"}) == png
    assert to_image_value({"bytes": None, "path": "x.png"}) == "x.png"
    assert to_image_value({"bytes": None, "path": None}) is None
    buf = io.BytesIO(png)
    buf.read()   # a file object already read to its end still gives the whole image
    assert to_image_value(buf) == png
    (tmp_path / "c.png").write_bytes(png)
    with open(tmp_path / "c.png", "rb") as f:
        f.read(5)
        assert to_image_value(f) == png
    with open(tmp_path / "c.png", "r", encoding="latin-1") as f, pytest.raises(TypeError, match="binary mode"):
        to_image_value(f)
    palette, cmyk = Image.fromarray(rgb).convert("P"), Image.fromarray(rgb).convert("CMYK")
    for img, want in [(Image.fromarray(rgb), rgb), (Image.fromarray(rgb[..., 0]), np.repeat(rgb[..., :1], 3, 2)),
                      (Image.fromarray(np.dstack([rgb, rgb[..., :1]])), rgb),
                      (palette, np.asarray(palette.convert("RGB"))), (cmyk, np.asarray(cmyk.convert("RGB")))]:
        got = to_image_value(img)
        assert got.dtype == np.uint8 and got.shape == (9, 7, 3) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(to_image_value(rgb[..., 0]), np.repeat(rgb[..., :1], 3, 2))
    np.testing.assert_array_equal(to_image_value(rgb[:, :, :1]), np.repeat(rgb[..., :1], 3, 2))
    np.testing.assert_array_equal(to_image_value(np.dstack([rgb, rgb[..., :1]])), rgb)
    assert to_image_value(rgb[:, ::-1]).flags.c_contiguous
    with pytest.raises(ValueError, match="must be uint8, got float32"):
        to_image_value(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"got shape \(9, 7, 2\)"):
        to_image_value(rgb[..., :2])
    with pytest.raises(TypeError, match="got int"):
        to_image_value(3)
    with pytest.raises(TypeError, match=r"needs 'bytes' or 'path', got keys \['src'\]"):
        to_image_value({"src": "a"})


def test_array_values_take_the_decoded_route():
    # Pixels already decoded (arrays, PIL images) skip decoding and go to the kernel that finishes
    # Pillow-decoded samples: the batch equals the one from a lossless PNG of the same pixels.
    from PIL import Image as PILImage
    rgb = photo_like(33, 41, seed=5)
    transforms = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.ColorJitter(0.2, 0.2, 0.2)]

    def batch(values):
        return next(iter(fl.Loader(fl.ListSource(values), batch_size=len(values), transforms=transforms, seed=4,
                                   copy=True)))
    want = batch([encode(rgb, "PNG")] * 4)
    got = batch([rgb, PILImage.fromarray(rgb), rgb[..., ::-1][..., ::-1], np.dstack([rgb, rgb[..., :1]])])
    np.testing.assert_array_equal(got, want)
    with pytest.warns(RuntimeWarning, match="skipping"):
        short = next(iter(fl.Loader(fl.ListSource([rgb, rgb.astype(np.float32), None, rgb]), batch_size=4,
                                    transforms=transforms, seed=4, on_error="skip")))
    assert len(short) == 2


SHARDED = """
import numpy as np, fastload as fl
from fastload.integrations.jax import batch_sharding
records = [(np.full((4, 4, 3), i, np.uint8), i) for i in range(9)]
def make(**kw):
    return fl.Loader(fl.ListSource(records), output="jax", device=batch_sharding(), transforms=[fl.CenterCrop(4)],
                     dtype="uint8", **kw)
for kw, what in (({"batch_size": 4}, "last batch holds 1"), ({"batch_size": 3, "drop_last": True}, "batch_size=3"),
                 ({"batch_size": 4, "drop_last": True, "on_error": "skip"}, "a short batch cannot be split")):
    try:
        make(**kw)
    except ValueError as e:
        assert what in str(e) and "2 devices" in str(e), e
    else:
        raise AssertionError(kw)
batches = list(make(batch_size=4, drop_last=True))
assert len(batches) == 2
for b, (x, y) in enumerate(batches):
    assert len(x.sharding.device_set) == 2 and x.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(np.asarray(y), np.arange(4 * b, 4 * b + 4))
    np.testing.assert_array_equal(np.asarray(x)[:, 0, 0, 0], np.arange(4 * b, 4 * b + 4))
print("sharded ok")
"""


def test_a_sharded_jax_loader_refuses_batches_it_cannot_split_before_the_first():
    """Over 2 devices, 9 records in batches of 4 leave a last batch of 1, and 3 a batch cannot be
    split at all: refused at construction, naming drop_last, where JAX raised after the epoch's
    good batches (and under on_error="skip", at the first bad file, which leaves its batch short);
    with drop_last every batch is sharded over both devices."""
    out = run_python(["-c", SHARDED], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                                           "JAX_PLATFORMS": "cpu"})
    assert "sharded ok" in out
