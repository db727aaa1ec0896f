"""Fluent streams: map/filter/batch/unbatch/shuffle/take/skip/prefetch/batches and mix."""
import collections
import re
import threading
import time

import numpy as np
import pytest
from threadutil import in_fork, new_threads

from fastload import IterableRecords, Loader, Numeric
from fastload.errors import FailedRecord, StageError
from fastload.pipeline.fluent import Stream, buffered_shuffle, mix
from fastload.sources.base import ListSource


def stream(n):
    return ListSource(list(range(n)))


def test_map_sequential_and_length():
    s = stream(10).map(lambda x: x * 2)
    assert isinstance(s, Stream) and len(s) == 10
    assert list(s) == [2 * i for i in range(10)]
    assert list(s) == list(s)          # re-iterable: each iter() is a fresh pass


def test_map_workers_keeps_order():
    def slow(x):
        time.sleep(0.001 * (x % 5))     # finish out of order
        return x * x
    assert list(stream(200).map(slow, workers=4)) == [i * i for i in range(200)]


def test_map_unordered_yields_everything():
    def slow(x):
        time.sleep(0.002 * (x % 3))
        return x
    out = list(stream(100).map(slow, workers=4, ordered=False))
    assert sorted(out) == list(range(100))


def test_map_error_names_stage_and_record():
    def explode(x):
        if x == 7:
            raise KeyError("bad key")
        return x
    for workers in (0, 4):
        with pytest.raises(StageError) as info:
            list(stream(20).map(explode, workers=workers))
        msg = str(info.value)
        assert "explode" in msg and "#7" in msg and "bad key" in msg
        assert isinstance(info.value.__cause__, KeyError)


def test_map_workers_early_break_stops_pool():
    before = threading.enumerate()
    for i, _ in enumerate(stream(10_000).map(lambda x: x, workers=4)):
        if i == 5:
            break
    assert new_threads(before) == []


def test_filter_take_skip_exact():
    assert list(stream(20).filter(lambda x: x % 3 == 0)) == [0, 3, 6, 9, 12, 15, 18]
    assert list(stream(20).take(5)) == [0, 1, 2, 3, 4]
    assert len(stream(20).take(5)) == 5 and len(stream(3).take(5)) == 3
    assert list(stream(20).skip(17)) == [17, 18, 19]
    assert len(stream(20).skip(17)) == 3 and len(stream(3).skip(5)) == 0
    assert list(stream(20).skip(5).take(3)) == [5, 6, 7]
    assert list(stream(5).take(0)) == []
    # a length not known stays unknown: a filter passing 7 of 20 was said to give take's 40
    unknown = stream(20).filter(lambda x: x % 3 == 0).take(40)
    with pytest.raises(TypeError):
        len(unknown)
    assert list(unknown) == [0, 3, 6, 9, 12, 15, 18]
    loader = Loader(IterableRecords(lambda: ({"n": i} for i in range(10))).take(100), batch_size=4,
                    fields={"n": None})
    with pytest.raises(TypeError):
        len(loader)
    assert [list(b["n"]) for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match=rf"take needs a count of records >= 0, got {bad!r}"):
            stream(5).take(bad)
        with pytest.raises(ValueError, match=rf"skip needs a count of records >= 0, got {bad!r}"):
            stream(5).skip(bad)


