"""fastload pack and fl.PackedDataset: the bytes that went in come out, records start on page
boundaries, batches equal the folder's, a stopped run resumes to the same files, --max-side
re-encodes as Pillow does, and broken inputs and outputs are named."""
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import webdataset as wds
from PIL import Image, ImageOps

import fastload as fl
from fastload.cli import main as cli
from fastload.pack import ALIGN, pack
from fastload.synthetic import make_image_folder
from _child import HOME, run_python
from helpers import encode, photo_like


def folder_bytes(src):
    out = []
    for path, label in src:
        with open(path, "rb") as f:
            out.append((f.read(), label))
    return out


def test_pack_a_folder_keeps_bytes_labels_and_page_alignment(image_folder, tmp_path):
    src = fl.ImageFolder(image_folder)
    meta = pack(src, tmp_path / "p", shard_size=64 * 1024, workers=2, progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    assert len(ds) == len(src) == meta["count"] == 24 and len(meta["shards"]) > 1
    assert [ds[i] for i in range(len(ds))] == folder_bytes(src)
    assert ds.classes == src.classes and ds.fields == ("image", "label")
    np.testing.assert_array_equal(ds.labels(), src.labels())
    assert (ds._offset % ALIGN == 0).all()
    assert all(s["size"] % ALIGN == 0 for s in meta["shards"])
    assert ds.gather(np.array([5, 0, 23])) == [ds[5], ds[0], ds[23]]


def test_loader_over_packed_equals_loader_over_folder(image_folder, tmp_path):
    pack(fl.ImageFolder(image_folder), tmp_path / "p", progress=False)
    kw = dict(batch_size=8, shuffle=True, seed=3, workers=2,
              transforms=[fl.RandomResizedCrop(48), fl.RandomHorizontalFlip()])
    n = 0
    for (a, la), (b, lb) in zip(fl.Loader(fl.PackedDataset(tmp_path / "p"), **kw),
                                fl.Loader(fl.ImageFolder(image_folder), **kw)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
        n += 1
    assert n == 3


def test_pack_tar_shards_keeps_every_field(image_folder, tmp_path):
    path = str(tmp_path / "s.tar")
    with wds.TarWriter(path) as w:
        for i, (p, label) in enumerate(fl.ImageFolder(image_folder)):
            with open(p, "rb") as f:
                w.write({"__key__": f"k{i:03d}", "jpg": f.read(), "cls": label, "json": {"i": i, "ok": True},
                         "txt": f"caption {i} é"})
    ts = fl.TarShards(path)
    pack(ts, tmp_path / "p", progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    want = [{k: v for k, v in ts[i].items() if k != "__url__"} for i in range(len(ts))]
    assert [ds[i] for i in range(len(ds))] == want
    assert ds.record_id(7).endswith("shard-00000.bin:k007")
    np.testing.assert_array_equal(ds.labels(), [r["cls"] for r in want])
    loader = fl.Loader(ds, batch_size=5, fields={"jpg": [fl.CenterCrop(32)], "cls": "index", "txt": None})
    batches = list(loader)
    assert [t for b in batches for t in b["txt"]] == [r["txt"] for r in want]


class Interrupted(Exception):
    pass


class StopsAt(fl.Source):
    """The folder, but reading record `stop` raises (a crash, not a bad record)."""

    def __init__(self, src, stop):
        self.src, self.stop, self.classes = src, stop, src.classes

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        if i == self.stop:
            raise Interrupted(i)
        return self.src[i]

    def gather(self, idx):
        return [self[i] for i in idx.tolist()]

    def record_id(self, i):   # the folder's names and labels: a resume recognises the same files
        return self.src.record_id(i)

    def labels(self):
        return self.src.labels()


def test_a_stopped_run_resumes_to_the_same_files(image_folder, tmp_path):
    src = fl.ImageFolder(image_folder)
    pack(src, tmp_path / "clean", shard_size=32 * 1024, workers=1, progress=False)
    with pytest.raises(Interrupted):
        pack(StopsAt(src, 20), tmp_path / "resumed", shard_size=32 * 1024, workers=1, progress=False)
    finished = sorted(f for f in os.listdir(tmp_path / "resumed") if f.endswith(".bin"))
    assert finished and not os.path.exists(tmp_path / "resumed" / "meta.json")
    stamps = {f: os.stat(tmp_path / "resumed" / f).st_mtime_ns for f in finished}
    pack(src, tmp_path / "resumed", shard_size=32 * 1024, workers=2, progress=False)
    assert {f: os.stat(tmp_path / "resumed" / f).st_mtime_ns for f in finished} == stamps   # not rewritten
    names = sorted(f for f in os.listdir(tmp_path / "clean") if not f.endswith(".npz"))
    assert names == sorted(f for f in os.listdir(tmp_path / "resumed") if not f.endswith(".npz"))
    for name in names:
        with open(tmp_path / "clean" / name, "rb") as a, open(tmp_path / "resumed" / name, "rb") as b:
            assert a.read() == b.read(), name
    with pytest.raises(ValueError, match="other settings"):
        pack(src, tmp_path / "resumed", shard_size=16 * 1024, progress=False)


def test_a_pack_of_other_files_is_never_resumed_into(tmp_path, capsys):
    """`fastload pack A OUT`, then `fastload pack B OUT` with B as many images: the check compared
    counts and settings only, so the run kept A's image bytes and wrote B's class names beside them."""
    a = make_image_folder(tmp_path / "A", classes=2, per_class=3, size=(20, 24), seed=1)
    b = make_image_folder(tmp_path / "B", classes=2, per_class=3, size=(20, 24), seed=2)
    os.rename(os.path.join(b, "class_000"), os.path.join(b, "apple"))
    out = str(tmp_path / "out")
    assert cli(["pack", a, out, "--quiet"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli(["pack", b, out, "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"fastload: error: {out} holds a pack of other files") and "--overwrite" in err, err
    assert [fl.PackedDataset(out)[i] for i in range(6)] == folder_bytes(fl.ImageFolder(a))   # left as it was
    assert cli(["pack", b, out, "--quiet", "--overwrite"]) == 0
    ds = fl.PackedDataset(out)
    assert ds.classes == ["apple", "class_001"] and [ds[i] for i in range(6)] == folder_bytes(fl.ImageFolder(b))
    # the same names with other bytes (a file rewritten in place) are other files too
    first = fl.ImageFolder(b)[0][0]
    with open(first, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="holds a pack of other files"):
        pack(fl.ImageFolder(b), out, progress=False)
    # and a run that stopped part-way resumes only with the files it started with
    with pytest.raises(Interrupted):
        pack(StopsAt(fl.ImageFolder(a), 5), tmp_path / "part", shard_size=ALIGN, workers=1, progress=False)
    with pytest.raises(ValueError, match="holds a pack of other files"):
        pack(fl.ImageFolder(b), tmp_path / "part", shard_size=ALIGN, progress=False)


def test_the_files_of_a_pack_without_its_pack_json_are_never_resumed_into(tmp_path, capsys):
    """A pack copied without pack.json (PackedDataset reads only meta.json, index.npz and the shards):
    packing another folder into it took every shard there for finished work of this run and left
    the old records under the new source's classes."""
    a = make_image_folder(tmp_path / "A", classes=2, per_class=5, size=(20, 24), seed=1)
    b = make_image_folder(tmp_path / "B", classes=2, per_class=1, size=(20, 24), seed=2)
    out = str(tmp_path / "out")
    assert cli(["pack", a, out, "--quiet", "--shard-size", str(ALIGN)]) == 0
    os.remove(os.path.join(out, "pack.json"))
    there = len(os.listdir(out))   # a shard and its index piece per record, meta.json, index.npz
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli(["pack", b, out, "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == (
        f"fastload: error: {out} holds the files of a pack (index.npz, meta.json, ... {there} in all) but no pack.json "
        "saying which records and settings they are; give a new output directory, or overwrite=True "
        "(--overwrite) to replace that pack\n")
    assert not os.path.exists(os.path.join(out, "pack.json"))
    assert [fl.PackedDataset(out)[i] for i in range(10)] == folder_bytes(fl.ImageFolder(a))   # left as it was
    os.remove(os.path.join(out, "meta.json"))   # a run of A stopped part-way, then its pack.json removed
    with pytest.raises(ValueError, match="holds the files of a pack"):
        pack(fl.ImageFolder(a), out, shard_size=ALIGN, progress=False)
    assert cli(["pack", b, out, "--quiet", "--overwrite"]) == 0
    assert [fl.PackedDataset(out)[i] for i in range(2)] == folder_bytes(fl.ImageFolder(b))


def test_overwrite_removes_only_the_files_of_a_pack(tmp_path):
    """--overwrite into a folder that also holds the user's index.html, meta.yaml, pack.txt: those
    were deleted with the pack (any name before its first dot 'index', 'meta' or 'pack')."""
    a = make_image_folder(tmp_path / "A", classes=2, per_class=2, size=(20, 24), seed=1)
    b = make_image_folder(tmp_path / "B", classes=2, per_class=2, size=(20, 24), seed=2)
    out = tmp_path / "site"
    out.mkdir()
    mine = ["index.html", "meta.yaml", "pack.txt", "shard-notes.txt", "pack.json.bak", "notes.txt"]
    for name in mine:
        (out / name).write_text("the user's own")
    assert cli(["pack", a, str(out), "--quiet", "--shard-size", str(ALIGN)]) == 0
    assert cli(["pack", b, str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == sorted(mine + ["pack.json", "meta.json", "index.npz", "shard-00000.bin",
                                                     "shard-00000.idx.npz"])   # A's other shards gone
    assert all((out / name).read_text() == "the user's own" for name in mine)
    assert [fl.PackedDataset(out)[i] for i in range(4)] == folder_bytes(fl.ImageFolder(b))


def test_max_side_reencodes_like_pillow(tmp_path):
    root = tmp_path / "imgs" / "c"
    root.mkdir(parents=True)
    big, small = photo_like(120, 200, seed=1), photo_like(40, 30, seed=2)
    (root / "big.jpg").write_bytes(encode(big, quality=95))
    (root / "small.jpg").write_bytes(encode(small, quality=95))
    pack(fl.ImageFolder(tmp_path / "imgs"), tmp_path / "p", max_side=64, quality=90, progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    got_big, got_small = ds[0][0], ds[1][0]
    assert got_small == (root / "small.jpg").read_bytes()   # within the limit: the original bytes
    with Image.open(io.BytesIO(got_big)) as im:
        assert im.format == "JPEG" and im.size == (64, 38)
        got = np.asarray(im.convert("RGB"), dtype=np.float32)
    with Image.open(root / "big.jpg") as im:   # Pillow's own answer: Lanczos, then JPEG at quality 90
        want = encode(ImageOps.exif_transpose(im).resize((64, 38), Image.LANCZOS), quality=90)
    with Image.open(io.BytesIO(want)) as im:
        want = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert np.abs(got - want).max() <= 1


def test_a_max_side_under_one_pixel_is_refused(image_folder, tmp_path, capsys):
    """--max-side -5 re-encoded every image to 1x1 pixels; --max-side 0 was ignored."""
    for value in (-5, 0):
        with pytest.raises(ValueError, match=f"max_side must be at least 1 pixel, got {value}"):
            pack(fl.ImageFolder(image_folder), tmp_path / "p", max_side=value, progress=False)
        with pytest.raises(SystemExit) as e:
            cli(["pack", image_folder, str(tmp_path / "q"), "--quiet", "--max-side", str(value)])
        assert e.value.code == 2 and capsys.readouterr().err == \
            f"fastload: error: --max-side must be at least 1 pixel, got {value}\n"
    assert not os.path.exists(tmp_path / "p") and not os.path.exists(tmp_path / "q")


def test_a_quality_outside_1_to_100_is_refused(image_folder, tmp_path, capsys):
    """--quality 500 and -5 were taken: Pillow clamps them, so -5 wrote quality-1 JPEGs."""
    for value in (500, 101, 0, -5):
        with pytest.raises(ValueError, match=f"^quality must be 1..100, got {value}$"):
            pack(fl.ImageFolder(image_folder), tmp_path / "p", max_side=16, quality=value, progress=False)
        with pytest.raises(SystemExit) as e:
            cli(["pack", image_folder, str(tmp_path / "q"), "--quiet", "--max-side", "16", "--quality", str(value)])
        assert e.value.code == 2 and capsys.readouterr().err == \
            f"fastload: error: --quality must be 1..100, got {value}\n"
    assert not os.path.exists(tmp_path / "p") and not os.path.exists(tmp_path / "q")
    for value in (1, 100):
        assert pack(fl.ImageFolder(image_folder), tmp_path / f"ok{value}", max_side=16, quality=value,
                    progress=False)["count"] == 24


def test_cli_pack_and_bad_records(image_folder, tmp_path, capsys):
    root = tmp_path / "f"
    shutil.copytree(image_folder, root)
    bad = sorted((root / "class_001").iterdir())[2]
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert cli(["pack", str(root), str(tmp_path / "p"), "--quiet", "--workers", "2"]) == 0
    assert "packed 24 records into 1 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:   # one line naming the record, not a traceback
        cli(["pack", str(root), str(tmp_path / "q"), "--quiet", "--max-side", "32"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"fastload: error: {bad}: field 'image': cannot re-encode the "
                                                "image: ") and len(err.splitlines()) == 1, err
    assert cli(["pack", str(root), str(tmp_path / "r"), "--quiet", "--max-side", "32", "--on-error", "skip"]) == 0
    out = capsys.readouterr()
    assert "packed 23 records into 1 shards" in out.out and "(1 skipped)" in out.out
    assert f"skipped {bad}" in out.err
    ds = fl.PackedDataset(tmp_path / "r")
    assert len(ds) == 23 and max(Image.open(io.BytesIO(ds[0][0])).size) == 32


def test_a_source_of_which_no_record_can_be_packed_is_one_line(tmp_path, capsys):
    """--on-error skip where every record fails: NumPy's 'need at least one array to concatenate'."""
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / c / f"{i}.jpg").write_bytes(b"not a jpeg")
    first = tmp_path / "data" / "a" / "0.jpg"
    with pytest.raises(SystemExit) as e:
        cli(["pack", str(tmp_path / "data"), str(tmp_path / "out"), "--quiet", "--max-side", "10",
             "--on-error", "skip"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(
        f"fastload: error: none of the 4 records could be packed (the first: {first}: field 'image': "
        "cannot re-encode the image: not an image format Pillow reads"), err
    assert not os.path.exists(tmp_path / "out" / "meta.json")
    why = rf"^none of the 4 records could be packed \(the first: {re.escape(str(first))}: field 'image': "
    with pytest.raises(ValueError, match=why):
        pack(fl.ImageFolder(tmp_path / "data"), tmp_path / "out", max_side=10, on_error="skip", progress=False)


def test_an_out_inside_the_folder_it_packs_is_one_line(tmp_path, capsys):
    """Packing a folder into a folder inside it worked once; the next run, or a loader of that folder,
    then took the pack's folder for a class without images."""
    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=(20, 24), seed=1)
    for out in (os.path.join(root, "packed"), os.path.join(root, "class_000", "deeper", "packed")):
        with pytest.raises(SystemExit) as e:
            cli(["pack", root, out, "--quiet"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err == (f"fastload: error: {out} is inside the folder it packs, {root}: the next run (and any "
                       "loader of that folder) would read the pack's folder as part of it; give an OUT outside "
                       "it\n") and not os.path.exists(out)
    assert cli(["pack", root, str(tmp_path / "data-packed"), "--quiet"]) == 0   # beside it: fine
    assert len(fl.ImageFolder(root)) == 4


def test_a_run_stopped_while_writing_pack_json_starts_again(image_folder, tmp_path, monkeypatch):
    """pack.json cut short (a full disk, a kill) made the next run refuse the folder as a pack with
    "other settings (version: None there, ...)"."""
    src = fl.ImageFolder(image_folder)
    real_dump = json.dump

    def dump_half(obj, f, **kw):
        f.write(json.dumps(obj)[:20])
        f.flush()
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(json, "dump", dump_half)
    with pytest.raises(OSError, match="No space left"):
        pack(src, tmp_path / "out", workers=1, progress=False)
    monkeypatch.setattr(json, "dump", real_dump)
    assert not os.path.exists(tmp_path / "out" / "pack.json")
    meta = pack(src, tmp_path / "out", workers=1, progress=False)
    assert meta["count"] == len(src)
    assert [fl.PackedDataset(tmp_path / "out")[i] for i in range(len(src))] == folder_bytes(src)


def test_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path):
    """A write that fails (a full disk; here a file size limit, EFBIG as ENOSPC would be) was a
    traceback ending in write()'s '[Errno 27] File too large', naming no file."""
    pytest.importorskip("resource")
    root = make_image_folder(tmp_path / "data", classes=1, per_class=3, size=(20, 24), seed=1)
    os.mkdir(tmp_path / "data" / "z_big")
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "data" / "z_big" / "noise.png")   # over the limit by itself
    out = tmp_path / "out"
    args = ["pack", root, str(out), "--quiet", "--shard-size", str(ALIGN)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    # The limit is set in the child itself: a preexec_fn forks this process, which may run threads.
    limited = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
               "from fastload.cli import main; sys.exit(main(sys.argv[1:]))")
    run = functools.partial(subprocess.run, env=env, capture_output=True, text=True, timeout=240,
                            cwd=tmp_path)   # -c and -m put the working directory first: not a checkout's fastload
    r = run([sys.executable, "-c", limited, *args])
    assert r.returncode == 2 and r.stdout == "" and r.stderr == (
        f"fastload: error: {out / 'shard-00003.bin.part'}: File too large (the finished shards are kept: "
        "the same command again resumes after them)\n"), r.stderr
    finished = sorted(f for f in os.listdir(out) if f.endswith(".bin"))
    assert finished == [f"shard-{i:05d}.bin" for i in range(3)] and not os.path.exists(out / "meta.json")
    stamps = {f: os.stat(out / f).st_mtime_ns for f in finished}
    r = run([sys.executable, "-m", "fastload", *args])
    assert r.returncode == 0 and "packed 4 records into 4 shards" in r.stdout, r.stderr
    assert {f: os.stat(out / f).st_mtime_ns for f in finished} == stamps   # resumed, not rewritten
    assert [fl.PackedDataset(out)[i] for i in range(4)] == folder_bytes(fl.ImageFolder(root))


def test_truncated_packed_shard_and_missing_dataset(image_folder, tmp_path):
    pack(fl.ImageFolder(image_folder), tmp_path / "p", progress=False)
    shard = tmp_path / "p" / "shard-00000.bin"
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.truncate(size - 3 * ALIGN)
    ds = fl.PackedDataset(tmp_path / "p")
    loader = fl.Loader(ds, batch_size=8, transforms=[fl.CenterCrop(32)])
    with pytest.raises(fl.RecordError, match=r"shard-00000\.bin#2\d: reading failed: (file ends at byte \d+, "
                                             r"before \d+|bytes \d+\.\.\d+ are past the end of the file) "
                                             r"\(truncated\?\)"):
        list(loader)
    loader = fl.Loader(ds, batch_size=8, transforms=[fl.CenterCrop(32)], on_error="skip")
    with pytest.warns(RuntimeWarning):
        labels = np.concatenate([lab for _, lab in loader])
    assert loader.stats()["skipped"] >= 1
    np.testing.assert_array_equal(labels, ds.labels()[:len(labels)])
    with pytest.raises(FileNotFoundError, match="not a finished packed dataset"):
        fl.PackedDataset(tmp_path / "nothing")


TRUNCATED_WHILE_READ = """
import os, sys
import numpy as np
import fastload as fl
ds = fl.PackedDataset(sys.argv[1])
loader = fl.Loader(ds, batch_size=8, transforms=[fl.CenterCrop(32)], workers=2)
first = np.concatenate([lab for _, lab in loader])
shard = os.path.join(sys.argv[1], "shard-00000.bin")
os.truncate(shard, os.path.getsize(shard) // 2)   # rewritten in place, say, while the job runs
try:
    list(loader)
except fl.RecordError as e:
    print("error:", e)
skipping = fl.Loader(ds, batch_size=8, transforms=[fl.CenterCrop(32)], on_error="skip")
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    batches = sum(1 for _ in skipping)
print("epoch 1:", len(first), "skipped:", skipping.stats()["skipped"], "batches:", batches, "of", len(skipping))
"""


def test_a_shard_truncated_while_it_is_read_is_an_error_not_a_crash(image_folder, tmp_path):
    # A memory-mapped shard that shrinks under its map kills the process (SIGBUS) on the next
    # read past the new end; records are read by position, so it is a short read and an error.
    pack(fl.ImageFolder(image_folder), tmp_path / "p", progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    cut = os.path.getsize(tmp_path / "p" / "shard-00000.bin") // 2
    ends = ds._offset + ds._sizes["image"]
    lost = int(np.sum(ends > cut))
    first = int(np.argmax(ends > cut))   # the loader reads in order: the first record it cannot
    why = f"file ends at byte {cut}, before {ends[first]}" if ds._offset[first] < cut else \
        f"bytes {ds._offset[first]}..{ends[first]} are past the end of the file"
    out = run_python(["-c", TRUNCATED_WHILE_READ, str(tmp_path / "p")])
    assert f"error: {tmp_path / 'p' / 'shard-00000.bin'}#{first}: reading failed: {why} (truncated?)" in out
    batches = -(-len(ds) // 8)   # those whose every record is lost have stand-ins: still an epoch's count
    assert f"epoch 1: {len(ds)} skipped: {lost} batches: {batches} of {batches}" in out
    assert 0 < lost < len(ds)


def test_records_whose_fields_differ_from_the_first(tmp_path):
    path = str(tmp_path / "mixed.tar")
    img = encode(photo_like(30, 30, seed=3))
    with wds.TarWriter(path) as w:
        w.write({"__key__": "a", "jpg": img, "cls": 0})
        w.write({"__key__": "b", "jpg": img, "cls": 1, "txt": "extra"})
        w.write({"__key__": "c", "jpg": img})
        w.write({"__key__": "d", "jpg": img, "cls": 3})
    with pytest.raises(fl.RecordError, match=r"mixed\.tar:b: field 'txt' is not among the packed fields"):
        pack(fl.TarShards(path), tmp_path / "p", progress=False)
    meta = pack(fl.TarShards(path), tmp_path / "q", progress=False, on_error="skip")
    assert meta["count"] == 2 and meta["skipped"] == 2
    assert [r["__key__"] for r in fl.PackedDataset(tmp_path / "q")] == ["a", "d"]


@pytest.mark.parametrize("values, why", [
    ([1, 0.75, 2, True], r"mixed\.tar:k1: field 'json': 0\.75 is not an integer as the first record's is"),
    (["hello", {"a": 1}, "x", 3.5], r"mixed\.tar:k1: field 'json': \{'a': 1\} is not a string as the first record's is"),
])
def test_a_value_of_another_kind_than_the_first_records_is_refused_not_coerced(tmp_path, values, why):
    """int() made 0.75 a 0 and True a 1, str() made {"a": 1} the repr "{'a': 1}": packed without a word."""
    path = str(tmp_path / "mixed.tar")
    with wds.TarWriter(path) as w:
        for i, v in enumerate(values):
            w.write({"__key__": f"k{i}", "json": json.dumps(v).encode(), "cls": i})
    with pytest.raises(fl.RecordError, match=why):
        pack(fl.TarShards(path), tmp_path / "p", progress=False)
    meta = pack(fl.TarShards(path), tmp_path / "q", progress=False, on_error="skip")
    kept = [r for r in fl.TarShards(path) if type(r["json"]) is type(values[0])]
    assert meta["count"] == len(kept) == 2 and meta["skipped"] == 2
    packed = list(fl.PackedDataset(tmp_path / "q"))
    assert [(r["__key__"], r["json"]) for r in packed] == [(r["__key__"], r["json"]) for r in kept]
    assert all(type(r["json"]) is type(values[0]) for r in packed)


@pytest.mark.parametrize("workers", [1, 3])
def test_many_records_every_one_in_order(tmp_path, workers):
    """More records than the chunks in flight: each packed once, in source order, whatever the workers."""
    rng = np.random.default_rng(0)
    recs = [{"__key__": f"r{i:04d}", "bin": rng.bytes(int(rng.integers(0, 300))), "n": i * 7 - 50,
             "meta": {"i": i, "tags": ["a"] * (i % 3)}} for i in range(777)]
    meta = pack(fl.ListSource(recs), tmp_path / "p", shard_size=ALIGN * 50, workers=workers, progress=False)
    ds = fl.PackedDataset(tmp_path / "p")
    assert meta["count"] == len(ds) == 777 and len(meta["shards"]) == 16
    assert [ds[i] for i in range(len(ds))] == recs


def test_a_damaged_meta_or_index_is_an_error_naming_the_file(image_folder, tmp_path):
    """A garbled download or a half-copied directory: an error naming the file and what is wrong with
    it, not a bare decoding error."""
    pack(fl.ImageFolder(image_folder), tmp_path / "p", progress=False)

    def damaged(name, damage):
        d = tmp_path / name
        shutil.copytree(tmp_path / "p", d)
        damage(d)
        return d

    cases = [
        ("garbled", lambda d: (d / "meta.json").write_bytes(b"\xd1\x00garbage"), "meta.json",
         "is not valid JSON"),
        ("cut", lambda d: os.truncate(d / "meta.json", 30), "meta.json", "is not valid JSON"),
        ("list", lambda d: (d / "meta.json").write_text("[1, 2]"), "meta.json", "holds a JSON list"),
        ("nofields", lambda d: (d / "meta.json").write_text('{"version": 1, "record": "tuple", "shards": []}'),
         "meta.json", "has no entry 'fields'"),
        ("npzcut", lambda d: os.truncate(d / "index.npz", 100), "index.npz", "is not a readable .npz archive"),
        ("npzjunk", lambda d: (d / "index.npz").write_bytes(b"junk" * 50), "index.npz",
         "is not a readable .npz archive"),
        ("npzless", lambda d: np.savez(d / "index.npz", shard=np.zeros(3, np.int64)), "index.npz",
         r"lacks the arrays \['offset', 'size:image', 'int:label'\]"),
    ]
    for name, damage, file, what in cases:
        d = damaged(name, damage)
        with pytest.raises(ValueError, match=rf"^PackedDataset: {re.escape(str(d / file))} {what}"):
            fl.PackedDataset(d)


def test_a_pack_of_urls_resumes_only_over_the_files_it_started_with(tmp_path):
    """A URL has no os.stat: the files behind a pack of URLs are told apart by the size and ETag
    their storage gives, so a run stopped part-way resumes over the same files, and is refused once
    a file was rewritten at its URL, as for a local folder."""
    from _http import serve
    root = make_image_folder(tmp_path / "www" / "train", classes=2, per_class=4, size=(20, 24), seed=1)
    out = tmp_path / "out"
    with serve(tmp_path / "www") as server:
        url = f"{server.url}/train"
        src = fl.ImageFolder(url, retries=0)
        last = src.record_id(len(src) - 1)
        server.fail[last[len(server.url):]] = 1   # its read (not its size) fails once: the run stops there
        with pytest.raises(fl.RecordError):
            pack(src, out, shard_size=ALIGN, workers=1, progress=False)
        finished = sorted(f for f in os.listdir(out) if f.endswith(".bin"))
        assert finished and not os.path.exists(out / "meta.json")
        server.fail[last[len(server.url):]] = 1   # resumed over the same files (not refused), stopped again
        with pytest.raises(fl.RecordError):
            pack(fl.ImageFolder(url, retries=0), out, shard_size=ALIGN, workers=1, progress=False)
        assert sorted(f for f in os.listdir(out) if f.endswith(".bin")) == finished
        first = fl.ImageFolder(root)[0][0]
        with open(first, "ab") as f:   # rewritten in place: another size and ETag at the same URL
            f.write(b"\0")
        with pytest.raises(ValueError, match="holds a pack of other files"):
            pack(fl.ImageFolder(url, retries=0), out, shard_size=ALIGN, workers=1, progress=False)
        pack(fl.ImageFolder(url, retries=0), tmp_path / "new", shard_size=ALIGN, workers=1, progress=False)
        assert [fl.PackedDataset(tmp_path / "new")[i] for i in range(8)] == folder_bytes(fl.ImageFolder(root))


def test_a_pack_of_records_without_files_of_their_own_resumes_only_over_the_same_records(tmp_path):
    """Dicts naming image files (a ListSource, a zip, a join): their names were all the check saw
    (`ListSource[0] (image=...)`, no file), so a run over other labels and other image bytes was
    taken for the same records and kept the old ones."""
    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=3, size=(20, 24), seed=1)
    paths = [p for p, _ in fl.ImageFolder(root)]
    records = lambda labels: fl.ListSource([{"image": p, "label": y} for p, y in zip(paths, labels)])
    out = tmp_path / "out"
    pack(records([0, 1, 0, 1, 0, 1]), out, progress=False)
    pack(records([0, 1, 0, 1, 0, 1]), out, progress=False)   # the same records: resumed, nothing to do
    with pytest.raises(ValueError, match="holds a pack of other files"):
        pack(records([5, 6, 7, 8, 9, 10]), out, progress=False)
    Image.fromarray(photo_like(30, 20, seed=9)).save(paths[0])   # another image under the same name
    with pytest.raises(ValueError, match="holds a pack of other files"):
        pack(records([0, 1, 0, 1, 0, 1]), out, progress=False)
    with open(paths[0], "rb") as f:
        assert fl.PackedDataset(out)[0]["image"] != f.read()   # left as it was


def test_a_subset_of_a_folder_in_storage_is_checked_by_its_own_files(tmp_path):
    """A split's `paths` were its parent folder's: the first n of the parent's files were checked,
    paired with the subset's records, and a rewritten file of the subset went unseen."""
    from _http import serve
    make_image_folder(tmp_path / "www" / "train", classes=2, per_class=4, size=(20, 24), seed=1)
    with serve(tmp_path / "www") as server:
        sub = fl.Subset(fl.ImageFolder(f"{server.url}/train", retries=0), [7, 5, 3])
        assert list(sub.paths) == [sub.record_id(i) for i in range(3)]
        pack(sub, tmp_path / "out", progress=False)
        with open(tmp_path / "www" / sub.record_id(0)[len(server.url) + 1:], "ab") as f:
            f.write(b"\0")
        with pytest.raises(ValueError, match="holds a pack of other files"):
            pack(fl.Subset(fl.ImageFolder(f"{server.url}/train", retries=0), [7, 5, 3]), tmp_path / "out",
                 progress=False)
    assert not hasattr(fl.Subset(fl.ListSource([1, 2]), [0]), "paths")


def test_numpy_values_none_in_json_and_longer_tuples_pack_and_read_back_as_they_were(tmp_path):
    """A CSV row (float32 array), a NumPy scalar, JSON's null and (image, label, more) tuples failed
    with a bare TypeError or a refusal, or were stored as a list of the path and label."""
    img = encode(photo_like(20, 24, seed=1))
    (tmp_path / "a.jpg").write_bytes(img)
    rows = [{"x": np.arange(3, dtype=np.float32) + i, "w": np.float32(i / 2), "meta": None if i == 0 else {"i": i},
             "n": np.int64(i)} for i in range(4)]
    pack(fl.ListSource(rows), tmp_path / "d", progress=False)
    back = list(fl.PackedDataset(tmp_path / "d"))
    for got, want in zip(back, rows):
        assert got["x"].dtype == np.float32 and np.array_equal(got["x"], want["x"])
        assert (got["w"], got["meta"], got["n"]) == (float(want["w"]), want["meta"], int(want["n"]))
    tuples = [(str(tmp_path / "a.jpg"), i, f"caption {i}") for i in range(3)]
    pack(fl.ListSource(tuples), tmp_path / "t", progress=False)
    assert list(fl.PackedDataset(tmp_path / "t")) == [(img, i, f"caption {i}") for i in range(3)]
    with pytest.raises(fl.RecordError, match=r"ListSource\[1\]: field 'n': 9223372036854775808 is beyond the "
                                             r"64-bit integers"):
        pack(fl.ListSource([{"n": 1}, {"n": 2**63}]), tmp_path / "big", progress=False)
    with pytest.raises(fl.RecordError, match=r"ListSource\[1\]: field 'x': list \[1, 2\] is not an array"):
        pack(fl.ListSource([{"x": np.zeros(2)}, {"x": [1, 2]}]), tmp_path / "mixed", progress=False)


class FirstUnreadable(fl.ListSource):
    def __getitem__(self, i):
        if i == 0:
            raise fl.RecordError("rec 0", "gone since it was listed")
        return super().__getitem__(i)


def test_a_first_record_that_cannot_be_read_is_skipped_as_any_other(tmp_path):
    """The fields are the first record's: reading it stood outside the skip policy."""
    src = FirstUnreadable([{"n": i, "s": f"v{i}"} for i in range(5)])
    with pytest.raises(fl.RecordError, match="rec 0: gone since it was listed"):
        pack(src, tmp_path / "raise", progress=False)
    meta = pack(src, tmp_path / "skip", progress=False, on_error="skip")
    assert meta["skipped"] == 1 and meta["failures"] == [("rec 0", "gone since it was listed")]
    assert list(fl.PackedDataset(tmp_path / "skip")) == [{"n": i, "s": f"v{i}"} for i in range(1, 5)]


def test_max_side_keeps_a_cameras_mpo_jpeg_a_jpeg(tmp_path):
    """Pillow names a JPEG with preview images (as phone cameras write) MPO: re-encoded as PNG."""
    big = Image.fromarray(photo_like(80, 100, seed=2))
    big.save(tmp_path / "phone.jpg", "MPO", save_all=True, append_images=[big.resize((50, 40))], quality=90)
    with Image.open(tmp_path / "phone.jpg") as im:
        assert im.format == "MPO"
    pack(fl.ImageFiles([str(tmp_path / "phone.jpg")]), tmp_path / "p", max_side=50, progress=False)
    with Image.open(io.BytesIO(fl.PackedDataset(tmp_path / "p")[0])) as im:
        assert im.format == "JPEG" and im.size == (50, 40)
