"""GeneratorPipeline: the classic generator tutorial, run unchanged with Python and compiled stages."""
import functools
import gc
import pathlib
import threading
import time

import numpy as np
import pytest
from helpers import write_image_folder
from PIL import Image
from threadutil import finishes, in_fork, new_threads
from tutorial import add_noise, py_augment, py_read_images, py_rescale, py_shuffle

from fastload import stages
from fastload.errors import StageError
from fastload.pipeline import rng as flrng
from fastload.pipeline.generators import GeneratorPipeline
from fastload.sources.base import ListSource
from fastload.sources.folders import ImageFolder

SIZE = (32, 32)
MEAN = [103.939, 116.779, 123.68]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_image_folder(root, ["ant", "bee", "cow"], per_class=9, size_range=(40, 90), seed=3, quality=90)
    return str(root)


def tutorial(folder, read_images, augment, rescale, shuffle_samples):
    return GeneratorPipeline(
        ImageFolder(folder).batches(8, labels="onehot"),
        read_images(SIZE),
        augment(rotate90=True),
        rescale(mean=MEAN),
        functools.partial(add_noise, seed=1234),     # a generator-function stage; deterministic noise
        shuffle_samples(seed=0),
    )


def test_tutorial_python_and_compiled_agree(folder):
    py = finishes(lambda: list(tutorial(folder, py_read_images, py_augment, py_rescale, py_shuffle)))
    fast_pipeline = tutorial(folder, stages.read_images, stages.augment, stages.rescale, stages.shuffle_samples)
    assert len(fast_pipeline) == 4
    fast = finishes(lambda: list(fast_pipeline))    # all batches held at once: no buffer may be reused
    assert len(py) == len(fast) == 4
    for (xp, yp), (xf, yf) in zip(py, fast):
        assert xf.shape == xp.shape == (len(yp), *SIZE, 3) and xf.dtype == np.float32
        np.testing.assert_array_equal(yf, yp)
        assert np.abs(xf - xp).mean() <= 1.0        # decoder + resampler rounding only


def test_read_images_matches_pillow(folder):
    paths = ImageFolder(folder).paths[:10]
    stage = stages.read_images((24, 40), workers=2)
    try:
        x, tag = stage((paths, "tag"))
        assert tag == "tag" and x.shape == (10, 24, 40, 3) and x.dtype == np.float32
        for p, got in zip(paths, x):
            ref = np.asarray(Image.open(p).convert("RGB").resize((40, 24), Image.BILINEAR), dtype=np.float32)
            assert np.abs(got - ref).mean() <= 1.0
        held = x
        x2 = stage(paths)
        assert x2 is not held                        # a batch still referenced is never overwritten
        np.testing.assert_array_equal(x2, held)
        del held, x, x2
    finally:
        stage.close()


@pytest.mark.parametrize("size", [np.int64(16), [16], (np.int32(16), 16)])
def test_read_images_takes_sizes_as_the_transforms_do(folder, size):
    # An int, a NumPy int, [s] or an (h, w) pair, as Resize takes them (a NumPy int was "not iterable").
    paths = ImageFolder(folder).paths[:3]
    a, b = stages.read_images(size, workers=1), stages.read_images(16, workers=1)
    try:
        assert a.target_size == (16, 16)
        np.testing.assert_array_equal(a((paths, 0))[0], b((paths, 0))[0])
    finally:
        a.close(), b.close()
    with pytest.raises(TypeError, match="read_images target size must be an int or a"):
        stages.read_images("16")


def test_read_images_bad_file_names_it(tmp_path, folder):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    stage = stages.read_images(SIZE)
    p = GeneratorPipeline([[ImageFolder(folder).paths[0], str(bad)]], stage)
    with pytest.raises(StageError, match="read_images") as info:
        finishes(lambda: list(p))
    assert "broken.jpg" in str(info.value)


