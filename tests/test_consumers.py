"""What a user coming from torch's DataLoader hands the Loader, and what a resumed run must refuse:
plain sequences and map-style datasets, tuple records, fields only later records have, misspelt
field names, framework tensors in records, numbers past float64, streams that know their length,
stratified splits over tensor labels, and checkpoints resumed with other stream or batching settings
or after part of an epoch's failure budget was spent. References: torch's default_collate, NumPy."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import fastload as fl
from fastload.pipeline.collate import collate_values
from _child import run_python
from helpers import encode, photo_like


# -- sources that are not Sources -------------------------------------------------------------------

class MapStyle:
    """A torch-style map dataset: __len__ and __getitem__, nothing else."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {"x": np.full(3, i, np.float32), "y": i % 2}


@pytest.mark.parametrize("make", [lambda: MapStyle(5), lambda: [MapStyle(5)[i] for i in range(5)]],
                         ids=["map-style", "list"])
def test_a_sequence_of_records_is_read_as_a_list_source(make):
    loader = fl.Loader(make(), batch_size=2, shuffle=True, seed=3, fields={"y": "index"})
    order = loader.order(0)
    got = list(loader)
    assert [len(b["y"]) for b in got] == [2, 2, 1] and len(loader) == 3
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in got]), order % 2)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got]),
                                  np.repeat(order[:, None], 3, axis=1).astype(np.float32))


# -- which columns a batch has -----------------------------------------------------------------------

def test_tuple_records_pass_unnamed_positions_through():
    X, y = np.arange(12).reshape(6, 2), np.arange(6) % 3
    got = list(fl.Loader(fl.ArrayRecords(X, y), batch_size=4, fields={1: "index"}))
    assert sorted(got[0]) == [0, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), X)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
    every = list(fl.Loader(fl.ArrayRecords(X, y), batch_size=4, fields={}))
    assert [sorted(b) for b in every] == [[0, 1], [0, 1]]
    np.testing.assert_array_equal(every[1][0], X[4:])
    with pytest.raises(ValueError, match=r"positions 0\.\.1, got \['0'\]"):
        fl.Loader(fl.ArrayRecords(X, y), batch_size=4, fields={"0": None})
    bare = fl.Loader(fl.ListSource([1, 2, 3]), batch_size=2, fields={})   # order() needs no column
    assert sorted(bare.order(0)) == [0, 1, 2]
    for use in (lambda: next(iter(bare)), lambda: bare.batch_at(0)):   # never a batch of {}
        with pytest.raises(ValueError, match="leaves batches without a column"):
            use()


def test_a_field_only_later_records_have_is_warned_of_once_naming_the_record():
    records = [{"text": "a"}, {"text": "b", "score": 0.5}, {"text": "c", "score": 0.7}, {"text": "d", "score": 1}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(fl.Loader(records, batch_size=2, workers=0, fields={"text": None}))
    said = [str(w.message) for w in caught if "first record lacks" in str(w.message)]
    assert len(said) == 1 and "list[1]" in said[0] and "['score']" in said[0] and "fields=" in said[0]
    assert [b["text"] for b in got] == [["a", "b"], ["c", "d"]]
    # Named, the column is there, None where a record lacks it (the first record lacks it: said once).
    with pytest.warns(RuntimeWarning, match=r"\['score'\] are not fields of the first record"):
        named = list(fl.Loader(records, batch_size=2, fields={"text": None, "score": None}))
    assert [b["score"] for b in named] == [[None, 0.5], [0.7, 1]]


def test_only_a_shard_samples_names_are_hidden_not_every_dunder_key():
    records = [{"v": i, "__index_level_0__": 10 + i, "__key__": f"k{i}"} for i in range(3)]
    got = next(iter(fl.Loader(records, batch_size=3, fields={"v": None})))
    assert sorted(got) == ["__index_level_0__", "v"]
    np.testing.assert_array_equal(got["__index_level_0__"], [10, 11, 12])


def test_a_field_name_no_record_has_is_warned_of_at_construction():
    records = [{"caption": "x", "label": 1}] * 3
    with pytest.warns(RuntimeWarning, match=r"\['captoin'\] are not fields of the first record.*'caption', 'label'"):
        fl.Loader(records, batch_size=3, fields={"captoin": None})


# -- collating values no field owns --------------------------------------------------------------------

def test_framework_tensors_in_records_are_stacked_as_default_collate_stacks_them():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate
    rows = [torch.arange(4, dtype=torch.float32) * i for i in range(3)]
    want = default_collate(rows)
    got = collate_values(rows)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.numpy())
    scalars = [torch.tensor(i) for i in range(3)]
    np.testing.assert_array_equal(collate_values(scalars), default_collate(scalars).numpy())
    batch = next(iter(fl.Loader([{"t": r} for r in rows], batch_size=3, fields={}, output="torch")))
    assert isinstance(batch["t"], torch.Tensor) and torch.equal(batch["t"], want)
    ragged = [torch.ones(2), torch.ones(3)]
    assert isinstance(collate_values(ragged), list)   # as numpy arrays of other shapes are
    halves = [torch.ones(2, dtype=torch.bfloat16)] * 2   # NumPy has no bfloat16: left as they are
    assert isinstance(collate_values(halves), list)


