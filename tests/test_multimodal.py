"""zip, join, split and the numeric fields; and the whole multi-modal path through the Loader."""
import json
import warnings

import numpy as np
import pytest

import fastload as fl
from fastload.errors import RecordError
from fastload.ops.numeric import Numeric, Standardize
from fastload.sources.align import join, key_by, stem, zip as fl_zip
from fastload.sources.arrays import ArrayRecords, IterableRecords
from fastload.sources.base import ListSource
from fastload.sources.split import split
from fastload.sources.tabular import CSVRows
from fastload.sources.text import JSONRecords


# -- zip -------------------------------------------------------------------------------

def test_zip_pairs_by_position_into_named_dicts():
    z = fl_zip(image=ListSource(["a.jpg", "b.jpg"], "img"), text=ListSource(["x", "y"], "txt"))
    assert len(z) == 2 and z.fields == ("image", "text")
    assert z[1] == {"image": "b.jpg", "text": "y"}
    assert z.record_id(1) == "image=img[1] (b.jpg) | text=txt[1]"   # a path names its file; a caption not
    assert z.gather(np.array([1, 0], np.uint64)) == [z[1], z[0]]
    assert fl_zip([1, 2], [3, 4])[0] == {"0": 1, "1": 3}


def test_zip_length_mismatch_names_every_source_and_length():
    with pytest.raises(ValueError, match=r"different lengths \(image: 3, text: 2, number: 3\)"):
        fl_zip(image=[1, 2, 3], text=[1, 2], number=[1, 2, 3])


def test_zip_not_strict_truncates_and_says_so():
    with pytest.warns(UserWarning, match=r"truncating to the shortest source \(2 records.*image loses 1"):
        z = fl_zip(image=[1, 2, 3], text=[1, 2], strict=False)
    assert len(z) == 2


def test_zip_refuses_streams():
    with pytest.raises(TypeError, match="not random-access"):
        fl_zip(a=[1], b=IterableRecords([1]))


def test_zip_labels_pass_through_from_the_one_labelled_part():
    labelled = ArrayRecords(x=np.zeros(4), label=np.array([0, 1, 1, 0]))
    z = fl_zip(a=labelled, b=["p", "q", "r", "s"])
    np.testing.assert_array_equal(z.labels(), [0, 1, 1, 0])
    assert fl_zip(a=labelled, b=labelled).labels() is None


# -- stem, key_by, join ----------------------------------------------------------------

def test_stem():
    assert stem("data/images/cat_01.jpg") == "cat_01"
    assert stem(("x/dog.png", 3)) == "dog"
    assert stem({"path": "a/b.c.jpg"}) == "b.c"
    with pytest.raises(TypeError):
        stem(5)


def keyed_parts():
    images = ListSource([f"img/{k}.jpg" for k in ["a", "b", "c", "d", "e"]], "images")
    meta = ListSource([{"id": k, "v": i} for i, k in enumerate(["c", "a", "x", "e", "y", "z", "w"])], "meta")
    return key_by(images, stem), key_by(meta, "id")


def test_inner_join_orders_by_first_source_and_reports_missing_keys():
    images, meta = keyed_parts()
    with pytest.warns(UserWarning) as record:
        j = join(image=images, meta=meta)
    message = str(record[0].message)
    assert "6 of 9 keys are not in every source and were dropped" in message
    assert "missing from 'image': 4 (first: 'x', 'y', 'z', 'w')" in message
    assert "missing from 'meta': 2 (first: 'b', 'd')" in message
    assert [r["image"] for r in j] == ["img/a.jpg", "img/c.jpg", "img/e.jpg"]
    assert [r["meta"]["v"] for r in j] == [1, 0, 3]
    assert j.record_id(1) == "key 'c' (image=images[2] (img/c.jpg), meta=meta[0])"
    assert j.fields == ("image", "meta")


def test_join_quotes_only_the_first_few_missing_keys():
    a = key_by(ListSource(list(range(100))), lambda r: r)
    b = key_by(ListSource([0]), lambda r: r)
    with pytest.warns(UserWarning, match=r"missing from 'b': 99 \(first: 1, 2, 3, 4, 5\);?$"):
        join(a=a, b=b)


