"""The Loader against independent references: Pillow for pixels, plain Python for order and geometry."""
import gc
import importlib.util
import json
import os
import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from threadutil import in_fork

import fastload as fl
from fastload._kernels import _batch
from fastload.image.field import compile_plan
from fastload.pipeline import loader as loader_module
from fastload.pipeline.fields import Output

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fastload_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fastload")]


def pil_rgb(path):
    with Image.open(path) as im:
        return im.convert("RGB")


def batches(loader):
    return [tuple(np.array(a) for a in b) for b in loader]


def test_image_folder_lists_classes_and_records(image_folder):
    src = fl.ImageFolder(image_folder)
    assert src.classes == ["class_000", "class_001", "class_002"]
    assert len(src) == 24
    path, label = src[9]
    assert os.path.basename(os.path.dirname(path)) == src.classes[label] == "class_001"
    assert src.labels().tolist() == [0] * 8 + [1] * 8 + [2] * 8


def test_resize_matches_pillow(image_folder):
    src = fl.ImageFolder(image_folder)
    loader = fl.Loader(src, batch_size=5, transforms=[fl.Resize((40, 48))], dtype="uint8",
                       layout="NHWC", dct_scale=False, workers=2)
    images, labels = next(iter(loader))
    assert images.shape == (5, 40, 48, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0] * 5
    for i in range(5):
        ref = np.asarray(pil_rgb(src[i][0]).resize((48, 40), Image.BILINEAR), dtype=np.int16)
        diff = np.abs(images[i].astype(np.int16) - ref)
        assert diff.mean() <= 1.0, f"sample {i}: mean abs diff {diff.mean():.3f}"


def reference_sample(path, plan, seed, epoch, index, size, p_flip):
    """Pillow: resample the plan's box, then flip per the sample's own draw."""
    im = pil_rgb(path)
    box, out = plan.box(im.width, im.height, seed, epoch, index)
    assert out == size
    ref = np.asarray(im.resize((size[1], size[0]), Image.BILINEAR, box=box))
    if _batch.uniform(seed, epoch, index, 512) < p_flip:
        ref = ref[:, ::-1]
    return ref


def test_random_resized_crop_and_flip_match_pillow(image_folder):
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(32), fl.RandomHorizontalFlip(0.5)]
    loader = fl.Loader(src, batch_size=8, shuffle=True, seed=7, transforms=tr, dtype="uint8",
                       layout="NHWC", dct_scale=False)
    plan, _ = compile_plan(tr, dtype="uint8", layout="NHWC")
    order = loader.order(0)
    images, _ = next(iter(loader))
    flipped = 0
    for pos in range(8):
        index = int(order[pos])
        ref = reference_sample(src[index][0], plan, 7, 0, index, (32, 32), 0.5)
        flipped += _batch.uniform(7, 0, index, 512) < 0.5
        diff = np.abs(images[pos].astype(np.int16) - ref)
        assert diff.mean() <= 1.0, f"record {index}: mean abs diff {diff.mean():.3f}"
    assert 0 < flipped < 8   # both branches exercised with this seed


def test_geometry_follows_torchvision_rules():
    """RandomResizedCrop boxes stay inside the image, within scale/ratio bounds when a try succeeds."""
    plan, _ = compile_plan([fl.RandomResizedCrop(16, scale=(0.2, 0.9), ratio=(0.5, 2.0))])
    for index in range(300):
        (x0, y0, x1, y1), size = plan.box(200, 120, 1, 0, index)
        assert size == (16, 16)
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 120
        w, h = x1 - x0, y1 - y0
        assert w == int(w) and h == int(h)
        if not (w == 200 and h == 120):
            assert 0.2 * 24000 - 300 <= w * h <= 0.9 * 24000 + 300
            assert 0.5 - 0.02 <= w / h <= 2.0 + 0.02
    # Resize(shorter side) then CenterCrop: torchvision's arithmetic
    plan, _ = compile_plan([fl.Resize(64), fl.CenterCrop(56)])
    (x0, y0, x1, y1), size = plan.box(200, 100, 0, 0, 0)
    scale = 100 / 64                        # shorter side 100 -> 64, longer 200 -> 128
    assert size == (56, 56)
    assert (x0, y0) == pytest.approx((36 * scale, 4 * scale))
    assert (x1 - x0, y1 - y0) == pytest.approx((56 * scale, 56 * scale))


