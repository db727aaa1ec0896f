"""Sharding under torchrun: one global order per epoch, cut into global steps; ranks take disjoint
parts that cover it, yield equal numbers of batches, and a checkpoint resumes at another world size
with exactly the remaining samples and identical pixels. Real processes: torchrun, gloo, CPU."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastload as fl
from fastload.pipeline.sampler import Sampler

torch = pytest.importorskip("torch")
HERE = os.path.dirname(os.path.abspath(__file__))
N, B = 23, 3                 # 23 records: no world size below divides it


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fastload.synthetic import make_image_folder
    return make_image_folder(str(tmp_path_factory.mktemp("dist") / "d"), classes=1, per_class=N, size=(40, 48))


def torchrun(nproc, root, out, batch, state="-", checkpoint_after=None):
    args = [root, out, str(batch), state] + ([] if checkpoint_after is None else [str(checkpoint_after)])
    return launch(nproc, args, out)


def launch(nproc, args, out):
    os.makedirs(out, exist_ok=True)
    home = os.path.dirname(os.path.dirname(fl.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(HERE, "_dist_worker.py"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = []
    for k in range(nproc):
        with open(os.path.join(out, f"rank{k}.json")) as f:
            ranks.append(json.load(f))
    return ranks


def in_process(root, world_size, rank, batch, state=None):
    from _dist_worker import make_loader, run
    loader = make_loader(root, batch)
    loader = fl.Loader(**{**loader._init, "rank": rank, "world_size": world_size})
    if state is not None:
        loader.load_state_dict(state)
    return run(loader)[0], loader


@pytest.fixture(scope="module")
def reference(root):
    """One process, global batch 2 * B: sample id -> pixel hash, and the epoch's order."""
    batches, loader = in_process(root, 1, 0, 2 * B)
    pixels = {i: h for b in batches for i, h in zip(b["ids"], b["hashes"])}
    assert sorted(pixels) == list(range(N))
    return pixels, loader.order(0).tolist()