def test_compiled_augment_rescale_shuffle_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 5, 5, 3)).astype(np.float32)
    y = np.arange(6)
    co = py_augment(seed=4)
    next(co)
    aug = stages.augment(seed=4)
    for _ in range(3):                               # successive batches get new draws, in step
        ref = co.send((x, y))
        next(co)
        got = aug((x, y))
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1] is y
    np.testing.assert_array_equal(stages.rescale(MEAN)(x), x[..., ::-1] - np.float32(MEAN))
    np.testing.assert_allclose(stages.rescale([1, 2, 3], std=[2, 4, 8], order="RGB")(x),
                               (x - np.float32([1, 2, 3])) / np.float32([2, 4, 8]), rtol=1e-6)
    u8 = x.astype(np.uint8)
    assert stages.rescale(MEAN)(u8).dtype == np.float32
    paths = [f"p{i}" for i in range(6)]
    xs, ys, ps = stages.shuffle_samples(seed=9)((x, y, paths))
    perm = flrng.generator(9, flrng.STAGE, 0).permutation(6)
    np.testing.assert_array_equal(xs, x[perm])
    np.testing.assert_array_equal(ys, y[perm])
    assert ps == [paths[i] for i in perm]
    with pytest.raises(ValueError, match="square"):
        stages.augment()(np.zeros((2, 4, 5, 3), np.float32))


def test_numbered_stages_under_a_threaded_map_draw_by_stream_position():
    """augment/shuffle_samples number batches as they are called; under .map(..., workers=N) the
    calls came in thread order, so batches got each other's draws. Given to the map itself, a
    stage's batches are numbered in stream order (the draws of a sequential map, for any worker
    count, continuing across passes); called from inside another function on the map's threads,
    it refuses, naming the way out."""
    import time

    import fastload as fl
    imgs = [np.random.default_rng(i).random((4, 6, 6, 3)).astype(np.float32) for i in range(16)]
    labels = [np.arange(4) + 10 * i for i in range(16)]

    def load(i):   # uneven cost: threads finish out of order
        time.sleep(0.01 if i % 3 == 0 else 0)
        return imgs[i], labels[i]

    def reference(make, passes):
        stage = make(seed=3)
        return [[tuple(np.copy(v) for v in stage(load(i))) for i in range(16)] for _ in range(passes)]

    for make in (stages.augment, stages.shuffle_samples):
        want = reference(make, 2)
        for workers in (2, 4):
            stage = make(seed=3)
            stream = fl.ListSource(list(range(16))).map(load, workers=workers).map(stage, workers=workers)
            for p in range(2):
                got = [tuple(np.copy(v) for v in b) for b in stream]
                assert len(got) == 16
                for g, w in zip(got, want[p]):
                    np.testing.assert_array_equal(g[0], w[0])
                    np.testing.assert_array_equal(g[1], w[1])
        # passes that stop short (take): what the map read ahead and never yielded takes no number,
        # so each pass goes on from the last batch yielded, as a sequential map's does
        seq, par = make(seed=3), make(seed=3)
        src = fl.ListSource(list(range(16))).map(load, workers=2)
        short = [tuple(np.copy(v) for v in b) for _ in range(3) for b in src.map(seq).take(5)]
        threaded = [tuple(np.copy(v) for v in b) for _ in range(3) for b in src.map(par, workers=3).take(5)]
        assert len(threaded) == len(short) == 15
        for g, w in zip(threaded, short):
            np.testing.assert_array_equal(g[0], w[0])
            np.testing.assert_array_equal(g[1], w[1])
        stage = make(seed=3)
        hidden = fl.ListSource(list(range(16))).map(lambda i: stage(load(i)), workers=2)
        with pytest.raises(StageError, match="its own map") as info:
            list(hidden)
        assert isinstance(info.value.__cause__, RuntimeError)
        # in order (no workers), the same function is fine
        got = list(fl.ListSource(list(range(16))).map(lambda i, s=make(seed=3): s(load(i))))
        np.testing.assert_array_equal(got[5][0], want[0][5][0])


