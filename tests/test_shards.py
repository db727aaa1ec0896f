"""Tar shards in the WebDataset layout: written by the webdataset library itself, read by
fl.TarShards (index) and TarShards.stream (no index), compared with webdataset's own reader
and with the same images loaded as a folder; then every kind of broken shard."""
import io
import json
import os
import pickle
import re
import shutil
import tarfile
import threading
import time

import numpy as np
import pytest
import webdataset as wds
from webdataset import autodecode, tariterators

import fastload as fl
from _http import serve
from helpers import encode, photo_like

PER_SHARD = 9


def write_shards(folder, out, *, maxcount=PER_SHARD, extra=True):
    """The folder's images as shards written by webdataset.ShardWriter, in the folder's order."""
    os.makedirs(out, exist_ok=True)
    src = fl.ImageFolder(folder)
    with wds.ShardWriter(os.path.join(out, "shard-%06d.tar"), maxcount=maxcount, verbose=0) as w:
        for i, (path, label) in enumerate(src):
            with open(path, "rb") as f:
                sample = {"__key__": os.path.relpath(path, folder).rsplit(".", 1)[0], "jpg": f.read(), "cls": label}
            if extra:
                sample.update({"json": {"i": i, "path": path}, "txt": f"image {i}"})
            w.write(sample)
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))


@pytest.fixture
def shards(image_folder, tmp_path):
    return write_shards(image_folder, tmp_path / "shards")


def webdataset_samples(paths):
    """webdataset's own grouping (tar_file_iterator + group_by_keys) and decoding (basichandlers)."""
    out = []
    for path in paths:
        with open(path, "rb") as f:
            for r in tariterators.group_by_keys({**m, "__url__": path} for m in tariterators.tar_file_iterator(f)):
                out.append({k: (v if k.startswith("__") or autodecode.basichandlers(k, v) is None
                                else autodecode.basichandlers(k, v)) for k, v in r.items()})
    return out


def plain(record):
    return {k: v for k, v in record.items() if k not in ("__url__", "__local_path__")}


def test_records_equal_webdatasets_own_reader(shards):
    ts = fl.TarShards(shards)
    ref = [plain(r) for r in webdataset_samples(shards)]
    got = [plain(ts[i]) for i in range(len(ts))]
    assert len(ts) == len(ref) == 24
    assert got == ref
    assert isinstance(got[0]["jpg"], bytes) and isinstance(got[0]["cls"], int)
    assert got[5]["json"]["i"] == 5 and got[5]["txt"] == "image 5"
    assert ts.fields == ("cls", "jpg", "json", "txt")
    assert [r["__key__"] for r in ts.gather(np.array([23, 0, 9]))] == [ref[23]["__key__"], ref[0]["__key__"],
                                                                       ref[9]["__key__"]]
    assert ts.record_id(10) == f"{shards[1]}:{ref[10]['__key__']}"
    np.testing.assert_array_equal(ts.labels(), [r["cls"] for r in ref])   # from the index, no reads


def test_large_samples_read_member_by_member_equal_webdatasets_reader(tmp_path):
    """Samples past the size at which a local shard's members are read one by one (large PNGs
    and raw arrays), between small ones read whole: the same records as webdataset's reader, in
    any order; a shard cut short after indexing fails the sample that reached past its end."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "big.tar")
    with wds.TarWriter(path) as w:
        for i in range(6):
            big = i % 2 == 0
            w.write({"__key__": f"s{i}", "png": encode(photo_like(300 if big else 20, 300 if big else 20, seed=i), "PNG"),
                     "bin": rng.integers(0, 256, 90_000 if big else 10, dtype=np.uint8).tobytes(),
                     "cls": i, "json": {"i": i}})
    ts = fl.TarShards([path])
    ref = [plain(r) for r in webdataset_samples([path])]
    order = np.array([4, 1, 0, 5, 2, 3])
    reads = []
    read_ranges = ts.storage.read_ranges
    ts.storage.read_ranges = lambda ranges: reads.append(len(ranges)) or read_ranges(ranges)
    assert [plain(r) for r in ts.gather(order)] == [ref[i] for i in order]
    assert reads == [4 + 1 + 4 + 1 + 4 + 1]   # a read per member of the large samples, one for each small one
    assert len(ref[0]["bin"]) == 90_000 and len(ref[1]["bin"]) == 10
    with open(path, "r+b") as f:   # after indexing: the last large sample now ends past the file
        f.truncate(os.path.getsize(path) - 20_000 - 10240)
    ts.gather(np.array([0, 1]))
    with pytest.raises(fl.RecordError, match=r"big\.tar:s4.*reading failed: file ends at byte \d+"):
        ts.gather(np.array([4]))


def test_key_split_follows_webdataset(tmp_path):
    """Multi-dot extensions, directories in names, upper case, metadata and names without a dot."""
    names = ["a/b.seg.png", "a/b.JPG", "a/b.cls", "__meta__", "noext", "c.d.e.txt", "c.d.e.cls", "x/.y.txt"]
    path = str(tmp_path / "t.tar")
    with tarfile.open(path, "w") as tf:
        for i, n in enumerate(names):
            data = str(i).encode()
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    got = list(fl.TarShards(path))
    assert [plain(r) for r in got] == [plain(r) for r in webdataset_samples([path])]
    assert [sorted(r) for r in got] == [["__key__", "__url__", "cls", "jpg", "seg.png"],
                                        ["__key__", "__url__", "d.e.cls", "d.e.txt"], ["__key__", "__url__", "y.txt"]]


def tar_of(path, members):
    """A shard of ``members`` (name, bytes) in this order, written by tarfile."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("chunk", [1024, 4096, None])