def test_left_join_fills_none_and_reports():
    images, meta = keyed_parts()
    with pytest.warns(UserWarning, match=r"4 of 9 keys are not in the first source 'image' and were dropped; "
                                         r"2 records are kept with None"):
        j = join("left", image=images, meta=meta)
    assert len(j) == 5 and j[1] == {"image": "img/b.jpg", "meta": None}
    assert j.record_id(1) == "key 'b' (image=images[1] (img/b.jpg))"


def test_join_without_missing_keys_is_silent():
    a = key_by(ListSource(["x/1.jpg", "x/2.jpg"]), stem)
    b = key_by(ListSource([{"id": "2"}, {"id": "1"}]), "id")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        j = join(a=a, b=b)
    assert j[0] == {"a": "x/1.jpg", "b": {"id": "1"}}


def test_join_duplicate_key_names_key_and_records():
    a = key_by(ListSource(["p/1.jpg", "q/1.png"], "imgs"), stem)
    with pytest.raises(ValueError, match=r"duplicate key '1' in source 'a' "
                                         r"\(imgs\[0\] \(p/1\.jpg\) and imgs\[1\] \(q/1\.png\)\)"):
        join(a=a, b=key_by(ListSource([{"id": "1"}]), "id"))


def test_join_names_a_record_without_a_key(tmp_path):
    path = tmp_path / "jk.jsonl"
    path.write_text('{"id": "a", "t": 1}\n{"t": 2}\n{"id": "c", "t": 3}\n')
    other = key_by(ListSource([{"id": "a"}, {"id": "c"}]), "id")
    with pytest.raises(RecordError, match=r"jk\.jsonl:line 2: join: no field 'id'"):
        join(x=key_by(JSONRecords(str(path)), "id"), y=other)
    with pytest.raises(RecordError, match=r"jk\.jsonl:line 2: join: its key cannot be taken \(KeyError"):
        join(x=key_by(JSONRecords(str(path)), lambda r: r["id"].upper()), y=other)


def test_join_names_a_record_whose_key_cannot_be_hashed(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 0}\n{"id": [1, 2]}\n')
    other = key_by(ListSource([{"id": 0}, {"id": 1}]), "id")
    with pytest.raises(RecordError, match=r"ids\.jsonl:line 2: join: its key \[1, 2\] is a list, which cannot be"):
        join(x=key_by(JSONRecords(str(path)), "id"), y=other)
    # The way out the message names: a function returning a hashable key.
    joined = join(x=key_by(JSONRecords(str(path)), lambda r: r["id"] if isinstance(r["id"], int) else r["id"][0]),
                  y=other)
    assert len(joined) == 2 and [joined[i]["x"]["id"] for i in range(2)] == [0, [1, 2]]


def test_join_needs_keyed_sources():
    with pytest.raises(TypeError, match="key_by"):
        join(a=ListSource([1]))


# -- split -----------------------------------------------------------------------------

def test_split_deterministic_disjoint_covering_with_exact_sizes():
    src = ListSource(list(range(103)))
    train, test = split(src, test_size=0.2, seed=42)
    again_train, again_test = split(src, test_size=0.2, seed=42)
    other_train, _ = split(src, test_size=0.2, seed=43)
    assert len(test) == 21 and len(train) == 82
    assert list(train.indices) == list(again_train.indices) and list(test.indices) == list(again_test.indices)
    assert list(train.indices) != list(other_train.indices)
    assert not set(train.indices) & set(test.indices)
    assert set(train.indices) | set(test.indices) == set(range(103))
    assert [train[i] for i in range(3)] == sorted(train.indices)[:3]


def test_split_sizes_as_counts_and_train_size():
    src = ListSource(list(range(50)))
    train, test = split(src, test_size=7)
    assert (len(train), len(test)) == (43, 7)
    train, test = split(src, train_size=0.5)
    assert (len(train), len(test)) == (25, 25)
    train, test = split(src, test_size=10, train_size=30)
    assert (len(train), len(test)) == (30, 10)
    with pytest.raises(ValueError, match="exceeds"):
        split(src, test_size=30, train_size=30)
    with pytest.raises(ValueError):
        split(src, test_size=1.5)


def test_stratified_split_keeps_class_proportions_within_one():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 17 + [3] * 3)
    src = ArrayRecords(x=np.arange(100), label=labels)
    for how in ("label", labels, [f"c{v}" for v in labels]):
        train, test = split(src, test_size=0.25, seed=7, stratify=how)
        assert len(test) == 25 and len(train) == 75
        assert not set(train.indices) & set(test.indices)
        for c, size in enumerate([50, 30, 17, 3]):
            assert abs(int((labels[test.indices] == c).sum()) - size * 0.25) < 1