def test_tiny_and_extreme_aspect_images_fall_back(tmp_path):
    for name, (h, w) in {"dot": (1, 1), "strip": (3, 400), "pole": (300, 2)}.items():
        Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(tmp_path / f"{name}.jpg", quality=95)
    loader = fl.Loader(fl.ImageFiles(tmp_path), batch_size=3, dtype="uint8", layout="NHWC",
                       transforms=[fl.RandomResizedCrop(24)])
    images = next(iter(loader))
    assert images.shape == (3, 24, 24, 3)
    assert np.abs(images.astype(int) - 200).max() <= 3


def test_normalize_float_layouts_are_exact_functions_of_uint8(image_folder):
    src = fl.ImageFolder(image_folder)
    common = dict(batch_size=6, shuffle=True, seed=3, workers=2)
    tr = [fl.RandomResizedCrop(24), fl.RandomHorizontalFlip()]
    u8, _ = next(iter(fl.Loader(src, transforms=tr, dtype="uint8", layout="NHWC", **common)))
    f32, _ = next(iter(fl.Loader(src, transforms=tr + [fl.Normalize(MEAN, STD)], dtype="float32",
                                 layout="NCHW", **common)))
    ref = ((u8.astype(np.float32) / np.float32(255) - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(f32, ref, rtol=0, atol=1e-6)
    f16, _ = next(iter(fl.Loader(src, transforms=tr + [fl.Normalize(MEAN, STD)], dtype="float16",
                                 layout="NHWC", **common)))
    assert f16.dtype == np.float16
    np.testing.assert_array_equal(f16, f32.transpose(0, 2, 3, 1).astype(np.float16))
    caffe, _ = next(iter(fl.Loader(src, transforms=tr + [fl.Normalize([103.939, 116.779, 123.68],
                                                                      max_value=1.0, order="BGR")],
                                   dtype="float32", layout="NHWC", **common)))
    np.testing.assert_allclose(caffe, u8[..., ::-1].astype(np.float32) - np.float32([103.939, 116.779, 123.68]),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_identical_batches_for_any_worker_count(image_folder, workers):
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(20), fl.RandomHorizontalFlip(), fl.RandomVerticalFlip(0.3),
          fl.RandomRotate90(0.5), fl.ColorJitter(0.4, 0.4, 0.4), fl.Normalize(MEAN, STD)]
    reference = batches(fl.Loader(src, batch_size=7, shuffle=True, seed=11, transforms=tr, workers=0))
    got = batches(fl.Loader(src, batch_size=7, shuffle=True, seed=11, transforms=tr, workers=workers))
    assert len(got) == len(reference) == 4
    for (x, y), (rx, ry) in zip(got, reference):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)


def test_cheap_batches_become_one_task_each_with_the_same_batches(image_folder, monkeypatch):
    """After an epoch shows the samples are cheap, each batch is one worker's task (the workers
    fill different batches); the batches are what a single thread computes, epoch after epoch."""
    # Cheap is under _WHOLE_BATCH_S of wall time a batch; 1 s here, so that a machine's hiccup in
    # the first samples timed cannot make these look costly.
    monkeypatch.setattr(loader_module, "_WHOLE_BATCH_S", 1.0)
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(12), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)]
    kw = dict(batch_size=6, shuffle=True, seed=5, transforms=tr)
    reference = fl.Loader(src, workers=0, **kw)
    loader = fl.Loader(src, workers=2, prefetch=2, **kw)
    chunk_rows = []
    for epoch in range(3):
        want = batches(reference)
        it = iter(loader)
        chunk_rows.append(it.rows_per_chunk)
        got = batches(it)
        assert [x.shape for x, _ in got] == [x.shape for x, _ in want] and len(got) == len(src) // 6
        for (x, y), (rx, ry) in zip(got, want):
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(y, ry)
    assert chunk_rows == [3, 6, 6]   # split across the workers until a sample's cost is known
    assert loader.stats()["buffer_slots"] <= 2 + 2   # prefetch + 2: no more slots for it
    # A prefetch window that could not keep the workers busy with whole batches keeps splitting them.
    monkeypatch.setattr(loader_module, "_cores", lambda: 4)
    narrow = fl.Loader(src, workers=3, prefetch=1, **kw)
    rows = []
    for epoch in range(2):
        it = iter(narrow)
        rows.append(it.rows_per_chunk)
        assert len(batches(it)) == len(src) // 6
    assert rows == [2, 2]


