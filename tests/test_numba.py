"""User kernels: Numba-compiled (and, in a child run, plain Python) with a keyed counter-based generator."""
import math
import os
import threading

import numpy as np
import pytest

import fastload as fl
from _child import run_python
from fastload.ops.numba_ops import DISABLE_ENV, KernelField, NumbaOp, integers, jit_enabled, normal, \
    numba_transform, seed_state, uniform

HERE = os.path.dirname(os.path.abspath(__file__))
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix(z):
    """SplitMix64's output function, written out with Python integers (Steele, Lea & Flood 2014)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_stream(seed, epoch, index):
    """The draws a kernel gets for record ``index``: SplitMix64 counter from the mixed (seed, epoch, index) key."""
    state = splitmix(((splitmix(splitmix((seed + GOLDEN) & M64) ^ epoch) + GOLDEN) & M64) ^ index)
    while True:
        state = (state + GOLDEN) & M64
        yield splitmix(state)


def ref_normals(seed, epoch, index, n):
    """Marsaglia's polar method over that stream, one normal per accepted pair."""
    draws, out = ref_stream(seed, epoch, index), []
    while len(out) < n:
        u = 2.0 * ((next(draws) >> 11) / 2.0 ** 53) - 1.0
        v = 2.0 * ((next(draws) >> 11) / 2.0 ** 53) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            out.append(u * math.sqrt(-2.0 * math.log(s) / s))
    return np.array(out)


@numba_transform
def add_noise(img, rng):
    flat = img.reshape(-1)
    for i in range(flat.size):
        flat[i] += np.float32(0.5 * normal(rng))


@numba_transform(batch=True)
def cutout(rows, rngs):
    """Zero one random 4x4 square per NCHW row."""
    for i in range(rows.shape[0]):
        y = integers(rngs[i], 0, rows.shape[2] - 3)
        x = integers(rngs[i], 0, rows.shape[3] - 3)
        rows[i, :, y:y + 4, x:x + 4] = 0


def test_generator_matches_splitmix64_written_out():
    rng = np.array([seed_state(7, 3, 12345)], dtype=np.uint64)
    stream = ref_stream(7, 3, 12345)
    assert int(rng[0]) == splitmix(((splitmix(splitmix((7 + GOLDEN) & M64) ^ 3) + GOLDEN) & M64) ^ 12345)
    for _ in range(5):
        assert math.isclose(uniform(rng), (next(stream) >> 11) / 2.0 ** 53, rel_tol=0, abs_tol=0)


def test_generator_statistics():
    rng = np.array([seed_state(1, 0, 0)], dtype=np.uint64)
    u = np.array([uniform(rng) for _ in range(20000)])
    z = np.array([normal(rng) for _ in range(20000)])
    k = np.array([integers(rng, -3, 4) for _ in range(7000)])
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    assert set(k.tolist()) == set(range(-3, 4)) and abs(np.bincount(k + 3).min() - 1000) < 150
    keys = {int(seed_state(s, e, i)) for s in range(3) for e in range(3) for i in range(50)}
    assert len(keys) == 450   # every (seed, epoch, index) its own stream


def test_sample_kernel_against_reference_and_any_chunking():
    rows = np.zeros((6, 3, 4, 5), np.float32)
    idx = np.array([9, 3, 40, 0, 7, 1000], dtype=np.uint64)
    add_noise(rows, idx, 5, 2)
    for r, i in zip(rows, idx):
        np.testing.assert_allclose(r.reshape(-1), (0.5 * ref_normals(5, 2, int(i), r.size)).astype(np.float32),
                                   rtol=1e-6, atol=1e-7)
    chunked = np.zeros_like(rows)
    for lo, hi in ((0, 1), (1, 4), (4, 6)):
        add_noise.apply(chunked[lo:hi], idx[lo:hi], 5, 2)
    np.testing.assert_array_equal(chunked, rows)
    again = np.zeros_like(rows)
    add_noise(again, idx, 5, 3)
    assert not np.array_equal(again, rows)   # another epoch, other draws


