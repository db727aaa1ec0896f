"""The device path without a GPU: a stand-in backend with host copies and events completed by
hand exercises the same slot, event and normalisation logic CUDA runs (tests/test_gpu.py runs the
real thing where a GPU is present)."""
import mmap
from types import SimpleNamespace

import numpy as np
import pytest

import fastload as fl
from fastload.memory import pool as pool_module
from fastload.memory.pool import SlotPool
from fastload.pipeline.device import CudaBackend, current_streams_event, normalize_images
from fastload.pipeline.fields import Output
from _child import run_python

torch = pytest.importorskip("torch")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Event:
    def __init__(self):
        self.done = False

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True


class StandIn:
    """Copies are host copies into CPU tensors, each with an Event the test completes; constants
    and the normalisation are CUDA's own code (normalize_images), run on CPU tensors."""

    def __init__(self):
        self.copies, self.waited, self.constants_made = [], [], 0

    def target(self):
        return "the device"

    def copy_async(self, host, target):
        assert target == "the device"
        ev = Event()
        copy = torch.from_numpy(host.copy())
        self.copies.append((host.__array_interface__["data"][0], host.dtype, host.shape, ev, copy))
        return copy, ev

    def wait(self, event, tensors):
        self.waited.append(event)

    def current_event(self):
        return Event()

    def constants(self, values, device):
        self.constants_made += 1
        return torch.tensor(values, dtype=torch.float32)

    normalize = staticmethod(normalize_images)


def loader(image_folder, device, **kw):
    return fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=1, device=device,
                     transforms=[fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)],
                     output="torch" if isinstance(device, str) else "numpy", **kw)


@pytest.mark.parametrize("dtype, layout, tol", [("float32", "NCHW", 2e-6), ("float16", "NCHW", 2e-3),
                                                ("float32", "NHWC", 2e-6), (np.float16, "NCHW", 2e-3)])
def test_images_cross_as_uint8_and_are_normalised_on_the_device(image_folder, dtype, layout, tol):
    backend = StandIn()
    got = [tuple(np.asarray(a) for a in b) for b in loader(image_folder, backend, dtype=dtype, layout=layout)]
    host = [tuple(np.array(a) for a in b) for b in
            fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=1, dtype=dtype, layout=layout,
                      transforms=[fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)])]
    assert len(got) == len(host)
    for (x, y), (hx, hy) in zip(got, host):
        assert x.shape == hx.shape and x.dtype == hx.dtype
        np.testing.assert_allclose(x.astype(np.float32), hx.astype(np.float32), atol=tol * 4, rtol=tol)
        np.testing.assert_array_equal(y, hy)
    images = [c for c in backend.copies if c[1] == np.uint8]
    assert len(images) == len(got) and all(c[2][-1] == 3 for c in images)   # uint8 NHWC over the link
    assert len(backend.waited) == len(got)                                  # the consumer's stream waited
    assert backend.constants_made == 2                    # scale and bias reach the device once, not per batch


@pytest.mark.parametrize("dtype", ["uint8", np.uint8, np.dtype(np.uint8)])
def test_uint8_pixels_on_the_device_however_the_dtype_is_spelled(image_folder, dtype):
    # Normalised values do not fit uint8: refused when the Loader is made, as on the host (np.uint8
    # once took the float path and failed in the first batch).
    with pytest.raises(ValueError, match="uint8 output cannot hold normalised values"):
        loader(image_folder, StandIn(), dtype=dtype)
    tr = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip()]
    backend = StandIn()
    got = [np.asarray(b[0]) for b in fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=1,
                                               device=backend, transforms=tr, dtype=dtype, layout="NCHW")]
    host = [np.array(b[0]) for b in fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=1,
                                              transforms=tr, dtype="uint8", layout="NCHW")]
    assert len(got) == len(host) and backend.constants_made == 0   # the pixels as they are: no op on the device
    for x, hx in zip(got, host):
        assert x.dtype == np.uint8 and x.shape == hx.shape
        np.testing.assert_array_equal(x, hx)