def test_a_stream_read_in_runs_of_members_gives_webdatasets_records(tmp_path, monkeypatch, chunk):
    """A stream reads a shard a chunk at a time and makes the records of a run of members in one
    compiled call: with chunks that end inside headers, members and samples, members larger than a
    chunk, extended headers (a long name), names in folders, upper-case extensions and a metadata
    member among them, the records are webdataset's own reader's, in order."""
    from fastload.sources import _tar
    if chunk:
        monkeypatch.setattr(_tar, "CHUNK", chunk)
    rng = np.random.default_rng(5)
    members = []
    for i in range(60):
        key = f"Train/n{i % 3}/{i:04d}" if i % 4 else f"K{i:04d}"
        if i == 17:
            key = "long/" + "k" * 150   # over 100 characters: a pax header before its members
        size = 20_000 if i == 30 else int(rng.integers(0, 3000))
        members.append((f"{key}.{'JPG' if i % 5 == 0 else 'jpg'}", rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
        members.append((f"{key}.cls", str(i).encode()))
        if i % 7 == 0:
            members.append((f"{key}.json", json.dumps({"i": i}).encode()))
        if i == 40:
            members.append(("__info__", b"not a sample"))
    path = tar_of(str(tmp_path / "mixed.tar"), members)
    written = str(tmp_path / "written.tar")   # webdataset's writer: a pax header before every member
    with wds.TarWriter(written) as w:
        for i in range(40):
            size = 9_000 if i == 11 else int(rng.integers(0, 2500))
            w.write({"__key__": f"Val/{i:04d}", "jpg": rng.integers(0, 256, size, dtype=np.uint8).tobytes(),
                     "cls": i, "json": {"i": i}})
    ref = [plain(r) for r in webdataset_samples([path, written])]
    got = list(fl.TarShards([path, written]).stream())
    assert [plain(r) for r in got] == ref and len(ref) == 100
    assert [r["cls"] for r in got] == list(range(60)) + list(range(40))
    assert [r["__url__"] for r in got] == [path] * 60 + [written] * 40
    assert got[17]["__key__"] == "long/" + "k" * 150 and len(got[30]["jpg"]) == 20_000


def test_a_streams_records_follow_the_key_split_and_the_metadata_rule(tmp_path):
    """The compiled reader groups members by the key ``split_key`` gives and passes over what
    ``_is_meta`` calls metadata, on names of underscores, dots and slashes in any order."""
    from fastload.sources.shards import _is_meta, split_key
    rng = np.random.default_rng(1)
    names = [n for n in dict.fromkeys("".join(rng.choice(list("a__/."), size=int(rng.integers(1, 9))))
                                      for _ in range(4000)) if not n.endswith("/")]
    path = tar_of(str(tmp_path / "names.tar"), [(n, n.encode()) for n in names])
    want = []
    for n in names:
        key, ext = (None, None) if _is_meta(n) else split_key(n)
        if key is None:
            continue
        if not want or want[-1]["__key__"] != key:
            want.append({"__key__": key, "__url__": path})
        want[-1][ext] = n.encode()
    assert sum(_is_meta(n) for n in names) > 20 and sum(split_key(n)[0] is None for n in names) > 100
    assert list(fl.TarShards(path).stream()) == want and len(want) > 500


@pytest.mark.parametrize("chunk", [1024, None])
def test_a_streamed_sample_fails_alone_for_a_duplicated_undecodable_or_missing_member(tmp_path, monkeypatch, chunk):
    """Read in runs too: two members of one name, a label that does not decode and a required member
    missing each fail their own sample, named by shard and key, and the samples around them read."""
    from fastload.sources import _tar
    if chunk:
        monkeypatch.setattr(_tar, "CHUNK", chunk)
    members = [("a.jpg", b"1" * 700), ("a.cls", b"0"), ("b.jpg", b"2"), ("b.jpg", b"3"), ("b.cls", b"1"),
               ("c.jpg", b"4" * 900), ("c.cls", b"x"), ("d.jpg", b"5"), ("e.jpg", b"6"), ("e.cls", b"4")]
    path = tar_of(str(tmp_path / "bad.tar"), members)
    got = list(fl.TarShards(path, require=("jpg", "cls")).stream())
    assert [type(r).__name__ for r in got] == ["dict", "FailedRecord", "FailedRecord", "FailedRecord", "dict"]
    assert [(r["__key__"], r["jpg"], r["cls"]) for r in (got[0], got[4])] == [("a", b"1" * 700, 0), ("e", b"6", 4)]
    assert [r.where for r in got[1:4]] == [f"{path}:b", f"{path}:c", f"{path}:d"]
    assert got[1].reason == "two members named b.jpg"
    assert re.fullmatch(r"member c\.cls cannot be decoded: invalid literal .*", got[2].reason)
    assert got[3].reason == "no .cls member (the sample has .jpg)"


def test_loader_batches_equal_the_same_images_as_a_folder(image_folder, shards):
    """Same images, same order, same seed: the same pixels and labels, batch for batch."""
    tar = fl.Loader(fl.TarShards(shards), batch_size=8, shuffle=True, seed=1, workers=2,
                    fields={"jpg": [fl.RandomResizedCrop(64), fl.RandomHorizontalFlip()], "cls": "index"})
    folder = fl.Loader(fl.ImageFolder(image_folder), batch_size=8, shuffle=True, seed=1, workers=2,
                       transforms=[fl.RandomResizedCrop(64), fl.RandomHorizontalFlip()])
    for epoch in range(2):
        n = 0
        for b, (images, labels) in zip(tar, folder):
            assert b["jpg"].shape == (8, 3, 64, 64) and b["jpg"].dtype == np.float32
            np.testing.assert_array_equal(b["jpg"], images)
            np.testing.assert_array_equal(b["cls"], labels)
            n += 1
        assert n == 3


def test_index_is_built_once_and_kept_beside_the_shard(shards, tmp_path, monkeypatch):
    fl.TarShards(shards).__len__()
    idx = [s + ".idx.json" for s in shards]
    assert all(os.path.exists(p) for p in idx)
    stamps = [os.stat(p).st_mtime_ns for p in idx]
    assert len(fl.TarShards(shards)) == 24
    assert [os.stat(p).st_mtime_ns for p in idx] == stamps   # reused, not rewritten
    # a shard that changed gets a new index
    with wds.TarWriter(shards[0]) as w:
        w.write({"__key__": "only", "cls": 1})
    ts = fl.TarShards(shards)
    assert len(ts) == 1 + 2 * PER_SHARD - 3 and ts[0]["__key__"] == "only"
    # with a cache_dir the index goes there, not beside the shard
    os.unlink(idx[1])
    ts = fl.TarShards(shards[1], cache_dir=tmp_path / "cache")
    assert len(ts) == PER_SHARD and not os.path.exists(idx[1])
    assert len(os.listdir(tmp_path / "cache" / "index")) == 1
    # named from its own folder, by a bare name or a glob, a shard's index is kept beside it too
    for name in ("*.tar", os.path.basename(shards[2])):
        os.unlink(idx[2])
        monkeypatch.chdir(os.path.dirname(shards[2]))
        assert len(fl.TarShards(name)) > 0 and os.path.exists(idx[2])


def test_the_index_holds_a_few_dozen_bytes_a_sample(tmp_path):
    """Over ImageNet's 1.28M samples an object per sample and member held ~770 MB in every process
    (about 600 bytes a sample); the flat tables hold about 115 for a 30-character key and two members."""
    import tracemalloc
    n = 8_000
    path = str(tmp_path / "many.tar")
    with wds.TarWriter(path) as w:
        for i in range(n):
            w.write({"__key__": f"n01440764/img_{i:08d}", "jpg": b"x" * (i % 7 + 1), "cls": i % 1000})
    len(fl.TarShards(path))   # the index kept beside the shard: what a later run loads
    for _ in range(2):   # loaded from the index kept, then built by a scan of the shard
        tracemalloc.start()
        try:
            ts = fl.TarShards(path)
            assert len(ts) == n
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held / n < 250, f"{held / n:.0f} bytes a sample"   # (the key alone is 30; ~600 before)
        assert ts[5432]["cls"] == 432 and ts[5432]["jpg"] == b"x" * (5432 % 7 + 1)
        assert ts.labels().tolist() == [i % 1000 for i in range(n)] and ts.fields == ("cls", "jpg")
        assert ts.record_id(n - 1) == f"{path}:n01440764/img_{n - 1:08d}"
        os.unlink(path + ".idx.json")
    with wds.TarWriter(path) as w:   # a .cls past int64 (up to 32 bytes are kept): no labels, as one missing
        w.write({"__key__": "a", "cls": 1})
        w.write({"__key__": "b", "cls": b"99999999999999999999"})
    ts = fl.TarShards(path)
    assert len(ts) == 2 and ts.labels() is None and ts[1]["cls"] == 99999999999999999999


def test_brace_pattern_and_glob(shards):
    d = os.path.dirname(shards[0])
    brace = fl.TarShards(os.path.join(d, "shard-{000000..000002}.tar"))
    glob = fl.TarShards(os.path.join(d, "*.tar"))
    assert brace.urls == glob.urls == shards
    assert [r["__key__"] for r in brace] == [r["__key__"] for r in glob]
    with pytest.raises(FileNotFoundError, match=r"7 of 10 shards cannot be read: .*shard-000003\.tar"
                                                r".* \(and 6 more\)"):
        len(fl.TarShards(os.path.join(d, "shard-{000000..000009}.tar")))


def test_a_glob_of_everything_in_the_folder_skips_the_indexes_kept_there(shards):
    # "dir/*" matched each shard's .idx.json from the run before: one bad record more per shard and
    # run, and a mid-epoch state refused by the next run (num_records 24, then 27).
    d = os.path.dirname(shards[0])
    keys = [r["__key__"] for r in fl.TarShards(shards)]
    assert len(keys) == 24 and all(os.path.exists(s + ".idx.json") for s in shards)
    open(os.path.join(shards[0] + ".idx.json.4242.tmp"), "w").close()   # one being written elsewhere
    for _ in range(3):
        ts = fl.TarShards(os.path.join(d, "*"))
        assert ts.urls == shards and [r["__key__"] for r in ts] == keys
        assert sorted(r["__key__"] for r in ts.stream()) == sorted(keys)
    assert sorted(os.listdir(d)) == sorted([os.path.basename(s) for s in shards] +
                                           [os.path.basename(s) + ".idx.json" for s in shards] +
                                           [os.path.basename(shards[0]) + ".idx.json.4242.tmp"])


def test_stream_reads_every_sample_once_shuffled_per_pass(shards):
    ts = fl.TarShards(shards)
    ordered = [r["__key__"] for r in ts]
    assert [r["__key__"] for r in ts.stream()] == ordered
    st = ts.stream(shuffle_buffer=6, seed=4)
    p0, p1 = [r["__key__"] for r in st], [r["__key__"] for r in st]
    assert sorted(p0) == sorted(p1) == sorted(ordered)
    assert p0 != ordered and p0 != p1
    assert [r["__key__"] for r in ts.stream(shuffle_buffer=6, seed=4)] == p0   # a pure function of (seed, pass)
    early = [r["__key__"] for r in ts.stream(shuffle_buffer=6, seed=4, shuffle_initial=1)]   # out from the 2nd in
    assert sorted(early) == sorted(ordered) and early != p0
    with pytest.raises(ValueError, match="shuffle_initial must be >= 1"):
        ts.stream(shuffle_buffer=6, shuffle_initial=0)
    for r in ts.stream(shuffle_buffer=6):   # leaving a pass early stops its read-ahead thread
        break
    import gc
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == "fastload-tar-stream"]
    loader = fl.Loader(ts.stream(), batch_size=10, fields={"jpg": [fl.CenterCrop(32)], "cls": "index"})
    labels = np.concatenate([b["cls"] for b in loader])
    np.testing.assert_array_equal(labels, [r["cls"] for r in ts])


@pytest.mark.parametrize("shuffled", ["buffer", "fluent"])
def test_a_shuffled_stream_gives_a_loader_the_pass_of_its_epoch(shards, shuffled):
    """The Loader reads a stream's pass again and skips what it has yielded to finish an epoch left
    early or to resume one: the pass must be the epoch's, not the stream's next."""
    ts = fl.TarShards(shards)

    def loader():
        stream = ts.stream(shuffle_buffer=6, seed=3) if shuffled == "buffer" else \
            ts.stream().shuffle(6, seed=3).map(lambda r: r).prefetch(2)
        return fl.Loader(stream, batch_size=4, workers=2,
                         fields={"jpg": [fl.CenterCrop(32)], "cls": "index", "__key__": None})

    def keys(batches):
        return [k for b in batches for k in b["__key__"]]

    ref = loader()
    e0, e1, e2 = keys(ref), keys(ref), keys(ref)
    assert sorted(e0) == sorted(e1) == sorted(r["__key__"] for r in ts) and len(e0) == 24
    assert len({tuple(e0), tuple(e1), tuple(e2)}) == 3
    # a break mid-epoch, then the next loop finishes that epoch: each sample once, in the epoch's order
    loader_ = loader()
    got = []
    for i, b in enumerate(loader_):
        got += b["__key__"]
        if i == 2:
            break
    assert got + keys(loader_) == e0
    assert keys(loader_) == e1
    # saved mid-epoch 1, restored in a fresh loader: the rest of epoch 1, then epoch 2
    loader_ = loader()
    keys(loader_)
    it = iter(loader_)
    got = keys(next(it) for _ in range(2))
    state = loader_.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    assert got + keys(resumed) == e1
    assert keys(resumed) == e2
    fresh = loader()
    fresh.set_epoch(1)
    assert keys(fresh) == e1


# -- bad input --------------------------------------------------------------------------

def keyed_loader(ts, **kw):
    return fl.Loader(ts, batch_size=8, workers=2, fields={"jpg": [fl.CenterCrop(32)], "cls": "index", "__key__": None},
                     **kw)


def assert_aligned(batches):
    """Every label is the class in the sample's key, so no field slipped against another."""
    keys = []
    for b in batches:
        assert len(b["__key__"]) == len(b["cls"]) == len(b["jpg"])
        assert [int(k.split("/")[0].split("_")[1]) for k in b["__key__"]] == b["cls"].tolist()
        keys += b["__key__"]
    return keys


def test_truncated_shard(shards):
    with tarfile.open(shards[2]) as tf:
        jpg = [m for m in tf.getmembers() if m.name.endswith(".jpg")][-2]
        n_upto = len({m.name.rsplit(".", 1)[0] for m in tf.getmembers() if m.offset_data <= jpg.offset_data})
    with open(shards[2], "r+b") as f:   # cut into the data of the last image but one
        f.truncate(jpg.offset_data + jpg.size // 2)
    ts = fl.TarShards(shards)
    with tarfile.open(shards[1]) as tf:
        last_key = tf.getnames()[-1].rsplit(".", 1)[0]
    with pytest.raises(fl.RecordError, match=r"shard-000002\.tar:.*truncated"):
        list(keyed_loader(ts))
    loader = keyed_loader(ts, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        keys = assert_aligned(loader)
    # one sample is cut, and the index holds nothing after it: the stream below counts the same
    assert loader.stats()["skipped"] == 1 and len(keys) + 1 == len(ts)
    assert len(fl.TarShards(shards[2])) == n_upto   # the samples up to the cut one
    assert last_key in keys and all(shards[2] in rid for rid, _ in loader.stats()["failures"])
    # streamed: the cut shard is one failure after its whole samples; the other shards are read
    cut = f"{jpg.name}: {jpg.size // 2} of {jpg.size} bytes (truncated shard)"
    with pytest.raises(fl.RecordError, match=rf"^{re.escape(shards[2])}: member {re.escape(cut)}"):
        list(keyed_loader(ts.stream()))
    loader = keyed_loader(ts.stream(shuffle_buffer=5, seed=1), on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        streamed = assert_aligned(loader)
    assert sorted(streamed) == sorted(keys)
    assert loader.stats()["skipped"] == 1
    assert loader.stats()["failures"] == [(shards[2], f"member {cut}")]


def test_corrupt_member_and_corrupt_label(tmp_path):
    good = encode(photo_like(40, 40, seed=1))
    path = str(tmp_path / "bad.tar")
    with wds.TarWriter(path) as w:
        w.write({"__key__": "class_0/a", "jpg": good, "cls": 0})
        w.write({"__key__": "class_1/b", "jpg": b"\xff\xd8\xff garbage", "cls": 1})
        w.write({"__key__": "class_1/c", "jpg": good, "cls": b"one"})
        w.write({"__key__": "class_1/d", "jpg": good, "cls": 1})
    ts = fl.TarShards(path)
    assert ts.labels() is None   # one label is not a number
    with pytest.raises(fl.RecordError, match=r"bad\.tar:class_1/c.*class_1/c\.cls cannot be decoded as cls"):
        ts[2]
    with pytest.raises(fl.DecodeError, match=r"bad\.tar:class_1/b"):
        list(keyed_loader(ts))
    loader = keyed_loader(ts, on_error="skip")
    with pytest.warns(RuntimeWarning):
        keys = assert_aligned(loader)
    assert keys == ["class_0/a", "class_1/d"] and loader.stats()["skipped"] == 2
    assert sorted(rid for rid, _ in loader.stats()["failures"]) == [f"{path}:class_1/b", f"{path}:class_1/c"]
    # streamed, a sample is named by its shard and key too, not by its position in the pass; a
    # label that does not decode fails its sample, and the shard is read on
    stream = fl.Loader(fl.TarShards(path).stream(), batch_size=8, fields={"jpg": [fl.CenterCrop(32)], "cls": None})
    with pytest.raises(fl.DecodeError, match=rf"^{re.escape(path)}:class_1/b: "):
        list(stream)
    stream = fl.Loader(fl.TarShards(path).stream(), batch_size=8, fields={"jpg": [fl.CenterCrop(32)], "cls": None},
                       on_error="skip")
    assert stream.stats()["skipped"] == 0 and stream.stats()["failures"] == []   # every counter, from the start
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(path)}:class_1/[bc]"):
        assert [c for b in stream for c in b["cls"]] == [0, 1]
    failures = dict(stream.stats()["failures"])
    assert sorted(failures) == [f"{path}:class_1/b", f"{path}:class_1/c"]
    assert re.fullmatch(r"member class_1/c\.cls cannot be decoded: invalid literal .*", failures[f"{path}:class_1/c"])


def test_a_shard_cut_inside_padding_names_the_truncation(tmp_path):
    """The cut falls after a.cls's one byte, in its padding: a.jpg's header is lost with it. The
    shard is truncated, and a sample missing a required member says where reading stopped."""
    path = str(tmp_path / "cut.tar")
    with wds.TarWriter(path) as w:
        w.write({"__key__": "class_0/z", "jpg": encode(photo_like(40, 40, seed=2)), "cls": 0})
        w.write({"__key__": "class_0/a", "cls": 0, "jpg": encode(photo_like(40, 40, seed=3))})
    with tarfile.open(path) as tf:
        cls = tf.getmember("class_0/a.cls")
    os.truncate(path, cls.offset_data + 100)
    ts = fl.TarShards(path, require=("jpg", "cls"))
    assert len(ts) == 3   # z, a, and the record standing for the lost rest
    with pytest.raises(fl.RecordError, match=rf"cut\.tar:@{cls.offset_data + 100}: .*inside the padding after the "
                                             r"last member: truncated"):
        ts[2]
    with pytest.raises(fl.RecordError, match=r"cut\.tar:class_0/a: no \.jpg member \(the sample has \.cls\); the "
                                             r"shard is unreadable after them: .*truncated"):
        ts[1]
    streamed = list(ts.stream())
    assert [type(r) for r in streamed] == [dict, fl.FailedRecord, fl.FailedRecord]
    assert streamed[1].where == f"{path}:class_0/a"
    assert re.fullmatch(r"no \.jpg member \(the sample has \.cls\); the shard is unreadable after them: "
                        r".*inside the padding after the last member: truncated\)", streamed[1].reason)
    assert streamed[2].where == path and "inside the padding after the last member" in streamed[2].reason


def test_image_without_its_label(tmp_path):
    path = str(tmp_path / "partner.tar")
    img = encode(photo_like(40, 40, seed=2))
    with wds.TarWriter(path) as w:
        w.write({"__key__": "class_0/a", "jpg": img, "cls": 0})
        w.write({"__key__": "class_1/b", "jpg": img})
        w.write({"__key__": "class_1/c", "cls": 1})
        w.write({"__key__": "class_1/d", "jpg": img, "cls": 1})
    with pytest.raises(fl.RecordError, match=r"partner\.tar:class_1/b: no \.cls member \(the sample has \.jpg\)"):
        list(keyed_loader(fl.TarShards(path, require=("jpg", "cls"))))
    with pytest.raises(fl.RecordError, match=r"partner\.tar:class_1/b"):   # without require=: the field says so
        list(keyed_loader(fl.TarShards(path)))
    loader = keyed_loader(fl.TarShards(path, require=("jpg", "cls")), on_error="skip")
    with pytest.warns(RuntimeWarning):
        assert assert_aligned(loader) == ["class_0/a", "class_1/d"]
    indexed = loader.stats()["failures"]
    assert [r for r, _ in indexed] == [f"{path}:class_1/b", f"{path}:class_1/c"]
    # streamed, the same samples fail with the same errors
    stream = fl.TarShards(path, require=("jpg", "cls")).stream()
    with pytest.raises(fl.RecordError, match=r"^\S*partner\.tar:class_1/b: no \.cls member \(the sample has \.jpg\)$"):
        list(keyed_loader(stream))
    loader = keyed_loader(stream, on_error="skip")
    with pytest.warns(RuntimeWarning):
        assert assert_aligned(loader) == ["class_0/a", "class_1/d"]
    assert loader.stats()["failures"] == indexed


def test_unreadable_header_mid_shard(shards, tmp_path):
    path = str(tmp_path / "broken.tar")
    shutil.copy(shards[0], path)
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    bad_at = members[12].offset   # the header of the fourth sample's first member (4 members a sample)
    with open(path, "r+b") as f:
        f.seek(bad_at)
        f.write(b"\x07" * 512)
    ts = fl.TarShards(path)
    assert len(ts) == 3 + 1   # three good samples, and one record standing for the lost rest
    with pytest.raises(fl.RecordError, match=rf"broken\.tar:@{bad_at}: unreadable tar header at byte {bad_at}"):
        ts[3]
    loader = keyed_loader(ts, on_error="skip")
    with pytest.warns(RuntimeWarning):
        assert len(assert_aligned(loader)) == 3
    assert loader.stats()["skipped"] == 1
    # streamed: the three samples before the header, then one failure naming the shard
    with pytest.raises(fl.RecordError, match=rf"broken\.tar: unreadable tar header at byte {bad_at}"):
        list(keyed_loader(ts.stream()))
    loader = keyed_loader(fl.TarShards([path, shards[1]]).stream(), on_error="skip")
    with pytest.warns(RuntimeWarning):
        keys = assert_aligned(loader)
    assert keys == [ts[i]["__key__"] for i in range(3)] + [r["__key__"] for r in fl.TarShards(shards[1])]
    assert [rid for rid, _ in loader.stats()["failures"]] == [path]


@pytest.fixture
def flaky_server(shards):
    with serve(os.path.dirname(shards[0])) as server:
        server.urls = [f"{server.url}/{os.path.basename(s)}" for s in shards]
        yield server


def test_a_read_that_fails_while_indexing_is_an_error_not_a_shorter_shard(flaky_server):
    """A shard whose reads fail while it is indexed (after the storage's retries) may be whole:
    listing it as cut short would make the dataset's length depend on the network, and differ
    between the ranks of one job. Indexing fails naming the shard and the cause."""
    urls = flaky_server.urls
    flaky_server.fail["/shard-000001.tar"] = 2   # both tries (retries=1) of its first read
    with pytest.raises(OSError, match=rf"1 of 3 shards cannot be read: {re.escape(urls[1])}: reading failed at "
                                      r"byte 0 while indexing the shard: HTTP 500.*\(after 2 tries\)"):
        len(fl.TarShards(urls, retries=1, backoff=0.01))
    assert len(fl.TarShards(urls, retries=1, backoff=0.01)) == 24   # once the server answers
    # streamed, the shard is one failed record and the others are read
    flaky_server.fail["/shard-000001.tar"] = 2
    got = list(fl.TarShards(urls, retries=1, backoff=0.01).stream())
    failed = [r for r in got if isinstance(r, fl.FailedRecord)]
    assert len(got) == 24 - PER_SHARD + 1 and len(failed) == 1 and failed[0].where == urls[1]
    assert re.match(r"reading failed at byte 0: .*HTTP 500.*\(after 2 tries\)", failed[0].reason)


def test_not_a_tar_and_missing_shard(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"not a tar" * 100)
    ts = fl.TarShards(str(path))
    with pytest.raises(fl.RecordError, match=r"x\.tar:@0: not a readable tar archive"):
        ts[0]
    with pytest.raises(FileNotFoundError, match=r"no shards match"):
        fl.TarShards(str(tmp_path / "*.tar.gz"))
    with pytest.raises(FileNotFoundError, match=r"missing\.tar"):
        len(fl.TarShards(str(tmp_path / "missing.tar")))


def test_sources_pickle_without_their_open_files(shards, tmp_path):
    """Crossing a spawn boundary: descriptors, maps and pools are reopened on the other side."""
    import pickle
    from fastload.pack import pack
    ts = fl.TarShards(shards)
    first = ts[3]
    clone = pickle.loads(pickle.dumps(ts))
    assert clone[3] == first and len(clone) == len(ts)
    pack(ts, tmp_path / "p", progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    first = ds[5]
    assert pickle.loads(pickle.dumps(ds))[5] == first


def test_a_streamed_shard_that_cannot_be_read_is_one_failed_record_and_the_pass_goes_on(shards, tmp_path):
    with tarfile.open(shards[1]) as tf:
        jpg = [m for m in tf.getmembers() if m.name.endswith(".jpg")][3]
    with open(shards[1], "r+b") as f:
        f.truncate(jpg.offset_data + 100)
    missing = str(tmp_path / "missing.tar")
    got = list(fl.TarShards(shards + [missing]).stream())
    failed = [(i, r) for i, r in enumerate(got) if isinstance(r, fl.FailedRecord)]
    # every whole sample before the cut, none after; the next shard whole; the missing one named
    assert [i for i, _ in failed] == [PER_SHARD + 3, len(got) - 1] and len(got) == 24 - (PER_SHARD - 3) + 2
    assert failed[0][1].where == shards[1]
    assert re.fullmatch(rf"member {re.escape(jpg.name)}: 100 of {jpg.size} bytes \(truncated shard\)",
                        failed[0][1].reason)
    assert failed[1][1].where == missing and failed[1][1].reason.startswith("cannot open the shard: ")
    with pytest.raises(fl.RecordError, match=rf"^{re.escape(shards[1])}: member {re.escape(jpg.name)}: .*truncated"):
        list(keyed_loader(fl.TarShards(shards + [missing]).stream()))
    loader = keyed_loader(fl.TarShards(shards + [missing]).stream(), on_error="skip")
    with pytest.warns(RuntimeWarning):
        keys = assert_aligned(loader)
    assert keys == [r["__key__"] for r in got if isinstance(r, dict)]
    assert [rid for rid, _ in loader.stats()["failures"]] == [shards[1], missing]
    # a map over the stream leaves the failures to the Loader
    loader = keyed_loader(fl.TarShards(shards + [missing]).stream().map(dict, workers=2), on_error="skip")
    with pytest.warns(RuntimeWarning):
        assert assert_aligned(loader) == keys
    assert loader.stats()["skipped"] == 2


def test_a_stream_batches_the_fields_of_its_indexed_source(image_folder, tmp_path):
    """Fields that fields= does not name pass through the Loader: a stream names the same ones as
    its indexed source, not __key__ and __url__ besides, so `for x, y in loader` reads both."""
    ts = fl.TarShards(write_shards(image_folder, tmp_path / "s", extra=False))
    missing = str(tmp_path / "missing.tar")   # a first shard that cannot be read: the next one says
    assert len(ts) == 24 and ts.fields == ("cls", "jpg")
    assert ts.stream().fields == fl.TarShards([missing] + ts.urls).stream().fields == ts.fields
    assert fl.TarShards(ts.urls, require=("json",)).stream().fields == ("cls", "jpg", "json")
    kw = dict(batch_size=8, fields={"jpg": [fl.CenterCrop(32)], "cls": "index"})
    n = 0
    for (x, y), (sx, sy) in zip(fl.Loader(ts, as_tuple=True, **kw), fl.Loader(ts.stream(), as_tuple=True, **kw)):
        np.testing.assert_array_equal(x, sx)
        np.testing.assert_array_equal(y, sy)
        n += 1
    assert n == 3
    assert list(next(iter(fl.Loader(ts.stream(), **kw)))) == list(next(iter(fl.Loader(ts, **kw)))) == ["jpg", "cls"]
    kw["fields"]["__key__"] = None   # named, they come through
    assert next(iter(fl.Loader(ts.stream(), **kw)))["__key__"] == [ts[i]["__key__"] for i in range(8)]


def test_member_names_split_as_webdataset_splits_them():
    """Key and extension of a member name by webdataset's own rule (its extension lower-cased here),
    on names with and without folders, leading, doubled and trailing dots, and odd characters."""
    from fastload.sources.shards import split_key
    rng = np.random.default_rng(0)
    alphabet = list("ab./_X \n\u00e9")
    names = ["a.jpg", "dir/a.b.JPG", ".hidden", "noext", "a.", "x/.y", "a.b/c", "a/b/", "", "./a.b"]
    names += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 10)))) for _ in range(20000)]
    for name in names:
        base, ext = tariterators.base_plus_ext(name)
        assert split_key(name) == (base, None if ext is None else ext.lower()), repr(name)


