"""Determinism and exact resume.

For a seed, every batch (order and augmented pixels) is bit-identical for any worker count and
across processes; ``state_dict()`` taken anywhere and loaded by a fresh Loader in a fresh process
yields exactly the remaining batches, with any worker count, also after a restore and with a
corrupt file skipped."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import fastload as fl
from helpers import encode, photo_like

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 3


def make_dataset(root, corrupt=False):
    """17 images over 2 classes, through both decode routes: JPEGs (the C path), PNGs, CMYK and
    EXIF-rotated JPEGs (Pillow); with `corrupt`, one truncated JPEG too."""
    rng = np.random.default_rng(5)
    for c in ("a", "b"):
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(17):
        h, w = (int(v) for v in rng.integers(36, 80, 2))
        img = photo_like(h, w, seed=i)
        kind = i % 5
        if kind == 3:
            data, ext = encode(img, "PNG"), "png"
        elif kind == 4:
            exif = Image.Exif()
            exif[0x0112] = 6 if i % 2 else 8
            data, ext = encode(img, quality=90, exif=exif.tobytes()), "jpg"
        elif i == 7:
            data, ext = encode(Image.fromarray(img).convert("CMYK"), quality=90), "jpg"
        else:
            data, ext = encode(img, quality=88, progressive=i % 2 == 0), "jpg"
        with open(os.path.join(root, "ab"[i % 2], f"{i:02d}.{ext}"), "wb") as f:
            f.write(data)
    if corrupt:
        with open(os.path.join(root, "b", "11.jpg"), "rb") as f:
            data = f.read()
        with open(os.path.join(root, "b", "11.jpg"), "wb") as f:
            f.write(data[:len(data) // 2])
    return root


# The loader both processes build: shared as source text so the child runs exactly this.
LOADER_SRC = '''
import fastload as fl
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

def make_loader(root, workers, on_error="raise"):
    tr = [fl.RandomResizedCrop(24, scale=(0.2, 1.0)), fl.RandomHorizontalFlip(), fl.RandomVerticalFlip(0.3),
          fl.RandomRotate90(0.5), fl.ColorJitter(0.4, 0.4, 0.4), fl.Normalize(MEAN, STD)]
    return fl.Loader(fl.ImageFolder(root), batch_size=3, shuffle=True, seed=1234, transforms=tr,
                     workers=workers, prefetch=2, on_error=on_error)

def digest(batch):
    import hashlib
    x, y = batch
    h = hashlib.sha256(repr((x.shape, str(x.dtype), y.shape)).encode())
    h.update(x.tobytes())
    h.update(y.tobytes())
    return h.hexdigest()[:16]
'''
_ns = {}
exec(compile(LOADER_SRC, "<loader>", "exec"), _ns)
make_loader, digest = _ns["make_loader"], _ns["digest"]

CHILD = LOADER_SRC + '''
import json, sys, warnings
warnings.simplefilter("ignore")   # skip's warning; the parent checks failures itself
job = json.loads(sys.stdin.read())
out = []
if job["mode"] == "hash_epochs":
    loader = make_loader(job["root"], job["workers"], job["on_error"])
    out = [[digest(b) for b in loader] for _ in range(job["epochs"])]
else:   # resume: a fresh Loader per saved state; the rest of that state's epoch
    for state, workers in job["states"]:
        loader = make_loader(job["root"], workers, job["on_error"]).load_state_dict(state)
        out.append([digest(b) for b in loader])
print(json.dumps(out))
'''


def child(job):
    # The child imports the fastload this process imported (installed or built in place), from a
    # neutral directory so that a source checkout without compiled kernels is never picked up.
    home = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(job), capture_output=True, text=True,
                       timeout=120, env=env, cwd=os.path.dirname(home) or "/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("resume") / "data"))


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("resume_bad") / "data"), corrupt=True)


def epochs(root, workers, n=2, on_error="raise"):
    loader = make_loader(root, workers, on_error)
    return [[digest(b) for b in loader] for _ in range(n)]


@pytest.fixture(scope="module")
def reference(root):
    return epochs(root, 1)


def test_bit_identical_for_any_worker_count_and_across_processes(root, reference):
    assert len(reference[0]) == 6 and reference[0] != reference[1]   # 17 records / 3; epochs differ
    for workers in (0, 2, 4):
        assert epochs(root, workers) == reference, f"workers={workers}"
    job = {"mode": "hash_epochs", "root": root, "workers": 4, "epochs": 2, "on_error": "raise"}
    assert child(job) == reference
    assert child(job) == reference


def test_the_batches_hashed_are_augmented_and_use_both_routes(root):
    loader = make_loader(root, 2)
    x, y = next(iter(loader))
    assert x.shape == (BATCH, 3, 24, 24) and x.dtype == np.float32
    paths = fl.ImageFolder(root).paths
    routes = {os.path.splitext(paths[i])[1] for i in loader.order(0)}
    assert routes == {".jpg", ".png"}
    loader2 = make_loader(root, 2)
    loader2.set_epoch(1)
    x2, _ = next(iter(loader2))
    assert not np.array_equal(x, x2)


def cut(loader, k):
    """Consume k batches of the loader's next epoch, return its state through JSON."""
    it = iter(loader)
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    return state


