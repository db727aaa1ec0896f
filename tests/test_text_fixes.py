"""Regressions: vocabulary ids clashing with bos/eos, a field named twice in an error, integers past
float64 (and past Python's digit limit) in JSON, CSV bytes that are not UTF-8, over-long CSV fields and
NUL bytes. References are Python's own json, csv and float()."""
import csv
import json
import string
import sys
import warnings

import numpy as np
import pytest

import fastload as fl
from fastload.errors import RecordError
from fastload.ops.numeric import Numeric, Standardize
from fastload.pipeline.loader import Loader
from fastload.sources.tabular import CSVRows
from fastload.sources.text import JSONRecords
from fastload.text.tokenize import Tokenize


def buffers(n, width, name="text"):
    return {name: np.full((n, width), -9, np.int32), f"{name}_length": np.full(n, -9, np.int32),
            f"{name}_mask": np.full((n, width), 9, np.uint8)}


def reference_ids(text, vocab, max_length, *, pad=0, unk=1, bos=None, eos=None):
    """Lower, delete punctuation, split, dict lookup, bos/eos, pad."""
    words = text.lower().translate(str.maketrans("", "", string.punctuation)).split()
    ids = [vocab.get(w, unk) for w in words][: max_length - (bos is not None) - (eos is not None)]
    ids = ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])
    return ids + [pad] * (max_length - len(ids))


def tokenize(tok, texts):
    outs = buffers(len(texts), tok.max_length, tok.name)
    assert tok.fill(texts, outs, None) == {}
    return outs[tok.name].tolist()


def batches(loader):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # "skipping records that fail"
        return [{k: np.array(v) for k, v in b.items()} for b in loader]


# -- 1. a vocabulary file's words must not share ids with bos/eos ----------------------------------

def test_vocab_file_with_specials_refuses_a_word_on_the_bos_or_eos_line(tmp_path):
    """<pad>/<unk> in the file make ids line indices: 'hello' (line 3) would be id 2, bos_id=2 too,
    and every row read [2, 2, 3, 3]: bos, hello, world, eos alike. Refused at construction."""
    path = tmp_path / "v.txt"
    path.write_text("<pad>\n<unk>\nhello\nworld\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocabulary file .*v\.txt: line 3 holds the word 'hello', whose id 2 "
                                         r"is also bos_id=2 .*put a BOS token .* or choose bos_id >= 4"):
        Tokenize(path, max_length=6, bos_id=2, eos_id=3)
    with pytest.raises(ValueError, match=r"v\.txt: line 4 holds the word 'world', whose id 3 is also eos_id=3"):
        Tokenize(path, max_length=6, eos_id=3)
    with pytest.raises(ValueError, match=r"vocabulary list: line 3 holds the word 'hello', whose id 2 is also "
                                         r"bos_id=2"):
        Tokenize(["<pad>", "<unk>", "hello"], bos_id=2)