def test_more_workers_than_cores_run_as_many_threads_as_cores(image_folder, monkeypatch):
    """8 workers on 2 cores ran 8 threads taking turns on the cores, each batch cut into 8 chunks
    (a sample's wall time, stretched by the sharing, never looked cheap): 1.7x slower at 64 px. Once
    a sample is known to compute, as many threads run as there are cores; the batches are a
    single thread's. A fill that waits on reads keeps every worker."""
    monkeypatch.setattr(loader_module, "_cores", lambda: 2)
    src = fl.ImageFolder(image_folder)
    kw = dict(batch_size=6, shuffle=True, seed=5, transforms=[fl.RandomResizedCrop(12), fl.Normalize(MEAN, STD)])
    single = fl.Loader(src, workers=0, **kw)
    reference = [batches(single) for _ in range(3)]   # epochs 0, 1, 2
    loader = fl.Loader(src, workers=8, prefetch=2, **kw)
    rows, threads = [], []
    for epoch in range(3):
        it = iter(loader)
        rows.append(it.rows_per_chunk)
        threads.append(it.upstream.workers)
        got = list(batches(it))
        assert len(got) == len(reference[epoch])
        for (x, y), (rx, ry) in zip(got, reference[epoch]):
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(y, ry)
    # Then a batch in at most 2 chunks (whole once its cost, by wall time, is under _WHOLE_BATCH_S:
    # epoch 1 still judges it by epoch 0's, stretched by 8 threads, over that on the Pillow route).
    assert threads == [8, 2, 2] and rows[0] == 1 and rows[1] in (3, 6) and rows[2] in (3, 6), (threads, rows)
    # utilisation is of the threads that ran: over 8 it could not pass 2/8, and doctor took the
    # cores' full use for slow storage
    s = loader.stats()
    assert s["threads"] == 2 and s["worker_utilisation"] == pytest.approx(s["busy_s"] / (2 * s["elapsed_s"]))
    waits = fl.Loader(src, workers=8, prefetch=2, **kw)
    waits._measured = (0.01, 0.0001)   # a fill that mostly waits on reads
    it = iter(waits)
    assert it.upstream.workers == 8 and it.rows_per_chunk == 1


