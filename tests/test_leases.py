"""A batch stays valid for as long as anyone holds it: lists, epoch boundaries, two iterators,
threads, JAX's asynchronous dispatch, Keras's own workers. The reference is always a
``copy=True`` Loader, whose arrays are owned outright."""
import gc
import os
import sys
import threading

import numpy as np
import pytest

import fastload as fl
from fastload.memory.pool import SlotPool
from fastload.pipeline.fields import Output

TR = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.ColorJitter(0.3, 0.3, 0.3)]


def make(image_folder, **kw):
    args = dict(batch_size=4, shuffle=True, seed=5, transforms=TR, workers=2)
    args.update(kw)
    return fl.Loader(fl.ImageFolder(image_folder), **args)


def owned(image_folder, epoch, **kw):
    ref = make(image_folder, copy=True, **kw)
    ref.set_epoch(epoch)
    return [tuple(np.array(a) for a in b) for b in ref]


def assert_same(got, expected):
    assert len(got) == len(expected), (len(got), len(expected))
    for i, ((x, y), (ex, ey)) in enumerate(zip(got, expected)):
        assert x.shape == ex.shape and x.dtype == ex.dtype, i
        np.testing.assert_array_equal(np.asarray(x), ex, err_msg=f"batch {i}")
        np.testing.assert_array_equal(np.asarray(y), ey, err_msg=f"labels of batch {i}")


def test_list_of_batches_without_copy(image_folder):
    loader = make(image_folder)
    kept = list(loader)
    assert_same(kept, owned(image_folder, 0))
    assert len({x.__array_interface__["data"][0] for x, _ in kept}) == len(kept)   # the pool grew
    assert all(not x.flags.owndata for x, _ in kept)                                # still zero-copy views


def test_last_batch_survives_the_next_epoch(image_folder):
    loader = make(image_folder)
    *_, last = loader
    last_copy = [a.copy() for a in last]
    first_of_next = next(iter(loader))             # epoch 1 starts while `last` is held
    for a, b in zip(last, last_copy):
        np.testing.assert_array_equal(a, b)
    assert_same([first_of_next], owned(image_folder, 1)[:1])


def test_copy_true_batches_are_filled_in_buffers_of_their_own(image_folder):
    """copy=True: the workers fill a new buffer for each batch, which the consumer then owns outright:
    no ring of slots is kept and nothing is copied out of one; the values are the leased batches'."""
    loader = make(image_folder, copy=True, batch_size=5)   # 24 images: the last batch has 4
    got = list(loader)
    leased = [tuple(np.array(a) for a in b) for b in make(image_folder, batch_size=5)]
    assert_same(got, leased)
    assert [len(x) for x, _ in got] == [5, 5, 5, 5, 4]
    assert loader.stats()["buffer_slots"] == 0 and loader.stats()["buffer_bytes"] == 0
    arrays = [a for batch in got for a in batch]   # the short last batch too: a buffer of its own size
    assert all(type(a) is np.ndarray and a.base is None and a.flags.owndata and a.flags.writeable for a in arrays)
    assert len({a.__array_interface__["data"][0] for a in arrays}) == len(arrays)
    got[0][0][...] = 0   # the caller's to write into: no other batch changes
    assert_same(got[1:], leased[1:])


def test_two_iterators_over_one_loader_are_independent(image_folder):
    loader = make(image_folder)
    pairs = list(zip(iter(loader), iter(loader)))
    ref = owned(image_folder, 0)
    assert_same([a for a, _ in pairs], ref)
    assert_same([b for _, b in pairs], ref)


def test_two_threads_iterating_one_loader(image_folder):
    loader = make(image_folder, workers=1)
    its = [iter(loader), iter(loader)]      # both start at epoch 0
    results, errors = {}, []

    def run(k):
        try:
            results[k] = list(its[k])
        except Exception as e:    # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ref = owned(image_folder, 0)
    assert_same(results[0], ref)
    assert_same(results[1], ref)


