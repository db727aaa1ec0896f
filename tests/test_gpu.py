"""Pinned batch slots and asynchronous host-to-device copies on a real GPU (run where CUDA is available;
tests/test_device.py runs the same logic through a stand-in backend everywhere)."""
import numpy as np
import pytest

import fastload as fl
from _child import run_python

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TR = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.Normalize(MEAN, STD)]


def host_batches(image_folder, **kw):
    return [(x.copy(), y.copy()) for x, y in fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True,
                                                       seed=2, transforms=TR, **kw)]


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float16", 2e-3)])
def test_device_batches_match_host_and_slots_are_pinned(image_folder, dtype, tol):
    host = host_batches(image_folder, dtype=dtype)
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                       output="torch", device="cuda", dtype=dtype)
    torch_pinned = torch.cuda.host_memory_stats()["allocated_bytes.current"]
    got = [(x, y) for x, y in loader]
    assert loader._pool.pinned and all(torch.from_numpy(a).is_pinned() for s in loader._pool.slots()
                                       for a in s.values())
    # locked by the pool itself, at their own size: nothing from torch's power-of-two pinned allocator
    assert torch.cuda.host_memory_stats()["allocated_bytes.current"] == torch_pinned
    assert all(s["image"].dtype == np.uint8 for s in loader._pool.slots())     # images cross as uint8
    for (x, y), (hx, hy) in zip(got, host):
        assert x.is_cuda and x.dtype == getattr(torch, dtype) and tuple(x.shape) == hx.shape
        np.testing.assert_allclose(x.float().cpu().numpy(), hx.astype(np.float32), atol=4 * tol, rtol=tol)
        np.testing.assert_array_equal(y.cpu().numpy(), hy)


def test_users_own_non_blocking_copy_never_races_slot_reuse(image_folder):
    host = host_batches(image_folder)
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                       output="torch", prefetch=1)
    on_device = []
    for _ in range(5):
        loader.set_epoch(0)
        torch.cuda._sleep(50_000_000)   # the copies wait behind ~25 ms of spinning while the workers refill
        on_device = [x.to("cuda", non_blocking=True) for x, _ in loader]   # CPU batches dropped at once
    torch.cuda.synchronize()
    assert len(on_device) == len(host)
    for d, (hx, _) in zip(on_device, host):
        np.testing.assert_array_equal(d.cpu().numpy(), hx)
    assert all(x.is_pinned() for x, _ in loader)            # what makes the user's copy asynchronous


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_copy_to_a_device_other_than_the_current_one_never_races_slot_reuse(image_folder):
    """torchrun without set_device: cuda:0 stays current while the batches go to cuda:1, whose
    current stream the copies are queued on."""
    host = host_batches(image_folder)
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                       output="torch", prefetch=1)
    torch.empty(1, device="cuda:1")   # the process works on cuda:1 (its model would be there)
    assert torch.cuda.current_device() == 0
    on_device = []
    for _ in range(5):
        loader.set_epoch(0)
        with torch.cuda.device(1):
            torch.cuda._sleep(50_000_000)   # cuda:1's current stream busy: the copies wait behind it
        on_device = [x.to("cuda:1", non_blocking=True) for x, _ in loader]
    torch.cuda.synchronize(1)
    assert len(on_device) == len(host)
    for d, (hx, _) in zip(on_device, host):
        assert d.device == torch.device("cuda", 1)
        np.testing.assert_array_equal(d.cpu().numpy(), hx)


def test_a_loader_creates_cuda_contexts_only_on_the_device_it_feeds(image_folder):
    """Under torchrun each rank often makes its Loader before torch.cuda.set_device(local_rank): a
    context made then would sit on cuda:0, one per rank, each taking that GPU's memory. The worker
    threads that copy filled slots start on cuda:0 too, and must not make one there either."""
    last = torch.cuda.device_count() - 1
    code = ("import sys, torch, fastload as fl\n"
            "contexts = lambda: [torch._C._cuda_hasPrimaryContext(d) for d in range(torch.cuda.device_count())]\n"
            "loaders = [fl.Loader(fl.ImageFolder(sys.argv[1]), batch_size=4, transforms=[fl.CenterCrop(8)],\n"
            "                     output='torch', device=device, workers=2) for device in ('cuda', None)]\n"
            "print(contexts())\n"
            f"torch.cuda.set_device({last})\n"
            "for loader in loaders:\n"
            "    for epoch in range(2):\n"
            "        batches = [x.sum().item() for x, _ in loader]\n"
            "print(contexts(), len(batches))")
    made, used = run_python(["-c", code, image_folder], timeout=120).splitlines()[-2:]
    assert made == str([False] * (last + 1))
    assert used == f"{[d == last for d in range(last + 1)]} 6"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_device_cuda_is_the_device_current_as_a_pass_begins(image_folder):
    """device="cuda" reads as torch reads x.to("cuda"): a Loader made while cuda:0 was current feeds
    cuda:1 once the loop runs there."""
    host = host_batches(image_folder)
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                       output="torch", device="cuda")
    for device in (1, 0):
        with torch.cuda.device(device):
            got = list(loader)
        assert len(got) == len(host)
        for (x, y), (hx, hy) in zip(got, host):
            assert x.device == y.device == torch.device("cuda", device)
            np.testing.assert_allclose(x.cpu().numpy(), hx, atol=8e-6, rtol=2e-6)
            np.testing.assert_array_equal(y.cpu().numpy(), hy)