class SlowReads(fl.Source):
    """Image paths behind a storage that takes 20 ms a record to answer (a network share)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.paths[i]

    def gather(self, indices):
        time.sleep(0.02 * len(indices))
        return [self.paths[i] for i in indices.tolist()]

    def record_id(self, i):
        return self.paths[i]


def test_workers_waiting_on_the_source_are_all_kept(image_folder, monkeypatch):
    """A fill whose time goes to the source's reads keeps its 8 workers on 2 cores epoch after
    epoch: the reads are part of what a sample costs, not just its decode (which, timed alone,
    looked like computing and cut the threads to 2, four times slower on slow storage)."""
    monkeypatch.setattr(loader_module, "_cores", lambda: 2)
    src = SlowReads(fl.ImageFolder(image_folder).paths)
    kw = dict(batch_size=6, shuffle=True, seed=5, transforms=[fl.CenterCrop(8)], dtype="uint8")
    single = fl.Loader(src, workers=0, **kw)
    reference = [[np.array(x) for x in single] for _ in range(3)]   # epochs 0, 1, 2; images only
    loader = fl.Loader(src, workers=8, prefetch=2, **kw)
    threads = []
    for epoch in range(3):
        it = iter(loader)
        threads.append(it.upstream.workers)
        got = [np.array(x) for x in it]
        assert len(got) == len(reference[epoch]) == len(src) // 6
        for x, rx in zip(got, reference[epoch]):
            assert x.shape == (6, 3, 8, 8) and x.dtype == np.uint8
            np.testing.assert_array_equal(x, rx)
    assert threads == [8, 8, 8]


def test_shuffle_is_a_permutation_per_epoch_and_labels_follow_records(image_folder):
    src = fl.ImageFolder(image_folder)
    loader = fl.Loader(src, batch_size=10, shuffle=True, seed=5, transforms=[fl.Resize((8, 8))],
                       dtype="uint8")
    assert len(loader) == 3
    orders = [loader.order(e) for e in range(3)]
    for o in orders:
        assert sorted(o.tolist()) == list(range(24))
    assert orders[0].tolist() != orders[1].tolist()
    for epoch in range(2):
        labels = np.concatenate([y for _, y in loader])
        np.testing.assert_array_equal(labels, src.labels()[orders[epoch].astype(np.int64)])
    loader.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([y for _, y in loader]),
                                  src.labels()[orders[1].astype(np.int64)])


def test_drop_last_and_onehot(image_folder):
    src = fl.ImageFolder(image_folder)
    loader = fl.Loader(src, batch_size=10, drop_last=True, labels="onehot", transforms=[fl.CenterCrop(16)])
    got = list(loader)
    assert len(loader) == len(got) == 2
    _, y = got[1]
    assert y.shape == (10, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y.argmax(1), src.labels()[10:20])
    assert (y.sum(1) == 1).all()


def test_buffers_are_reused_not_reallocated(image_folder):
    src = fl.ImageFolder(image_folder)
    loader = fl.Loader(src, batch_size=4, shuffle=True, prefetch=2,
                       transforms=[fl.RandomResizedCrop(16), fl.Normalize(MEAN, STD)])
    addresses = set()
    for _ in range(2):
        for x, _ in loader:
            addresses.add(x.__array_interface__["data"][0])
    assert len(addresses) == loader.prefetch_depth + 2
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for x, _ in loader:
        pass
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename") if s.size_diff > 0)
    tracemalloc.stop()
    assert grown < x.nbytes, f"an epoch allocated {grown} bytes; one batch is {x.nbytes}"


def test_copy_gives_owned_batches(image_folder):
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, copy=True, transforms=[fl.CenterCrop(8)])
    first = [x for x, _ in loader]
    assert len({x.__array_interface__["data"][0] for x in first}) == len(first)
    assert all(x.base is None or x.flags.owndata for x in first)


def test_early_break_and_garbage_collection_stop_all_threads(image_folder):
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=2, workers=2, transforms=[fl.CenterCrop(8)])
    for _ in loader:
        break
    assert fastload_threads() == []
    it = iter(loader)
    next(it)
    assert fastload_threads()
    del it
    gc.collect()
    assert fastload_threads() == []


def test_two_loaders_at_once_and_reuse_across_epochs(image_folder):
    src = fl.ImageFolder(image_folder)
    a = fl.Loader(src, batch_size=3, shuffle=True, seed=1, transforms=[fl.RandomResizedCrop(12)])
    b = fl.Loader(src, batch_size=3, shuffle=True, seed=1, transforms=[fl.RandomResizedCrop(12)])
    for epoch in range(3):
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert a.state_dict()["epoch"] == 3


def test_bad_file_raises_decode_error_naming_it(image_folder, tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    with open(fl.ImageFolder(image_folder)[0][0], "rb") as f:
        good = f.read()
    for i in range(5):
        (root / "a" / f"{i}.jpg").write_bytes(good)
    (root / "a" / "2.jpg").write_bytes(b"this is not an image")
    loader = fl.Loader(fl.ImageFolder(root), batch_size=5, transforms=[fl.CenterCrop(8)])
    with pytest.raises(fl.DecodeError) as e:
        next(iter(loader))
    assert "2.jpg" in str(e.value)
    assert fastload_threads() == []

    loader = fl.Loader(fl.ImageFolder(root), batch_size=5, transforms=[fl.CenterCrop(8)], on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        (x, y), = list(loader)
    assert len(x) == len(y) == 4
    failures = loader.stats()["failures"]
    assert len(failures) == 1 and failures[0][0].endswith("2.jpg")
    with pytest.raises(fl.RecordError, match="max_failures"):
        list(fl.Loader(fl.ImageFolder(root), batch_size=5, transforms=[fl.CenterCrop(8)], max_failures=0))


def test_resume_mid_epoch_with_other_worker_count(image_folder):
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.ColorJitter(0.3, 0.3, 0.3)]
    full = fl.Loader(src, batch_size=5, shuffle=True, seed=9, transforms=tr, workers=2)
    full.set_epoch(2)
    expected = batches(full)
    for cut in range(len(expected) + 1):
        first = fl.Loader(src, batch_size=5, shuffle=True, seed=9, transforms=tr, workers=2)
        first.set_epoch(2)
        it = iter(first)
        for _ in range(cut):
            next(it)
        state = json.loads(json.dumps(first.state_dict()))
        del it
        resumed = fl.Loader(src, batch_size=5, shuffle=True, seed=9, transforms=tr, workers=1)
        rest = batches(resumed.load_state_dict(state))
        if cut == len(expected):   # the epoch was used up: the state is the next one's start
            assert (state["epoch"], state["batch"]) == (3, 0) and resumed.state_dict()["epoch"] == 4
            full.set_epoch(3)
            rest, expected_rest = rest, batches(full)
        else:
            expected_rest = expected[cut:]
        assert len(rest) == len(expected_rest)
        for (x, y), (ex, ey) in zip(rest, expected_rest):
            np.testing.assert_array_equal(x, ex)
            np.testing.assert_array_equal(y, ey)


def test_torch_output_is_zero_copy_tensors(image_folder):
    torch = pytest.importorskip("torch")
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, output="torch",
                       transforms=[fl.CenterCrop(8), fl.Normalize(MEAN, STD)])
    x, y = next(iter(loader))
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 8, 8)
    assert y.dtype == torch.int64


def test_invalid_transform_lists_are_rejected():
    with pytest.raises(ValueError, match="fixed output size"):
        compile_plan([fl.Resize(32)])
    with pytest.raises(ValueError, match="last"):
        compile_plan([fl.CenterCrop(8), fl.Normalize(MEAN, STD), fl.RandomHorizontalFlip()])
    with pytest.raises(ValueError, match="square"):
        compile_plan([fl.Resize((8, 16)), fl.RandomRotate90()])
    with pytest.raises(ValueError, match="scale"):
        fl.RandomResizedCrop(8, scale=(0.5, 0.1))


def test_features_report_the_build():
    f = fl.features()
    assert f["jpeg_decoder"]
    assert f["simd"] in f["simd_paths"] and set(f["simd_paths"]) <= {"avx2", "sse4.1", "neon", "portable"}
    assert isinstance(f["numba"], bool)


def test_fluent_methods_on_batches(image_folder):
    src = fl.ImageFolder(image_folder)
    loader = fl.Loader(src, batch_size=5, transforms=[fl.CenterCrop(8)], dtype="uint8")
    sums = list(loader.map(lambda b: int(b[1].sum())).take(3))
    assert sums == [int(src.labels()[i * 5:(i + 1) * 5].sum()) for i in range(3)]
    reference = batches(fl.Loader(src, batch_size=5, transforms=[fl.CenterCrop(8)], dtype="uint8"))
    owned = fl.Loader(src, batch_size=5, transforms=[fl.CenterCrop(8)], dtype="uint8", copy=True)
    # Buffering methods hold several batches at once: leased batches stay valid without copy=True.
    # (take(3) left `loader` mid-epoch: it continues there unless told otherwise, so rewind it each time.)
    def rewound(stream):
        loader.set_epoch(0)
        return stream

    def key(b):
        return b[0].tobytes()
    for kept in (list(owned.prefetch(3)), list(rewound(loader).prefetch(3)),
                 list(rewound(loader).shuffle(2, seed=1)), [b for pair in rewound(loader).batch(2) for b in pair]):
        assert len(kept) == len(reference)
        for (x, y), (rx, ry) in zip(sorted(kept, key=key), sorted(reference, key=key)):
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(y, ry)


def test_truncated_jpeg_fails_whatever_the_crop(image_folder, tmp_path):
    with open(fl.ImageFolder(image_folder)[0][0], "rb") as f:
        data = f.read()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    for tr in ([fl.CenterCrop(4)], [fl.Resize((16, 16))]):
        loader = fl.Loader(fl.ImageFiles(tmp_path), batch_size=1, transforms=tr)
        with pytest.raises(fl.DecodeError, match="cut.jpg"):
            next(iter(loader))


def test_crop_larger_than_image_pads_with_zeros(tmp_path):
    # torchvision's CenterCrop: pad (crop - size) // 2 before, the rest after, with zeros
    Image.fromarray(np.full((5, 6, 3), 77, np.uint8)).save(tmp_path / "small.png")
    images = next(iter(fl.Loader(fl.ImageFiles(tmp_path), batch_size=1, dtype="uint8", layout="NHWC",
                                 transforms=[fl.CenterCrop(8)])))
    want = np.zeros((8, 8, 3), np.uint8)
    want[1:6, 1:7] = 77
    np.testing.assert_array_equal(images[0], want)


def test_failure_budget_is_per_epoch(tmp_path):
    Image.fromarray(np.full((9, 9, 3), 50, np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    loader = fl.Loader(fl.ImageFiles(tmp_path), batch_size=2, transforms=[fl.CenterCrop(4)], max_failures=1)
    with pytest.warns(RuntimeWarning, match="skipping"):
        sizes = [len(x) for _ in range(3) for x in loader]
    assert sizes == [1, 1, 1]
    stats = loader.stats()      # this epoch's failures, one per record; the total counts every epoch
    assert [rid for rid, _ in stats["failures"]] == [str(tmp_path / "bad.jpg")] and stats["skipped"] == 3


def test_stats_count_batches_samples_and_time(image_folder):
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=5, transforms=[fl.CenterCrop(8)])
    for _ in loader:
        pass
    s = loader.stats()
    assert s["batches"] == 5 and s["samples"] == 24 and s["failures"] == []
    assert s["busy_s"] > 0 and s["wall_s"] >= s["wait_s"] >= 0
    assert 0 <= s["ready_fraction"] <= 1 and 0 < s["worker_utilisation"]
    assert s["buffer_bytes"] == (loader.prefetch_depth + 2) * 5 * (3 * 8 * 8 * 4 + 8)


def test_stats_rates_are_of_the_loop_when_the_step_is_the_bottleneck(image_folder):
    """samples_per_s and worker_utilisation were over the time spent inside the loader alone: with a
    30 ms step, 80x the rate the loop received and workers "busy" 250% of the time."""
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, workers=2, transforms=[fl.CenterCrop(8)])
    t = time.perf_counter()
    for _ in loader:
        last = time.perf_counter()
        time.sleep(0.03)   # the training step
    received = 24 / (last - t)   # up to the last batch's arrival, as elapsed_s counts
    s = loader.stats()
    assert s["wall_s"] < s["elapsed_s"] <= last - t
    assert received <= s["samples_per_s"] <= 1.3 * received, (s["samples_per_s"], received)
    assert 0 < s["worker_utilisation"] <= 1 and s["ready_fraction"] > 0.5


def test_one_iterator_advanced_from_two_threads_is_refused_not_mixed():
    """Two threads on one iterator took each other's chunks: batches that were no batch of the
    epoch, labels on other records' pixels. The second thread now gets an error, every time,
    and every batch comes out once, whole."""
    records = [(np.full((6, 6, 3), i % 256, np.uint8), i % 256) for i in range(240)]
    loader = fl.Loader(fl.ListSource(records), batch_size=4, workers=2, transforms=[fl.CenterCrop(6)],
                       dtype="uint8", layout="NHWC", copy=True)
    expected = sorted(y.tolist() for _, y in loader)
    for trial in range(5):
        it = iter(loader)
        got, errors = [], []
        barrier = threading.Barrier(2)

        def consume():
            barrier.wait()
            while True:
                try:
                    x, y = next(it)
                except StopIteration:
                    return
                except (RuntimeError, ValueError) as e:
                    errors.append(e)
                    time.sleep(0.001)
                    continue
                assert (x[:, 0, 0, 0] == y).all()
                got.append(y.tolist())

        threads = [threading.Thread(target=consume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == expected, trial
        assert all(isinstance(e, RuntimeError) and "another thread" in str(e) for e in errors)


def test_a_failure_counts_once_however_often_its_batch_is_made(tmp_path):
    """One bad file, max_failures=1: batch_at(0) before the epoch, the epoch replayed with
    set_epoch, a framework's peek: each made batch 0 again and counted its failure again, so a
    budget of one failure raised. It counts once an epoch; a new epoch counts again."""
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "0.png").write_bytes(b"garbage")
    loader = fl.Loader(fl.ImageFiles(str(tmp_path)), batch_size=2, on_error="skip", max_failures=1,
                       transforms=[fl.CenterCrop(8)])
    with pytest.warns(RuntimeWarning, match="skipping"):
        loader.batch_at(0)
    for _ in range(2):
        loader.set_epoch(0)
        assert sum(len(x) for x in loader) == 5
    s = loader.stats()
    assert (s["skipped"], s["failed_this_epoch"]) == (1, 1) and [r for r, _ in s["failures"]][0].endswith("0.png")
    assert sum(len(x) for x in loader) == 5   # epoch 1: the same file fails again, counted again
    assert (loader.stats()["skipped"], loader.stats()["failed_this_epoch"]) == (2, 1)


def test_webdataset_key_and_url_are_not_passed_through_unless_named(tmp_path):
    """A stream's records carry __key__ and __url__; indexed shards' fields do not list them. So
    `fields=` naming the image and label gave (image, label) batches indexed and four-tuples
    streamed. Named in fields=, they come through."""
    wds = pytest.importorskip("webdataset")
    with wds.TarWriter(str(tmp_path / "s.tar")) as w:
        for i in range(6):
            w.write({"__key__": f"k{i}", "png": np.full((8, 8, 3), i, np.uint8), "cls": i})
    shards = fl.TarShards(str(tmp_path / "s.tar"))
    fields = {"png": [fl.CenterCrop(8)], "cls": "index"}
    for source in (shards, shards.stream()):
        batch = next(iter(fl.Loader(source, batch_size=3, fields=fields, as_tuple=True)))
        assert len(batch) == 2 and batch[1].tolist() == [0, 1, 2], type(source).__name__
    named = next(iter(fl.Loader(shards.stream(), batch_size=3, fields={**fields, "__key__": None})))
    assert named["__key__"] == ["k0", "k1", "k2"]


def test_a_failure_fraction_is_of_the_records_a_rank_loads():
    """Each rank counts its own failures: measured against the whole dataset, a fraction let every
    one of 8 ranks lose 8x the share asked for. 6 of rank 1's 50 records fail: over 10% of its
    records, though not of the dataset's 100."""
    import io

    def png(i):
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(buf, "PNG")
        return buf.getvalue()
    records = [(b"garbage" if 10 <= i < 16 else png(i), i) for i in range(100)]

    def make(rank):
        return fl.Loader(fl.ListSource(records), batch_size=10, rank=rank, world_size=2, max_failures=0.1,
                         transforms=[fl.CenterCrop(4)])
    with pytest.raises(fl.RecordError, match=r"6 records failed this epoch, over max_failures=0\.1"):
        list(make(1))
    assert sum(len(x) for x, _ in make(0)) == 50