def test_vocab_file_with_specials_at_bos_eos_or_ids_past_it_still_works(tmp_path):
    """The legitimate cases: the file's own BOS/EOS tokens at those lines (as a BERT vocabulary has
    [CLS]/[SEP]), a blank line there, ids past the file's end, and a plain word list (ids after the
    reserved ones)."""
    path = tmp_path / "v.txt"
    texts = ["Hello, world!", "world of hello bye", ""]
    for lines, bos, eos in ((["<pad>", "<unk>", "<bos>", "<eos>", "hello", "world"], 2, 3),
                            (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"], 2, 3),
                            (["<pad>", "<unk>", "", "</s>", "hello", "world"], 2, 3),
                            (["<pad>", "<unk>", "hello", "world"], 4, 5)):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tok = Tokenize(path, max_length=5, bos_id=bos, eos_id=eos)
        vocab = {w: i for i, w in enumerate(lines) if w}          # ids are exactly the line indices
        assert tok.vocab == vocab
        assert tokenize(tok, texts) == [reference_ids(t, vocab, 5, bos=bos, eos=eos) for t in texts]
        assert tok.vocab_size == max(len(lines), eos + 1)
    path.write_text("hello\nworld\n", encoding="utf-8")      # a plain word list: after pad, unk, bos, eos
    tok = Tokenize(path, max_length=5, bos_id=2, eos_id=3)
    assert tok.vocab == {"hello": 4, "world": 5}
    assert tokenize(tok, texts) == [reference_ids(t, tok.vocab, 5, bos=2, eos=3) for t in texts]


# -- 2. each failure names its field once -----------------------------------------------------------

def test_a_field_failure_names_the_field_once():
    """The loader prefixes "field 'text': " (several fields); Tokenize added it too."""
    fields = {"text": Tokenize(["a"]), "v": Numeric(1)}
    with pytest.raises(RecordError) as e:
        batches(Loader(fl.ListSource([{"text": 5, "v": 1.0}]), batch_size=1, fields=fields))
    assert str(e.value) == "ListSource[0]: field 'text': expected a string, got int"
    with pytest.raises(RecordError) as e:
        batches(Loader(fl.ListSource([{"text": "a", "v": "x"}]), batch_size=1, fields=fields))
    assert str(e.value).count("'v'") == 1 and str(e.value).startswith("ListSource[0]: field 'v': not a numeric row")
    loader = Loader(fl.ListSource([{"text": "a", "v": 1.0}, {"text": None, "v": 2.0}]), batch_size=2,
                    fields=fields, on_error="skip")
    assert [b["v"].ravel().tolist() for b in batches(loader)] == [[1.0]]
    assert loader.stats()["skipped"] == 1
    assert loader.stats()["failures"] == [("ListSource[1]", "field 'text': expected a string, got NoneType")]
    tok = Tokenize(["a"], max_length=3, name="caption")
    assert tok.fill(["a", 3.5], buffers(2, 3, "caption"), None) == {1: "expected a string, got float"}


# -- 3. integers past float64 -----------------------------------------------------------------------

BIG = 10 ** 400


def test_numeric_integer_past_float64_is_a_failure_of_its_record():
    for values, size in (([1.0, BIG, 3], 1), ([[1, 2], [1.5, BIG], [3, 4]], 2)):
        outs = {"number": np.full((3, size), -9, np.float32)}
        failures = Numeric(size).fill(values, outs, None)
        assert list(failures) == [1] and "too large for float64" in failures[1]
        good = [v for i, v in enumerate(values) if i != 1]
        np.testing.assert_array_equal(outs["number"][[0, 2]], np.array(good, dtype=np.float32).reshape(2, size))
    with pytest.raises(OverflowError):   # the reference: Python's own conversion refuses it
        float(BIG)


@pytest.mark.parametrize("make", [lambda: Numeric(1), lambda: Standardize(mean=0.0, std=1.0), Standardize],
                         ids=["Numeric", "Standardize(mean, std)", "Standardize()"])
def test_json_integer_past_float64_is_skipped_and_counted(tmp_path, make):
    p = tmp_path / "bignum.jsonl"
    p.write_text("".join(json.dumps({"v": v}) + "\n" for v in [1.0, 2.0, BIG, 3.0]), encoding="utf-8")
    values = []
    for line in p.read_text(encoding="utf-8").splitlines():   # the reference: what float() accepts
        try:
            values.append(float(json.loads(line)["v"]))
        except OverflowError:
            pass
    assert values == [1.0, 2.0, 3.0]
    field = make()
    loader = Loader(JSONRecords(p), batch_size=4, fields={"v": field}, on_error="skip")
    got = np.concatenate([b["v"].ravel() for b in batches(loader)])
    if isinstance(field, Standardize):
        if make is Standardize:   # statistics fitted from the rows float() accepts
            np.testing.assert_allclose([field.mean[0], field.std[0]], [np.mean(values), np.std(values)])
        values = (np.array(values) - field.mean[0]) / (field.std[0] + 1e-8)
    np.testing.assert_allclose(got, values, rtol=1e-6)
    assert loader.stats()["skipped"] == 1
    [(rid, reason)] = loader.stats()["failures"]
    assert rid == f"{p}:line 3" and "int" in reason and "too large for float64" in reason
    with pytest.raises(RecordError, match=r"bignum\.jsonl:line 3: .*too large for float64"):
        batches(Loader(JSONRecords(p), batch_size=4, fields={"v": make()}))


def test_json_integer_past_pythons_digit_limit_or_too_deep_fails_alone(tmp_path):
    """json.loads raises a plain ValueError (not JSONDecodeError) for an integer over
    sys.get_int_max_str_digits() digits, and RecursionError for deep nesting: each escaped the source."""
    p = tmp_path / "huge.jsonl"
    lines = ['{"v": 1}', '{"v": 1' + "0" * 5000 + "}", '{"v": 2}', "[" * 100_000 + "]" * 100_000, '{"v": 3}']
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in (lines[1], lines[3]):   # the reference refuses them too
        with pytest.raises((ValueError, RecursionError)):
            json.loads(line)
    src = JSONRecords(p)
    assert [src[i] for i in (0, 2, 4)] == [json.loads(lines[i]) for i in (0, 2, 4)]
    with pytest.raises(RecordError, match=r"huge\.jsonl:line 2: unreadable JSON: .*digits"):
        src[1]
    with pytest.raises(RecordError, match=r"huge\.jsonl:line 4: unreadable JSON: .*recursion"):
        src[3]
    loader = Loader(src, batch_size=5, fields={"v": Numeric(1)}, on_error="skip")
    assert np.concatenate([b["v"].ravel() for b in batches(loader)]).tolist() == [1, 2, 3]
    assert loader.stats()["skipped"] == 2
    q = tmp_path / "huge.json"
    q.write_text("[1, 1" + "0" * 5000 + "]", encoding="utf-8")
    with pytest.raises(RecordError, match=r"huge\.json: unreadable JSON: .*digits"):
        JSONRecords(q)


# -- 4. CSV: bytes that are not UTF-8, over-long fields, NUL ----------------------------------------

def reference_rows(path, keep, encoding="utf-8", errors="surrogateescape"):
    """Each data row's kept columns as floats (None where float() refuses one), by Python's csv."""
    with open(path, newline="", encoding=encoding, errors=errors) as f:
        rows = [r for r in csv.reader(f) if r][1:]
    out = []
    for r in rows:
        try:
            out.append([float(r[i]) for i in keep])
        except ValueError:
            out.append(None)
    return out


def test_csv_bytes_not_utf8_fail_their_row_only_if_kept(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes(b"a,b\n1,2\n3,4\ncaf\xe9,5\n6,7\n")   # a Latin-1 'e' with an acute accent, line 4
    src = CSVRows(p, columns=["b"])   # column a is never parsed: no error at all
    assert src.errors == {} and src.data.tolist() == reference_rows(p, [1], "latin-1")
    src = CSVRows(p)
    ref = reference_rows(p, [0, 1], "latin-1")
    assert ref[2] is None and sorted(src.errors) == [2] and src.record_id(2) == f"{p}:line 4"
    assert [src[i].tolist() for i in (0, 1, 3)] == [ref[i] for i in (0, 1, 3)]
    with pytest.raises(RecordError, match=r"latin1\.csv:line 4: column 0: not UTF-8 text: b'caf\\xe9'"):
        src[2]
    loader = Loader(fl.zip(x=CSVRows(p)), batch_size=4, fields={"x": Numeric(2)}, on_error="skip")
    assert np.concatenate([b["x"] for b in batches(loader)]).tolist() == [ref[i] for i in (0, 1, 3)]
    assert loader.stats()["skipped"] == 1


def test_csv_bytes_not_utf8_in_a_later_block_and_in_the_header(tmp_path):
    rows = [f"{i},{i * 2}".encode() for i in range(10_000)]
    rows[9000] = b"9000,\xff"
    p = tmp_path / "n.csv"
    p.write_bytes(b"a,b\n" + b"\n".join(rows) + b"\n")
    src = CSVRows(p)
    assert len(src) == 10_000 and list(src.errors) == [9000] and src.record_id(9000) == f"{p}:line 9002"
    np.testing.assert_array_equal(src[9999], [9999, 19998])
    h = tmp_path / "h.csv"
    h.write_bytes(b"caf\xe9,b\n1,2\n")
    with pytest.raises(ValueError, match=r"h\.csv:line 1: the name of column 0 is not UTF-8 text .*UTF-8"):
        CSVRows(h)
    assert CSVRows(h, columns=["b"]).columns == ("b",) and CSVRows(h, columns=["b"])[0].tolist() == [2]


def test_csv_field_over_the_size_limit_fails_its_row(tmp_path):
    p = tmp_path / "bigfield.csv"
    p.write_bytes(b"a,b\n1,2\n3," + b"9" * 200_000 + b"\n4,5\n")
    with open(p, newline="") as f, pytest.raises(csv.Error, match="field limit"):   # the reference
        list(csv.reader(f))
    for columns in (None, ["a"]):
        src = CSVRows(p, columns=columns)
        assert len(src) == 3 and sorted(src.errors) == [1] and src.record_id(1) == f"{p}:line 3"
        keep = [0] if columns else [0, 1]
        assert [src[0].tolist(), src[2].tolist()] == [[[1, 2][k] for k in keep], [[4, 5][k] for k in keep]]
        with pytest.raises(RecordError, match=r"bigfield\.csv:line 3: malformed CSV: field larger than field limit"):
            src[1]
    loader = Loader(fl.zip(x=CSVRows(p)), batch_size=3, fields={"x": Numeric(2)}, on_error="skip")
    assert np.concatenate([b["x"] for b in batches(loader)]).tolist() == [[1, 2], [4, 5]]
    assert loader.stats()["skipped"] == 1
    h = tmp_path / "bighead.csv"
    h.write_bytes(b"a," + b"b" * 200_000 + b"\n1,2\n")
    with pytest.raises(ValueError, match=r"bighead\.csv:line 1: malformed CSV: field larger than field limit"):
        CSVRows(h)


def test_csv_trailing_nul_is_refused_whatever_the_neighbouring_rows(tmp_path):
    """float("2\\x00") raises; NumPy's str_ drops trailing NULs, so the block path read it as 2.0 unless
    another row of the block was bad."""
    with pytest.raises(ValueError):
        float("2\x00")
    for name, body in (("a.csv", b"1,2\x00\n3,4\n"), ("b.csv", b"1,2\x00\n3,x\n")):
        p = tmp_path / name
        p.write_bytes(b"a,b\n" + body)
        src = CSVRows(p)
        assert 0 in src.errors and src.record_id(0) == f"{p}:line 2"
        # Python before 3.11's csv module refuses a NUL itself: the same record fails, as malformed
        why = r"column 1: not a number: '2\\x00'" if sys.version_info >= (3, 11) else "malformed CSV: line contains NUL"
        with pytest.raises(RecordError, match=rf"line 2: {why}"):
            src[0]
        if name == "a.csv":
            assert src.errors.keys() == {0} and src[1].tolist() == [3, 4]
        else:
            assert src.errors.keys() == {0, 1}
    rows = [f"{i},{i}".encode() for i in range(10_000)]
    rows[7000] += b"\x00"   # in a later block, after reads that held no NUL
    p = tmp_path / "c.csv"
    p.write_bytes(b"a,b\n" + b"\n".join(rows) + b"\n")
    assert list(CSVRows(p).errors) == [7000]
    t = tmp_path / "t.csv"   # a NUL in a column that is not kept is no error (where csv reads the line)
    t.write_bytes(b"name,b\nx\x00,1\ny,2\n")
    kept = CSVRows(t, columns=["b"])
    if sys.version_info >= (3, 11):
        assert kept.errors == {} and kept.data.tolist() == [[1], [2]]
    else:
        assert kept.errors == {0: "malformed CSV: line contains NUL"} and kept.data[1].tolist() == [2]


def test_csv_blocks_stay_their_size_after_a_refused_record(tmp_path, monkeypatch):
    """A refused record filling a block's last place let the next good row pass the size check
    (==), so the rest of the file became one block, converted row by row."""
    import fastload.sources.tabular as tabular
    monkeypatch.setattr(tabular, "_BLOCK", 4)
    seen = []
    real = tabular._blocks
    monkeypatch.setattr(tabular, "_blocks", lambda reader, size: (seen.append(len(b[1])) or b for b in real(reader, size)))
    p = tmp_path / "big.csv"
    rows = [f"{i},{i + 1}".encode() for i in range(24)]
    rows[6] = b"6," + b"9" * 200_000   # the second block's last place (the header is the first's first)
    p.write_bytes(b"a,b\n" + b"\n".join(rows) + b"\n")
    src = CSVRows(p)
    assert max(seen) <= 4 and sum(seen) == 25   # the header's block holds it too
    assert sorted(src.errors) == [6] and len(src) == 24
    assert src.data[np.arange(24) != 6].tolist() == [[i, i + 1] for i in range(24) if i != 6]
    (tmp_path / "head.csv").write_bytes(b"a,b\n")
    assert len(CSVRows(tmp_path / "head.csv")) == 0 and CSVRows(tmp_path / "head.csv").columns == ("a", "b")