def test_batch_at_is_what_iteration_yields(image_folder):
    loader = make(image_folder)
    ref = owned(image_folder, 2)
    got = [loader.batch_at(b, epoch=2) for b in reversed(range(len(loader)))][::-1]
    assert_same(got, ref)
    with pytest.raises(IndexError):
        loader.batch_at(len(loader), epoch=2)


def test_synchronous_loop_keeps_prefetch_plus_two_slots(image_folder):
    loader = make(image_folder, prefetch=3)
    for _ in range(2):
        for x, y in loader:
            pass
    assert loader.stats()["buffer_slots"] == 3 + 2


def test_slots_grown_for_kept_batches_are_given_back_after_a_pass_without_them(image_folder):
    loader = make(image_folder, prefetch=1)
    kept = list(loader)                        # one epoch held: the pool grows to hold it
    assert loader.stats()["buffer_slots"] >= len(kept) > 1 + 2
    again = list(loader)                       # a pass begins while every kept slot is still viewed
    assert_same(kept, owned(image_folder, 0))  # nothing a batch still views was given back
    assert_same(again, owned(image_folder, 1))
    del kept, again
    gc.collect()
    for _ in range(2):                         # the second pass begins after one that needed 3 slots
        for _ in loader:
            pass
    assert loader.stats()["buffer_slots"] == 1 + 2
    assert loader.stats()["buffer_bytes"] == 3 * loader._pool.slot_bytes


def test_slots_read_by_asynchronous_copies_are_given_back_once_read():
    class Done:   # a copy's event that has completed
        def query(self):
            return True

        def synchronize(self):
            pass
    pool = SlotPool([Output("x", (4,), np.dtype(np.float32))], 2, 3, guard_release=Done)
    kept = [pool.acquire() for _ in range(10)]   # every release files its slot behind an event
    assert len(pool) == 10
    del kept
    gc.collect()
    assert pool.trim() == 0 and len(pool) == 10  # the pass that held them all has just ended
    assert pool.trim() == 7 and len(pool) == 3   # a pass that held none


def test_a_consumer_holding_batches_every_pass_keeps_its_slots(image_folder):
    loader = make(image_folder, prefetch=1)
    seen = []
    for _ in range(4):
        last = []
        for b in loader:
            last = (last + [b])[-3:]           # the last three batches held, as an async consumer does
        seen.append({s["image"].__array_interface__["data"][0] for s in loader._pool.slots()})
        del b, last
    assert len(seen[0]) > 1 + 2 and seen[1] == seen[2] == seen[3]   # no slot dropped and made again


def test_slot_returns_when_the_last_view_is_dropped():
    pool = SlotPool([Output("x", (2,), np.dtype(np.float32))], batch_size=3, slots=1)
    lease = pool.acquire()
    first = lease.arrays["x"]
    view = lease.view("x", 3)
    sub = view[1:]                 # a view of the view keeps the lease too
    del lease, view
    gc.collect()
    second = pool.acquire()        # the only slot is still held by `sub`: the pool grows
    assert second.arrays["x"] is not first and len(pool) == 2
    del sub
    third = pool.acquire()         # released the moment `sub` went: reused, no new slot
    assert third.arrays["x"] is first and len(pool) == 2
    del second, third


class _ManualEvent:
    """A stand-in for a CUDA event: completes when the test says so."""

    def __init__(self):
        self.done = False
        self.waited = False

    def query(self):
        return self.done

    def synchronize(self):
        self.waited = True
        self.done = True


def test_slot_read_by_an_async_copy_is_reused_only_after_its_event():
    pool = SlotPool([Output("x", (4,), np.dtype(np.uint8))], batch_size=2, slots=1, max_bytes=16)
    lease = pool.acquire()
    first = lease.arrays["x"]
    ev = _ManualEvent()
    lease.release_after(ev)
    del lease                      # dropped, but the copy has not finished
    other = pool.acquire()         # at its bound (two slots): grows once rather than wait
    assert other.arrays["x"] is not first
    third = pool.acquire()         # at the bound: waits for the oldest event, then reuses that slot
    assert ev.waited and third.arrays["x"] is first
    del other, third


