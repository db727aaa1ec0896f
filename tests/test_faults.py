"""Faults inside the Loader's stages and workers, interrupts, and concurrent loaders: errors reach
the consumer saying where they came from, and no fastload thread outlives its iteration."""
import _thread
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from _child import HOME

import fastload as fl
from fastload.pipeline.fields import Field, Output
from fastload.pipeline.node import ThreadMap


def fastload_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fastload")]


def wait_for_no_threads(limit=1.0):
    t0 = time.monotonic()
    while fastload_threads() and time.monotonic() - t0 < limit:
        time.sleep(0.005)
    return fastload_threads()


class Number(Field):
    """Writes int(value); raises `error` on the value `explode_at` (as a buggy user field would);
    sleeps `delay` seconds per chunk with the GIL released, like a compiled kernel."""

    def __init__(self, explode_at=None, error=ValueError("boom"), delay=0.0, times=None):
        self.name, self.explode_at, self.error, self.delay, self.times = "n", explode_at, error, delay, times

    def outputs(self):
        return [Output(self.name, (), np.dtype(np.int64))]

    def fill(self, values, outs, ctx):
        time.sleep(self.delay)
        for i, v in enumerate(values):
            if v == self.explode_at and (self.times is None or self.times > 0):
                if self.times is not None:
                    self.times -= 1
                raise self.error
            outs[self.name][i] = v
        return {}


def records(image_folder, n=24):
    src = fl.ImageFolder(image_folder)
    return fl.zip(image=fl.ImageFiles(src.paths[:n]), n=fl.ListSource(list(range(n)), "numbers"))


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_exception_in_a_field_reaches_the_consumer_with_context(image_folder, workers):
    recs = records(image_folder)
    loader = fl.Loader(recs, batch_size=4, workers=workers,
                       fields={"image": [fl.CenterCrop(8)], "n": Number(explode_at=13)})
    seen = []
    with pytest.raises(fl.StageError) as e:
        for batch in loader:
            seen += batch["n"].tolist()
    assert seen == list(range(12))   # every batch before the failing one, in order
    assert "stage 'field n' failed" in str(e.value) and "ValueError: boom" in str(e.value)
    assert recs.record_id(12) in str(e.value) or recs.record_id(13) in str(e.value)
    assert isinstance(e.value.__cause__, ValueError)
    assert fastload_threads() == []


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_unexpected_exception_is_not_a_bad_record_even_under_skip(image_folder, on_error):
    loader = fl.Loader(records(image_folder), batch_size=4, workers=2, on_error=on_error,
                       fields={"image": [fl.CenterCrop(8)], "n": Number(explode_at=5, error=KeyError("k"))})
    with pytest.raises(fl.StageError, match="KeyError"):
        list(loader)
    assert loader.stats()["failures"] == [] and fastload_threads() == []


class FlakySource(fl.Source):
    """A source whose bulk read raises an unexpected error (a network share going away) for one chunk,
    and whose record `bad` is a RecordError (a missing row)."""

    def __init__(self, paths, outage_at=None, bad=None):
        self.paths, self.outage_at, self.bad = paths, outage_at, bad

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if i == self.bad:
            raise fl.RecordError(f"row {i}", "row missing from the index")
        return self.paths[i]

    def gather(self, indices):
        if self.outage_at in indices.tolist():
            raise ConnectionError("share went away")
        return [self[i] for i in indices.tolist()]

    def record_id(self, i):
        return f"row {i}"


class Broken:
    """A map-style dataset, torch's kind, with a bug at one index."""

    def __init__(self, items, bug_at):
        self.items, self.bug_at = items, bug_at

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {}["label"] if i == self.bug_at else self.items[i]


def test_a_datasets_own_exception_names_the_record_it_came_from(image_folder):
    """Naming the chunk read the failing record again (its id is its value): the dataset's bare
    KeyError escaped, with no record, index or source named."""
    items = list(fl.ImageFolder(image_folder))
    loader = fl.Loader(Broken(items, 13), batch_size=4, workers=2, transforms=[fl.CenterCrop(8)])
    with pytest.raises(fl.StageError, match=r"^stage 'source' failed on record 'Broken\[13\]': KeyError: 'label'$"):
        list(loader)
    assert fastload_threads() == []


