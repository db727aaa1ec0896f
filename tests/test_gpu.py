"""Pinned batch slots and asynchronous host-to-device copies (run where CUDA is available)."""
import numpy as np
import pytest

import fastload as fl

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_slots_are_pinned_and_device_batches_match_host(image_folder):
    kw = dict(batch_size=4, shuffle=True, seed=2, transforms=[fl.RandomResizedCrop(16), fl.Normalize(MEAN, STD)])
    host = [x.copy() for x, _ in fl.Loader(fl.ImageFolder(image_folder), **kw)]
    loader = fl.Loader(fl.ImageFolder(image_folder), output="torch", device="cuda", **kw)
    got = [x.cpu().numpy() for x, _ in loader]
    assert loader._ring.pinned and all(a.is_pinned() for slot in loader._ring.slots
                                       for a in map(torch.from_numpy, slot.values()))
    for a, b in zip(got, host):
        np.testing.assert_array_equal(a, b)
