"""The shared test helpers themselves: a comparison that misses a difference would hide bugs everywhere."""
import numpy as np
import pytest

from helpers import assert_batches_equal, photo_like, write_image_folder


def batches(n=3):
    return [(np.arange(6, dtype=np.float32).reshape(2, 3) + i, np.array([i, i + 1])) for i in range(n)]


def test_equal_batches_pass():
    assert_batches_equal(batches(), batches())
    assert_batches_equal(iter(batches()), (b for b in batches()))   # any iterables, read once
    nan = [{"x": np.array([np.nan, 1.0]), "caption": ["a", "b"]}]
    assert_batches_equal(nan, [{"caption": ["a", "b"], "x": np.array([np.nan, 1.0])}])


@pytest.mark.parametrize("change, message", [
    (lambda b: b[:2], "3 batches != 2 batches"),
    (lambda b: b + b[:1], "3 batches != 4 batches"),
    (lambda b: [b[0], (b[1][0], b[1][1] + 1), b[2]], r"batch 1\[1\]: 2 of 2 values differ, first at \(0,\)"),
    (lambda b: [b[0], b[1], (b[2][0].astype(np.float64), b[2][1])], r"batch 2\[0\]: dtype float32 != float64"),
    (lambda b: [(b[0][0][:1], b[0][1])] + b[1:], r"batch 0\[0\]: shape \(2, 3\) != \(1, 3\)"),
    (lambda b: [b[0], list(b[1]), b[2]], "batch 1: tuple != list"),
    (lambda b: [b[0][:1]] + b[1:], "batch 0: 2 items != 1"),
])
def test_each_kind_of_difference_names_the_first_differing_batch(change, message):
    with pytest.raises(AssertionError, match=message):
        assert_batches_equal(batches(), change(batches()))


def test_dict_batches_name_the_field():
    a = [{"image": np.zeros((2, 4), np.uint8), "label": np.array([1, 2]), "text": ["x", "y"]}]
    b = [dict(a[0], label=np.array([1, 3]))]
    with pytest.raises(AssertionError, match=r"batch 0\['label'\]: 1 of 2 values differ, first at \(1,\): 2 != 3"):
        assert_batches_equal(a, b)
    with pytest.raises(AssertionError, match=r"batch 0: keys \['image', 'label', 'text'\] != \['image', 'label'\]"):
        assert_batches_equal(a, [{"image": a[0]["image"], "label": a[0]["label"]}])
    with pytest.raises(AssertionError, match=r"batch 0\['text'\]\[1\]: 'y' != 'z'"):
        assert_batches_equal(a, [dict(a[0], text=["x", "z"])])


def test_torch_tensors_compare_by_value():
    torch = pytest.importorskip("torch")
    a = [(torch.arange(4), torch.ones(2))]
    assert_batches_equal(a, [(np.arange(4), np.ones(2, np.float32))])
    with pytest.raises(AssertionError, match=r"batch 0\[1\]: dtype"):
        assert_batches_equal(a, [(np.arange(4), np.ones(2))])


def test_photo_like_channels_and_determinism():
    rgb = photo_like(20, 30, seed=4)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, photo_like(20, 30, 3, seed=4))
    assert not np.array_equal(rgb, photo_like(20, 30, seed=5))
    np.testing.assert_array_equal(photo_like(20, 30, 1, seed=4), rgb[..., :1])
    four = photo_like(20, 30, 4, seed=4)
    np.testing.assert_array_equal(four[..., :3], rgb)
    assert four.shape == (20, 30, 4) and four[..., 3].std() > 10   # an independent, textured plane
    assert rgb.std() > 20 and np.abs(np.diff(rgb.astype(int), axis=1)).mean() > 3   # not flat: edges, noise


def test_write_image_folder_sizes_and_labels(tmp_path):
    from PIL import Image
    files = write_image_folder(tmp_path, ["b", "a"], per_class=3, size_range=(10, 12), fmt="PNG")
    assert [label for _, label in files] == [0, 0, 0, 1, 1, 1]
    assert all(p.endswith(".png") and f"{'ab'[label]}" in p for p, label in files)
    for p, _ in files:
        with Image.open(p) as im:
            assert 10 <= im.width <= 12 and 10 <= im.height <= 12 and im.mode == "RGB"