def test_exception_in_the_source_reaches_the_consumer_with_context(image_folder):
    paths = fl.ImageFolder(image_folder).paths
    loader = fl.Loader(FlakySource(paths, outage_at=9), batch_size=4, workers=2, transforms=[fl.CenterCrop(8)])
    with pytest.raises(fl.StageError, match=r"stage 'source' failed on record .*row 8.*ConnectionError: share went away"):
        list(loader)
    assert fastload_threads() == []
    # A RecordError from the source is a bad record: the policy applies.
    loader = fl.Loader(FlakySource(paths, bad=6), batch_size=4, workers=2, transforms=[fl.CenterCrop(8)],
                       on_error="skip")
    with pytest.warns(RuntimeWarning, match="row missing"):
        assert [len(x) for x in loader] == [4, 3, 4, 4, 4, 4]
    assert loader.stats()["failures"] == [("row 6", "row missing from the index")]
    with pytest.raises(fl.RecordError, match="row 6: row missing"):
        list(fl.Loader(FlakySource(paths, bad=6), batch_size=4, transforms=[fl.CenterCrop(8)]))


def test_loader_is_reusable_after_a_failure(image_folder):
    field = Number(explode_at=7, times=1)   # fails in the first epoch only
    loader = fl.Loader(records(image_folder), batch_size=5, workers=2, shuffle=True, seed=4,
                       fields={"image": [fl.CenterCrop(8)], "n": field})
    with pytest.raises(fl.StageError):
        list(loader)
    assert fastload_threads() == []
    assert loader.state_dict()["batch"] == 1        # the batch that failed is where it stands
    rest = [b["n"].tolist() for b in loader]        # so the next loop retries it and ends epoch 0
    assert sum(rest, []) == loader.order(0).tolist()[5:]
    epoch1 = [b["n"].tolist() for b in loader]
    assert sorted(sum(epoch1, [])) == list(range(24))
    assert sum(epoch1, []) == loader.order(1).tolist()


def test_exception_in_the_consumer_stops_the_workers(image_folder):
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=2, workers=3, transforms=[fl.CenterCrop(8)])

    def train():
        for i, _ in enumerate(loader):
            if i == 3:
                raise RuntimeError("NaN loss")
    with pytest.raises(RuntimeError, match="NaN loss"):
        train()
    assert wait_for_no_threads() == []


@pytest.mark.parametrize("where", ["waiting", "training"])
def test_keyboard_interrupt_stops_every_thread_within_a_second(image_folder, where):
    # "waiting": the consumer mostly waits on slow workers; "training": on its own loop body.
    slow_fill, slow_body = (0.02, 0.0) if where == "waiting" else (0.0, 0.02)
    loader = fl.Loader(records(image_folder), batch_size=4, workers=3, prefetch=3,
                       fields={"image": [fl.RandomResizedCrop(16)], "n": Number(delay=slow_fill)})
    seen = []

    def train():
        for epoch in range(10_000):
            for batch in loader:
                seen.append(len(batch["n"]))
                time.sleep(slow_body)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train()
        t0 = time.monotonic()
        assert wait_for_no_threads(1.0) == []
        assert time.monotonic() - t0 < 1.0
    finally:
        timer.cancel()
    assert seen   # it was running when interrupted
    loader.set_epoch(0)
    assert [len(b["n"]) for b in loader] == [4] * 6   # and runs again afterwards


def test_two_loaders_interleaved_and_reused_across_epochs(image_folder):
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip()]
    kw_a = dict(batch_size=5, shuffle=True, seed=3, transforms=tr)
    kw_b = dict(batch_size=7, shuffle=True, seed=8, transforms=tr, dtype="uint8")
    a, b = fl.Loader(src, workers=2, **kw_a), fl.Loader(src, workers=1, **kw_b)
    for epoch in range(3):
        got_a, got_b = [], []
        ia, ib = iter(a), iter(b)
        for (y, _), (x, _) in zip(ib, ia):   # both in flight at once (b is the shorter one)
            got_a.append(x.copy())
            got_b.append(y.copy())
        got_a += [x.copy() for x, _ in ia]
        for kw, got in ((kw_a, got_a), (kw_b, got_b)):
            ref = fl.Loader(src, workers=0, **kw)
            ref.set_epoch(epoch)
            np.testing.assert_array_equal(np.concatenate(got), np.concatenate([x.copy() for x, _ in ref]))
    assert a.state_dict()["epoch"] == 3 and b.state_dict()["epoch"] == 3
    assert wait_for_no_threads() == []