def test_stratified_split_of_an_array_of_labels_is_that_of_the_same_labels_listed():
    """Labels given as one array (or a source's labels()) are grouped without a Python step per
    record: the split is the one the same labels give as a list, with classes numbered by first
    appearance, for ints, strings and classes out of order; floats (a NaN its own class) stay listed."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 40, 600) * 7 - 100   # negative and positive, first seen in no sorted order
    for labels in (raw, (raw + 100).astype(np.uint16), np.array([f"k{v}" for v in raw]),
                   np.where(raw % 3 == 0, np.nan, raw.astype(float))):
        src = ArrayRecords(x=np.arange(600))
        for seed in (0, 5):
            got = split(src, test_size=0.3, seed=seed, stratify=labels)
            want = split(src, test_size=0.3, seed=seed, stratify=labels.tolist())
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g.indices, w.indices)
    src = ArrayRecords(x=np.arange(600), label=raw + 100)
    got, want = split(src, test_size=0.3, seed=1, stratify="label"), split(src, test_size=0.3, seed=1, stratify=(raw + 100).tolist())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.indices, w.indices)


def test_stratify_on_a_dict_field_of_a_zipped_source():
    z = fl_zip(text=[f"t{i}" for i in range(40)], kind=["a"] * 30 + ["b"] * 10)
    train, test = split(z, test_size=0.5, stratify="kind", seed=1)
    assert sum(r["kind"] == "b" for r in test) == 5 and len(test) == 20
    with pytest.raises(ValueError, match="cannot stratify on 'nope'"):
        split(z, stratify="nope")


def test_split_of_a_joined_source():
    images = key_by(ListSource([f"{i}.jpg" for i in range(20)]), stem)
    meta = key_by(ListSource([{"id": str(i)} for i in range(20)]), "id")
    train, test = split(join(image=images, meta=meta), test_size=5, seed=3)
    assert all(stem(r["image"]) == r["meta"]["id"] for r in test) and len(test) == 5


# -- numeric fields --------------------------------------------------------------------

def test_numeric_copies_rows_and_reports_bad_ones():
    f = Numeric(name="number")
    f.prepare([None, [1, 2, 3]])
    assert [(o.name, o.shape, o.dtype) for o in f.outputs()] == [("number", (3,), np.float32)]
    out = {"number": np.full((5, 3), 7, np.float32)}
    failures = f.fill([[1, 2, 3], np.array([4, 5, 6]), [1, np.nan, 2], [1, 2], None], out, None)
    assert sorted(failures) == [2, 3, 4]
    assert "NaN or inf" in failures[2] and "expected 3 values, got 2" in failures[3]
    assert failures[4] == "no value (None)"   # not a NaN, as NumPy would read it
    np.testing.assert_array_equal(out["number"][:2], [[1, 2, 3], [4, 5, 6]])
    assert f.fill([[1, 2, 3], None], {"number": np.zeros((2, 3), np.float32)}, None) == {1: "no value (None)"}


def test_numeric_fast_path_flags_infinite_rows():
    f = Numeric(2)
    out = {"number": np.zeros((3, 2), np.float32)}
    assert f.fill(np.array([[1, 2], [np.inf, 0], [3, 4]]), out, None) == {1: "row holds NaN or inf"}


def test_standardize_streaming_statistics_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal([3, -2, 100], [1, 5, 0.01], size=(10_000, 3))
    rows = list(data) + [np.array([np.nan, 0, 0])]
    f = Standardize()
    f.prepare(rows)
    np.testing.assert_allclose(f.mean, data.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(f.std, data.std(axis=0), rtol=1e-9)
    out = {"number": np.zeros((4, 3), np.float32)}
    assert f.fill(rows[:3] + [rows[-1]], out, None).keys() == {3}
    np.testing.assert_allclose(out["number"][:3], (data[:3] - data.mean(0)) / data.std(0), rtol=1e-4, atol=1e-4)


def test_statistics_read_past_a_long_run_of_skipped_records():
    """A block of 4096 skipped records (None) in a row was taken for the end of the values: the
    statistics were of the rows before it alone, and Numeric found "no valid numeric row"."""
    rng = np.random.default_rng(1)
    first, last = rng.normal(0, 1, size=(4096, 2)), rng.normal(50, 1, size=(5000, 2))
    rows = list(first) + [None] * 4096 + list(last)
    f = Standardize()
    f.prepare(rows)
    both = np.concatenate([first, last])
    np.testing.assert_allclose(f.mean, both.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(f.std, both.std(axis=0), rtol=1e-9)
    n = Numeric()
    n.prepare([None] * 4096 + [np.zeros(3)])
    assert n.outputs()[0].shape == (3,)


def test_standardize_given_statistics_and_errors():
    f = Standardize(mean=[1, 2], std=[2, 0])
    out = {"number": np.zeros((1, 2), np.float32)}
    f.fill([[3, 2]], out, None)
    np.testing.assert_allclose(out["number"][0], [1, 0])
    with pytest.raises(RuntimeError, match="no statistics"):
        Standardize().outputs()
    with pytest.raises(ValueError, match="shape"):
        Standardize(mean=[0, 0], std=[1])


def test_csv_rows_flow_into_standardize(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("a,b\n1,10\n2,20\n3,30\n", encoding="utf-8")
    rows = CSVRows(p)
    f = Standardize()
    f.prepare([rows[i] for i in range(len(rows))])
    out = {"number": np.zeros((3, 2), np.float32)}
    assert f.fill([rows[i] for i in range(3)], out, None) == {}
    np.testing.assert_allclose(out["number"][:, 0], [-1.2247449, 0, 1.2247449], rtol=1e-5)


# -- the whole path --------------------------------------------------------------------

def gray(i):
    return 20 + (i * 37) % 200


def test_loader_keeps_every_caption_with_its_image_when_one_image_is_corrupt(tmp_path):
    """The generator-zip bug, ruled out: a corrupt image in the middle drops one whole record."""
    from PIL import Image

    from fastload.ops.geometry import Resize
    from fastload.pipeline.loader import Loader
    from fastload.sources.folders import ImageFiles
    from fastload.text.tokenize import Tokenize

    n, bad = 40, 17
    (tmp_path / "images").mkdir()
    for i in range(n):
        path = tmp_path / "images" / f"{i:03d}.png"
        if i == bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        else:
            Image.fromarray(np.full((20, 24, 3), gray(i), np.uint8)).save(path)
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": f"Caption w{i}!"}) + "\n" for i in range(n)))
    (tmp_path / "numeric.csv").write_text("a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(n)))
    records = fl_zip(image=ImageFiles(tmp_path / "images"),
                     text=JSONRecords(tmp_path / "texts.jsonl", field="text"),
                     number=CSVRows(tmp_path / "numeric.csv"))
    vocab = ["caption"] + [f"w{i}" for i in range(n)]
    loader = Loader(records, batch_size=8, shuffle=True, seed=5, workers=2, on_error="skip", fields={
        "image": [Resize((8, 8))],
        "text": Tokenize(vocab, max_length=4),
        "number": Numeric(2),   # size given: the Loader asks outputs() before prepare()
    })
    seen = []
    with pytest.warns(RuntimeWarning, match="skipping records"):
        for batch in loader:
            for r in range(len(batch["number"])):
                i = int(batch["number"][r][0])
                assert batch["number"][r][1] == 2 * i
                assert batch["text"][r].tolist() == [2, 3 + i, 0, 0]
                assert batch["text_length"][r] == 2
                image = np.asarray(batch["image"][r], dtype=np.float64)
                assert abs(image.mean() * (255 if image.max() <= 1 else 1) - gray(i)) < 3
                seen.append(i)
    assert sorted(seen) == [i for i in range(n) if i != bad]
    assert any("017.png" in rid for rid, _ in loader.stats()["failures"])


# -- streamed preparation --------------------------------------------------------------

def test_standardize_prepare_chunks_equals_one_pass_and_numpy():
    rng = np.random.default_rng(7)
    data = rng.normal([1e6, -2, 0], [0.5, 5, 1e-3], size=(9_001, 3))   # large mean, tiny spread
    rows = list(data)
    rows[17] = None                                # a record the loader could not read
    rows[4000] = [1.0, float("nan"), 2.0]          # an invalid row: left out of the statistics
    kept = np.delete(data, [17, 4000], axis=0)
    one = Standardize()
    one.prepare(rows)
    streamed = Standardize()
    assert streamed.needs_prepare
    sizes = [1, 1000, 4096, 3904]                  # chunks of uneven length, one of a single row
    bounds = np.cumsum([0] + sizes)
    streamed.prepare_chunks(rows[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
    assert not streamed.needs_prepare and streamed.size == 3
    for f in (one, streamed):
        np.testing.assert_allclose(f.mean, kept.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(f.std, kept.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(streamed.mean, one.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.std, one.std, rtol=1e-9)


def test_standardize_with_given_statistics_reads_nothing():
    f = Standardize(mean=[0.0], std=[1.0])
    assert not f.needs_prepare

    def chunks():
        raise AssertionError("read although mean and std were given")
        yield

    f.prepare_chunks(chunks())
    half = Standardize(mean=[10.0, 20.0])   # std still to compute, around the data's own mean
    assert half.needs_prepare
    half.prepare_chunks([[[1, 2], [3, 6]], [None, [5, 10]]])
    np.testing.assert_allclose(half.std, np.std([[1, 2], [3, 6], [5, 10]], axis=0))
    np.testing.assert_array_equal(half.mean, [10.0, 20.0])


def test_numeric_prepare_chunks_takes_the_size_from_the_first_valid_row():
    f = Numeric()
    assert f.needs_prepare
    seen = []

    def chunks():
        for chunk in ([None, "x"], [[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]):
            seen.append(chunk)
            yield chunk

    f.prepare_chunks(chunks())
    assert f.size == 3 and not f.needs_prepare and len(seen) == 2   # stops at the row it needed
    with pytest.raises(ValueError, match="no valid numeric row"):
        Numeric().prepare_chunks([[None], ["a"]])
    with pytest.raises(ValueError, match="no valid numeric rows"):
        Standardize().prepare_chunks([[None, [np.inf]]])


def test_a_value_beyond_float32_is_a_failed_row_not_inf():
    """1e300 is finite in float64, where the rows were checked, and inf once written as float32."""
    out = {"number": np.full((3, 2), 7.0, np.float32)}
    failures = Numeric(2).fill([[1.0, 2.0], [1e300, 1.0], [-1e39, 0.0]], out)
    assert sorted(failures) == [1, 2] and "beyond float32's range" in failures[1]
    assert np.isfinite(out["number"]).all() and out["number"][0].tolist() == [1.0, 2.0]


def test_standardize_statistics_and_label_counts_are_checked_when_given():
    """std=[nan] passed the std >= 0 check (NaN rows out), mean=[inf] and eps=-1 gave inf rows, and
    num_classes=-3 failed every label at the first batch."""
    for kw in ({"mean": [np.nan], "std": [1.0]}, {"mean": [np.inf], "std": [1.0]}, {"std": [np.nan]},
               {"mean": [[1.0, 2.0]], "std": [[1.0, 1.0]]}):
        with pytest.raises(ValueError, match="must be one finite number per column"):
            Standardize(**kw)
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got -1"):
        Standardize(mean=[0.0], std=[1.0], eps=-1)
    for bad in (-3, 0, 2.5, "5", True):
        with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1"):
            fl.Labels(num_classes=bad)


def test_split_sizes_stay_exact_on_large_sources():
    """A fixed 1e-9 margin for the float product lost a record at 1e8 records (0.29 * 1e8)."""
    from fastload.sources.split import _count
    assert _count(0.29, 10**8, "train_size", round_up=False) == 29_000_000
    assert _count(0.57, 10**8, "train_size", round_up=False) == 57_000_000
    assert _count(0.07, 10**10, "test_size", round_up=True) == 700_000_000
    assert _count(0.29, 100, "train_size", round_up=False) == 29 and _count(0.25, 10, "test_size", True) == 3


def test_subset_indices_must_be_integers():
    """[1.7, 2.9] was read as records 1 and 2, a boolean mask as the indices 1 and 0."""
    src = fl.ListSource(list(range(5)))
    for bad, why in (([1.7, 2.9], "float64"), ([True, False, True], r"bool .*np\.flatnonzero\(mask\)"),
                     ([[0, 1]], r"int64 values of shape \(1, 2\)")):
        with pytest.raises(TypeError, match=rf"Subset indices must be a list of integers, got {why}"):
            fl.Subset(src, bad)
    assert [fl.Subset(src, np.array([4, 0], np.uint8))[i] for i in range(2)] == [4, 0] and len(fl.Subset(src, [])) == 0