# ------------------------------------------------------------- step kinds

@pytest.mark.parametrize("make", [stages.augment, stages.shuffle_samples])
def test_stage_seeds_are_checked_when_made(make):
    # seed=-1 failed at the first batch on the stage thread, naming no seed; 2.7 became 2.
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        make(seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer, got float 2.7"):
        make(seed=2.7)
    assert make(seed=np.int64(5)).seed == 5


def test_coroutine_is_primed_and_may_be_primed_already():
    def double():
        while True:
            x = yield
            yield 2 * x
    primed = double()
    next(primed)
    assert list(GeneratorPipeline(range(5), double())) == [0, 2, 4, 6, 8]
    assert list(GeneratorPipeline(range(5), primed)) == [0, 2, 4, 6, 8]


def test_coroutine_may_drop_or_repeat_and_may_return():
    def odd_twice():
        while True:
            x = yield
            if x % 2 == 0:
                continue                 # back to the receiving yield: nothing emitted
            yield x
            yield -x                     # a second emission before the next receive

    def first_three():
        for _ in range(3):
            x = yield
            yield x
    assert list(GeneratorPipeline(range(6), odd_twice())) == [1, -1, 3, -3, 5, -5]
    pipeline = GeneratorPipeline(range(100), first_three())
    assert list(pipeline) == [0, 1, 2]
    # the coroutine returned: a second run would be silently empty (an epoch of nothing), so it says so
    with pytest.raises(RuntimeError, match=r"coroutine step\(s\) \['first_three'\] returned"):
        list(pipeline)


def test_one_yield_coroutine_is_an_error_not_an_endless_stream(monkeypatch):
    """A coroutine written with one yield took the None that resumes it after an emission for an input
    and emitted for ever: an epoch without end. After _MAX_EMITS items for one input it is an error
    naming the protocol; coroutines that keep it, however their yields are placed, run as before."""
    from fastload.pipeline import generators
    monkeypatch.setattr(generators, "_MAX_EMITS", 50)

    def one_yield():
        out = None
        while True:
            x = yield out
            out = [x]
    c = one_yield()
    next(c)
    reference = [c.send(x) for x in [1, 2, 3]]     # driven by plain send(): [[1], [2], [3]]
    p = GeneratorPipeline([1, 2, 3], one_yield())
    got = []
    with pytest.raises(StageError, match=r"'one_yield'.*#0 1.*emitted 50 items for one input.*'x = yield', "
                                         r"emits with 'yield out'") as info:
        finishes(lambda: got.extend(p))
    p.close()
    assert isinstance(info.value.__cause__, TypeError)
    assert got[:1] == reference[:1] and len(got) == 50

    def two_yields():
        while True:
            x = yield
            yield [x]

    def one_yield_ignoring_none():                 # None is nothing to do: it runs by the protocol
        out = None
        while True:
            x = yield out
            out = None if x is None else [x]

    def one_item():
        x = yield
        yield [x]

    def delegating():                              # one yield from, but two yields where it waits
        while True:
            yield from one_item()
    def step(v=None):                              # one yield that receives and emits, reached by yield from
        return (yield v)

    def through_a_helper():
        while True:
            x = yield from step()
            yield from step([x])

    def queued():                                  # one yield: None to receive, a queued value to emit
        pending = []
        while True:
            v = pending.pop(0) if pending else None
            x = yield v
            if v is None:
                pending.append([x])
    for co in (two_yields, one_yield_ignoring_none, delegating, through_a_helper, queued):
        assert list(GeneratorPipeline([1, 2, 3], co())) == reference, co.__name__


def test_generator_function_and_plain_callable_steps():
    def pairs(items):
        buf = []
        for x in items:
            buf.append(x)
            if len(buf) == 2:
                yield tuple(buf)
                buf = []
        if buf:
            yield tuple(buf)
    p = GeneratorPipeline(iter(range(5)), lambda x: x + 10, pairs, sum)
    assert list(p) == [21, 25, 14]


def test_len_comes_from_the_source():
    assert len(GeneratorPipeline(range(7), lambda x: x)) == 7
    with pytest.raises(TypeError):
        len(GeneratorPipeline(iter(range(7)), lambda x: x))
    with pytest.raises(TypeError, match="not a coroutine"):
        GeneratorPipeline(range(3), 42)


# --------------------------------------------------------------- shutdown

def test_early_break_stops_every_thread():
    before = threading.enumerate()
    for i, x in enumerate(GeneratorPipeline(range(100_000), py_passthrough(), add_one, lambda v: v)):
        if i == 3:
            break
    assert new_threads(before) == []


def test_compiled_stage_threads_stop_on_break(folder):
    before = threading.enumerate()
    src = ImageFolder(folder).batches(4)
    for i, _ in enumerate(GeneratorPipeline(src, stages.read_images(SIZE, workers=2), stages.rescale())):
        if i == 1:
            break
    assert new_threads(before) == []


def py_passthrough():
    while True:
        x = yield
        yield x


def add_one(items):
    for x in items:
        yield x + 1


def test_close_runs_user_finally_blocks():
    closed = []

    def co():
        try:
            while True:
                x = yield
                yield x
        finally:
            closed.append("co")

    def gen(items):
        try:
            for x in items:
                yield x
        finally:
            closed.append("gen")
    before = threading.enumerate()
    p = GeneratorPipeline(range(100_000), co(), gen)
    assert next(p) == 0
    time.sleep(0.05)                       # let every queue fill and every thread block
    p.close()
    assert sorted(closed) == ["co", "gen"]
    assert new_threads(before) == []
    with pytest.raises(StopIteration):
        next(p)


def test_close_before_running_closes_primed_coroutines():
    closed = []

    def co():
        try:
            while True:
                x = yield
                yield x
        finally:
            closed.append(True)
    c = co()
    next(c)
    GeneratorPipeline(range(3), c).close()
    assert closed == [True]


def test_garbage_collection_stops_threads():
    before = threading.enumerate()
    p = GeneratorPipeline(range(100_000), add_one)
    next(p)
    del p
    gc.collect()
    assert new_threads(before) == []


def test_end_of_stream_stops_threads():
    before = threading.enumerate()
    p = GeneratorPipeline(range(50), add_one, py_passthrough())
    assert list(p) == list(range(1, 51))
    assert new_threads(before) == []


# ----------------------------------------------------------------- errors

def test_failing_callable_raises_stage_error_without_hanging():
    def explode(batch):
        if batch == 13:
            raise ZeroDivisionError("division by zero in my stage")
        return batch
    got = []

    def consume():
        for x in GeneratorPipeline(range(1000), add_one, explode, py_passthrough()):
            got.append(x)
    before = threading.enumerate()
    with pytest.raises(StageError) as info:
        finishes(consume)
    err = info.value
    assert err.stage == "explode" and "explode" in str(err) and "#12 13" in str(err)
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert got == list(range(1, 13))       # everything before the failure was delivered
    assert new_threads(before) == []


def test_callable_letting_stop_iteration_out_is_a_stage_error_not_the_end():
    def first_of(x):
        return next(iter(range(x)))      # x == 0: StopIteration escapes, as a bare next() lets it
    with pytest.raises(StopIteration):   # plain Python: the call fails on that record
        [first_of(x) for x in [3, 1, 0, 2, 5]]
    got = []
    with pytest.raises(StageError) as info:
        finishes(lambda: got.extend(GeneratorPipeline([3, 1, 0, 2, 5], first_of)))
    err = info.value
    assert err.stage == "first_of" and "#2 0" in str(err)
    assert isinstance(err.__cause__, StopIteration)
    assert got == [first_of(3), first_of(1)]     # the records before it, then the error
    with pytest.raises(StageError) as fluent:    # as the fluent map reports it
        list(ListSource([3, 1, 0, 2, 5]).map(first_of))
    assert type(fluent.value.__cause__) is type(err.__cause__) and fluent.value.record == err.record


def test_failing_coroutine_and_generator_function_name_themselves():
    def fragile():
        while True:
            x = yield
            yield 1 / (x - 3)

    def fragile_gen(items):
        for x in items:
            yield [0][x]
    with pytest.raises(StageError, match=r"'fragile'.*#3 3") as info:
        finishes(lambda: list(GeneratorPipeline(range(10), fragile())))
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(StageError, match=r"'fragile_gen'.*#1 1"):
        finishes(lambda: list(GeneratorPipeline(range(10), fragile_gen)))


def test_failing_source_is_reported():
    def source():
        yield 1
        raise OSError("disk gone")
    with pytest.raises(StageError, match="disk gone") as info:
        finishes(lambda: list(GeneratorPipeline(source(), add_one)))
    assert isinstance(info.value.__cause__, OSError)


def test_a_stage_error_passed_on_keeps_its_cause():
    def inverse(x):
        return 1 / (x - 2)
    with pytest.raises(StageError, match=r"'inverse'.*#2 2") as info:    # a pipeline as the source
        finishes(lambda: list(GeneratorPipeline(GeneratorPipeline(range(5), inverse), add_one)))
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    def per_item(x):             # a step whose own stream names the stage that failed
        return list(ListSource([x]).map(inverse))
    with pytest.raises(StageError, match=r"'inverse'") as info:
        finishes(lambda: list(GeneratorPipeline(range(5), per_item)))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# ------------------------------------------------------------------ stats

def test_stats_name_the_slow_python_stage():
    def slow_python_stage(x):
        time.sleep(0.01)
        return x
    p = GeneratorPipeline(range(40), add_one, slow_python_stage)
    assert finishes(lambda: list(p)) == list(range(1, 41))
    st = p.stats()
    figures = st.as_dict()
    assert list(figures) == ["range", "add_one", "slow_python_stage", "consumer"]
    assert all(f["items"] == 40 for f in figures.values())
    assert figures["slow_python_stage"]["busy_s"] >= 0.35
    assert figures["add_one"]["wait_out_s"] > figures["add_one"]["busy_s"]
    assert "your Python stage 'slow_python_stage' limits throughput" in st.bottleneck()
    table = str(st)
    assert "slow_python_stage" in table and "items/s" in table


def test_stats_blame_the_consumer_when_the_pipeline_keeps_up():
    p = GeneratorPipeline(range(20), add_one)
    for _ in p:
        time.sleep(0.01)
    assert "training loop is the bottleneck" in p.stats().bottleneck()



def test_a_finished_pipeline_left_to_the_interpreter_exit_exits_cleanly(folder, tmp_path):
    """Collected at exit (after torch's import has torn modules down first), its close() found
    `queue` gone: 'Exception ignored in GeneratorPipeline.__del__ ... AttributeError' every run."""
    import subprocess
    import sys
    paths = [str(p) for p in sorted(pathlib.Path(folder).glob("*/*"))[:4]]
    script = (f"import torch, fastload as fl\n"
              f"pipe = fl.GeneratorPipeline([{paths[:2]!r}, {paths[2:]!r}], fl.read_images((16, 16)))\n"
              "assert sum(len(x) for x in pipe) == 4\n")
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")   # Python's warning about fork with threads
def test_a_run_advanced_in_a_forked_child_is_refused_and_goes_on_in_the_parent():
    """A child made by os.fork() that advanced its parent's run found no stage threads (they are the
    parent's) and took the end of the stream for the end of the run: it got a few items, silently."""
    p = GeneratorPipeline(range(20), lambda x: x + 1)
    it = iter(p)
    got = [next(it)]
    child = in_fork(lambda: list(it))
    assert child.startswith("RuntimeError") and "build a new GeneratorPipeline in the child" in child, child
    assert got + list(it) == list(range(1, 21))


def test_each_run_takes_one_pass_of_a_stream_and_one_call_of_a_factory():
    # Asking whether the source was one-shot (iter(source) is source) started, and threw away, a pass.
    import fastload as fl
    pipeline = GeneratorPipeline(ListSource(list(range(6))).shuffle(6, seed=1, initial=6), lambda x: x)
    runs = [list(pipeline) for _ in range(3)]
    again = ListSource(list(range(6))).shuffle(6, seed=1, initial=6)
    assert runs == [list(again) for _ in range(3)] and len({tuple(r) for r in runs}) == 3
    calls = []

    def factory():
        calls.append(1)
        return iter(range(4))
    pipeline = GeneratorPipeline(fl.IterableRecords(factory), lambda x: x * 2)
    assert [list(pipeline) for _ in range(3)] == [[0, 2, 4, 6]] * 3 and len(calls) == 3
    with pytest.raises(RuntimeError, match="one-shot iterator, already used"):
        one_shot = GeneratorPipeline(iter(range(3)), lambda x: x)
        assert list(one_shot) == [0, 1, 2]
        list(one_shot)


def test_dropping_one_of_two_iterators_over_a_run_leaves_the_other_reading_it():
    def double():
        while True:
            x = yield
            yield x * 2
    before = threading.enumerate()
    pipeline = GeneratorPipeline(list(range(10)), double())
    first = iter(pipeline)
    a = [next(first), next(first)]
    second = iter(pipeline)
    b = [next(second)]
    del second
    gc.collect()
    assert a + b + list(first) == [2 * i for i in range(10)]
    assert new_threads(before) == []


def test_a_step_failing_after_its_input_ended_names_the_last_input_not_none():
    def collect(items):
        kept = list(items)
        raise ValueError(f"flush of {len(kept)} failed")
        yield
    with pytest.raises(StageError, match=r"stage 'collect' failed on record 'after its last input, #9 9': "
                                         r"ValueError: flush of 10 failed"):
        list(GeneratorPipeline(list(range(10)), collect))


def test_compiled_stage_threads_end_with_a_run_that_reached_its_end(tmp_path):
    write_image_folder(tmp_path, classes=2, per_class=4, size_range=(20, 30), fmt="PNG")
    before = threading.enumerate()
    pipeline = GeneratorPipeline(ImageFolder(tmp_path).batches(4), stages.read_images((16, 16), workers=3))
    for _ in range(2):   # and the next run starts them again
        assert sum(len(x) for x, _ in pipeline) == 8
        assert new_threads(before) == []


def test_buffers_grown_for_a_kept_pass_are_given_back_after_a_pass_that_did_not_need_them(tmp_path):
    # A pipeline kept, for its whole life, one output buffer per batch of a pass once held in a list.
    write_image_folder(tmp_path, classes=2, per_class=24, size_range=(20, 30), fmt="PNG")
    read = stages.read_images((16, 16))
    pipeline = GeneratorPipeline(ImageFolder(tmp_path).batches(4), read)

    def buffers():
        return sum(len(pool) for pool in read._buffers._pools.values())
    for _ in pipeline:
        pass
    warm = buffers()
    held = [x for x, _ in pipeline]
    kept = [x.copy() for x in held]
    assert buffers() >= len(held) == 12 > warm
    assert all(np.array_equal(a, b) for a, b in zip(held, kept))   # none overwritten while held
    del held
    for _ in range(2):
        for _ in pipeline:
            pass
    # what a plain run holds at once varies by a buffer or two with the threads' timing (queues of 2)
    assert buffers() <= warm + 2 < len(kept)