def test_batch_and_unbatch_exact():
    assert list(stream(7).batch(3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(stream(7).batch(3, drop_last=True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(stream(7).batch(3)) == 3 and len(stream(7).batch(3, drop_last=True)) == 2
    assert list(stream(7).batch(3).unbatch()) == list(range(7))
    pairs = Stream(lambda: iter([(np.arange(3), ["a", "b", "c"]), (np.arange(3, 5), ["d", "e"])]))
    assert [(int(x), y) for x, y in pairs.unbatch()] == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]
    with pytest.raises(ValueError):
        stream(3).batch(0)


def test_unbatch_dict_batches_gives_one_dict_per_record():
    recs = [{"x": [float(i)], "label": i % 3, "meta": {"id": i, "box": {"w": i * 0.25, "tag": f"t{i}"}}}
            for i in range(7)]
    loader = Loader(ListSource(recs), batch_size=3, workers=0, fields={"x": Numeric(1), "label": "index"})

    def plain(v):    # NumPy rows and scalars as Python values, to compare with the records
        if isinstance(v, dict):
            return {k: plain(u) for k, u in v.items()}
        return np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic)) else v
    got = [plain(r) for r in loader.unbatch()]
    assert got == recs                   # reference: the records themselves, in order
    with pytest.raises(ValueError, match=r"differ in length \{'x': 2, 'y': 3\}"):
        list(Stream(lambda: iter([{"x": [1, 2], "y": [1, 2, 3]}])).unbatch())
    with pytest.raises(ValueError, match=r"differ in length \{'m.a': 1, 'm.b': 2\}"):
        list(Stream(lambda: iter([{"m": {"a": [1], "b": [1, 2]}}])).unbatch())
    with pytest.raises(ValueError, match=r"value 'n' \(int\) has no length"):
        list(Stream(lambda: iter([{"x": [1], "n": 1}])).unbatch())
    # as_tuple=True: a column of dicts inside the tuple gives each record its dict (it gave the keys),
    # and elements of unequal length are an error (zip dropped the tails)
    tuples = Loader(ListSource(recs), batch_size=3, workers=0, as_tuple=True,
                    fields={"x": Numeric(1), "label": "index"})
    got = [tuple(plain(v) for v in r) for r in tuples.unbatch()]
    assert got == [(r["x"], r["label"], r["meta"]) for r in recs]
    with pytest.raises(ValueError, match=r"tuple batch's elements differ in length \{'0': 2, '1': 3\}"):
        list(Stream(lambda: iter([([1, 2], [1, 2, 3])])).unbatch())


def test_shuffle_is_a_deterministic_permutation():
    a = list(stream(1000).shuffle(64, seed=1))
    assert sorted(a) == list(range(1000))
    assert a != list(range(1000))
    assert a == list(stream(1000).shuffle(64, seed=1))
    assert a != list(stream(1000).shuffle(64, seed=2))
    assert sorted(stream(10).shuffle(64, seed=0)) == list(range(10))   # buffer larger than the stream


def test_shuffle_draws_from_the_epoch_once_told_it():
    """Pass k draws from (seed, k) until set_epoch; then every pass from (seed, epoch), which a Loader
    relies on to read an epoch's pass again. The epoch reaches a shuffle through any stream after it."""
    counted = stream(200).shuffle(16, seed=1)
    p0, p1 = list(counted), list(counted)
    assert p0 != p1 and sorted(p0) == sorted(p1) == list(range(200))
    told = stream(200).shuffle(16, seed=1)
    told.set_epoch(1)
    assert list(told) == list(told) == p1
    it = iter(told)   # a pass is fixed when it starts
    told.set_epoch(0)
    assert list(it) == p1 and list(told) == p0
    chain = stream(200).shuffle(16, seed=1).map(lambda x: -x).filter(lambda x: x % 3).prefetch(2).take(150)
    chain.set_epoch(1)
    assert list(chain) == [-x for x in p1 if x % 3][:150]
    mixed = mix([stream(200).shuffle(16, seed=1), stream(10)], seed=0, stop="all")
    mixed.set_epoch(1)
    assert [x for x in mixed if x >= 10] == [x for x in p1 if x >= 10]


def test_failed_records_pass_map_and_filter_untouched():
    """What a source could not read reaches the Loader, which reports or skips it, not the stage's function."""
    failed = FailedRecord("shard.tar", "truncated shard")
    src = ListSource([1, failed, 2, 3])
    for workers in (0, 2):
        assert list(src.map(lambda x: x * 10, workers=workers).filter(lambda x: x > 10)) == [failed, 20, 30]


def _shuffle_trace(n, size, initial, seed=0):
    """The output of buffered_shuffle over range(n), and how many records had gone in at each output."""
    taken = []

    def source():
        for i in range(n):
            taken.append(i)
            yield i
    out, read = [], []
    for x in buffered_shuffle(source(), size, np.random.default_rng(seed), initial):
        out.append(x)
        read.append(len(taken))
    return out, read


@pytest.mark.parametrize("n, size, initial", [(0, 8, 3), (5, 8, 3), (6, 64, 100), (50, 20, 5), (500, 64, 64),
                                              (1000, 64, 1), (300, 1, 1)])
def test_buffered_shuffle_is_a_permutation_that_starts_early_and_stays_bounded(n, size, initial):
    out, read = _shuffle_trace(n, size, initial)
    assert sorted(out) == list(range(n))
    start = min(initial, size)
    if n > start:   # the first record comes out as record start + 1 goes in, not after a full buffer
        assert read[0] == start + 1
    held = [r - k for k, r in enumerate(read)]   # records in the buffer just before each output
    assert max(held, default=0) <= size + 1
    if n >= 3 * size:   # it grows to the full width asked for: two in for each one out, then one for one
        assert max(held) == size + 1
        first_full = held.index(size + 1)
        assert first_full == size - start
        assert all(h == size + 1 for h in held[first_full:n - size])


def test_buffered_shuffle_draws_uniformly_from_the_buffer():
    """The first record out is any of the first initial + 1 in, equally likely (5,000 passes: each
    of 10 positions expected 500 times, standard deviation 21; the bound is 4.7 of them)."""
    counts = collections.Counter(_shuffle_trace(30, 20, 9, seed)[0][0] for seed in range(5000))
    assert set(counts) == set(range(10))
    assert all(abs(c - 500) <= 100 for c in counts.values()), counts
    # later records too: where record 0 leaves a 1,000-record pass through 64 slots is spread
    leave = [_shuffle_trace(1000, 64, 64, seed)[0].index(0) for seed in range(300)]
    assert np.mean(leave) > 30 and max(leave) > 150


def test_shuffle_initial_is_passed_through():
    a = list(stream(200).shuffle(50, seed=3))
    b = list(stream(200).shuffle(50, seed=3, initial=5))
    assert sorted(a) == sorted(b) == list(range(200)) and a != b
    with pytest.raises(ValueError, match="initial"):
        stream(3).shuffle(4, initial=0)


def test_prefetch_yields_in_order_and_stops_cleanly():
    before = threading.enumerate()
    assert list(stream(500).prefetch(4)) == list(range(500))
    assert new_threads(before) == []
    it = iter(stream(10_000).map(lambda x: x).prefetch(2))
    assert next(it) == 0
    time.sleep(0.05)                     # let the producer fill its queue and block on it
    it.close()
    assert new_threads(before) == []


def test_prefetch_break_and_gc_stop_the_producer():
    before = threading.enumerate()
    for x in stream(10_000).prefetch(2):
        if x == 3:
            break
    assert new_threads(before) == []
    it = iter(stream(10_000).prefetch(2))
    next(it)
    del it
    assert new_threads(before) == []


def test_prefetch_closes_upstream_generator():
    closed = threading.Event()

    def gen():
        try:
            yield from range(10_000)
        finally:
            closed.set()
    for x in Stream(gen).prefetch(2):
        if x == 2:
            break
    assert closed.wait(5)


def test_prefetch_propagates_errors():
    def boom(x):
        if x == 50:
            raise RuntimeError("no")
        return x
    got = []
    with pytest.raises(StageError, match="boom"):
        for x in stream(100).map(boom).prefetch(3):
            got.append(x)
    assert got == list(range(50))


def test_mix_proportions_and_determinism():
    a = Stream(lambda: (("a", i) for i in range(100_000)))
    b = Stream(lambda: (("b", i) for i in range(100_000)))
    m = mix([a, b], weights=[3, 1], seed=0).take(10_000)
    out = list(m)
    counts = collections.Counter(tag for tag, _ in out)
    assert len(out) == 10_000
    assert abs(counts["a"] / 10_000 - 0.75) < 0.02
    assert [i for tag, i in out if tag == "a"] == list(range(counts["a"]))     # each source stays in order
    assert out == list(mix([a, b], weights=[3, 1], seed=0).take(10_000))
    assert out != list(mix([a, b], weights=[3, 1], seed=1).take(10_000))


def test_mix_draws_each_epoch_anew_once_told_it():
    """A mix drew the same sequence of sources every pass: every epoch of a Loader over it mixed its
    sources alike. Once told an epoch it draws from (seed, epoch): a pass is the same whenever it is
    read again (as a Loader resumes), and epochs differ."""
    a = Stream(lambda: (("a", i) for i in range(1000)))
    b = Stream(lambda: (("b", i) for i in range(1000)))
    untold = [tag for tag, _ in mix([a, b], seed=0).take(200)]
    assert untold == [tag for tag, _ in mix([a, b], seed=0).take(200)]
    passes = {}
    for epoch in (0, 1, 0):
        m = mix([a, b], seed=0)
        m.set_epoch(epoch)
        passes.setdefault(epoch, []).append([tag for tag, _ in m.take(200)])
    assert passes[0][0] == passes[0][1] != passes[1][0]


def test_mix_stop_policies():
    short = ListSource([("s", i) for i in range(10)])
    long = ListSource([("l", i) for i in range(1000)])
    first = list(mix([short, long], seed=0))
    assert [r for r in first if r[0] == "s"] == list(short)       # ends when `short` runs out
    assert len(first) < 100
    every = list(mix([short, long], seed=0, stop="all"))
    assert sorted(every) == sorted(list(short) + list(long))
    for weights in ([1, -1], [float("nan"), 1], [float("inf"), 1], [0, 0]):
        with pytest.raises(ValueError, match="weights must be 2 non-negative numbers with a positive sum"):
            mix([short, long], weights=weights)


class Labelled(ListSource):
    classes = ["cat", "dog", "eel"]


def test_shuffled_batches_are_drawn_anew_each_pass_and_each_epoch():
    # Every epoch of `for epoch in ...: for x, y in pipeline` once saw the same order.
    recs = [(f"img{i}.jpg", i % 3) for i in range(40)]
    stream = Labelled(recs).batches(8, shuffle=True, seed=5)
    passes = [[p for ps, _ in stream for p in ps] for _ in range(3)]
    assert all(sorted(p) == sorted(r[0] for r in recs) for p in passes)
    assert len({tuple(p) for p in passes}) == 3
    again = Labelled(recs).batches(8, shuffle=True, seed=5)            # the same seed replays the passes
    assert [[p for ps, _ in again for p in ps] for _ in range(3)] == passes
    by_epoch = {}
    for epoch in (2, 0, 2):
        stream.set_epoch(epoch)
        order = [p for ps, _ in stream for p in ps]
        assert by_epoch.setdefault(epoch, order) == order                # a function of (seed, epoch)
    assert by_epoch[0] != by_epoch[2]
    pairs = [(p, int(y)) for ps, ys in stream for p, y in zip(ps, ys)]   # labels stay with their paths
    assert len(pairs) == 40 and all(int(p[3:-4]) % 3 == y for p, y in pairs)


def test_batches_index_and_onehot():
    recs = [(f"img{i}.jpg", i % 3) for i in range(7)]
    src = Labelled(recs)
    b = list(src.batches(3))
    assert len(src.batches(3)) == 3 and [len(p) for p, _ in b] == [3, 3, 1]
    assert b[0][0] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert b[0][1].dtype == np.int64 and b[0][1].tolist() == [0, 1, 2]
    paths, onehot = next(iter(src.batches(4, labels="onehot")))
    assert onehot.dtype == np.float32 and onehot.shape == (4, 3)
    np.testing.assert_array_equal(onehot, np.eye(3, dtype=np.float32)[[0, 1, 2, 0]])
    shuffled = [p for ps, _ in src.batches(3, shuffle=True, seed=5) for p in ps]
    assert sorted(shuffled) == sorted(r[0] for r in recs) and shuffled != [r[0] for r in recs]
    assert shuffled == [p for ps, _ in src.batches(3, shuffle=True, seed=5) for p in ps]
    assert src.map(lambda r: r).classes == src.classes          # streams keep the source's classes
    with pytest.raises(ValueError, match="num_classes"):
        ListSource(recs).batches(2, labels="onehot")
    with pytest.raises(ValueError, match="random-access"):
        src.map(lambda r: r).batches(2, shuffle=True)


@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")   # Python's warning about fork with threads
@pytest.mark.parametrize("threaded", ["map", "prefetch"])
def test_a_threaded_stream_advanced_in_a_forked_child_is_refused(threaded):
    """A child made by os.fork() that advanced its parent's iterator over a threaded stage found none of the
    stage's threads: a .map(workers=) waited for ever, a .prefetch() took their silence for the end."""
    stream = ListSource(list(range(50)))
    stream = stream.map(lambda x: x, workers=2) if threaded == "map" else stream.prefetch(2)
    it = iter(stream)
    got = [next(it)]
    child = in_fork(lambda: list(it))
    assert child.startswith("RuntimeError") and "iterate the stream (or loader) anew in the child" in child, child
    assert got + list(it) == list(range(50))


def test_a_stream_in_thread_order_is_refused_where_it_is_read_by_position():
    """A map with ordered=False gives another order each pass; a rank's share (its positions) or a
    resumed epoch's rest (the positions after the checkpoint) then named other records each time:
    records read twice or never. Refused there; read whole by one process, it is fine."""
    import random

    from fastload.sources.arrays import IterableRecords

    def slow(rec):
        time.sleep(random.random() * 0.002)
        return rec
    src = IterableRecords(lambda: iter([{"x": i} for i in range(32)])).map(slow, workers=4, ordered=False)
    assert src.unordered_stage() == "map(slow, ordered=False)"
    assert src.map(lambda r: r).shuffle(4).unordered_stage() == "map(slow, ordered=False)"
    assert mix([src, IterableRecords(lambda: iter([]))]).unordered_stage() == "map(slow, ordered=False)"
    whole = Loader(src, batch_size=4, fields={"x": None})
    assert sorted(int(v) for b in whole for v in b["x"]) == list(range(32))
    with pytest.raises(ValueError, match=r"map\(slow, ordered=False\) gives the records.*2 ranks.*ordered=True"):
        iter(Loader(src, batch_size=4, fields={"x": None}, rank=1, world_size=2))
    it = iter(whole)
    next(it)
    state = whole.state_dict()
    it.close()
    with pytest.raises(ValueError, match="resumed epoch would skip"):
        iter(Loader(src, batch_size=4, fields={"x": None}).load_state_dict(state))
    ordered = IterableRecords(lambda: iter([{"x": i} for i in range(32)])).map(slow, workers=4)
    assert ordered.unordered_stage() is None
    shares = [[int(v) for b in Loader(ordered, batch_size=4, fields={"x": None}, rank=r, world_size=2)
               for v in b["x"]] for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(32))


def test_a_loader_over_a_composed_stream_pickles():
    """Loaders pickle (README: they cross spawn), but one over any composed stream failed: "Can't pickle
    local object 'Fluent.map.<locals>.<lambda>'", from fastload's own closures, with picklable parts.
    Each composition pickles now, and the copy yields the original's batches, epoch after epoch."""
    import pickle

    src = ListSource([{"x": i} for i in range(20)])
    streams = {"map": src.map(dict), "threaded map": src.map(dict, workers=2), "filter": src.filter(bool),
               "shuffle": src.shuffle(5, seed=3), "take": src.take(9), "skip": src.skip(4),
               "prefetch": src.prefetch(2), "unbatch": src.batch(3).unbatch(),
               "mix": mix([src, src.shuffle(4, seed=1)], seed=2, stop="all"),
               "chain": src.map(dict).shuffle(6, seed=1).filter(bool).prefetch(2)}
    for name, stream in streams.items():
        def epochs(loader):
            return [[int(v) for b in loader for v in b["x"]] for _ in range(2)]
        want = epochs(Loader(stream, batch_size=4, fields={"x": None}))
        copy = pickle.loads(pickle.dumps(Loader(stream, batch_size=4, fields={"x": None})))
        assert epochs(copy) == want, name
        # itertools objects pickle with a DeprecationWarning from Python 3.12 and not at all from 3.14
        assert b"itertools" not in pickle.dumps(stream), name
        assert want[0] and (name not in ("shuffle", "mix", "chain") or want[0] != want[1]), (name, want)
    labelled = ListSource([(f"p{i}", i % 3) for i in range(10)])
    batches = labelled.batches(4, shuffle=True, seed=1)
    got = pickle.loads(pickle.dumps(batches))
    assert [b[0] for b in got] == [b[0] for b in labelled.batches(4, shuffle=True, seed=1)]


def test_a_stream_step_over_a_source_passes_a_record_it_cannot_read_on_as_failed(tmp_path):
    """A step over a random-access source (a JSON Lines file with a malformed line) raised the
    record's error out of the stream, ending the epoch under on_error="skip" too. The record comes
    through the steps as a failure naming it, which the Loader skips and counts, or raises."""
    import json
    import warnings

    from fastload.errors import RecordError
    from fastload.sources.text import JSONRecords
    path = tmp_path / "r.jsonl"
    lines = [json.dumps({"x": i}) for i in range(10)]
    lines[4] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    src = JSONRecords(str(path))
    for stream in (src.map(dict), src.filter(bool).shuffle(4, seed=1), src.prefetch(2).take(8), src.map(dict, workers=2),
                   mix([src, src.skip(5)], seed=1)):
        loader = Loader(stream, batch_size=3, fields={"x": None}, on_error="skip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = sorted(int(v) for b in loader for v in b["x"])
        assert 4 not in got and loader.stats()["skipped"] >= 1, (stream, got)
        assert loader.stats()["failures"][0][0] == f"{path}:line 5", loader.stats()["failures"]
        with pytest.raises(RecordError, match=rf"{re.escape(str(path))}:line 5"):
            list(Loader(stream, batch_size=3, fields={"x": None}))
    with pytest.warns(RuntimeWarning, match="skipping"):
        got = [int(v) for b in Loader(src.map(dict), batch_size=3, fields={"x": None}, on_error="skip")
               for v in b["x"]]
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    with pytest.raises(RecordError):   # iterating the source itself still raises
        list(src)


def test_a_streams_lineage_names_every_setting_of_its_order_and_count():
    """Under torch.distributed the ranks compare a stream's lineage: it named the seeds of its draws
    alone, so ranks whose mix weights or stop, shuffle initial, batch drop_last or batches shuffle
    differed each took their share of another order or count. Each setting is named now, exactly:
    weights that differ in their last bit give other names."""
    from fastload import TarStream

    def lineage(make):
        return make(stream(10)).lineage()
    assert lineage(lambda s: s.shuffle(4, seed=2)) == "shuffle(4, seed=2) of ListSource"
    assert lineage(lambda s: s.shuffle(4, seed=2, initial=3)) == "shuffle(4, seed=2, initial=3) of ListSource"
    assert lineage(lambda s: s.batch(3)) == "batch(3) of ListSource"
    assert lineage(lambda s: s.batch(3, drop_last=True)) == "batch(3, drop_last=True) of ListSource"
    assert lineage(lambda s: s.filter(bool).take(5).skip(1).map(str)) == \
        "map(str) of skip(1) of take(5) of filter(bool) of ListSource"
    pairs = ListSource([("a", 0), ("b", 1)])
    assert pairs.batches(2).lineage() == "batches(2, 'index') of ListSource"
    assert pairs.batches(2, shuffle=True, seed=5, drop_last=True).lineage() == \
        "batches(2, 'index', shuffle=True, seed=5, drop_last=True) of ListSource"
    assert mix([stream(3), stream(4)]).lineage() == "mix(2, seed=0) of ListSource + ListSource"
    assert mix([stream(3), stream(4)], weights=[1, 1]).lineage() == "mix(2, seed=0) of ListSource + ListSource"
    assert mix([stream(3), stream(4)], weights=[1, 3], seed=1, stop="all").lineage() == \
        "mix(2, weights=[1.0, 3.0], seed=1, stop='all') of ListSource + ListSource"
    near = np.nextafter(0.3, 1.0)
    assert mix([stream(3), stream(4)], weights=[0.3, 0.7]).lineage() != \
        mix([stream(3), stream(4)], weights=[near, 0.7]).lineage()
    tar = TarStream(["a.tar", "b.tar"], None, shuffle_buffer=8, seed=1)
    assert tar.lineage() == "TarStream(shuffle_buffer=8, seed=1)"
    assert TarStream(["a.tar"], None, shuffle_buffer=8, seed=1, shuffle_initial=2, require=(".jpg",)).lineage() \
        == "TarStream(shuffle_buffer=8, seed=1, shuffle_initial=2, require=['jpg'])"
    # without a buffer shuffle_initial draws nothing, so it is no setting of the order
    assert TarStream(["a.tar"], None, shuffle_initial=2).lineage() == "TarStream(shuffle_buffer=0, seed=0)"


def test_a_stream_passes_on_the_listing_of_the_folder_it_reads(tmp_path):
    """Under torch.distributed the ranks compare a folder's listing: a stream's step over a folder did
    not pass it on, so a folder with a file more on one machine went uncompared. A step passes its
    source's listing on; a mix each input's, after the input's number (so a difference names it),
    and tar shards' by name and size where another input lists its files."""
    import io
    import tarfile
    from fastload import ImageFolder, TarShards
    from fastload.synthetic import make_image_folder
    root = make_image_folder(str(tmp_path / "d"), classes=2, per_class=2, size=(16, 16))
    folder = ImageFolder(root)
    assert list(folder.map(tuple).shuffle(2).local_listing()) == list(folder.local_listing())
    assert stream(3).map(str).local_listing() is None
    with tarfile.open(tmp_path / "s.tar", "w") as t:
        member = tarfile.TarInfo("k.cls")
        member.size = 1
        t.addfile(member, io.BytesIO(b"0"))
    size = (tmp_path / "s.tar").stat().st_size
    names = ["class_000/img_00000.jpg", "class_000/img_00001.jpg", "class_001/img_00000.jpg", "class_001/img_00001.jpg"]
    listing = mix([folder.map(tuple), stream(3), TarShards(str(tmp_path / "s.tar")).stream()]).local_listing()
    assert list(listing) == [f"input 0: {n}" for n in names] + [f"input 2: s.tar ({size} bytes)"]
    # tar shards alone are compared as shards, as before
    assert mix([TarShards(str(tmp_path / "s.tar")).stream(), stream(3)]).local_listing() is None


def _augmented_loader(map_workers, seed=1):
    import fastload as fl
    imgs = [np.random.default_rng(i).integers(0, 255, (4, 4, 1)).astype(np.uint8) for i in range(16)]
    stream = (fl.ListSource([{"x": imgs[i], "i": i} for i in range(16)]).batch(4)
              .map(lambda b: (np.stack([r["x"] for r in b]), np.array([r["i"] for r in b])))
              .map(fl.augment(seed=seed), workers=map_workers).unbatch()
              .map(lambda t: {"x": t[0], "i": int(t[1])}))
    return Loader(stream, batch_size=4, fields={"x": None, "i": "index"}, workers=1), imgs


@pytest.mark.parametrize("map_workers", [0, 2])
def test_a_numbered_stage_in_a_loaders_stream_is_keyed_by_epoch_and_position(map_workers):
    # The stage counted the batches it had seen over its lifetime: a break, a resume or set_epoch
    # changed the pixels of the rest of the epoch.
    import fastload as fl

    def epoch(loader):
        return [(b["i"].tolist(), b["x"].copy()) for b in loader]
    loader, imgs = _augmented_loader(map_workers)
    e0, e1 = epoch(loader), epoch(loader)
    stage = fl.augment(seed=1)
    for e, got in ((0, e0), (1, e1)):   # the documented draws: position p of epoch e is keyed (e, p)
        assert [i for ids, _ in got for i in ids] == list(range(16))
        for p, (ids, x) in enumerate(got):
            k, flips = stage.params((e, p), 4)
            want = [np.rot90(imgs[i], int(k[j]))[:, ::-1] if flips[j] else np.rot90(imgs[i], int(k[j]))
                    for j, i in enumerate(ids)]
            assert np.array_equal(x, np.stack(want))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(e0, e1))
    interrupted, _ = _augmented_loader(map_workers)   # a break, then the rest of the epoch
    it = iter(interrupted)
    head = [(b["i"].tolist(), b["x"].copy()) for b in (next(it), next(it))]
    del it
    whole = head + epoch(interrupted)
    assert [i for i, _ in whole] == [i for i, _ in e0]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(whole, e0))
    direct, _ = _augmented_loader(map_workers)   # epoch 1 without epoch 0 first, and resumed in it
    direct.set_epoch(1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(epoch(direct), e1))
    first, _ = _augmented_loader(map_workers)
    first.set_epoch(1)
    it = iter(first)
    next(it)
    state = first.state_dict()
    del it
    resumed, _ = _augmented_loader(3 - map_workers if map_workers else 0)
    resumed.load_state_dict(state)
    rest = epoch(resumed)
    assert [i for i, _ in rest] == [i for i, _ in e1[1:]]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(rest, e1[1:]))