def test_four_loaders_in_four_threads_equal_serial(image_folder):
    src = fl.ImageFolder(image_folder)
    tr = [fl.RandomResizedCrop(20), fl.RandomHorizontalFlip(), fl.ColorJitter(0.2, 0.2, 0.2)]

    def run(seed, workers):
        loader = fl.Loader(src, batch_size=4, shuffle=True, seed=seed, transforms=tr, workers=workers,
                           dtype="uint8", layout="NHWC")
        return [np.concatenate([x.copy() for x, _ in loader]) for _ in range(2)]
    serial = {seed: run(seed, 0) for seed in range(4)}
    results, errors = {}, []

    def worker(seed):
        try:
            results[seed] = run(seed, 1 + seed % 3)
        except BaseException as e:   # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(results) == [0, 1, 2, 3]
    for seed in range(4):
        for got, want in zip(results[seed], serial[seed]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(serial[0][0], serial[1][0])
    assert wait_for_no_threads() == []


class Held:
    """An iterator over 0..n-1 that, before yielding ``hold_at``, waits for ``resume`` (a consumer in the
    middle of topping its window of work up)."""

    def __init__(self, n, hold_at):
        self.n, self.hold_at, self.i = n, hold_at, 0
        self.holding, self.resume = threading.Event(), threading.Event()

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.n:
            raise StopIteration
        if self.i == self.hold_at:
            self.holding.set()
            self.resume.wait(10)
        self.i += 1
        return self.i - 1


def test_a_map_closed_while_its_consumer_starts_work_leaves_no_thread():
    """close() from another thread while the consumer was between two submissions: its next submission
    started a new pool of workers that nothing shut down, and yielded one more item."""
    upstream = Held(10, hold_at=1)
    node = ThreadMap(upstream, lambda x: x, workers=2)
    got = []
    consumer = threading.Thread(target=lambda: got.append(list(node)))
    consumer.start()
    assert upstream.holding.wait(10)
    node.close()
    upstream.resume.set()
    consumer.join(10)
    assert got == [[]]
    assert wait_for_no_threads(2.0) == []


def test_a_generator_being_run_is_closed_by_its_consumer_when_closed_from_another_thread():
    """close() from another thread while the consumer was inside the upstream generator raised
    "generator already executing", and left the rest of the close (the user's finally) undone."""
    inside, release, closed_in = threading.Event(), threading.Event(), []

    def gen():
        try:
            for i in range(100):
                if i == 3:
                    inside.set()
                    release.wait(10)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)
    it = iter(fl.IterableRecords(gen).map(lambda r: r, workers=2))
    got = []
    consumer = threading.Thread(target=lambda: got.extend(it), name="consumer")
    consumer.start()
    assert inside.wait(10)
    it.close()   # the consumer is inside gen(): left for it to close
    release.set()
    consumer.join(10)
    assert not consumer.is_alive() and closed_in == ["consumer"] and got == got[:3]
    assert wait_for_no_threads(2.0) == []


class Blocking(fl.Source):
    """Records 0..n-1; reading record `hold_at` waits for `release`."""

    def __init__(self, n, hold_at):
        self.n, self.hold_at = n, hold_at
        self.holding, self.release = threading.Event(), threading.Event()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = self._check_index(i)
        if i == self.hold_at:
            self.holding.set()
            self.release.wait(10)
        return {"n": i}


@pytest.mark.parametrize("stream", [False, True])
def test_an_iterator_closed_from_another_thread_leaves_the_rest_of_the_epoch(stream):
    """A close() from another thread ended the pass as the epoch's end: the loader stood at the next
    epoch, and the rest of this one was never read. It is a break, as in the consumer's own thread."""
    source = Blocking(40, hold_at=20)
    loader = fl.Loader(source.map(lambda r: r) if stream else source, batch_size=4, workers=1, prefetch=1,
                       fields={"n": None})
    it = iter(loader)
    got = []
    consumer = threading.Thread(target=lambda: got.extend(b["n"] for b in it))
    consumer.start()
    assert source.holding.wait(10)
    threading.Timer(0.2, source.release.set).start()   # the read in flight returns while close() waits
    it.close()
    consumer.join(10)
    assert not consumer.is_alive()
    taken = [n for b in got for n in b]
    assert taken == list(range(len(taken))) and len(taken) < 40
    assert loader.state_dict()["epoch"] == 0
    assert [n for b in loader for n in b["n"]] == list(range(len(taken), 40))   # the rest of epoch 0
    assert wait_for_no_threads(2.0) == []