def test_threads_give_the_same_rows():
    rows = np.zeros((64, 3, 8, 8), np.float32)
    idx = np.arange(64, dtype=np.uint64)
    add_noise(rows, idx, 0, 0)
    out = np.zeros_like(rows)
    threads = [threading.Thread(target=add_noise.apply, args=(out[k * 16:(k + 1) * 16], idx[k * 16:(k + 1) * 16], 0, 0))
               for k in range(4)]   # as workers do: each a contiguous chunk of rows
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    np.testing.assert_array_equal(out, rows)


def test_batch_kernel():
    rows = np.ones((5, 2, 10, 12), np.float32)
    idx = np.arange(5, dtype=np.uint64) * 3
    cutout(rows, idx, 4, 0)
    for r, i in zip(rows, idx):
        draws = ref_stream(4, 0, int(i))
        y = int(((next(draws) >> 11) / 2.0 ** 53) * 7)
        x = int(((next(draws) >> 11) / 2.0 ** 53) * 9)
        want = np.ones((2, 10, 12), np.float32)
        want[:, y:y + 4, x:x + 4] = 0
        np.testing.assert_array_equal(r, want)


def test_bad_calls():
    with pytest.raises(ValueError, match="3 rows but"):
        add_noise(np.zeros((3, 4), np.float32), np.arange(2), 0, 0)
    ro = np.zeros((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="writable"):
        add_noise(ro, np.arange(2), 0, 0)


def test_a_kernel_of_the_wrong_signature_is_refused_when_made():
    # It was accepted, and failed at the first batch as a Numba TypingError blaming a record.
    def one_arg(img):
        img[...] = 0

    def three_args(rows, rngs, extra):
        pass

    with pytest.raises(TypeError, match=r"one_arg\(img\): a per-sample kernel is called as one_arg\(sample, rng\)"):
        numba_transform(one_arg)
    with pytest.raises(TypeError, match=r"three_args\(rows, rngs, extra\): a batch kernel is called as "
                                        r"three_args\(rows, rngs\)"):
        numba_transform(three_args, batch=True)
    if jit_enabled():   # a compiled kernel is checked through its Python function
        import numba
        with pytest.raises(TypeError, match="one_arg"):
            NumbaOp(numba.njit(one_arg))
    with pytest.raises(TypeError, match="a kernel must be a function"):
        NumbaOp(3, name="three")
    NumbaOp(lambda img, rng, scale=1.0: None)
    NumbaOp(lambda *args: None)


def test_kernel_field_in_a_loader(image_folder):
    transforms = [fl.RandomResizedCrop(16), fl.RandomHorizontalFlip(), fl.Normalize([0.5] * 3, [0.25] * 3)]
    plain = fl.Loader(fl.ImageFolder(image_folder), batch_size=7, shuffle=True, seed=3, copy=True,
                      transforms=transforms)
    ref = [list(plain) for _ in range(2)]
    folder = fl.ImageFolder(image_folder)
    records = fl.ListSource([{"image": path, "label": int(label)} for path, label in folder])
    for workers in (0, 1, 3):
        loader = fl.Loader(records, batch_size=7, shuffle=True, seed=3, workers=workers,
                           fields={"image": add_noise.after(transforms), "label": "index"}, as_tuple=True)
        for epoch in range(2):
            order = plain.order(epoch)
            got = list(loader)
            assert len(got) == len(ref[epoch]) == 4
            for b, ((x, y), (rx, ry)) in enumerate(zip(got, ref[epoch])):
                np.testing.assert_array_equal(y, ry)
                noise = np.stack([0.5 * ref_normals(3, epoch, int(i), rx[0].size)
                                  for i in order[b * 7:b * 7 + len(rx)]]).astype(np.float32)
                np.testing.assert_allclose(x, rx + noise.reshape(rx.shape), rtol=1e-5, atol=1e-5)


def test_kernel_field_options():
    with pytest.raises(TypeError, match="Field or a list"):
        KernelField("image", [add_noise])
    field = KernelField([fl.Resize((8, 8))], [add_noise], layout="NHWC", dtype="float32")
    field.name = "pixels"
    assert [o.name for o in field.outputs()] == ["pixels"] and field.layout == "NHWC"
    assert type(field).prepare is fl.Field.prepare   # no statistics pass for an image field


@pytest.mark.skipif(not jit_enabled(), reason="compiled run: the child checks the plain-Python one")
def test_same_results_without_jit():
    # The whole module again with the kernels as plain Python, from a child so that
    # the environment variable is read when the kernels are decorated.
    out = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(HERE, "test_numba.py"),
                      "-k", "not without_jit and not in_a_loader"], env={DISABLE_ENV: "1"})
    assert " passed" in out and "failed" not in out
    assert NumbaOp(lambda img, rng: None).jit