def expected_rest(reference, state):
    epoch, batch = state["epoch"], state["batch"]
    if batch == len(reference[0]):
        epoch, batch = epoch + 1, 0
    return reference[epoch][batch:]


def test_exact_resume_in_a_fresh_process_at_every_cut(root, reference):
    def position(epoch, batch):   # after an epoch's last batch, a state is the next epoch's start
        return (epoch, batch) if batch < len(reference[epoch]) else (epoch + 1, 0)

    states = []
    for epoch in (0, 1):
        for k in range(len(reference[epoch]) + 1):
            loader = make_loader(root, 2)
            loader.set_epoch(epoch)
            state = cut(loader, k)
            assert len(json.dumps(state)) < 200 and (state["epoch"], state["batch"]) == position(epoch, k)
            states.append(state)
    # restore, consume more, save again (also right after a restore), restore again
    for k1, k2 in ((2, 0), (2, 3), (0, 6), (5, 1)):
        first = make_loader(root, 1).load_state_dict(states[k1])
        states.append(cut(first, k2))
        assert (states[-1]["epoch"], states[-1]["batch"]) == position(0, k1 + k2)
    jobs = [[s, (0, 1, 2, 4)[i % 4]] for i, s in enumerate(states)]
    rests = child({"mode": "resume", "root": root, "states": jobs, "on_error": "raise"})
    for state, rest in zip(states, rests):
        if state["epoch"] == 2:   # epoch 1 used up: the child ran epoch 2
            assert len(rest) == 6 and rest != reference[1]
            continue
        assert rest == expected_rest(reference, state), state


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epoch=st.integers(0, 1), k1=st.integers(0, 6), k2=st.integers(0, 6),
       workers=st.tuples(st.sampled_from([0, 1, 2, 4]), st.sampled_from([0, 1, 2, 4]), st.sampled_from([1, 3])))
def test_resume_property_restore_consume_save_restore(root, reference, epoch, k1, k2, workers):
    a = make_loader(root, workers[0])
    a.set_epoch(epoch)
    s1 = cut(a, k1)
    b = make_loader(root, workers[1]).load_state_dict(s1)
    e1, b1 = (epoch, k1) if k1 < 6 else (epoch + 1, 0)
    assert (b.state_dict()["epoch"], b.state_dict()["batch"]) == (e1, b1)   # saving right after a restore
    k2 = min(k2, 6 - b1)
    s2 = cut(b, k2)
    c = make_loader(root, workers[2]).load_state_dict(s2)
    e2, b2 = (e1, b1 + k2) if b1 + k2 < 6 else (e1 + 1, 0)
    rest = [digest(x) for x in c]
    want = (reference[e2] if e2 < 2 else epochs(root, 1, 3)[2])[b2:]
    assert rest == want


