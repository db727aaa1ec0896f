"""Pinned batch slots and asynchronous host-to-device copies on a real GPU (run where CUDA is available;
tests/test_device.py runs the same logic through a stand-in backend everywhere)."""
import numpy as np
import pytest

import fastload as fl

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
    got = [(x, y) for x, y in loader]
    assert loader._pool.pinned and all(torch.from_numpy(a).is_pinned() for s in loader._pool.slots()
                                       for a in s.values())
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
        on_device = [x.to("cuda", non_blocking=True) for x, _ in loader]   # CPU batches dropped at once
    torch.cuda.synchronize()
    for d, (hx, _) in zip(on_device, host):
        np.testing.assert_array_equal(d.cpu().numpy(), hx)