def test_a_number_past_float64_leaves_its_column_a_list():
    huge = 10 ** 400
    assert collate_values([1.5, huge]) == [1.5, huge]
    got = next(iter(fl.Loader([{"v": 1.5}, {"v": huge}], batch_size=2, fields={})))
    assert got["v"] == [1.5, huge]


# -- streams that know their length ----------------------------------------------------------------

@pytest.mark.parametrize("drop_last", [False, True])
def test_len_of_a_stream_that_knows_its_length(drop_last):
    stream = fl.IterableRecords(lambda: ({"v": i} for i in range(23)), length=23).map(lambda r: r)
    loader = fl.Loader(stream, batch_size=5, fields={"v": None}, drop_last=drop_last)
    assert len(loader) == len(list(loader)) == (4 if drop_last else 5)
    with pytest.raises(TypeError, match="no length known in advance"):
        len(fl.Loader(fl.IterableRecords(lambda: ({"v": i} for i in range(3))), batch_size=2, fields={}))
    with pytest.raises(TypeError, match="per rank are not known"):
        len(fl.Loader(stream, batch_size=5, fields={"v": None}, rank=0, world_size=2))


# -- stratified splits -------------------------------------------------------------------------------

def test_stratify_by_a_tensor_of_labels_groups_by_value():
    torch = pytest.importorskip("torch")
    labels = np.array([0] * 90 + [1] * 10)
    source = fl.ListSource(list(range(100)))
    for seed in range(4):
        _, test = source.split(test_size=0.2, seed=seed, stratify=torch.from_numpy(labels))
        _, ref = source.split(test_size=0.2, seed=seed, stratify=labels)
        assert np.bincount(labels[[test[i] for i in range(len(test))]]).tolist() == [18, 2]
        assert [test[i] for i in range(len(test))] == [ref[i] for i in range(len(ref))]
    per_record = [torch.tensor(v) for v in labels]   # a list of 0-d tensors, as a Dataset yields
    _, test = source.split(test_size=0.2, seed=0, stratify=per_record)
    assert np.bincount(labels[[test[i] for i in range(len(test))]]).tolist() == [18, 2]
    with pytest.raises(TypeError, match="stratify takes 'label', a field name.*bool True"):
        source.split(test_size=0.2, stratify=True)


# -- what a checkpoint holds -------------------------------------------------------------------------

def _values(loader, key):
    return [v for b in loader for v in np.asarray(b[key]).tolist()]


def test_a_stream_resumed_with_another_shuffle_seed_or_buffer_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"v": i}) + "\n" for i in range(24)))

    def make(seed, buffer=6):
        return fl.Loader(fl.JSONRecords(str(path)).shuffle(buffer, seed=seed), batch_size=4, fields={"v": None})

    loader = make(1)
    it = iter(loader)
    seen = [v for _ in range(2) for v in next(it)["v"]]
    state = json.loads(json.dumps(loader.state_dict()))
    it.close()
    rest = _values(make(1).load_state_dict(state), "v")
    assert sorted(seen + rest) == list(range(24))
    for other in (make(2), make(1, buffer=7)):
        with pytest.raises(ValueError, match=r"saved with a stream made as 'shuffle\(6, seed=1\) of JSONRecords'"):
            other.load_state_dict(state)