@pytest.mark.parametrize("kind", ["thread map", "iter node", "prefetcher", "stream map", "stream prefetch"])
def test_a_node_made_again_and_given_its_state_gives_exactly_the_rest(kind):
    # state_dict() was {} and load_state_dict() did nothing: a "resumed" node started over.
    from fastload.pipeline.node import IterNode, Prefetcher, ThreadMap
    make = {"thread map": lambda: ThreadMap(iter(range(10)), lambda x: x * 2, workers=2),
            "iter node": lambda: IterNode(lambda: (2 * x for x in range(10))),
            "prefetcher": lambda: Prefetcher(lambda: (2 * x for x in range(10)), 2),
            "stream map": lambda: iter(stream(10).map(lambda x: x * 2, workers=3)),
            "stream prefetch": lambda: iter(stream(10).map(lambda x: x * 2).prefetch(3))}[kind]
    node = make()
    head = [next(node) for _ in range(4)]
    state = node.state_dict()
    node.close()
    assert head == [0, 2, 4, 6] and state == {"given": 4}
    again = make()
    again.load_state_dict(state)
    assert list(again) == [8, 10, 12, 14, 16, 18] and again.state_dict() == {"given": 10}
    with pytest.raises(RuntimeError, match="before the first item"):
        again.load_state_dict(state)
    with pytest.raises(ValueError, match="needs the dict state_dict"):
        make().load_state_dict({})


def test_stream_counts_must_be_integers_when_the_stream_is_built():
    # batch(2.0) failed only when iterated (inside islice), batch(True) batched by one, prefetch(2.5),
    # shuffle(4.5) and map(workers=2.5) were taken, and map(workers=-1) ran in the calling thread.
    for build, what in ((lambda: stream(5).batch(2.0), "batch size"), (lambda: stream(5).batch(True), "batch size"),
                        (lambda: stream(5).prefetch(2.5), "prefetch depth"),
                        (lambda: stream(5).shuffle(4.5), "buffer_size"),
                        (lambda: stream(5).map(abs, workers=2.5), "map workers")):
        with pytest.raises(TypeError, match=f"{what} must be an integer"):
            build()
    with pytest.raises(ValueError, match="map workers must be >= 0, got -1"):
        stream(5).map(abs, workers=-1)
    assert list(stream(5).batch(np.int64(2))) == [[0, 1], [2, 3], [4]]