def test_release_guard_records_an_event_for_a_users_own_copy():
    events = []

    def guard():
        events.append(_ManualEvent())
        return events[-1]
    pool = SlotPool([Output("x", (4,), np.dtype(np.uint8))], batch_size=2, slots=1, guard_release=guard)
    lease = pool.acquire()
    first = lease.arrays["x"]
    del lease                      # the user dropped the batch: an event on the current stream
    assert len(events) == 1
    again = pool.acquire()
    assert again.arrays["x"] is not first      # not reused before that event completed
    events[0].done = True
    third = pool.acquire()
    assert third.arrays["x"] is first          # completed: reused
    del again, third


def test_pool_past_its_bound_hands_out_buffers_of_their_own():
    pool = SlotPool([Output("x", (1024,), np.dtype(np.uint8))], batch_size=1, slots=2, max_bytes=2048)
    held = [pool.acquire() for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="buffers of their own"):
        extra = pool.acquire()
    assert len(pool) == 2 and pool.untracked == 1
    extra.arrays["x"][:] = 7                    # usable, just not kept
    del held, extra


def test_ring_larger_than_memory_fails_clearly(image_folder):
    loader = make(image_folder, batch_size=9000, transforms=[fl.Resize((224, 224))], max_memory=2**30)
    with pytest.raises(MemoryError, match="max_memory"):
        next(iter(loader))
    loader = make(image_folder, batch_size=2, transforms=[fl.Resize((8, 8))], dtype="uint8", max_memory=100)
    with pytest.raises(MemoryError, match=r"4 batch slots of 400 bytes needs 1.56 KiB, over the bound of 100 bytes"):
        next(iter(loader))


def test_jax_device_put_with_async_dispatch_sees_every_batch(image_folder):
    jax = pytest.importorskip("jax")
    loader = make(image_folder, layout="NHWC")
    step = jax.jit(lambda x: (x * 2.0).sum(axis=(1, 2, 3)))
    outs = [step(jax.device_put(x)) for x, _ in loader]   # dispatched asynchronously, buffers aliased
    ref = owned(image_folder, 0, layout="NHWC")
    for out, (x, _) in zip(outs, ref):
        np.testing.assert_allclose(np.asarray(out), (x * 2.0).sum(axis=(1, 2, 3)), rtol=1e-5)


def test_jax_output_is_nhwc_with_int32_labels(image_folder):
    pytest.importorskip("jax")
    loader = make(image_folder, output="jax")
    x, y = next(iter(loader))
    assert x.shape == (4, 16, 16, 3) and str(y.dtype) == "int32"
    assert_same([(np.asarray(x), np.asarray(y))], owned(image_folder, 0, layout="NHWC")[:1])


def test_keras_pydataset_with_workers_sees_the_reference_batches(image_folder):
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    loader = make(image_folder, layout="NHWC")
    seen, lock = {}, threading.Lock()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(loader)

        def __getitem__(self, i):
            x, y = loader.batch_at(i, epoch=0)
            with lock:
                seen.setdefault(i, []).append((x, y))     # kept: Keras may hold it in its queue too
            return x, y
    ds = Batches(workers=2, use_multiprocessing=False, max_queue_size=4)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
    model.fit(ds, epochs=2, verbose=0)
    ref = owned(image_folder, 0, layout="NHWC")
    assert sorted(seen) == list(range(len(loader)))
    for i, got in seen.items():
        for x, y in got:
            assert_same([(x, y)], ref[i:i + 1])


