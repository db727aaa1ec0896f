"""JSONRecords, CSVRows, ArrayRecords, IterableRecords: on files and arrays made by the tests."""
import csv
import json
import os
import pickle
import threading
import tracemalloc

import numpy as np
import pytest

from fastload.errors import RecordError
from fastload.sources import _files
from fastload.sources.arrays import ArrayRecords, IterableRecords
from fastload.sources.tabular import CSVRows
from fastload.sources.text import JSONRecords


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# -- JSON ------------------------------------------------------------------------------

def test_json_array_and_field(tmp_path):
    p = write(tmp_path / "t.json", json.dumps([{"text": "a"}, {"text": "b"}, {"text": "c"}]))
    src = JSONRecords(p, field="text")
    assert not src.lines and len(src) == 3
    assert [src[i] for i in range(3)] == ["a", "b", "c"] and src[-1] == "c"
    assert JSONRecords(p)[1] == {"text": "b"}
    assert src.record_id(2) == f"{p}[2]"


def test_jsonl_lines_blank_lines_and_record_ids(tmp_path):
    p = write(tmp_path / "t.jsonl", '{"text": "a"}\n\n  \n{"text": "é ü"}\r\n{"text": "c"}')
    src = JSONRecords(p, field="text")
    assert src.lines and len(src) == 3
    assert [src[i] for i in range(3)] == ["a", "é ü", "c"]
    assert src.record_id(1) == f"{p}:line 4" and src.record_id(2) == f"{p}:line 5"


def test_autodetect_by_first_character(tmp_path):
    arr = write(tmp_path / "a.txt", '  \n [1, 2, 3]')
    lines = write(tmp_path / "b.json", '{"x": 1}\n{"x": 2}\n')
    assert not JSONRecords(arr).lines and len(JSONRecords(arr)) == 3
    assert JSONRecords(lines).lines and JSONRecords(lines, field="x")[1] == 2
    assert len(JSONRecords(write(tmp_path / "empty.jsonl", "\n\n"))) == 0


def test_malformed_line_and_missing_field_name_file_and_line(tmp_path):
    p = write(tmp_path / "t.jsonl", '{"text": "a"}\n{"text": oops}\n{"other": 1}\n[1]\n')
    src = JSONRecords(p, field="text")
    assert src[0] == "a"
    with pytest.raises(RecordError, match=r"t\.jsonl:line 2: malformed JSON"):
        src[1]
    with pytest.raises(RecordError, match=r"t\.jsonl:line 3: no field 'text'"):
        src[2]
    with pytest.raises(RecordError, match=r"line 4: no field 'text' in list"):
        src[3]
    with pytest.raises(IndexError):
        src[4]


def test_malformed_json_array_is_an_error_naming_the_line(tmp_path):
    p = write(tmp_path / "t.json", '[\n{"a": 1},\n{"a": }\n]')
    with pytest.raises(RecordError, match=r"t\.json:line 3"):
        JSONRecords(p)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64, 1 << 20])
def test_jsonl_index_is_every_line_holding_more_than_whitespace(tmp_path, chunk_size):
    """Against a reference made line by line in Python: which lines are records, their bytes and
    line numbers, for blank and whitespace-only lines (spaces, tabs, CR), CRLF endings, a leading
    byte-order mark, a last line with and without a newline, at chunk sizes that cut lines anywhere."""
    rng = np.random.default_rng(chunk_size)
    pieces = ["", " ", "\t", "\r", "  \t\r ", '{"a": 1}', ' {"b": [2, 3]} ', '"s"', "7\r", " \x0c", "\x01"]
    for trial in range(30):
        lines = [pieces[k] for k in rng.integers(0, len(pieces), int(rng.integers(0, 12)))]
        text = "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")
        bom = b"\xef\xbb\xbf" if rng.random() < 0.3 else b""
        p = tmp_path / f"t{trial}.jsonl"
        p.write_bytes(bom + text.encode())
        src = JSONRecords(p, chunk_size=chunk_size)
        want = [(i + 1, line) for i, line in enumerate(text.split("\n")) if line.strip(" \t\r")]
        assert len(src) == len(want), (text, bom)
        for r, (number, line) in enumerate(want):
            assert src.record_id(r) == f"{p}:line {number}"
            if line.strip() in ("", "\x01"):   # a control character is not whitespace: a record that fails
                with pytest.raises(RecordError, match=f"line {number}: malformed JSON"):
                    src[r]
            else:
                assert src[r] == json.loads(line)