def test_sampler_cuts_one_global_order_for_any_world_size():
    order = np.random.default_rng(0).permutation(N)
    for g in (1, 2, 3, 6):                          # a global batch of 6: world sizes 1, 2, 3, 6
        samplers = [Sampler(N, 6 // g, drop_last=False, rank=r, world_size=g) for r in range(g)]
        steps = {s.steps() for s in samplers}
        assert steps == {4}                          # every rank the same count
        for k in range(3):                           # full global steps: the same records whatever g
            got = np.concatenate([order[s.positions(0, k)] for s in samplers])
            np.testing.assert_array_equal(got, order[6 * k:6 * k + 6])
    drop = Sampler(N, 3, drop_last=True, rank=1, world_size=2)
    assert drop.steps() == 3 and drop.steps(offset=12) == 1


def test_world_from_the_environment(monkeypatch, root):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    loader = fl.Loader(fl.ImageFolder(root), batch_size=2, transforms=[fl.CenterCrop(8)])
    assert (loader.rank, loader.world_size) == (1, 3)
    assert len(loader) == 4                          # ceil(23 / 6)
    with pytest.raises(ValueError, match="rank"):
        fl.Loader(fl.ImageFolder(root), batch_size=2, transforms=[fl.CenterCrop(8)], rank=3, world_size=3)


def test_two_ranks_cover_the_epoch_and_resume_on_one_and_three(root, reference, tmp_path):
    pixels, order = reference
    ranks = torchrun(2, root, str(tmp_path / "w2"), B, checkpoint_after=2)
    assert [len(r["batches"]) for r in ranks] == [4, 4]                    # ceil(23 / 6) each
    seen = [i for r in ranks for b in r["batches"] for i in b["ids"]]
    assert len(seen) == 24 and sorted(set(seen)) == list(range(N))          # all, one repeated as padding
    assert sorted(seen) == sorted(list(range(N)) + order[:1])
    for k in range(4):                                                      # global step k = positions 6k..6k+5
        step = ranks[0]["batches"][k]["ids"] + ranks[1]["batches"][k]["ids"]
        assert step == [order[p % N] for p in range(6 * k, 6 * k + 6)]
    for r in ranks:                                                         # identical pixels at any world size
        for b in r["batches"]:
            assert [pixels[i] for i in b["ids"]] == b["hashes"]

    state = ranks[0]["state"]                                               # taken at world size 2 after 2 steps
    assert state["world_size"] == 2 and state["offset"] == 12
    rest, _ = in_process(root, 1, 0, B, state=json.loads(json.dumps(state)))
    ids = [i for b in rest for i in b["ids"]]
    assert ids == order[12:]                                                # exactly the remaining samples, once
    assert [h for b in rest for h in b["hashes"]] == [pixels[i] for i in ids]

    _, loader1 = in_process(root, 1, 0, B)                                  # 1 -> 3
    loader1.set_epoch(0)
    it = iter(loader1)
    for _ in range(3):
        next(it)
    state1 = loader1.state_dict()
    assert state1["offset"] == 9
    three = torchrun(3, root, str(tmp_path / "w3"), B, state=_save(tmp_path, state1))
    assert [len(r["batches"]) for r in three] == [2, 2, 2]                  # ceil(14 / 9)
    got = [i for k in range(2) for r in three for i in r["batches"][k]["ids"]]
    assert got == [order[9 + p] if 9 + p < N else order[(9 + p) % N] for p in range(18)]
    assert sorted(got) == sorted(order[9:] + order[:4])                     # the rest once each, 4 pads
    for r in three:
        for b in r["batches"]:
            assert [pixels[i] for i in b["ids"]] == b["hashes"]


def _save(tmp_path, state):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    return str(path)


def test_a_bucket_is_listed_once_for_all_ranks(root, tmp_path):
    """A folder behind a URL (a real HTTP server serving directory listings) is listed by rank 0 only;
    every rank gets the same listing."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    listings = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if not self.path.lower().endswith(".jpg"):
                listings.append(self.path)
            super().do_GET()
    www = os.path.dirname(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=www))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(root)}"
        one = fl.ImageFolder(url)
        per_listing = len(listings)
        assert per_listing > 0 and len(one) == N
        listings.clear()
        ranks = launch(2, ["--list", url, str(tmp_path / "list")], str(tmp_path / "list"))
        assert len(listings) == per_listing            # rank 0 listed; rank 1 was told
        assert ranks[0] == ranks[1] == {"paths": one.paths, "classes": one.classes}
    finally:
        server.shutdown()
        server.server_close()


def test_a_wholly_failed_batch_does_not_cost_its_rank_a_step(tmp_path):
    """Under on_error="skip", a batch every record of which fails is not dropped: its rank would
    run one step fewer than the others and their all-reduce (DDP's, once a step) would wait for
    it forever. The next batch that reads stands in, on that rank only."""
    from _dist_worker import make_loader
    from fastload.synthetic import make_image_folder
    root = make_image_folder(str(tmp_path / "d"), classes=1, per_class=24, size=(24, 24))
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))
    probe = fl.Loader(**{**make_loader(root, 2)._init, "rank": 1, "world_size": 2})
    bad = probe.order(0)[probe._sampler.positions(0, 2)]   # rank 1's third batch: both its records
    for i in bad:
        with open(paths[i], "wb") as f:
            f.write(b"not a JPEG at all")
    ranks = launch(2, ["--skip", root, str(tmp_path / "out"), "2"], str(tmp_path / "out"))
    assert [r["batches"] for r in ranks] == [r["len"] for r in ranks] == [6, 6]   # 24 records, 4 a step
    assert [(r["skipped"], r["stand_ins"]) for r in ranks] == [(0, 0), (2, 1)]
    # the stand-in is the rank's next batch: two of its samples come twice, the two lost not at all
    assert [r["samples"] for r in ranks] == [12, 12]
    loader = fl.Loader(**{**make_loader(root, 2)._init, "rank": 1, "world_size": 2, "on_error": "skip"})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = [b["id"].tolist() for b in loader]
    order = loader.order(0)
    want = [order[loader._sampler.positions(0, b)].tolist() for b in range(6)]
    assert ids == want[:2] + [want[3]] + want[3:]


def test_a_streamed_batch_that_wholly_fails_is_stood_in_from_its_step(tmp_path):
    """The same bad batch, the records as a stream: a stream's batch every record of which failed
    was dropped, so that rank ran a step fewer and the all-reduce waited forever. Another rank's
    share of the same global step stands in."""
    from fastload.synthetic import make_image_folder
    root = make_image_folder(str(tmp_path / "d"), classes=1, per_class=24, size=(24, 24))
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))
    for i in (10, 11):   # the stream's third global step of 4 is records 8..11: rank 1 takes 10 and 11
        with open(paths[i], "wb") as f:
            f.write(b"not a JPEG at all")
    ranks = launch(2, ["--skip-stream", root, str(tmp_path / "out"), "2"], str(tmp_path / "out"))
    assert [r["batches"] for r in ranks] == [6, 6]
    assert [(r["skipped"], r["stand_ins"], r["samples"]) for r in ranks] == [(0, 0, 12), (2, 1, 12)]


def test_a_streamed_step_that_fails_on_one_ranks_copy_only_keeps_the_ranks_even(tmp_path):
    """Each rank reads its own copy of the files; on rank 1's, records 8..11, the stream's third
    global step of 4, are damaged (bit rot on one machine). Rank 1 found no share of that step that
    reads and dropped it, a step short, while rank 0 waited in its all-reduce for ever. Rank 1's
    last batch, made again from its records, stands in."""
    import shutil
    from fastload.synthetic import make_image_folder
    make_image_folder(str(tmp_path / "d0"), classes=1, per_class=24, size=(24, 24))
    shutil.copytree(tmp_path / "d0", tmp_path / "d1")
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(tmp_path / "d1") for f in fs if f.endswith(".jpg"))
    for i in (8, 9, 10, 11):
        with open(paths[i], "wb") as f:
            f.write(b"not a JPEG at all")
    ranks = launch(2, ["--skip-stream", str(tmp_path / "d{rank}"), str(tmp_path / "out"), "2"], str(tmp_path / "out"))
    assert [r["batches"] for r in ranks] == [6, 6]
    assert [(r["skipped"], r["stand_ins"], r["samples"]) for r in ranks] == [(0, 0, 12), (2, 1, 12)]
    ids0, ids1 = ranks[0]["ids"], ranks[1]["ids"]
    assert ids0 == [[4 * s, 4 * s + 1] for s in range(6)]
    assert ids1 == [[2, 3], [6, 7], [6, 7], [14, 15], [18, 19], [22, 23]]   # step 2: step 1's batch again


def test_a_rank_none_of_whose_batches_reads_stands_in_from_another_ranks_share(tmp_path):
    """3 records, one a truncated JPEG, one batch of 1 a rank, drop_last: rank 1's only batch failed
    and it had no batch of its own to stand in, so it raised "every record failed" (2 of the 3
    read) while rank 0 waited in its all-reduce. Rank 0's share of the same step stands in."""
    from _dist_worker import make_loader
    from fastload.synthetic import make_image_folder
    root = make_image_folder(str(tmp_path / "d"), classes=1, per_class=3, size=(24, 24))
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))
    probe = fl.Loader(**{**make_loader(root, 1)._init, "rank": 1, "world_size": 2, "drop_last": True})
    order = probe.order(0)
    (bad,) = order[probe._sampler.positions(0, 0)]   # rank 1's one batch
    with open(paths[bad], "rb") as f:
        data = f.read()
    with open(paths[bad], "wb") as f:
        f.write(data[:len(data) // 2])
    ranks = launch(2, ["--skip", root, str(tmp_path / "out"), "1", "drop_last"], str(tmp_path / "out"))
    assert [r["batches"] for r in ranks] == [r["len"] for r in ranks] == [1, 1]
    assert [(r["skipped"], r["stand_ins"], r["samples"]) for r in ranks] == [(0, 0, 1), (1, 1, 1)]
    assert ranks[0]["ids"] == ranks[1]["ids"] == [[int(order[0])]]   # a record that reads: rank 0's


def test_a_url_source_built_on_rank_0_alone_stops_the_others_naming_both(tmp_path):
    """Rank 0 lists for every rank, and broadcasts pair up by order alone: a source rank 0 built
    first (a validation set) handed its files to the other rank's training source, silently. The
    other rank now stops, naming both."""
    from fastload.synthetic import make_image_folder
    train = make_image_folder(str(tmp_path / "train"), classes=2, per_class=3, size=(16, 16))
    val = make_image_folder(str(tmp_path / "val"), classes=2, per_class=1, size=(16, 16))
    out = tmp_path / "out"
    out.mkdir()
    home = os.path.dirname(os.path.dirname(fl.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(HERE, "_dist_worker.py"), "--mislisted", train, val, str(out)]
    subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    with open(out / "rank1.json") as f:
        rank1 = json.load(f)
    assert rank1["error"].endswith(f"file://{train}: rank 1 lists this while rank 0 listed 'file://{val}': under "
                                   "torch.distributed rank 0 lists for every rank, so every rank must build the "
                                   "same URL sources in the same order"), rank1


def _four_folders(tmp_path, extra_in: str) -> tuple[str, str, str, str]:
    """A folder for each rank alike (under other roots), and a pair where rank 1's has a file more,
    extra.jpg in class folder ``extra_in``."""
    import shutil
    from fastload.synthetic import make_image_folder
    same0 = make_image_folder(str(tmp_path / "a" / "d"), classes=2, per_class=3, size=(16, 16))
    same1 = str(shutil.copytree(same0, tmp_path / "b" / "d"))
    other0 = str(shutil.copytree(same0, tmp_path / "c" / "d"))
    other1 = str(shutil.copytree(same0, tmp_path / "e" / "d"))
    shutil.copy(os.path.join(other1, "class_001", "img_00000.jpg"), os.path.join(other1, extra_in, "extra.jpg"))
    return same0, same1, other0, other1


def test_ranks_whose_local_folders_differ_are_stopped_naming_both(tmp_path):
    """Each rank lists a local folder itself: one that held a file more on one machine was sharded as
    two listings, every batch misaligned, silently. Ranks now compare their record counts and file
    names once, when a Loader first shards, and every rank stops, naming the source and the counts;
    ranks that agree (the same names under other roots) go on. A split compares its own records: ranks
    that split one folder with a seed each held subsets of one size and one listing, not one subset."""
    same0, same1, other0, other1 = _four_folders(tmp_path, "class_000")
    out = str(tmp_path / "out")
    ranks = launch(2, ["--local-folders", same0, same1, other0, other1, out], out)
    assert [r["same"] for r in ranks] == [{"batches": 2}] * 2     # 6 records, 4 a global step
    # A split of one folder: the same 3 records on both ranks, or (a seed per rank) 3 others of the same 6.
    assert [r["split"] for r in ranks] == [{"batches": 1}] * 2
    for rank in ranks:
        assert rank["split_per_rank"].get("error", "").startswith("the ranks hold other records in Subset"), rank
    errors = [r["other"]["error"] for r in ranks]
    for rank, root, n in ((0, other0, 6), (1, other1, 7)):
        assert errors[rank].startswith(f"the ranks hold other records in ImageFolder({root!r}, {n} images, "
                                       "2 classes): rank 0 has 6 records, rank 1 7"), errors[rank]
        assert errors[rank].endswith("every rank's source must hold the same ones (a folder the same files "
                                     "on every machine)"), errors[rank]
    assert "rank 1's first record that differs is 0: 'class_000/extra.jpg' where rank 0 has " \
           "'class_000/img_00000.jpg'" in errors[1]
    for rank in (0, 1):   # a source without a listing: its record counts
        assert ranks[rank]["list"]["error"].startswith("the ranks hold other records in ListSource: "
                                                       "rank 0 has 5 records, rank 1 6"), ranks[rank]["list"]
    # Rank 0 alone reading a Loader sharded across both waits FASTLOAD_RANK_WAIT_S, then says why.
    assert ranks[0]["alone"]["error"].startswith(f"rank 0 reads ImageFolder({same0!r}, 6 images, 2 classes), "
                                                 "which is sharded across the 2 ranks, but rank 1 did not read it "
                                                 "within 3 s (FASTLOAD_RANK_WAIT_S)"), ranks[0]["alone"]
    assert "alone" not in ranks[1]


def test_ranks_whose_loader_settings_differ_are_stopped_naming_each_value(tmp_path):
    """A seed per rank (seed=base + rank) gave each rank its part of another permutation: records
    twice and others never, silently. The ranks now compare the settings that cut the order into
    steps with their records, and every rank stops naming the setting and each rank's value."""
    out = str(tmp_path / "out")
    ranks = launch(2, ["--settings", out], out)
    assert sorted(ranks[0]["same"]["ids"] + ranks[1]["same"]["ids"]) == list(range(8))
    want = {"seed": "seed differs between ranks: rank 0 has 100, rank 1 has 101; every rank must shard one order "
                    "of ListSource in the same steps: give every rank the same seed (per-rank augmentation "
                    "randomness already differs by record)",
            "shuffle": "shuffle differs between ranks: rank 0 has True, rank 1 has False; every rank must shard one "
                       "order of ListSource in the same steps: give every rank the same shuffle",
            "batch_size": "batch_size differs between ranks: rank 0 has 2, rank 1 has 3;",
            "drop_last": "drop_last differs between ranks: rank 0 has False, rank 1 has True;",
            "start": "start differs between ranks: rank 0 has epoch 0 record 4, rank 1 has epoch 0 record 0; every "
                     "rank must shard one order of ListSource in the same steps: load the same state_dict() on "
                     "every rank, and set_epoch() the same epoch"}
    for name, message in want.items():
        for rank in ranks:
            assert rank[name].get("error", "").startswith(message), (name, rank[name])


def _label_shards(folder) -> None:
    """shard-0.tar .. shard-2.tar in ``folder``, four samples of a ``.cls`` member alone each (0..11)."""
    import io
    import tarfile
    for s in range(3):
        with tarfile.open(folder / f"shard-{s}.tar", "w") as t:
            for i in range(4):
                data = str(4 * s + i).encode()
                member = tarfile.TarInfo(f"s{s}_{i}.cls")
                member.size = len(data)
                t.addfile(member, io.BytesIO(data))


def test_ranks_whose_streams_differ_are_stopped(tmp_path):
    """A stream was never compared: a tar shard missing on one machine gave that rank fewer records,
    so another count of batches (DDP's all-reduce waits) and records other ranks also took. Ranks
    now compare a stream's settings, and its local shards by name and size, when it first shards."""
    same, other = tmp_path / "same", tmp_path / "other"
    same.mkdir()
    other.mkdir()
    _label_shards(same)
    for s in range(2):   # rank 1's machine lacks shard-2
        os.link(same / f"shard-{s}.tar", other / f"shard-{s}.tar")
    size = os.path.getsize(same / "shard-2.tar")
    out = str(tmp_path / "out")
    ranks = launch(2, ["--streams", str(same), str(other), out], out)
    assert sorted(ranks[0]["same"]["ids"] + ranks[1]["same"]["ids"]) == list(range(12))
    assert len(ranks[0]["same"]["ids"]) == len(ranks[1]["same"]["ids"]) == 6
    for rank in (0, 1):
        error = ranks[rank]["other"].get("error", "")
        assert error.startswith("the ranks hold other records in <Stream map(dict)>: rank 1 lists other shards "
                                "than rank 0"), ranks[rank]["other"]
        assert (f"rank 1's first shard that differs is 2: 'shard-2.tar (missing)' where rank 0 has "
                f"'shard-2.tar ({size} bytes)'" in error) == (rank == 1), error
        assert ranks[rank]["seed"].get("error", "").startswith(
            "seed differs between ranks: rank 0 has 0, rank 1 has 1;"), ranks[rank]["seed"]
        # a stream's own shuffle seeded per rank: each rank's share of another order
        assert ranks[rank]["stream seed"].get("error", "").startswith(
            "stream differs between ranks: rank 0 has shuffle(4, seed=0) of IterableRecords, rank 1 has "
            "shuffle(4, seed=1) of IterableRecords;"), ranks[rank]["stream seed"]


def test_ranks_whose_streams_order_or_count_their_records_otherwise_are_stopped(tmp_path):
    """A stream's lineage named its shuffles' and mixes' seeds alone: ranks whose mix weights or stop,
    shuffle initial, batch drop_last or tar shuffle_initial differed each took their share of another
    order or count, records twice and others never, silently. Every such setting is compared now; a
    stream alike on both ranks, all of them set, goes on."""
    _label_shards(tmp_path)
    out = str(tmp_path / "out")
    ranks = launch(2, ["--stream-settings", str(tmp_path), out], out)
    ids = ranks[0]["same"]["ids"] + ranks[1]["same"]["ids"]
    assert sorted(ids) == list(range(2, 12)) + list(range(100, 110)), ranks
    listed, plus = "IterableRecords", "map(plus_100) of IterableRecords"
    want = {"mix weights": (f"mix(2, weights=[1.0, 3.0], seed=0) of {listed} + {plus}",
                            f"mix(2, weights=[1.0, 4.0], seed=0) of {listed} + {plus}"),
            "mix stop": (f"mix(2, seed=0) of {listed} + {plus}", f"mix(2, seed=0, stop='all') of {listed} + {plus}"),
            "shuffle initial": (f"shuffle(4, seed=0, initial=1) of {listed}", f"shuffle(4, seed=0, initial=2) of {listed}"),
            "batch drop_last": (f"unbatch() of batch(5) of {listed}", f"unbatch() of batch(5, drop_last=True) of {listed}"),
            "tar shuffle_initial": ("TarStream(shuffle_buffer=4, seed=0, shuffle_initial=1)",
                                    "TarStream(shuffle_buffer=4, seed=0, shuffle_initial=2)")}
    for name, (mine, theirs) in want.items():
        for rank in ranks:
            assert rank[name].get("error", "").startswith(
                f"stream differs between ranks: rank 0 has {mine}, rank 1 has {theirs};"), (name, rank[name])


def test_ranks_whose_folders_differ_under_a_streams_steps_are_stopped(tmp_path):
    """A stream passed its upstream's tar shards on to be compared, not a folder's listing: a step over
    a folder with a file more on one machine gave that rank a batch more (DDP's all-reduce waits).
    Its listing is compared as the folder's own is; of a mix, each input's, named by its number."""
    same0, same1, other0, other1 = _four_folders(tmp_path, "class_001")
    out = str(tmp_path / "out")
    ranks = launch(2, ["--folder-streams", same0, same1, other0, other1, out], out)
    assert [r["same"] for r in ranks] == [{"batches": 2}] * 2     # 6 records, 4 a global step
    for rank in (0, 1):
        for name, source, first in (("other", "<Stream map(tuple)>", "'class_001/extra.jpg'"),
                                    ("mix", "<Stream mix(2, seed=0, stop='all')>", "'input 1: class_001/extra.jpg'")):
            error = ranks[rank][name].get("error", "")
            assert error.startswith(f"the ranks hold other records in {source}: rank 1 lists other records than "
                                    "rank 0"), (name, ranks[rank][name])
            assert (f"rank 1's first record that differs is {3 if name == 'other' else 9}: {first} where rank 0 "
                    f"has" in error) == (rank == 1), error


def test_ranks_whose_folders_differ_under_a_zip_or_a_join_are_stopped(tmp_path):
    """fl.zip and fl.join passed no listing on to be compared: their record counts alone were, so a
    folder with one file named otherwise on one machine (as many files) paired each rank's records
    with other files, silently. Each part's listing is compared, its names after the part's."""
    same0, same1, other0, other1 = _four_folders(tmp_path, "class_000")
    os.remove(os.path.join(other1, "class_000", "img_00001.jpg"))   # as many files, one named otherwise
    out = str(tmp_path / "out")
    ranks = launch(2, ["--combined", same0, same1, other0, other1, out], out)
    for rank in ranks:
        assert rank["zip_same"] == rank["join_same"] == {"batches": 2}, rank   # 6 records, 4 a global step
        for name, source in (("zip_other", "ZippedSource"), ("join_other", "JoinedSource")):
            error = rank[name].get("error", "")
            assert error.startswith(f"the ranks hold other records in {source}: rank 1 lists other records than "
                                    "rank 0"), (name, rank[name])
            assert ("rank 1's first record that differs is 0: 'image: class_000/extra.jpg' where rank 0 has "
                    "'image: class_000/img_00000.jpg'" in error) == (rank is ranks[1]), error


def test_a_loader_given_the_groups_rank_and_world_size_is_compared(tmp_path):
    """rank=dist.get_rank(), world_size=dist.get_world_size() shards across the group as the values
    found by the Loader itself do, so the ranks compare it; only other values (one rank's own data,
    rank=0, world_size=1 for a loop on rank 0 alone) are not."""
    out = str(tmp_path / "out")
    ranks = launch(2, ["--explicit", out], out)
    for rank in ranks:
        assert rank["group"].get("error", "").startswith("the ranks hold other records in ListSource: rank 0 "
                                                         "has 5 records, rank 1 6"), rank["group"]
    assert ranks[0]["alone_group"]["error"].startswith("rank 0 reads ListSource, which is sharded across the 2 "
                                                       "ranks, but rank 1 did not read it within 3 s")
    assert ranks[0]["alone_own"] == {"batches": 3}
    assert set(ranks[1]) == {"group"}