def test_a_slot_is_refilled_only_after_its_copy_completed(image_folder):
    """With no copy completed, every batch of an epoch takes a slot of its own; the next epoch reuses
    the slots whose copies completed, and no other. (The workers copy a slot as soon as they filled
    it, so which copies exist when is theirs to decide: the slots are told apart by address.)"""
    backend = StandIn()
    ld = loader(image_folder, backend, prefetch=1)
    assert len(list(ld)) == 6
    images = [c[0] for c in backend.copies if c[1] == np.uint8]
    slots = ld._pool.slots()
    assert len(images) == len(set(images)) == len(slots) == 6
    address = lambda a: a.__array_interface__["data"][0]
    done = [s for s in slots if address(s["image"]) in images[:3]]
    ours = {address(a) for s in done for a in s.values()}
    for c in backend.copies:
        c[3].done = c[0] in ours                     # a slot's copies (images, labels) all complete
    before = len(backend.copies)
    assert len(list(ld)) == 6
    again = {c[0] for c in backend.copies[before:] if c[1] == np.uint8}
    assert again & set(images) == set(images[:3])   # those three slots came back, the others did not
    assert len(again) == 6


def test_cuda_without_a_gpu_is_a_clear_error(image_folder):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/test_gpu.py covers it")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        loader(image_folder, "cuda")
    torch_loader = lambda device, **kw: fl.Loader(fl.ImageFolder(image_folder), batch_size=4, device=device,
                                                  transforms=[fl.CenterCrop(8)], output="torch", **kw)
    with pytest.raises(RuntimeError, match="pin_memory=True needs torch with a CUDA device"):
        torch_loader(None, pin_memory=True)
    with pytest.raises(ValueError, match="device must be"):
        loader(image_folder, "mps")
    # torch's spellings of a device: the CPU's, an index, and what torch itself cannot read
    assert next(iter(torch_loader("cpu:0")))[0].device.type == "cpu"
    assert next(iter(torch_loader(torch.device("cpu"))))[0].device.type == "cpu"
    with pytest.raises(RuntimeError, match=r"device='cuda:0' but torch sees no CUDA device"):
        torch_loader(0)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device of them, "
                                         r"got 'gpu'"):
        loader(image_folder, "gpu")


@pytest.mark.parametrize("output", ["numpy", "jax"])
def test_pin_memory_is_for_torch_outputs_and_refused_for_others(image_folder, output):
    """Asked for with NumPy or JAX batches, pin_memory=True was accepted and the slots left pageable
    (on a CUDA machine for NumPy, everywhere for JAX): a silent fallback."""
    if output == "jax":
        pytest.importorskip("jax")
    with pytest.raises(ValueError, match=rf"pin_memory=True pins the slots for torch's non-blocking copies to the "
                                         rf"GPU: use output='torch' \(got output='{output}'\)"):
        fl.Loader(fl.ImageFolder(image_folder), batch_size=4, transforms=[fl.CenterCrop(8)], output=output,
                  pin_memory=True)


def test_output_jax_refuses_torchs_device_objects_when_made(image_folder):
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    for device in (torch.device("cuda"), torch.device("cpu"), 0):
        with pytest.raises(TypeError, match="output='jax' takes a jax Device or Sharding as device="):
            fl.Loader(fl.ImageFolder(image_folder), batch_size=4, transforms=[fl.CenterCrop(8)], output="jax",
                      device=device)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bgr_caffe_style_normalisation_matches_the_host(image_folder, layout):
    """Normalize(order="BGR", max_value=1): channels reversed and raw 0..255 pixels, on the device as on the host."""
    tr = [fl.RandomResizedCrop(16), fl.Normalize((103.53, 116.28, 123.675), (57.375, 57.12, 58.395),
                                                 max_value=1.0, order="BGR")]
    kw = dict(batch_size=4, shuffle=True, seed=1, transforms=tr, layout=layout)
    host = [tuple(np.array(a) for a in b) for b in fl.Loader(fl.ImageFolder(image_folder), **kw)]
    backend = StandIn()
    got = [tuple(np.asarray(a) for a in b) for b in fl.Loader(fl.ImageFolder(image_folder), device=backend, **kw)]
    assert len(got) == len(host)
    for (x, y), (hx, hy) in zip(got, host):
        assert x.shape == hx.shape and x.dtype == hx.dtype == np.float32
        np.testing.assert_allclose(x, hx, atol=1e-5, rtol=2e-6)
        np.testing.assert_array_equal(y, hy)
    assert all(c[1] != np.uint8 or c[2][-1] == 3 for c in backend.copies)