@pytest.mark.parametrize("buffer,wrap", [(0, None), (6, None), (6, "map"), (0, "prefetch")])
def test_a_resumed_stream_gives_each_shard_as_many_records_as_the_pass_it_resumes(flaky_server, buffer, wrap):
    """A Loader resumes a stream by reading the pass again and skipping the records it yielded: a
    shard whose read failed then (one FailedRecord for its samples) and reads now, or read then and
    fails now, must take as many positions as then, or the skip lands elsewhere and records repeat or
    are never read. Each shard gives what it gave in the pass resumed: exactly the rest of that pass;
    so too through a stream's steps (the state was the bare stream's alone, and a mapped one repeated)."""
    urls, bad = flaky_server.urls, "/shard-000001.tar"

    def source():
        st = fl.TarShards(urls, retries=1, backoff=0.01).stream(shuffle_buffer=buffer, seed=2)
        return st.map(dict) if wrap == "map" else st.prefetch(3).filter(bool) if wrap else st

    def loader():
        return fl.Loader(source(), batch_size=4, on_error="skip",
                         fields={"jpg": [fl.CenterCrop(32)], "cls": "index", "__key__": None})

    def keys(batches):
        return [k for b in batches for k in b["__key__"]]

    def three(L):
        it = iter(L)
        return keys(next(it) for _ in range(3))

    whole = keys(loader())
    flaky_server.fail[bad] = 2   # both tries of its read
    with pytest.warns(RuntimeWarning):
        failing = keys(loader())
    shard1 = [r["__key__"] for r in fl.TarShards(urls[1])]
    assert sorted(failing) == sorted(set(whole) - set(shard1)) and len(whole) == 24
    # failed before the state was taken, read now: the rest of the pass that failed, in a new
    # process (load_state_dict) or after a break in this one
    for restore in (True, False):
        flaky_server.fail[bad] = 2
        L = loader()
        with pytest.warns(RuntimeWarning):
            got = three(L)
        if restore:
            state = json.loads(json.dumps(L.state_dict()))
            L = loader()
            L.load_state_dict(state)
        assert got + keys(L) == failing
    # read whole before the state was taken, failing now: its records left are skipped, nothing else
    L = loader()
    got = three(L)
    state = L.state_dict()
    flaky_server.fail[bad] = 2
    L = loader()
    L.load_state_dict(state)
    with pytest.warns(RuntimeWarning):
        rest = keys(L)
    assert got + rest == [k for k in whole if k in got or k not in shard1]
    assert L.stats()["skipped"] == len([k for k in whole[len(got):] if k in shard1])
    # a shard that gives another number of records without failing was rewritten: an error naming it
    st = fl.TarShards(urls).stream()
    st.set_epoch(0)
    list(st)
    state = st.pass_state(0)
    state["counts"][1] += 1
    st.resume_pass(0, state)
    with pytest.raises(OSError, match=rf"^{re.escape(urls[1])}: the shard gave {PER_SHARD + 1} records in the pass"):
        list(st)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the skips are counted, not the point here