@numba_transform
def leave_alone(img, rng):
    pass


def test_kernel_field_scales_as_the_transform_list(image_folder):
    # A transform list becomes fl.Image, as it does given to the Loader: float pixels
    # without Normalize in [0, 1], not 0..255.
    records = fl.ListSource([{"image": p, "label": int(y)} for p, y in fl.ImageFolder(image_folder)])
    transforms = [fl.Resize((8, 8))]
    batches = [next(iter(fl.Loader(records, batch_size=4, fields={"image": spec, "label": "index"})))["image"]
               for spec in (transforms, KernelField(transforms, [leave_alone]), leave_alone.after(transforms))]
    assert 0 < batches[0].max() <= 1
    np.testing.assert_array_equal(batches[1], batches[0])
    np.testing.assert_array_equal(batches[2], batches[0])


def test_float16_rows_are_refused_when_the_kernels_compile():
    # Numba has no float16 type: the first batch failed in a worker, blaming a record.
    transforms = [fl.Resize((8, 8)), fl.Normalize([0.5] * 3, [0.25] * 3)]
    if jit_enabled():
        for make in (lambda: KernelField(transforms, [leave_alone], dtype="float16"),
                     lambda: leave_alone.after(fl.Image(transforms, dtype=np.float16))):
            with pytest.raises(TypeError, match="field 'image': Numba cannot compile kernels over float16 rows"):
                make()
    else:   # plain Python kernels take float16 rows
        assert KernelField(transforms, [leave_alone], dtype="float16").outputs()[0].dtype == np.float16
    assert KernelField(transforms, [leave_alone], dtype="float32").outputs()[0].dtype == np.float32


def test_numba_caches_the_users_kernels_beside_them_and_nothing_inside_fastload(tmp_path):
    # fastload's own helpers were cached in the installed package's __pycache__, which pip uninstall
    # left behind: a "fastload" folder that imported as an empty namespace package.
    pytest.importorskip("numba")
    package = os.path.dirname(os.path.abspath(fl.__file__))

    def cached(folder):
        return {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns for d, _, names in os.walk(folder)
                for n in names if n.endswith((".nbi", ".nbc"))}
    before = cached(package)
    (tmp_path / "kern.py").write_text(
        "import numpy as np\nimport fastload as fl\nfrom fastload.ops.numba_ops import KernelField, normal\n"
        "@fl.numba_transform\ndef add_noise(x, rng):\n    for i in range(x.shape[0]):\n"
        "        x[i] += np.float32(normal(rng))\n"
        "src = fl.ListSource([{'x': [float(i)] * 4} for i in range(8)])\n"
        "loader = fl.Loader(src, batch_size=4, fields={'x': KernelField(fl.Numeric(4), [add_noise])})\n"
        "print(sum(len(b['x']) for b in loader))\n")
    out = run_python([str(tmp_path / "kern.py")], cwd=str(tmp_path), env={DISABLE_ENV: ""})
    assert out.strip().splitlines()[-1] == "8"
    assert cached(package) == before   # nothing new, nothing rewritten
    assert any(n.startswith("kern.add_noise") for n in os.listdir(tmp_path / "__pycache__"))