@pytest.mark.parametrize("scale", [None, True, False])
def test_the_device_scales_pixels_as_the_host_does(image_folder, scale):
    """scale=None is the Image default (pixel / 255, as ToDtype(scale=True)): the device once read
    it as False and gave 0..255 where the host gave 0..1."""
    tr = [fl.RandomResizedCrop(16)]
    kw = dict(batch_size=4, shuffle=True, seed=1, transforms=tr, scale=scale)
    host = [np.array(b[0]) for b in fl.Loader(fl.ImageFolder(image_folder), **kw)]
    got = [np.asarray(b[0]) for b in fl.Loader(fl.ImageFolder(image_folder), device=StandIn(), **kw)]
    assert len(got) == len(host)
    for x, hx in zip(got, host):
        np.testing.assert_allclose(x, hx, atol=1e-6, rtol=1e-6)
    assert max(float(h.max()) for h in host) <= (255.0 if scale is False else 1.0)


def test_a_float16_that_would_overflow_is_refused_on_the_device_as_on_the_host(image_folder):
    tr = [fl.RandomResizedCrop(16), fl.Normalize([0.5] * 3, [1e-6] * 3)]
    with pytest.raises(ValueError, match=r"beyond the largest float16 \(65504\)"):
        fl.Loader(fl.ImageFolder(image_folder), batch_size=4, transforms=tr, dtype="float16")
    with pytest.raises(ValueError, match=r"beyond the largest float16 \(65504\)"):
        fl.Loader(fl.ImageFolder(image_folder), batch_size=4, transforms=tr, dtype="float16", device=StandIn())


class Devices:
    """torch's CUDA calls that current_streams_event makes, over ``count`` devices, those in
    ``contexts`` with a context (None: a torch without the probe); events record their stream."""

    def __init__(self, count: int, current: int, contexts):
        self.recorded = []
        devices = self

        class Recorded(Event):
            def record(self, stream):
                devices.recorded.append(stream)
        cuda = SimpleNamespace(device_count=lambda: count, current_device=lambda: current,
                               current_stream=lambda d: f"stream of cuda:{d}", Event=Recorded)
        probe = {} if contexts is None else {"_cuda_hasPrimaryContext": lambda d: d in contexts}
        self.torch = SimpleNamespace(cuda=cuda, _C=SimpleNamespace(**probe))


@pytest.mark.parametrize("current, contexts, streams", [(0, {0, 2}, [0, 2]), (0, {0, 1, 2}, [0, 1, 2]),
                                                         (1, {1}, [1]), (0, {1}, [1]), (2, None, [2])])
def test_a_released_slot_waits_for_copies_queued_on_any_device_in_use(current, contexts, streams):
    """torchrun without set_device: the user copies to cuda:2 while cuda:0 is current. The release
    guard covers the current stream of every device with a context, and the slot is refilled only
    once every one of those events completed."""
    devices = Devices(3, current, contexts)
    events = []

    def guard():
        events.append(current_streams_event(devices.torch))
        return events[-1]
    pool = SlotPool([Output("x", (4,), np.dtype(np.uint8))], batch_size=2, slots=1, guard_release=guard)
    lease = pool.acquire()
    first = lease.arrays["x"]
    del lease                                   # the user's non-blocking copies may still read it
    assert devices.recorded == [f"stream of cuda:{d}" for d in streams]
    parts = getattr(events[0], "events", [events[0]])
    assert len(parts) == len(streams)
    for part in parts[:-1]:
        part.done = True
        again = pool.acquire()
        assert again.arrays["x"] is not first   # one device's copy may still be reading it
        del again
    parts[-1].done = True
    assert pool.acquire().arrays["x"] is first  # every copy done: reused