class SlowPerSample(Field):
    """Writes int(value), taking `per_sample` seconds a sample with the GIL released (a decode of a very
    large image); `inside` is set once a fill has begun and `release`, when given, holds every fill."""

    def __init__(self, per_sample, release=None):
        self.name, self.per_sample, self.release = "n", per_sample, release
        self.inside = threading.Event()

    def outputs(self):
        return [Output(self.name, (), np.dtype(np.int64))]

    def fill(self, values, outs, ctx):
        self.inside.set()
        if self.release is not None:
            self.release.wait(10)
        time.sleep(self.per_sample * len(values))
        outs[self.name][:len(values)] = values
        return {}


def first_batch_in_background(field, n, workers):
    """An iterator over ``n`` numbers through ``field``, its first batch (all ``n``) being filled by a
    consumer thread; returned once a fill has begun, with that thread."""
    loader = fl.Loader(fl.zip(n=fl.ListSource(list(range(n)), "numbers")), batch_size=n, workers=workers,
                       fields={"n": field})
    it = iter(loader)
    consumer = threading.Thread(target=lambda: next(it, None), daemon=True)
    consumer.start()
    assert field.inside.wait(10)
    return it, consumer


def test_closing_during_the_first_batch_of_slow_samples_stops_the_workers_promptly():
    """Before any sample's time was measured, a worker filled 8 samples between looks at the stop flag:
    closing during the first batch of very large images kept the workers 4 s (8 x 0.5 s) instead of one
    sample's time, and warned that they were stuck."""
    it, consumer = first_batch_in_background(SlowPerSample(per_sample=0.5), 16, workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        it.close()
        left = wait_for_no_threads(10.0)
        took = time.monotonic() - t0
    assert left == [] and took < 2.0, took
    assert [str(w.message) for w in caught] == []
    consumer.join(10)


def test_a_fill_thread_that_will_not_stop_is_named_with_what_it_is_in():
    """The warning said a fill thread was in "a user function or a storage read", though a fill thread is
    in the loader's chunk fill: its records' read, or a field's fill of one sample (a decode)."""
    release = threading.Event()
    it, consumer = first_batch_in_background(SlowPerSample(per_sample=0.0, release=release), 8, workers=1)
    try:
        with pytest.warns(RuntimeWarning, match=r"fill thread\(s\) fastload-fill_0 still inside a chunk fill "
                                                r"\(reading its records, or one sample's decode or Field.fill\)"):
            it.close()
    finally:
        release.set()
    assert wait_for_no_threads(10.0) == []
    consumer.join(10)


EXIT_MID_EPOCH = """
import atexit, threading, time
import numpy as np
import fastload as fl
from fastload.pipeline.fields import Field, Output

started = threading.Event()

class Slow(Field):
    name = "n"

    def outputs(self):
        return [Output("n", (), np.dtype(np.int64))]

    def fill(self, values, outs, ctx):
        started.set()
        time.sleep(0.05)
        outs["n"][:len(values)] = values
        return {}

loader = fl.Loader(fl.zip(n=fl.ListSource(list(range(64)), "numbers")), batch_size=4, workers=1,
                   fields={"n": Slow()})

def train():
    while True:
        for batch in loader:
            pass

threading.Thread(target=train, daemon=True).start()
atexit.register(time.sleep, 0.5)   # work at exit (a flush, a checkpoint): the daemon thread runs meanwhile
started.wait(10)
"""


def test_exit_while_a_daemon_thread_is_mid_epoch_is_quiet():
    """The interpreter's exit refuses new work to every thread pool while it waits for their threads to
    finish theirs; a daemon thread still iterating then asked for more, and printed "RuntimeError: cannot
    schedule new futures after interpreter shutdown" as the program ended."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HOME, os.environ.get("PYTHONPATH")) if p))
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", EXIT_MID_EPOCH], capture_output=True, text=True, timeout=60,
                           env=env, cwd=os.path.dirname(HOME) or "/")   # not a checkout's unbuilt fastload
        assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]


# -- a user's own Source and Field, held to their protocols ----------------------------------------

class Rows(fl.Source):
    """Records {"v": [i, 1]}; `bad` rows raise RecordError, `none` rows are None, `short` drops the
    last record of every gather (a bug in the source)."""

    def __init__(self, n=8, bad=(), none=(), short=False, broken_first=False):
        self.n, self.bad, self.none, self.short, self.broken_first = n, bad, none, short, broken_first

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = self._check_index(i)
        if i == 0 and self.broken_first:
            raise FileNotFoundError("no such file: /data/000.bin")
        if i in self.bad:
            raise fl.RecordError(self.record_id(i), "corrupt row")
        return None if i in self.none else {"v": [float(i), 1.0]}

    def gather(self, indices):
        out = [self[i] for i in indices.tolist()]
        return out[:-1] if self.short else out


class Squares(Field):
    """Follows Field.fill's protocol: values[i] into outs[name][i]; `fail` maps a value's first
    number to the key it reports a failure under (None: its own row)."""

    def __init__(self, fail=None):
        self.name, self.fail = "v", fail or {}

    def outputs(self):
        return [Output(self.name, (2,), np.dtype(np.float32))]

    def fill(self, values, outs, ctx):
        bad = {}
        for i, v in enumerate(values):
            outs[self.name][i] = np.square(v)   # None would raise: a record that was not read is not given
            if v[0] in self.fail:
                bad[i if self.fail[v[0]] is None else self.fail[v[0]]] = "refused"
        return bad


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_fields_fill_is_not_given_the_records_that_could_not_be_read(policy):
    """A user's Field got None for a record the source could not read (or that was None), raised on
    it, and that error replaced the record's own under either policy."""
    loader = fl.Loader(Rows(bad=(2,), none=(5,)), batch_size=4, fields={"v": Squares()}, on_error=policy)
    if policy == "raise":
        with pytest.raises(fl.RecordError, match=r"^Rows\[2\]: corrupt row$"):
            list(loader)
        return
    with pytest.warns(RuntimeWarning, match="skipping"):
        got = [row for b in loader for row in b["v"].tolist()]
    assert got == [[i * i, 1.0] for i in (0, 1, 3, 4, 6, 7)]
    assert loader.stats()["failures"] == [("Rows[2]", "corrupt row"), ("Rows[5]", "the record is None")]


def test_failures_a_field_reports_must_be_rows_it_was_given():
    """Key 99 was an IndexError naming no field, "3" a TypeError, and -1 blamed (and skipped) record 0
    for what record 3 did."""
    for key in (99, "3", -1, True):
        loader = fl.Loader(Rows(n=4), batch_size=4, workers=0, fields={"v": Squares({3.0: key})}, on_error="skip")
        with pytest.raises(TypeError, match=rf"^field 'v': Squares.fill returned failures keyed \[{key!r}\]; the "
                                            r"keys are rows of the \d values it was given, 0\.\.\d$"):
            list(loader)
    loader = fl.Loader(Rows(n=4), batch_size=4, fields={"v": Squares({3.0: None})}, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        assert [b["v"][:, 0].tolist() for b in loader] == [[0.0, 1.0, 4.0]]
    assert loader.stats()["failures"] == [("Rows[3]", "field 'v': refused")]


def test_a_gather_that_returns_another_number_of_records_is_an_error():
    """The batch's last row kept an earlier batch's bytes beside the pass-through columns' shorter list."""
    with pytest.raises(fl.StageError, match=r"stage 'source' failed on record 'one of (\d) records: .*ValueError: "
                                            r"Rows\.gather returned \d records for \1 indices"):
        list(fl.Loader(Rows(short=True), batch_size=4, fields={"v": Squares()}))


def test_a_first_record_that_raises_while_the_loader_is_made_is_named():
    for policy in ("raise", "skip"):
        with pytest.raises(fl.StageError, match=r"^stage 'source' failed on record 'Rows\[0\]': FileNotFoundError: "
                                                r"no such file: /data/000.bin$"):
            fl.Loader(Rows(broken_first=True), batch_size=4, fields={"v": Squares()}, on_error=policy)


def test_an_outputs_shape_is_checked_when_it_is_declared():
    for shape in (2, (2.0,), (-1,), "2", (True,)):
        with pytest.raises(TypeError, match=r"^Output 'v': shape must be a tuple of sizes >= 0"):
            Output("v", shape, np.dtype(np.float32))
    assert Output("v", [np.int64(2), 3], np.dtype(np.float32)).shape == (2, 3)


# -- an interrupt at any moment: a KeyboardInterrupt, every thread stopped, close() returning -----

def _interrupting_start(monkeypatch, prefix, nth, after_start):
    """Thread.start raising KeyboardInterrupt for the nth thread named ``prefix...``, as a Ctrl-C
    arriving while start() waits for the new thread does (before or after the thread runs)."""
    real, seen = threading.Thread.start, [0]

    def start(self):
        if self.name.startswith(prefix):
            seen[0] += 1
            if seen[0] == nth:
                if after_start:
                    real(self)
                raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(threading.Thread, "start", start)


@pytest.mark.parametrize("after_start", [False, True])
def test_an_interrupt_while_a_pipeline_starts_its_threads_is_a_keyboard_interrupt(monkeypatch, after_start):
    """The join of a stage thread whose start() was interrupted raised RuntimeError ("cannot join
    thread before it is started"), which replaced the KeyboardInterrupt."""
    _interrupting_start(monkeypatch, "fastload-", 2, after_start)
    pipeline = fl.GeneratorPipeline(list(range(10)), lambda x: x + 1)
    with pytest.raises(KeyboardInterrupt):
        list(pipeline)
    monkeypatch.undo()
    assert wait_for_no_threads() == []


def test_an_interrupt_in_a_workers_start_leaves_no_thread_behind(image_folder, monkeypatch):
    """A fill thread interrupted in its start() once running was not listed by its pool, whose
    shutdown sent a stop to each thread listed: it waited for work for ever, one per Ctrl-C."""
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, workers=2, transforms=[fl.CenterCrop(16)])
    want = [y.tolist() for _, y in loader]
    for _ in range(3):   # three notebook cells, each interrupted
        _interrupting_start(monkeypatch, "fastload-fill", 1, after_start=True)
        with pytest.raises(KeyboardInterrupt):
            list(loader)
        monkeypatch.undo()
        assert wait_for_no_threads(2.0) == []
    assert [y.tolist() for _, y in loader] == want   # the epoch again, whole


def test_closing_a_pipeline_whose_coroutine_step_is_stuck_warns_and_returns():
    """close() warned of the stuck stage, then closed its coroutine while that thread ran it:
    "ValueError: generator already executing" (and, leaving a loop, an "Exception ignored")."""
    release = threading.Event()

    entered = threading.Event()

    def stuck():
        n = 0
        while True:
            x = yield
            n += 1
            if n == 3:
                entered.set()
                release.wait()
            yield x
    pipeline = fl.GeneratorPipeline(list(range(100)), stuck())
    it = iter(pipeline)
    next(it), next(it)
    assert entered.wait(10)   # the step's thread is now waiting inside it
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="still inside"):
        pipeline.close()
    assert time.monotonic() - t0 < 3
    release.set()
    assert wait_for_no_threads(2.0) == []


