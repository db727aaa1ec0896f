"""Composed sources as a user builds them: an ImageFolder zipped or joined with captions (its label
a field of its own), a join over a keyed file with a malformed line, misspelt field names on
sources that name their fields, a streamed Hugging Face dataset's class names, and rows taken out
of a Loader's batches into a shuffle buffer. References: Pillow, plain Python dicts, NumPy."""
from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

import fastload as fl
from fastload.sources import text as text_module
from fastload.synthetic import encode, photo_like
from helpers import write_image_folder


@pytest.fixture
def folder(tmp_path):
    """3 classes x 4 photo-like 5x5 PNGs, and their (path, label) in sorted order."""
    listed = write_image_folder(str(tmp_path / "imgs"), ["cat", "dog", "owl"], 4, size_range=(5, 5), fmt="PNG")
    return fl.ImageFolder(str(tmp_path / "imgs")), listed


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# -- a labelled part: its value under its name, its label under "label" ----------------------------

def test_a_joined_image_folder_gives_its_image_and_its_label_as_fields(folder):
    src, listed = folder
    stems = [f"{os.path.basename(os.path.dirname(p))}-{os.path.basename(p)[:-4]}" for p, _ in listed]
    captions = fl.ListSource([{"key": s, "caption": f"caption of {s}"} for s in reversed(stems)])
    joined = fl.join(meta=captions.key_by("key"),
                     image=src.key_by(lambda r: f"{os.path.basename(os.path.dirname(r[0]))}-{fl.stem(r)}"))
    assert joined.fields == ("meta", "image", "label") and joined.classes == ["cat", "dog", "owl"]
    loader = fl.Loader(joined, batch_size=5, fields={"image": [fl.CenterCrop(5)], "label": "onehot",
                                                      "meta": None}, dtype="uint8", layout="NHWC")
    seen = 0
    for batch in loader:
        for img, onehot, meta in zip(batch["image"], batch["label"], batch["meta"]):
            path, label = listed[stems.index(meta["key"])]   # the caption's own image and class
            assert meta["caption"] == f"caption of {meta['key']}"
            np.testing.assert_array_equal(img, _pixels(path))
            np.testing.assert_array_equal(onehot, np.eye(3, dtype=onehot.dtype)[label])
            seen += 1
    assert seen == len(listed)
    np.testing.assert_array_equal(joined.labels(), [listed[stems.index(s)][1] for s in reversed(stems)])


def test_a_zipped_image_folder_keeps_its_pairs_through_a_shuffled_split(folder):
    src, listed = folder
    numbers = fl.ListSource([float(i) for i in range(len(listed))])
    train, test = fl.zip(image=src, n=numbers).split(test_size=0.25, seed=1, stratify="label")
    loader = fl.Loader(train, batch_size=4, shuffle=True, seed=2, dtype="uint8", layout="NHWC",
                       fields={"image": [fl.CenterCrop(5)], "label": "index", "n": None})
    got = 0
    for batch in loader:
        for img, label, n in zip(batch["image"], batch["label"], batch["n"]):
            path, want = listed[int(n)]
            assert label == want
            np.testing.assert_array_equal(img, _pixels(path))
            got += 1
    assert got == len(train) == 9 and len(test) == 3
    assert sorted(np.bincount(train.labels()).tolist()) == [3, 3, 3]   # stratified by the folder's classes


def test_two_labelled_parts_are_refused_by_name(folder, tmp_path):
    src, listed = folder
    with pytest.raises(ValueError, match=r"zip: parts \['a', 'b'\] each gives \(value, label\) records"):
        fl.zip(a=src, b=src)
    with pytest.raises(ValueError, match=r"join: part 'image'.*as does the part named so"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the keys the other part lacks
        fl.join(image=src.key_by(lambda r: r[0]), label=fl.ListSource([{"k": p} for p, _ in listed]).key_by("k"))
    xy = fl.ArrayRecords(np.zeros((12, 2), np.float32), np.arange(12) % 3)   # (x, y) pairs too
    batch = next(iter(fl.Loader(fl.zip(xy=xy, n=fl.ListSource(list(range(12)))), batch_size=12,
                                fields={"label": "index"})))
    np.testing.assert_array_equal(batch["label"], np.arange(12) % 3)
    assert batch["xy"].shape == (12, 2)


# -- a join over a keyed file with a line that cannot be read ---------------------------------------

def _bad_jsonl(tmp_path, n=6, bad=3):
    lines = [json.dumps({"id": f"{i:05d}", "text": f"t{i}"}) for i in range(n)]
    lines[bad] = lines[bad][:-3]   # cut short: malformed JSON
    path = tmp_path / "meta.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_join_names_a_record_it_cannot_key_or_leaves_it_out_under_skip(folder, tmp_path):
    src, listed = folder
    meta = fl.JSONRecords(_bad_jsonl(tmp_path)).key_by("id")
    images = fl.ImageFiles(os.path.dirname(listed[0][0])).key_by(fl.stem)   # class "cat": 00000..00003
    with pytest.raises(fl.RecordError, match=r"meta\.jsonl:line 4: malformed JSON"):
        fl.join(image=images, meta=meta)
    with pytest.warns(UserWarning) as caught:
        joined = fl.join(image=images, meta=meta, on_error="skip")
    said = [str(w.message) for w in caught]
    assert re.search(r"1 records could not be read for their keys.*meta: .*meta\.jsonl:line 4", said[0]), said
    assert "missing from 'meta': 1 (first: '00003')" in said[1], said   # the join's own count of it
    assert joined.keys == ["00000", "00001", "00002"]   # 00003's line is the bad one; 00004, 00005 have no image
    batch = next(iter(fl.Loader(joined, batch_size=3, fields={"image": [fl.Resize((2, 2))], "meta": None})))
    assert [m["text"] for m in batch["meta"]] == ["t0", "t1", "t2"]
    with pytest.raises(fl.RecordError, match="line 4"):   # the keys of the skipping join are not the default's
        fl.join(image=images, meta=meta)
    with pytest.raises(ValueError, match="on_error"):
        fl.join(image=images, meta=meta, on_error="ignore")


# -- field names the records do not have ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: fl.zip(text=fl.ListSource(["a b", "c"] * 3), label=fl.ListSource([0, 1] * 3)),
    lambda: fl.zip(text=fl.ListSource(["a b", "c"] * 3), label=fl.ListSource([0, 1] * 3)).split(test_size=2)[0],
    lambda: fl.ArrayRecords(text=np.zeros(6), label=np.arange(6) % 2),
], ids=["zip", "split of a zip", "named arrays"])
def test_a_misspelt_field_of_a_source_that_names_its_fields_is_warned_of(make):
    with pytest.warns(RuntimeWarning, match=r"fields \['txt'\] are not fields of the source's records, which "
                                            r"have \['text', 'label'\]"):
        loader = fl.Loader(make(), batch_size=2, fields={"txt": None, "label": "index"})
    assert next(iter(loader))["txt"] == [None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the right names: no warning
        fl.Loader(make(), batch_size=2, fields={"text": None, "label": "index"})


def test_a_streamed_hugging_face_dataset_knows_its_class_names():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["x", "y", "z"])})
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 2, 1]}, features=features)
    stream = fl.HFDataset(ds.to_iterable_dataset())
    assert stream.classes == ["x", "y", "z"] == fl.HFDataset(ds).classes
    batches = list(fl.Loader(stream, batch_size=2, fields={"label": "onehot", "text": None}))
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), np.eye(3)[[0, 2, 1]])