def test_cuda_without_an_index_is_the_device_current_as_a_pass_begins():
    """A Loader made before torch.cuda.set_device(local_rank) once copied every rank's batches to
    cuda:0, having made its copy stream (and so a CUDA context there) when it was built."""
    made, current = [], [0]
    backend = CudaBackend("cuda")
    backend.torch = SimpleNamespace(device=torch.device, cuda=SimpleNamespace(
        current_device=lambda: current[0], Stream=lambda device: made.append(device) or f"stream of cuda:{device}"))
    assert made == []                               # nothing made on a device until a batch goes there
    assert backend.target() == (torch.device("cuda", 0), "stream of cuda:0")
    current[0] = 1                                  # torch.cuda.set_device(1)
    assert backend.target() == (torch.device("cuda", 1), "stream of cuda:1")
    assert backend.target() == (torch.device("cuda", 1), "stream of cuda:1")
    assert made == [0, 1]                           # one stream per device, made once
    fixed = CudaBackend("cuda:2")
    fixed.torch = backend.torch
    assert fixed.target() == (torch.device("cuda", 2), "stream of cuda:2")


class Cudart:
    """The CUDA runtime's host-memory registration, as a record of {address: bytes} locked now."""

    def __init__(self, error: int = 0):
        self.locked, self.error = {}, error

    def cudaHostRegister(self, ptr, size, flags):
        if not self.error:
            assert ptr % mmap.PAGESIZE == 0 and flags == 1   # whole pages, pinned for every device
            self.locked[ptr] = size
        return self.error

    def cudaHostUnregister(self, ptr):
        del self.locked[ptr]
        return 0


def test_pinned_slots_lock_their_own_size_and_give_it_back_when_trimmed(monkeypatch):
    """torch's pinned allocator rounded each slot up to a power of two (38.5 MB of images locked
    64 MB) and kept what a trim freed locked for the life of the process."""
    cudart = Cudart()
    monkeypatch.setattr(pool_module, "_cudart", lambda: cudart)
    outputs = [Output("image", (224, 224, 3), np.dtype(np.uint8)), Output("label", (), np.dtype(np.int64)),
               Output("box", (3,), np.dtype(np.float32))]
    pool = SlotPool(outputs, batch_size=257, slots=2, pin=True)
    image, label, box = 257 * 224 * 224 * 3, 257 * 8, 257 * 3 * 4
    aligned = lambda n: (n + 63) // 64 * 64
    assert sorted(cudart.locked.values()) == [aligned(image) + aligned(label) + box] * 2   # one block a slot
    for slot in pool.slots():
        (base, size), = [(p, n) for p, n in cudart.locked.items()
                         if p <= slot["image"].ctypes.data < p + n]
        ends = []
        for name, shape, dtype in (("image", (257, 224, 224, 3), np.uint8), ("label", (257,), np.int64),
                                   ("box", (257, 3), np.float32)):
            a = slot[name]
            assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
            assert a.ctypes.data % 64 == 0 and base <= a.ctypes.data and a.ctypes.data + a.nbytes <= base + size
            ends.append((a.ctypes.data, a.ctypes.data + a.nbytes))
        assert all(e <= s for (_, e), (s, _) in zip(ends, ends[1:]))   # the outputs do not overlap
        slot["image"][:] = 7
        slot["label"][:] = -1
        slot["box"][:] = 0.5
        assert (slot["image"] == 7).all() and (slot["label"] == -1).all() and (slot["box"] == 0.5).all()
    held = [pool.acquire() for _ in range(3)]      # a consumer keeps three batches: the pool grows
    assert len(cudart.locked) == len(pool) == 3
    batch = torch.from_numpy(held[2].view("image", 5))
    del held
    pool.trim(), pool.trim()                        # a pass later, the grown slot goes, and its lock
    assert len(pool) == 2 and sorted(cudart.locked.values()) == [aligned(image) + aligned(label) + box] * 2
    assert any(p <= batch.data_ptr() < p + n for p, n in cudart.locked.items())   # the one still viewed stays