def test_resume_with_a_corrupt_file_skipped(corrupt_root):
    with pytest.warns(RuntimeWarning, match="11.jpg"):
        ref = epochs(corrupt_root, 2, on_error="skip")
    sizes = [len(h) for h in ref]
    assert sizes == [6, 6]
    full = make_loader(corrupt_root, 2, "skip")
    with pytest.warns(RuntimeWarning):
        shapes = [len(x) for x, _ in full]
    bad = [i for i, p in enumerate(fl.ImageFolder(corrupt_root).paths) if p.endswith("11.jpg")][0]
    short = full.order(0).tolist().index(bad) // BATCH
    assert short < 5 and shapes == [3 - (b == short) for b in range(5)] + [2]   # its batch is one short
    states = []
    for k in range(7):
        loader = make_loader(corrupt_root, 1, "skip")
        with pytest.warns(RuntimeWarning) if k > short else _no_warning():
            states.append(cut(loader, k))
    rests = child({"mode": "resume", "root": corrupt_root, "on_error": "skip",
                   "states": [[s, (4, 2, 0)[i % 3]] for i, s in enumerate(states)]})
    for k, rest in enumerate(rests[:6]):
        assert rest == ref[0][k:], k
    for k in range(7):   # in process too, with the failures counted only for what was loaded
        loader = make_loader(corrupt_root, 3, "skip").load_state_dict(states[k])
        with pytest.warns(RuntimeWarning) if k <= short or k == 6 else _no_warning():
            rest = [digest(b) for b in loader]
        assert rest == (ref[0][k:] if k < 6 else ref[1])
        assert len(loader.stats()["failures"]) == (1 if k <= short or k == 6 else 0)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_state_is_checked_against_the_loader(root):
    state = cut(make_loader(root, 1), 2)
    other = fl.Loader(fl.ImageFolder(root), batch_size=4, shuffle=True, seed=1234, transforms=[fl.CenterCrop(8)])
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        make_loader(root, 1).load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="outside"):
        make_loader(root, 1).load_state_dict({**state, "batch": 7})


# -- positions that are not whole steps, failures, drop_last -----------------------------------

def coloured(n, bad=()):
    """(PNG of colour i, i) records, garbage bytes at positions ``bad``: a batch's labels say which
    records it holds, and its pixels must agree."""
    return [(b"not an image" if i in bad else encode(np.full((6, 6, 3), i, np.uint8), "PNG"), i)
            for i in range(n)]


def labels_of(loader):
    out = []
    for x, y in loader:
        assert (x[:, 0, 0, 0] == y).all()   # pixels and labels stay together
        out.append(y.tolist())
    return out


@pytest.mark.filterwarnings("ignore:fastload. skipping records")
def test_a_resumed_pass_stands_in_the_batches_the_uninterrupted_one_does():
    """Batches 5 and 6 all fail: batch 7 stands in for both, also in a pass resumed after batch 3
    or continued after a break (stand-ins were counted from the pass's start: [6, 7] and [8, 9])."""
    def make():
        return fl.Loader(fl.ListSource(coloured(22, bad=range(10, 14))), batch_size=2, on_error="skip",
                         dtype="uint8", layout="NHWC", transforms=[fl.CenterCrop(6)])
    whole = labels_of(make())
    assert whole[5] == whole[6] == whole[7] == [14, 15] and len(whole) == 11
    loader = make()
    it = iter(loader)
    head = [next(it)[1].tolist() for _ in range(4)]
    del it
    state = loader.state_dict()
    assert head + labels_of(loader) == whole
    assert head + labels_of(make().load_state_dict(json.loads(json.dumps(state)))) == whole


def test_a_state_saved_after_a_resume_on_another_world_size_loads_anywhere():
    """Saved on 2 ranks after a step (offset 8), resumed on 3 and stepped again: offset 20 is not a
    whole step of anything, and that state loads at any world size (it was refused as not matching
    its batch), continuing at record 20 of the order."""
    def make(rank, world):
        return fl.Loader(fl.ListSource(coloured(40)), batch_size=4, shuffle=True, seed=3, rank=rank,
                         world_size=world, dtype="uint8", layout="NHWC", transforms=[fl.CenterCrop(6)])
    first = make(0, 2)
    next(iter(first))
    state = first.state_dict()
    assert state["offset"] == 8
    third = make(0, 3).load_state_dict(state)
    next(iter(third))
    state = json.loads(json.dumps(third.state_dict()))
    assert state["offset"] == 20
    order = first.order(0).tolist()
    for world in (1, 2, 3, 4):
        rest = [label for rank in range(world) for y in labels_of(make(rank, world).load_state_dict(state))
                for label in y]
        if world == 1:
            assert rest == order[20:]
        # every record left, and a last step padded from the start of the order
        assert set(order[20:]) <= set(rest) <= set(order[20:] + order[:4 * world]), world
    with pytest.raises(ValueError, match="does not match"):
        make(0, 1).load_state_dict({**state, "offset": 35})