def test_a_json_source_closes_its_file_when_collected_at_interpreter_exit(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    src = fl.JSONRecords(str(path))
    assert src[1] == {"a": 2}
    fd = src._fd
    monkeypatch.setattr(text_module, "os", None)   # as module globals are at exit
    src.__del__()
    monkeypatch.undo()
    assert src._fd is None
    with pytest.raises(OSError):
        os.fstat(fd)


# -- rows out of a Loader's batches -----------------------------------------------------------------

@pytest.mark.parametrize("output", ["numpy", "torch"])
def test_unbatched_rows_do_not_hold_their_batch_buffer(output):
    if output == "torch":
        pytest.importorskip("torch")
    records = fl.ArrayRecords(x=np.arange(64 * 40 * 8, dtype=np.float32).reshape(-1, 8), y=np.arange(64 * 40))
    loader = fl.Loader(records, batch_size=64, output=output, fields={"x": fl.Numeric(8), "y": "index"})
    rows = loader.unbatch().shuffle(600, seed=0)
    got = {}
    for row in rows:
        x = np.asarray(row["x"])
        base = row["x"].untyped_storage().nbytes() if output == "torch" else (row["x"].base.nbytes
                                                                               if row["x"].base is not None else 0)
        assert base <= x.nbytes   # its own bytes, not a view of its 64-row batch
        got[int(row["y"])] = x
    assert sorted(got) == list(range(64 * 40))
    for i, x in got.items():
        np.testing.assert_array_equal(x, np.arange(i * 8, i * 8 + 8, dtype=np.float32))
    # 600 buffered rows of 64-row batches pinned about 600 * ln(64) / 64 ~ 40 whole batches before
    assert loader.stats()["buffer_slots"] <= 6


def test_unbatched_rows_of_single_array_batches_are_copies_too(tmp_path):
    """Batches of images alone (fl.ImageFiles) are one array, whose rows were views of the slot."""
    imgs = [photo_like(12, 10, seed=s) for s in range(40)]
    for s, img in enumerate(imgs):
        (tmp_path / f"{s:02d}.png").write_bytes(encode(img, "PNG"))
    loader = fl.Loader(fl.ImageFiles(tmp_path), batch_size=8, transforms=[fl.CenterCrop(8)], dtype="uint8",
                       layout="NHWC")
    rows = list(loader.unbatch().shuffle(40, seed=0))
    assert len(rows) == 40 and all(r.base is None and r.shape == (8, 8, 3) for r in rows)
    want = {img[2:10, 1:9].tobytes() for img in imgs}
    assert {r.tobytes() for r in rows} == want   # each row its image, none overwritten by a later batch
    assert loader.stats()["buffer_slots"] <= 4


def test_a_zip_read_through_a_stream_names_a_failure_as_random_access_does(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(['{"text": "a"}'] * 4 + ["{oops"] + ['{"text": "b"}'] * 3) + "\n")
    records = fl.zip(text=fl.JSONRecords(str(path), field="text"), n=fl.ListSource(list(range(8))))
    named = []
    for src in (records, records.map(lambda r: r).shuffle(8, seed=0, initial=8)):
        loader = fl.Loader(src, batch_size=4, on_error="skip",
                           fields={"text": fl.Tokenize(["a", "b"], max_length=2), "n": None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the skip's own report
            assert sorted(n for b in loader for n in b["n"]) == [0, 1, 2, 3, 5, 6, 7]
        named.append(loader.stats()["failures"])
    want = f"text={path}:line 5 | n=ListSource[4]"
    assert [[where for where, _ in f] for f in named] == [[want], [want]]   # its partner named too
    assert all(why.startswith("malformed JSON") for f in named for _, why in f)