FORK_CHILD_WRITES = """
import os, numpy as np
from fastload.memory import pool
from fastload.pipeline.fields import Output
class Cudart:
    def cudaHostRegister(self, ptr, size, flags): return 0
    def cudaHostUnregister(self, ptr): return 0
pool._cudart = Cudart
lease = pool.SlotPool([Output("image", (8, 8, 3), np.dtype(np.uint8))], batch_size=4, slots=2, pin=True).acquire()
lease.arrays["image"][:] = 1
pid = os.fork()
if pid == 0:   # the child fills the slot the parent's batch is in
    lease.arrays["image"][:] = 9
    os._exit(0 if (lease.arrays["image"] == 9).all() else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), np.unique(lease.arrays["image"]).tolist())
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_childs_writes_to_a_pinned_slot_stay_in_the_child():
    """The locked blocks were mmap's default, MAP_SHARED: a child forked after the pool was made, filling
    a slot (a new iterator of the same Loader does), wrote into the parent's batches. (In a process of
    its own: JAX, once imported, refuses forks.)"""
    assert run_python(["-c", FORK_CHILD_WRITES], timeout=60).split() == ["0", "[1]"]


def test_memory_that_cannot_be_locked_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pool_module, "_cudart", lambda: Cudart(error=2))
    with pytest.raises(RuntimeError, match=r"could not page-lock 36\.75 MiB for a batch slot \(cudaHostRegister: "
                                           r"CUDA error 2\); pin_memory=False gives pageable slots"):
        SlotPool([Output("image", (224, 224, 3), np.dtype(np.uint8))], batch_size=256, slots=2, pin=True)


def test_a_loaders_pinned_slots_give_the_batches_its_pageable_ones_do(image_folder, monkeypatch):
    """Images and labels laid out in one locked block per slot, over epochs that reuse the slots."""
    import fastload.pipeline.device as device_module
    cudart = Cudart()
    monkeypatch.setattr(pool_module, "_cudart", lambda: cudart)
    monkeypatch.setattr(device_module, "cuda_available", lambda: True)
    kw = dict(batch_size=3, shuffle=True, seed=4, prefetch=1, output="torch",
              transforms=[fl.RandomResizedCrop(12), fl.Normalize(MEAN, STD)])
    pageable = fl.Loader(fl.ImageFolder(image_folder), pin_memory=False, **kw)
    pinned = fl.Loader(fl.ImageFolder(image_folder), **kw)
    for epoch in range(3):
        pageable.set_epoch(epoch)
        pinned.set_epoch(epoch)
        want = [(x.clone(), y.clone()) for x, y in pageable]
        got = [(x.clone(), y.clone()) for x, y in pinned]
        assert len(got) == len(want) > 2
        for (x, y), (wx, wy) in zip(got, want):
            assert x.dtype == wx.dtype == torch.float32 and y.dtype == wy.dtype == torch.int64
            assert torch.equal(x, wx) and torch.equal(y, wy)
    assert pinned._pool.pinned and not pageable._pool.pinned
    assert len(cudart.locked) == len(pinned._pool) >= 3
    for slot in pinned._pool.slots():
        for a in slot.values():
            assert any(p <= a.ctypes.data and a.ctypes.data + a.nbytes <= p + n for p, n in cudart.locked.items())


def test_a_batch_is_on_its_way_to_the_device_before_the_consumer_asks_for_it(image_folder):
    """A loop that waits for each step (loss.item(), a GradScaler) asks for the next batch only once
    the GPU is idle: its copy, queued only then, made the GPU wait for it every step. The worker
    that fills a slot's last rows queues its copy at once."""
    import time
    backend = StandIn()
    it = iter(loader(image_folder, backend, prefetch=2))
    next(it)
    deadline, seen = time.monotonic() + 10, -1
    while (len(backend.copies) != seen or seen < 4) and time.monotonic() < deadline:
        seen = len(backend.copies)       # until the workers filled what the window lets them
        time.sleep(0.3)
    queued = list(backend.copies)
    assert len(queued) >= 4                          # images and labels of this batch and the next, at least
    _, y = next(it)                                  # the next batch: its labels are the copy made before
    assert any(y is c[4] for c in queued)
    assert sum(c[1] == np.uint8 for c in backend.copies) <= len(loader(image_folder, backend))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_copies_queued_by_the_workers_read_whole_batches(image_folder, workers):
    """A batch split into chunks on several threads is copied once, by whichever fills the last
    chunk, after every chunk: the stand-in copies at once, so an early copy would show as wrong rows."""
    kw = dict(batch_size=8, shuffle=True, seed=5, workers=workers, prefetch=2, dtype="float32", layout="NCHW",
              transforms=[fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)])
    host = fl.Loader(fl.ImageFolder(image_folder), **kw)
    backend = StandIn()
    device = fl.Loader(fl.ImageFolder(image_folder), device=backend, **kw)
    for epoch in range(4):
        host.set_epoch(epoch)
        device.set_epoch(epoch)
        want = [(np.array(x), np.array(y)) for x, y in host]
        got = [(np.asarray(x), np.asarray(y)) for x, y in device]
        assert len(got) == len(want) == 3
        for (x, y), (wx, wy) in zip(got, want):
            np.testing.assert_allclose(x, wx, atol=1e-5, rtol=2e-6)
            np.testing.assert_array_equal(y, wy)
    images = [c for c in backend.copies if c[1] == np.uint8]
    assert len(images) == 4 * 3 and all(c[2] == (8, 16, 16, 3) for c in images)   # one copy a batch, whole