def test_with_drop_last_a_loop_after_a_whole_epoch_starts_the_next():
    """drop_last stops at 15 of 17 records: taking every batch without running the iterator dry,
    or resuming from a state saved after the last batch, left the next loop empty."""
    def make():
        return fl.Loader(fl.ListSource(coloured(17)), batch_size=3, shuffle=True, seed=1, drop_last=True,
                         dtype="uint8", layout="NHWC", transforms=[fl.CenterCrop(6)])
    reference = make()
    epochs = [labels_of(reference) for _ in range(2)]
    assert len(epochs[0]) == 5 and epochs[0] != epochs[1]
    loader = make()
    it = iter(loader)
    assert [next(it)[1].tolist() for _ in range(5)] == epochs[0]
    del it
    state = loader.state_dict()
    assert labels_of(loader) == epochs[1]
    assert labels_of(make().load_state_dict(state)) == epochs[1]


def test_a_stream_left_after_its_last_batch_goes_on_with_the_next_epoch():
    """A stream has no length: a loop that took its last batch and stopped left the position at the
    end, and the next loop was an empty epoch. It is the next epoch's now, as for a random-access
    source; a stream resumed in its middle still finishes that epoch."""
    records = coloured(7)
    def make():
        return fl.Loader(fl.IterableRecords(lambda: iter(records)), batch_size=3, dtype="uint8",
                         layout="NHWC", transforms=[fl.CenterCrop(6)])
    loader = make()
    it = iter(loader)
    assert [next(it)[1].tolist() for _ in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    del it
    state = loader.state_dict()
    assert labels_of(loader) == [[0, 1, 2], [3, 4, 5], [6]] and loader.state_dict()["epoch"] == 2
    resumed = make().load_state_dict(state)
    assert labels_of(resumed) == [[0, 1, 2], [3, 4, 5], [6]] and resumed.state_dict()["epoch"] == 2
    middle = make()
    it = iter(middle)
    next(it)
    del it
    assert labels_of(middle) == [[3, 4, 5], [6]]


def test_a_state_is_json_whatever_integer_type_the_settings_came_in():
    """batch_size=np.int64(16) (hyperparameters read from an array) made the state's batch_size and
    offset NumPy integers, which json.dumps refuses."""
    loader = fl.Loader(fl.ListSource([{"n": i} for i in range(40)]), batch_size=np.int64(16), workers=np.int32(1),
                       prefetch=np.uint8(2), shuffle=True, seed=3, fields={"n": None})
    it = iter(loader)
    first = next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["batch_size"] == 16 and state["offset"] == 16
    resumed = fl.Loader(fl.ListSource([{"n": i} for i in range(40)]), batch_size=16, shuffle=True, seed=3,
                        fields={"n": None})
    resumed.load_state_dict(state)
    assert [b["n"] for b in resumed] == [b["n"] for b in it] and len(first["n"]) == 16


def test_an_epoch_without_a_full_batch_counts_as_one_epoch_and_is_warned_of():
    """drop_last=True with fewer records than a batch: each empty pass moved the epoch on by two."""
    with pytest.warns(RuntimeWarning, match=r"drop_last=True with batch_size=8 and 5 records: no batch is full, "
                                            r"so every epoch is empty"):
        loader = fl.Loader(fl.ListSource([{"n": i} for i in range(5)]), batch_size=8, drop_last=True,
                           fields={"n": None})
    for epoch in range(3):
        assert list(loader) == [] and loader.state_dict()["epoch"] == epoch + 1