@pytest.mark.parametrize("prepared", [False, True])
def test_a_stream_resumes_its_pass_after_a_preparation_pass(tmp_path, prepared):
    """Standardize() without its statistics reads the stream once before the first epoch: that
    pass must not take the place of the pass a loaded state resumes. A shard cut short when the
    state was saved and whole when it is loaded gives as many records as then, so the records of
    the other shards land in the batches they had in the pass uninterrupted."""
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / f"shard-{s}.tar") for s in range(3)]
    for s, path in enumerate(paths):
        with wds.TarWriter(path) as w:
            for j in range(12):
                w.write({"__key__": f"s{s}_{j:02d}", "png": encode(rng.integers(0, 256, (12, 12, 3), np.uint8), "PNG"),
                         "json": [float(s * 12 + j), float(j % 5)]})
    whole = (tmp_path / "shard-1.tar").read_bytes()

    def cut(n):
        with open(paths[1], "wb") as f:
            f.write(whole[:n])
        for p in tmp_path.glob("*.idx.json"):
            p.unlink()

    def loader():
        std = fl.Standardize() if prepared else fl.Standardize(mean=[0, 0], std=[1, 1])
        return fl.Loader(fl.TarShards(paths).stream(), batch_size=5, on_error="skip",
                         fields={"png": [fl.CenterCrop(8)], "json": std, "__key__": None})

    def keys(batches):
        return [list(b["__key__"]) for b in batches]

    cut(len(whole) // 3)
    uninterrupted = keys(loader())
    L = loader()
    it = iter(L)
    head = keys([next(it), next(it)])
    state = json.loads(json.dumps(L.state_dict()))
    del it
    cut(len(whole))
    L = loader().load_state_dict(state)
    assert L.state_dict()["stream"] == state["stream"]   # saved again before the pass: the same
    resumed = head + keys(L)
    assert resumed == uninterrupted
    assert head + keys(pickle.loads(pickle.dumps(loader().load_state_dict(state)))) == uninterrupted   # spawn
    assert sum(k.startswith("s1_") for b in resumed for k in b) < 12 and len(resumed) == len(uninterrupted)


def test_a_stream_reads_ahead_a_bounded_number_of_bytes(tmp_path, monkeypatch):
    """Large samples (video clips) are read ahead by bytes, not only by count: while the consumer
    holds the first, at most READ_AHEAD_BYTES more (or one sample) have been read; all come out whole."""
    import fastload.sources.shards as shards_module
    monkeypatch.setattr(shards_module, "READ_AHEAD_BYTES", 1 << 20)
    blobs = [bytes([i]) * (256 << 10) for i in range(40)]
    with wds.TarWriter(str(tmp_path / "clips.tar")) as w:
        for i, blob in enumerate(blobs):
            w.write({"__key__": f"c{i:02d}", "mp4": blob, "cls": i})
    st = fl.TarShards(str(tmp_path / "clips.tar")).stream()
    st.set_epoch(0)
    it = iter(st)
    first = next(it)
    time.sleep(1.5)   # time enough to read all 40 where nothing bounds it
    read = st.pass_state(0)["counts"][0]
    assert first["mp4"] == blobs[0] and read <= 8   # 4 queued of 256 KiB, one being put, one yielded
    got = [first] + list(it)
    assert [r["cls"] for r in got] == list(range(40)) and all(r["mp4"] == b for r, b in zip(got, blobs))


def test_a_stream_has_the_fields_of_every_sample_as_its_indexed_source(tmp_path):
    """A member the first sample lacks (an optional caption) is a field of the indexed source, None
    where a sample has none: a stream's batches have it too, from the shards' indexes. A remote
    shard with no index kept gives the first sample's, and a member outside them is a warning."""
    out = tmp_path / "s"
    out.mkdir()
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=4, verbose=0) as w:
        for i in range(8):
            sample = {"__key__": f"k{i:02d}", "cls": i}
            if i not in (0, 5):
                sample["txt"] = f"caption {i}"
            if i == 6:
                sample["json"] = {"i": i}
            w.write(sample)
    paths = sorted(str(p) for p in out.glob("*.tar"))
    kw = dict(batch_size=8, fields={"cls": "index"})
    indexed = next(iter(fl.Loader(fl.TarShards(paths), **kw)))
    streamed = next(iter(fl.Loader(fl.TarShards(paths).stream(), **kw)))
    truth = webdataset_samples(paths)
    assert list(streamed) == list(indexed) == ["cls", "json", "txt"]
    assert streamed["txt"] == indexed["txt"] == [r.get("txt") for r in truth]
    assert streamed["json"] == indexed["json"] == [r.get("json") for r in truth]
    np.testing.assert_array_equal(streamed["cls"], indexed["cls"])
    for p in out.glob("*.idx.json"):
        p.unlink()
    with serve(out) as server:
        urls = [f"{server.url}/{os.path.basename(p)}" for p in paths]
        stream = fl.TarShards(urls).stream()
        assert stream.fields == ("cls",)
        with pytest.warns(RuntimeWarning, match=r"shard-000000\.tar: member k01\.txt: \.txt is not among the "
                                                r"stream's fields \['cls'\]"):
            assert len(list(stream)) == 8
        cached = fl.TarShards(urls, cache_dir=tmp_path / "cache")
        len(cached)   # indexed once, kept in cache_dir
        assert cached.stream().fields == ("cls", "json", "txt")