@pytest.mark.parametrize("workers", [0, 4])
def test_an_interrupt_raised_from_another_thread_reaches_a_consumer_waiting_on_a_map(workers):
    """_thread.interrupt_main (a watchdog's, a notebook kernel's) is taken between bytecodes: a
    consumer waiting on a threaded map's result with no timeout never saw it."""
    release = threading.Event()
    stream = fl.ListSource(list(range(50))).map(lambda r: release.wait() if r == 2 else r, workers=workers)
    if not workers:
        stream = stream.prefetch(2)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # the stalled call's thread, named at the stop
            for _ in stream:
                pass
        assert time.monotonic() - t0 < 0.5 + 1 + 3   # the timer, the stop's wait for the stalled call, slack
    finally:
        release.set()
        timer.cancel()
    assert wait_for_no_threads(2.0) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_call_raising_timeout_error_is_raised_not_waited_for(workers):
    """TimeoutError is concurrent.futures.TimeoutError: a wait for a result in slices took the
    call's own (a socket timeout, a urlopen(timeout=)) for "not done yet", and spun for ever."""
    def fetch(r):
        if r == 3:
            raise TimeoutError("the server did not answer in 5 s")
        return r
    done = threading.Event()
    failure = []

    def consume():
        try:
            list(fl.ListSource(list(range(10))).map(fetch, workers=workers))
        except Exception as e:   # noqa: BLE001  (what reaches the consumer, checked below)
            failure.append(e)
        done.set()
    threading.Thread(target=consume, daemon=True).start()
    assert done.wait(10), "the consumer is still waiting"
    assert isinstance(failure[0].__cause__ or failure[0], TimeoutError), failure
    assert "did not answer" in str(failure[0].__cause__ or failure[0])