FAULTS_PER_EPOCH = """
import os, resource, sys
import numpy as np
import fastload as fl
import webdataset as wds
path = os.path.join(sys.argv[1], "big.tar")
rng = np.random.default_rng(0)
with wds.TarWriter(path) as w:   # 150 KB members: a stream's reader allocates them, workers free them
    for i in range(128):
        w.write({"__key__": f"s{i:04d}", "bin": rng.integers(0, 256, 150_000, dtype=np.uint8).tobytes(), "cls": i % 3})
loader = fl.Loader(fl.TarShards(path).stream(shuffle_buffer=100), batch_size=16, fields={"bin": None, "cls": "index"})
faults = []
for e in range(20):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert sum(len(b["cls"]) for b in loader) == 128
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
from fastload.memory.heap import keep_freed_memory
high = sum(f > 1000 for f in faults[3:])   # epochs, once the heaps are grown, that faulted their memory back
print("pad", keep_freed_memory(), "high", high, *faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, and page faults counted by Linux")
def test_freed_memory_is_kept_rather_than_faulted_back_page_by_page(tmp_path):
    """glibc returns a heap's free top to the kernel, and takes it back a zeroed page at a time: for
    samples one thread allocates and another frees, a fault per 4 KiB of every sample, every epoch.
    A Loader keeps 64 MiB at each heap's top (M_TOP_PAD), once per process, unless told not to."""
    from _child import run_python
    kept = run_python(["-c", FAULTS_PER_EPOCH, str(tmp_path)]).split()
    left = run_python(["-c", FAULTS_PER_EPOCH, str(tmp_path)], env={"FASTLOAD_MALLOC_TOP_PAD": "0"}).split()
    assert kept[:2] == ["pad", str(64 << 20)] and left[:2] == ["pad", "None"]
    # 128 samples of 150 KB (4,700 pages): the first epoch faults them in (some 4,900 faults: the count
    # sees them); then, with the memory kept, an epoch faults a few dozen times, but for one at most (a
    # heap still growing). When it goes back, an epoch faults some 4,900 times again or, as the threads'
    # frees happen to interleave, a few hundred: 2 to 17 epochs of 17 are high, most often 8 or more.
    assert int(kept[4]) > 4000 and int(left[4]) > 4000, (kept, left)
    assert int(kept[3]) <= 1 and int(left[3]) >= int(kept[3]), (kept, left)
    user = run_python(["-c", FAULTS_PER_EPOCH, str(tmp_path)], env={"MALLOC_TOP_PAD_": str(1 << 20)}).split()
    assert user[:2] == ["pad", "None"]   # the user's own setting stands


FAULTS_PER_COPY = """
import resource
import numpy as np
from fastload.memory.heap import keep_freed_memory
print("pad", keep_freed_memory())   # as the first Loader to iterate does, before the process freed a large block
batch = np.ones((64, 3, 64, 64), np.float32)   # 3 MiB: a 64 px batch, as copy=True or a user's own code copies it
faults = []
for _ in range(50):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kept = batch.copy()
    del kept
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print("faults", faults[0], sum(faults[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, and page faults counted by Linux")
def test_keeping_freed_memory_leaves_large_allocations_on_the_heap():
    """Setting M_TOP_PAD turns off glibc's sliding mmap threshold: left at 128 KiB, each copy of a batch
    (copy=True, a user's np.stack) would be mapped afresh and faulted in a zeroed page at a time, every
    time (768 faults per 3 MiB copy; copy=True ran at half speed at 64 px). The threshold is set with the
    pad to where it would have slid, unless the user set it."""
    from _child import run_python
    kept = run_python(["-c", FAULTS_PER_COPY]).split()
    assert kept[:2] == ["pad", str(64 << 20)]
    # The first copy faults its pages in (768 of 4 KiB; fewer where huge pages back part of it); the other
    # 49 reuse them: the old code faulted every one in again, 49 x 769 times.
    assert int(kept[3]) > 0 and int(kept[4]) < 49, kept
    user = run_python(["-c", FAULTS_PER_COPY], env={"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}).split()
    assert user[:2] == ["pad", str(64 << 20)]
    assert int(user[4]) >= 49 * 200, user   # the user's own threshold stands: every copy mapped afresh