def test_drop_last_is_part_of_the_state():
    def make(drop_last):
        return fl.Loader(fl.ListSource([{"v": i} for i in range(21)]), batch_size=4, drop_last=drop_last, fields={})
    loader = make(True)
    list(loader)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="saved with drop_last=True, this loader has False"):
        make(False).load_state_dict(state)
    older = {k: v for k, v in state.items() if k != "drop_last"}   # a state saved before it was kept
    make(True).load_state_dict(older)


RESUME = """
import json, sys, warnings
import fastload as fl
warnings.simplefilter("ignore")
loader = fl.Loader(fl.ImageFolder(sys.argv[1]), batch_size=4, transforms=[fl.Resize((8, 8))], max_failures=2)
loader.load_state_dict(json.loads(sys.argv[2]))
try:
    for _ in loader:
        pass
except fl.RecordError as e:
    print("refused:", e)
else:
    print("finished:", loader.stats()["failed_this_epoch"])
"""


def test_max_failures_counts_the_whole_epoch_across_a_resume(tmp_path):
    """3 unreadable files in 26 with max_failures=2: the epoch is refused whether or not it was
    resumed after the first failure, in a fresh process."""
    for i in range(26):
        path = tmp_path / "c" / f"{i:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not a jpeg" if i in (5, 18, 19) else encode(photo_like(12, 12, seed=i)))
    loader = fl.Loader(fl.ImageFolder(str(tmp_path)), batch_size=4, transforms=[fl.Resize((8, 8))], max_failures=2)
    it = iter(loader)
    with pytest.warns(RuntimeWarning):
        for _ in range(3):
            next(it)
    state = loader.state_dict()
    assert state["failed"] == {"count": 1, "samples": 0}
    it.close()
    with pytest.raises(fl.RecordError, match="3 records failed this epoch, over max_failures=2"), \
            pytest.warns(RuntimeWarning):
        for _ in fl.Loader(fl.ImageFolder(str(tmp_path)), batch_size=4, transforms=[fl.Resize((8, 8))],
                           max_failures=2):
            pass
    out = run_python(["-c", RESUME, str(tmp_path), json.dumps(state)])   # a fresh process
    assert out.startswith("refused:") and "3 records failed this epoch, over max_failures=2" in out


def test_the_skip_warning_names_the_first_failure_of_its_batch():
    records = [{"v": 1.0}, {"v": "x"}, {"v": 2.0}, {"v": "y"}]
    with pytest.warns(RuntimeWarning, match=r"skipping records that fail \(ListSource\[1\]: field 'v'") as caught:
        got = list(fl.Loader(fl.ListSource(records), batch_size=4, fields={"v": fl.Numeric(1)}, on_error="skip"))
    assert len([w for w in caught if "skipping" in str(w.message)]) == 1
    assert got[0]["v"].ravel().tolist() == [1.0, 2.0]


def test_a_state_saved_after_an_epochs_last_batch_is_the_next_epochs_start():
    """Keras saves in on_epoch_end: (0, len) made fit(initial_epoch=0) run the empty rest of epoch 0
    as an epoch of its own, one epoch more than asked, every later one shifted."""
    def make():
        return fl.Loader(fl.ListSource([{"v": i} for i in range(10)]), batch_size=4, shuffle=True, seed=5, fields={})
    loader = make()
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    assert (state["epoch"], state["batch"], state["offset"]) == (1, 0, 0)
    resumed = make().load_state_dict(state)
    assert _values(resumed, "v") == make().order(1).tolist()
    mid = make()
    it = iter(mid)
    next(it)
    assert (mid.state_dict()["epoch"], mid.state_dict()["batch"]) == (0, 1)