def test_a_batch_with_a_failed_record_is_copied_after_the_policy_rewrote_it(image_folder, tmp_path):
    """Skipping a record moves the rows after it up: a copy queued once the slot was filled would
    carry the rows as they were before."""
    import shutil
    root = tmp_path / "folder"
    shutil.copytree(image_folder, root)
    victim = sorted((root / sorted(p.name for p in root.iterdir())[1]).iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:200])          # truncated: fails to decode
    kw = dict(batch_size=8, shuffle=True, seed=5, prefetch=2, on_error="skip",
              transforms=[fl.RandomResizedCrop(16), fl.Normalize(MEAN, STD)])
    backend = StandIn()
    with pytest.warns(RuntimeWarning, match="skipping records that fail"):
        want = [(np.array(x), np.array(y)) for x, y in fl.Loader(fl.ImageFolder(str(root)), **kw)]
    with pytest.warns(RuntimeWarning, match="skipping records that fail"):
        got = [(np.asarray(x), np.asarray(y)) for x, y in fl.Loader(fl.ImageFolder(str(root)), device=backend, **kw)]
    assert [len(y) for _, y in got] == [len(y) for _, y in want] and sum(len(y) for _, y in got) == 23
    for (x, y), (wx, wy) in zip(got, want):
        np.testing.assert_allclose(x, wx, atol=1e-5, rtol=2e-6)
        np.testing.assert_array_equal(y, wy)
    assert sum(c[1] == np.uint8 for c in backend.copies) == len(got)   # each batch copied once


def test_pass_through_numbers_follow_the_slots_copies_to_the_device():
    """The slot's outputs are copied once filled; the pass-through columns, collated when the batch is
    presented, after them on the same stream, and the consumer waits for the last of them."""
    recs = [{"x": [float(i), -i], "score": i * 0.5, "meta": {"id": i}, "note": f"r{i}"} for i in range(10)]
    backend = StandIn()
    kw = dict(batch_size=4, shuffle=True, seed=3, workers=2, fields={"x": fl.Numeric(2), "note": None})
    want = list(fl.Loader(fl.ListSource(recs), output="numpy", **kw))
    got = list(fl.Loader(fl.ListSource(recs), device=backend, **kw))
    assert len(got) == len(want) == 3
    for b, w in zip(got, want):
        assert list(b) == list(w)
        np.testing.assert_array_equal(np.asarray(b["x"]), w["x"])
        np.testing.assert_array_equal(np.asarray(b["score"]), w["score"])
        np.testing.assert_array_equal(np.asarray(b["meta"]["id"]), w["meta"]["id"])
        assert b["note"] == w["note"]
    # per batch: x (its slot, queued by a worker), then score and meta.id as it is presented; the
    # consumer waited once a batch, on the last of them
    assert len(backend.copies) == 9
    at = lambda tensor: next(i for i, c in enumerate(backend.copies) if c[4] is tensor)
    order = [(at(b["x"]), at(b["score"]), at(b["meta"]["id"])) for b in got]
    assert all(x < score < i for x, score, i in order)
    assert backend.waited == [backend.copies[i][3] for _, _, i in order]