def test_a_streams_state_loads_only_into_a_stream_of_the_same_shards(shards, tmp_path):
    """A stream's pass state keeps its shards' counts by read position, a permutation of the shards:
    loaded into a stream of a shard more, or of other shards, each count went to another shard and
    records repeated or were never read. The state names its shards (how many, a digest of their
    names), and another list of them is refused saying what differs; the same shards in another
    directory resume exactly, and a state saved without those entries still loads."""
    moved = tmp_path / "moved"
    moved.mkdir()
    for s in shards:
        shutil.copy(s, moved / os.path.basename(s))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i, s in enumerate(shards):
        shutil.copy(s, renamed / f"part-{i}.tar")

    def loader(urls):
        return fl.Loader(fl.TarShards(urls).stream(shuffle_buffer=5, seed=2).map(dict), batch_size=4,
                         fields={"cls": "index", "__key__": None})

    def keys(batches):
        return [k for b in batches for k in b["__key__"]]

    whole = keys(loader(shards[:2]))
    L = loader(shards[:2])
    it = iter(L)
    got = keys(next(it) for _ in range(2))
    state = json.loads(json.dumps(L.state_dict()))
    del it
    with pytest.raises(ValueError, match=r"^the state was saved over 2 shards, this stream has 3: the pass resumed "
                                         r"would read other records"):
        loader(shards).load_state_dict(state)
    with pytest.raises(ValueError, match=r"^the state was saved over 2 shards of other names than this stream's"):
        loader([str(renamed / "part-0.tar"), str(renamed / "part-1.tar")]).load_state_dict(state)
    with pytest.raises(ValueError, match="over 2 shards of other names"):   # the same shards in another order
        loader(shards[1::-1]).load_state_dict(state)
    elsewhere = [str(moved / os.path.basename(s)) for s in shards[:2]]
    assert got + keys(loader(elsewhere).load_state_dict(state)) == whole
    for part in state["stream"]["parts"]:
        del part["shards"], part["names"]
    assert got + keys(loader(shards[:2]).load_state_dict(state)) == whole


def test_a_shard_named_with_glob_characters_is_that_shard(tmp_path):
    # "a[1].tar" was taken for a pattern: a1.tar was read in its place, or, without one, no shard matched.
    import webdataset as wds
    for name, text in (("a[1].tar", "A-BRACKET"), ("a1.tar", "A-ONE"), ("b*.tar", "B-STAR")):
        with wds.TarWriter(str(tmp_path / name)) as w:
            w.write({"__key__": "k0", "txt": text})
    for name, text in (("a[1].tar", "A-BRACKET"), ("b*.tar", "B-STAR")):
        shards = fl.TarShards([str(tmp_path / name)])
        assert shards.urls == [str(tmp_path / name)] and shards[0]["txt"] == text   # webdataset decodes .txt
    assert fl.TarShards([str(tmp_path / "a?.tar")]).urls == [str(tmp_path / "a1.tar")]   # a pattern still
