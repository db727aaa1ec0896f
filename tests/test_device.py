"""The device path without a GPU: a stand-in backend with host copies and events completed by
hand exercises the same slot, event and normalisation logic CUDA runs (tests/test_gpu.py runs the
real thing where a GPU is present)."""
from types import SimpleNamespace

import numpy as np
import pytest

import fastload as fl
from fastload.memory.pool import SlotPool
from fastload.pipeline.device import current_streams_event, normalize_images
from fastload.pipeline.fields import Output

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

    def copy_async(self, host):
        ev = Event()
        self.copies.append((host.__array_interface__["data"][0], host.dtype, host.shape, ev))
        return torch.from_numpy(host.copy()), ev

    def wait(self, event, tensors):
        self.waited.append(event)

    def current_event(self):
        return Event()

    def constants(self, values):
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
    backend = StandIn()
    it = iter(loader(image_folder, backend, prefetch=1))
    for _ in range(4):
        next(it)
    # Every batch's copy is still "in flight" (no event completed): no slot was reused.
    addresses = [c[0] for c in backend.copies if c[1] == np.uint8]
    assert len(set(addresses)) == len(addresses)
    for c in backend.copies:
        c[3].done = True
    next(it)                                       # (its slot was taken before the copies completed)
    next(it)                                       # copies done: slots come back
    assert [c[0] for c in backend.copies if c[1] == np.uint8][-1] in addresses


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