@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")   # Python's warning about fork with threads
def test_an_iterator_advanced_in_a_forked_child_is_refused_and_goes_on_in_the_parent(image_folder):
    """A child made by os.fork() that advanced its parent's iterator waited for ever on worker threads
    that only the parent has."""
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, workers=2, transforms=[fl.CenterCrop(8)])
    it = iter(loader)
    labels = next(it)[1].tolist()
    child = in_fork(lambda: next(it))
    assert child.startswith("RuntimeError") and "create a new iterator in the child: iter(loader)" in child, child
    labels += [y for _, batch in it for y in batch.tolist()]
    assert labels == [0] * 8 + [1] * 8 + [2] * 8


def test_loader_image_options_meet_built_image_fields(image_folder):
    # The Loader's image options are for transform lists; a built field has its own. A Loader
    # option that differs from the field's was dropped without a word (float32 NCHW for uint8 NHWC).
    from fastload.ops.numba_ops import KernelField, NumbaOp
    records = fl.ListSource([{"image": p, "label": int(y)} for p, y in fl.ImageFolder(image_folder)])
    transforms = [fl.Resize((8, 8))]
    jax = importlib.util.find_spec("jax") is not None   # output="jax" is refused at construction without it
    for built in (fl.Image(transforms), KernelField(transforms, [NumbaOp(lambda img, rng: None)])):
        with pytest.raises(ValueError, match=r"fields\['image'\] is a built \w+ with dtype='float32', "
                                             r"layout='NCHW', but the Loader asks for dtype='uint8', layout='NHWC'"):
            fl.Loader(records, dtype="uint8", layout="NHWC", fields={"image": built, "label": "index"})
        # JAX batches are NHWC: a channels-first field is refused rather than handed over as it is.
        with pytest.raises(ValueError if jax else ImportError,
                           match=r"asks for layout='NHWC' \(output='jax'\)" if jax else "needs jax"):
            fl.Loader(records, output="jax", fields={"image": built, "label": "index"})
    same = fl.Image(transforms, dtype=np.uint8, layout="NHWC")
    x = next(iter(fl.Loader(records, batch_size=4, dtype="uint8", layout="NHWC",
                            fields={"image": same, "label": "index"})))["image"]
    assert x.dtype == np.uint8 and x.shape == (4, 8, 8, 3)
    if jax:
        fl.Loader(records, output="jax", fields={"image": same, "label": "index"})   # NHWC already
        fl.Loader(records, output="jax", layout="NCHW", fields={"image": fl.Image(transforms), "label": "index"})
    with pytest.raises(TypeError, match=r"image options \['dtype'\] apply to image fields, and fields= has none"):
        fl.Loader(records, dtype="uint8", fields={"label": "index"})


def test_a_field_fill_that_returns_no_dict_is_named():
    # fill returning None (a forgotten `return {}`) stopped the loader with "'NoneType' object has
    # no attribute 'items'", naming neither the field nor what fill must return.
    class NoReturn(fl.Field):
        def outputs(self):
            return [Output(self.name, (), np.dtype(np.float32))]

        def fill(self, values, outs, ctx):
            outs[self.name][:len(values)] = values

    src = fl.ListSource([{"x": i} for i in range(8)])
    for workers in (0, 2):
        loader = fl.Loader(src, batch_size=4, workers=workers, fields={"x": NoReturn()})
        with pytest.raises(TypeError, match=r"field 'x': NoReturn.fill returned None; fill must return a dict "
                                            r"of failures, \{row: reason\} \(\{\} when none\)"):
            next(iter(loader))