@pytest.mark.parametrize("device", ["cuda:0", "torch.device"])
def test_device_may_be_named_with_an_index_or_a_torch_device(image_folder, device):
    device = torch.device("cuda", 0) if device == "torch.device" else device
    host = host_batches(image_folder)
    got = list(fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                         output="torch", device=device))
    assert len(got) == len(host)
    for (x, y), (hx, hy) in zip(got, host):
        assert x.device == torch.device("cuda", 0) and y.device == torch.device("cuda", 0)
        np.testing.assert_allclose(x.cpu().numpy(), hx, atol=8e-6, rtol=2e-6)
        np.testing.assert_array_equal(y.cpu().numpy(), hy)


def test_a_device_index_past_the_last_gpu_is_a_clear_error(image_folder):
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"cuda:{n}.*{n} CUDA device"):
        fl.Loader(fl.ImageFolder(image_folder), batch_size=4, transforms=TR, output="torch", device=f"cuda:{n}")


def test_a_consumer_on_its_own_stream_waits_for_each_copy(tmp_path):
    """Large uint8 batches, consumed at once by a kernel on a side stream: without the stream waiting on
    the copy's event, the kernel would read a half-copied batch."""
    from fastload.synthetic import make_image_folder
    folder = make_image_folder(str(tmp_path / "big"), classes=2, per_class=48, size=(160, 160), jitter=0.0, seed=5)
    kw = dict(batch_size=32, shuffle=True, seed=4, transforms=[fl.Resize((160, 160))], dtype="uint8",
              layout="NHWC", prefetch=1)
    host = [(x.copy(), y.copy()) for x, y in fl.Loader(fl.ImageFolder(folder), **kw)]
    side = torch.cuda.Stream()
    sums = []
    with torch.cuda.stream(side):
        for _ in range(3):
            for x, y in fl.Loader(fl.ImageFolder(folder), output="torch", device="cuda", **kw):
                assert x.dtype == torch.uint8 and x.is_cuda
                sums.append((x.to(torch.int64).sum((1, 2, 3)), y.clone()))   # queued on `side` at once
    torch.cuda.synchronize()
    expected = [(hx.astype(np.int64).sum((1, 2, 3)), hy) for hx, hy in host] * 3
    assert len(sums) == len(expected)
    for (s, y), (hs, hy) in zip(sums, expected):
        np.testing.assert_array_equal(s.cpu().numpy(), hs)
        np.testing.assert_array_equal(y.cpu().numpy(), hy)


def test_jax_batches_on_the_gpu_outlive_slot_reuse(image_folder):
    """jax.device_put copies asynchronously: each batch's slot must stay untouched until JAX has read it."""
    jax = pytest.importorskip("jax")
    from fastload.integrations.jax import batch_sharding
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("JAX has no GPU backend here")
    kw = dict(batch_size=4, shuffle=True, seed=2, transforms=TR, layout="NHWC")
    host = [(x.copy(), y.copy()) for x, y in fl.Loader(fl.ImageFolder(image_folder), **kw)]
    for target in (gpu, batch_sharding()):
        loader = fl.Loader(fl.ImageFolder(image_folder), output="jax", device=target, prefetch=1, **kw)
        kept = []
        for epoch in range(4):
            loader.set_epoch(0)
            kept += list(loader)
        assert len(kept) == 4 * len(host)
        for (x, y), (hx, hy) in zip(kept, host * 4):
            assert gpu in x.devices() and x.dtype == np.float32 and y.dtype == np.int32
            np.testing.assert_array_equal(np.asarray(x), hx)
            np.testing.assert_array_equal(np.asarray(y), hy)


def test_uint8_batches_reach_the_device_unchanged(image_folder):
    host = host_batches(image_folder, dtype="uint8")
    got = list(fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                         output="torch", device="cuda", dtype="uint8"))
    for (x, y), (hx, hy) in zip(got, host):
        assert x.is_cuda and x.dtype == torch.uint8 and tuple(x.shape) == hx.shape
        np.testing.assert_array_equal(x.cpu().numpy(), hx)


def test_the_next_batch_does_not_wait_for_the_consumers_gpu_work(image_folder):
    """A batch's path (copy, event, wait, normalise) only queues work: with the consumer's stream busy
    for about a second, the next batch is still handed over at once."""
    import time
    loader = fl.Loader(fl.ImageFolder(image_folder), batch_size=4, shuffle=True, seed=2, transforms=TR,
                       output="torch", device="cuda", prefetch=2)
    it = iter(loader)
    next(it)
    time.sleep(0.5)                                  # the workers fill the batches ahead
    busy = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    busy[0].record()
    torch.cuda._sleep(2_000_000_000)                # ~1 s of spinning on the current stream
    busy[1].record()
    t = time.perf_counter()
    x, y = next(it)
    waited = time.perf_counter() - t
    torch.cuda.synchronize()
    assert busy[0].elapsed_time(busy[1]) > 300      # ms: the stream really was busy
    assert waited < 0.2, f"next() waited {waited:.3f} s for the consumer's stream"
    assert x.is_cuda and x.dtype == torch.float32