def test_jsonl_index_is_built_in_chunks_not_from_the_whole_file(tmp_path):
    p = tmp_path / "big.jsonl"
    line = json.dumps({"text": "x" * 2000}) + "\n"
    with open(p, "w") as f:
        for i in range(10_000):
            f.write(line if i % 1000 else "\n")   # some blank lines too
    size = os.path.getsize(p)                      # ~20 MB
    tracemalloc.start()
    try:
        src = JSONRecords(p, field="text", chunk_size=1 << 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(src) == 10_000 - 10
    # the index (~24 bytes a line) plus a few 64 KiB chunks, nowhere near the file
    assert peak < size / 10, f"indexing peaked at {peak} bytes for a {size}-byte file"
    assert src[5432] == "x" * 2000


def test_getitem_reads_exactly_one_line(tmp_path, monkeypatch):
    lines = [json.dumps({"i": i, "pad": "y" * (i % 7)}) for i in range(200)]
    p = write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    src = JSONRecords(p)
    calls = []
    real = _files.pread

    def spy(fd, n, offset, lock):
        calls.append((n, offset))
        return real(fd, n, offset, lock)

    monkeypatch.setattr(_files, "pread", spy)
    assert src[137] == {"i": 137, "pad": "y" * (137 % 7)}
    start = sum(len(x) + 1 for x in lines[:137])
    assert calls == [(len(lines[137].encode()), start)]


@pytest.mark.parametrize("read", ["pread_positional", "pread_seek"])
def test_jsonl_threads_share_the_file_and_pickle_reopens(tmp_path, monkeypatch, read):
    """Four threads on one descriptor: with POSIX pread, and with Windows' seek-and-read under a lock."""
    if read == "pread_positional" and not hasattr(os, "pread"):
        pytest.skip("no os.pread on this OS")
    monkeypatch.setattr(_files, "pread", getattr(_files, read))
    p = write(tmp_path / "t.jsonl", "".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
    src = JSONRecords(p, field="i")
    errors = []

    def read(offset):
        try:
            for i in range(offset, 1000, 4):
                assert src[i] == i
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    clone = pickle.loads(pickle.dumps(src))
    assert clone[999] == 999 and len(clone) == 1000


# -- CSV -------------------------------------------------------------------------------

def test_csv_header_detected(tmp_path):
    p = write(tmp_path / "n.csv", "a,b,c\n1,2,3\n4.5,-5,6e1\n")
    src = CSVRows(p)
    assert src.columns == ("a", "b", "c") and len(src) == 2
    np.testing.assert_array_equal(src[1], np.array([4.5, -5, 60], np.float32))
    assert src[0].dtype == np.float32 and not src[0].flags.writeable
    assert src.record_id(1) == f"{p}:line 3"


def test_csv_without_header_detected(tmp_path):
    p = write(tmp_path / "n.csv", "1,2\n3,4\n")
    src = CSVRows(p)
    assert src.columns == ("0", "1") and len(src) == 2
    np.testing.assert_array_equal(src[0], [1, 2])


def test_csv_mixed_first_row_asks_for_header(tmp_path):
    p = write(tmp_path / "n.csv", "id,2020\n1,2\n")
    with pytest.raises(ValueError, match="header=True or header=False"):
        CSVRows(p)
    assert CSVRows(p, header=True).columns == ("id", "2020")


def test_csv_explicit_header_names_columns_and_dtype(tmp_path):
    p = write(tmp_path / "n.csv", "1;2;3\n4;5;6\n")
    src = CSVRows(p, header=["x", "y", "z"], columns=["z", 0], delimiter=";", dtype="float64")
    assert src.columns == ("z", "x") and len(src) == 2 and src[1].dtype == np.float64
    np.testing.assert_array_equal(src[1], [6, 4])
    with pytest.raises(KeyError, match="no column 'w'"):
        CSVRows(p, header=["x", "y", "z"], columns=["w"], delimiter=";")


def test_csv_malformed_rows_fail_alone_with_file_and_line(tmp_path):
    p = write(tmp_path / "n.csv", "a,b\n1,2\n3\n\n5,x\n7,8\n")
    src = CSVRows(p)
    assert len(src) == 4
    np.testing.assert_array_equal(src[3], [7, 8])
    with pytest.raises(RecordError, match=r"n\.csv:line 3: expected 2 fields, found 1"):
        src[1]
    with pytest.raises(RecordError, match=r"n\.csv:line 5: column 1: not a number: 'x'"):
        src[2]
    assert sorted(src.errors) == [1, 2]


def test_csv_rows_all_of_another_width_are_errors_not_broadcast(tmp_path):
    """Every row one field short of a three-column header would broadcast into the block (the same
    value in every column); four fields would not fit. Each row is an error naming its line."""
    for body, found in (("1\n2\n", 1), ("1,2,3,4\n5,6,7,8\n", 4)):
        src = CSVRows(write(tmp_path / "w.csv", "a,b,c\n" + body))
        assert len(src) == 2 and sorted(src.errors) == [0, 1]
        for i in (0, 1):
            with pytest.raises(RecordError, match=rf"w\.csv:line {i + 2}: expected 3 fields, found {found}"):
                src[i]


def test_csv_columns_kept_are_the_only_ones_parsed(tmp_path):
    """A name column beside the numbers: columns= keeps the numbers, and the names are never
    parsed (every row was an error). A bad value in a kept column is still one, by line;
    a row of the wrong width still is too, whichever columns are kept."""
    text = "name,height,weight\nalice,1.62,55\nbob,x,81.5\ncarol,1.7\ndan,1.80,81.5\n"
    p = write(tmp_path / "p.csv", text)
    with open(p, newline="") as f:
        ref = [(r["height"], r["weight"]) for r in csv.DictReader(f)]
    src = CSVRows(p, columns=["weight", "height"])
    assert src.columns == ("weight", "height") and len(src) == 4 and sorted(src.errors) == [1, 2]
    np.testing.assert_array_equal(src[0], np.array([ref[0][1], ref[0][0]], dtype=np.float32))
    np.testing.assert_array_equal(src[3], np.array([ref[3][1], ref[3][0]], dtype=np.float32))
    with pytest.raises(RecordError, match=r"p\.csv:line 3: column 1: not a number: 'x'"):
        src[1]
    with pytest.raises(RecordError, match=r"p\.csv:line 4: expected 3 fields, found 2"):
        src[2]
    assert CSVRows(p, columns=[2]).columns == ("weight",) and sorted(CSVRows(p, columns=[2]).errors) == [2]


def test_csv_record_spanning_lines_is_named_by_its_first(tmp_path):
    """A quoted field may hold newlines: the record is named by the line it starts on (as
    csv.reader counts lines), not the one it ends on; blank lines between records count."""
    p = write(tmp_path / "m.csv", 'a,b\n1,"2\n\n3"\n\n4,5\n"6\n",7\n')
    with open(p, newline="") as f:
        reader, starts, end = csv.reader(f), [], 0
        for row in reader:
            if row and reader.line_num > 1:
                starts.append(end + 1)
            end = reader.line_num
    src = CSVRows(p)
    assert starts == [2, 6, 7] and len(src) == 3
    assert [src.record_id(i) for i in range(3)] == [f"{p}:line {n}" for n in starts]
    np.testing.assert_array_equal(src[1], [4, 5])
    with pytest.raises(RecordError, match=r"m\.csv:line 2: column 1"):
        src[0]


def test_csv_many_rows_with_one_bad_row_in_a_later_block(tmp_path):
    rows = [f"{i},{i * 2}" for i in range(10_000)]
    rows[9000] = "bad,row"
    p = write(tmp_path / "n.csv", "\n".join(rows) + "\n")
    src = CSVRows(p, header=False)
    assert len(src) == 10_000 and list(src.errors) == [9000]
    np.testing.assert_array_equal(src[9999], [9999, 19998])
    assert src.record_id(9000) == f"{p}:line 9001"


# -- arrays ----------------------------------------------------------------------------

def test_array_records_plain_tuple_and_named(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(ArrayRecords(x)[2], x[2])
    a, b = ArrayRecords(x, y)[3]
    assert b == 1 and a.tolist() == x[3].tolist()
    named = ArrayRecords(features=x, label=y)
    assert named.fields == ("features", "label") and named[1]["label"] == 1
    np.testing.assert_array_equal(named.labels(), y)
    assert ArrayRecords(x).labels() is None


def test_array_records_length_mismatch_names_arrays():
    with pytest.raises(ValueError, match="x: 4, y: 3"):
        ArrayRecords(x=np.zeros(4), y=np.zeros(3))


def test_array_records_over_memmap(tmp_path):
    path = tmp_path / "m.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(1000, 8))
    mm[:] = np.arange(8000, dtype=np.float32).reshape(1000, 8)
    mm.flush()
    del mm
    src = ArrayRecords(np.memmap(path, dtype=np.float32, mode="r", shape=(1000, 8)))
    assert len(src) == 1000
    np.testing.assert_array_equal(src[999], np.arange(7992, 8000, dtype=np.float32))


def test_iterable_records_factory_reiterates():
    calls = []

    def cursor():
        calls.append(1)
        return iter(range(5))

    src = IterableRecords(cursor, length=5)
    assert list(src) == list(range(5)) and list(src) == list(range(5))
    assert len(calls) == 2 and len(src) == 5


def test_iterable_records_one_shot_and_length_checks():
    once = IterableRecords(iter([1, 2, 3]))
    assert list(once) == [1, 2, 3]
    with pytest.raises(RuntimeError, match="one-shot"):
        list(once)
    with pytest.raises(TypeError, match="no length"):
        len(once)
    assert list(IterableRecords([1, 2])) == [1, 2]
    with pytest.raises(ValueError, match="yielded 2 records, declared length 3"):
        list(IterableRecords([1, 2], length=3))
    with pytest.raises(ValueError, match="more than its declared length 1"):
        list(IterableRecords([1, 2], length=1))


def test_a_loader_refuses_a_one_shot_iterable_records_for_what_it_is():
    # The Loader's probe, iter(source), spent the iterator: it then said the records "were already
    # consumed" while none had been read.
    from fastload.pipeline.loader import Loader

    it = iter([{"id": i} for i in range(10)])
    with pytest.raises(TypeError, match="re-iterable stream .* one-shot iterator: wrap its factory"):
        Loader(IterableRecords(it), batch_size=3, fields={"id": None})
    assert sum(1 for _ in it) == 10   # nothing read from it
    loader = Loader(IterableRecords(lambda: iter([{"id": i} for i in range(10)])), batch_size=3, fields={"id": None})
    assert [list(b["id"]) for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_jsonl_gather_matches_getitem_and_names_bad_lines(tmp_path):
    p = write(tmp_path / "t.jsonl", '{"t": "a"}\n {"t": "b"} \n{"t": "c"} {"t": "d"}\n{"t": "e"}\n')
    src = JSONRecords(p, field="t")
    assert src.gather(np.array([3, 0, 1], np.uint64)) == ["e", "a", "b"]
    with pytest.raises(RecordError, match=r"t\.jsonl:line 3: malformed JSON: extra data"):
        src.gather(np.array([0, 2]))
    with pytest.raises(IndexError):
        src.gather(np.array([4]))


# -- byte-order marks ------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_jsonl_with_bom_reads_the_first_record(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(BOM + b'{"text": "a"}\n{"text": "b"}\n')
    src = JSONRecords(p, field="text")
    assert src.lines and len(src) == 2
    assert [src[i] for i in range(2)] == ["a", "b"]
    assert src.gather(np.arange(2)) == ["a", "b"]
    assert src.record_id(0) == f"{p}:line 1"


def test_jsonl_whose_first_line_is_only_a_bom_is_blank(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(BOM + b'\n{"x": 1}\n')
    src = JSONRecords(p, field="x")
    assert len(src) == 1 and src[0] == 1 and src.record_id(0) == f"{p}:line 2"


def test_pretty_printed_json_array_with_bom_is_an_array(tmp_path):
    records = [{"id": i, "text": f"t{i}"} for i in range(3)]
    p = tmp_path / "t.json"
    p.write_bytes(BOM + json.dumps(records, indent=2).encode())
    src = JSONRecords(p)
    assert not src.lines and len(src) == 3
    assert [src[i] for i in range(3)] == records
    q = tmp_path / "t.txt"   # no telling extension: detected from the first character after the mark
    q.write_bytes(p.read_bytes())
    assert not JSONRecords(q).lines and JSONRecords(q, field="text")[2] == "t2"


def test_csv_with_bom_header(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(BOM + b"id,value\n1,2.5\n2,3.5\n")
    src = CSVRows(p)
    assert src.columns == ("id", "value")
    np.testing.assert_array_equal(np.stack([src[0], src[1]]), [[1, 2.5], [2, 3.5]])
    assert CSVRows(p, columns=["id"]).columns == ("id",)
    q = tmp_path / "n.csv"   # a BOM before a numeric first row: still data
    q.write_bytes(BOM + b"1,2\n3,4\n")
    assert len(CSVRows(q)) == 2 and CSVRows(q)[0].tolist() == [1, 2]


def test_json_array_that_is_not_utf8_names_the_file(tmp_path):
    p = tmp_path / "t.json"
    p.write_bytes(b'["caf\xe9"]')
    with pytest.raises(RecordError, match=r"t\.json: not UTF-8"):
        JSONRecords(p)


def test_json_array_with_a_bom_names_the_bad_byte_of_the_file(tmp_path):
    p = tmp_path / "b.json"
    data = b'\xef\xbb\xbf[1,\n2,\n\xff]'
    p.write_bytes(data)
    bad = data.index(0xFF)
    with pytest.raises(RecordError, match=rf"b\.json: not UTF-8 text at byte {bad}$"):
        JSONRecords(p)


def test_csv_lines_of_spaces_are_blank_as_in_json_lines(tmp_path):
    (tmp_path / "ws.csv").write_text("a,b\n1,2\n   \n3,4\n\t\n \t \n5,6\n")
    (tmp_path / "ws.jsonl").write_text('{"t":"x"}\n   \n{"t":"y"}\n\t\n{"t":"z"}\n')
    rows = CSVRows(tmp_path / "ws.csv")
    with open(tmp_path / "ws.csv", newline="") as f:
        want = [list(map(float, r)) for r in list(csv.reader(f))[1:] if r and r[0].strip()]
    assert len(rows) == 3 == len(JSONRecords(tmp_path / "ws.jsonl")) and rows.errors == {}
    assert [rows[i].tolist() for i in range(3)] == want == [[1, 2], [3, 4], [5, 6]]
    assert [rows.record_id(i) for i in range(3)] == [f"{tmp_path / 'ws.csv'}:line {n}" for n in (2, 4, 7)]


def test_csv_column_named_twice_is_refused_by_name_and_given_by_index(tmp_path):
    (tmp_path / "dup.csv").write_text("a,a,b\n1,2,3\n")
    with pytest.raises(KeyError, match=r"dup\.csv: column 'a' is named 2 times in the header; give it by index: \[0, 1\]"):
        CSVRows(tmp_path / "dup.csv", columns=["a", "b"])
    rows = CSVRows(tmp_path / "dup.csv", columns=[1, "b"])
    assert rows.columns == ("a", "b") and rows[0].tolist() == [2, 3]
