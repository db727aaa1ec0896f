"""Run under torchrun (gloo): each rank iterates one epoch of a Loader and writes what it saw.

Usage: torchrun --nproc_per_node=N _dist_worker.py ROOT OUT_DIR BATCH [STATE_JSON] [CHECKPOINT_AFTER]
   or: torchrun --nproc_per_node=N _dist_worker.py --list URL OUT_DIR   (each rank lists a folder behind URL)
   or: torchrun --nproc_per_node=N _dist_worker.py --skip ROOT OUT_DIR BATCH [drop_last]   (on_error="skip",
       one all-reduce per batch as DDP does; a rank with a batch fewer fails it at the gloo timeout)
   or: torchrun --nproc_per_node=N _dist_worker.py --skip-stream ROOT OUT_DIR BATCH   (the same, the
       records as a stream)
   or: torchrun --nproc_per_node=N _dist_worker.py --mislisted ROOT OTHER OUT_DIR   (rank 0 alone
       lists OTHER first, then every rank lists ROOT)
   or: torchrun --nproc_per_node=2 _dist_worker.py --local-folders SAME0 SAME1 OTHER0 OTHER1 OUT_DIR
       (rank r iterates a Loader over ImageFolder(SAMEr), then one over ImageFolder(OTHERr), then one
       over a ListSource of 5 + r records, then over the train half of ImageFolder(SAMEr) split with
       seed 0, then with seed r)
   or: torchrun --nproc_per_node=2 _dist_worker.py --settings OUT_DIR   (rank r iterates Loaders over
       8 records whose settings differ between the ranks, one at a time, and one whose don't)
   or: torchrun --nproc_per_node=2 _dist_worker.py --streams SAME OTHER OUT_DIR   (rank r streams the tar
       shards shard-{0..2}.tar of SAME, then of SAME (rank 0) or OTHER (rank 1), then a list of records
       with seed r, then shuffled with seed r)
   or: torchrun --nproc_per_node=2 _dist_worker.py --stream-settings SHARDS OUT_DIR   (rank r streams
       records through steps alike on both ranks, then through ones whose settings differ on rank 1,
       one at a time: a mix's weights and stop, a shuffle's initial, a batch's drop_last, and the tar
       shards SHARDS/shard-{0..2}.tar with another shuffle_initial)
   or: torchrun --nproc_per_node=2 _dist_worker.py --folder-streams SAME0 SAME1 OTHER0 OTHER1 OUT_DIR
   or: torchrun --nproc_per_node=2 _dist_worker.py --combined SAME0 SAME1 OTHER0 OTHER1 OUT_DIR
       (rank r iterates Loaders over ImageFolder(SAMEr).map(tuple), ImageFolder(OTHERr).map(tuple) and
       a mix of ImageFolder(SAMEr) and ImageFolder(OTHERr))
   or: torchrun --nproc_per_node=2 _dist_worker.py --explicit OUT_DIR   (rank r loads 5 + r records with
       rank=/world_size= of its own: the group's, then on rank 0 alone the group's and rank=0, world_size=1)
Each rank writes OUT_DIR/rank{r}.json: the record ids and a hash of the pixels of every sample of
every batch, the number of batches, and (rank 0) the loader state after CHECKPOINT_AFTER batches.
"""
import hashlib
import json
import os
import sys

import torch.distributed as dist

import fastload as fl


def make_loader(root, batch, stream=False, **kw):
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))
    records = [{"image": p, "id": i} for i, p in enumerate(paths)]
    src = fl.IterableRecords(lambda: iter(records)) if stream else fl.ListSource(records)
    return fl.Loader(src, batch_size=batch, shuffle=not stream, seed=11, workers=2, fields={
        "image": fl.Image([fl.RandomResizedCrop(24), fl.RandomHorizontalFlip()], dtype="uint8", layout="NHWC")},
        **kw)


def finish(out, r, result):
    """Rank r's result written, then the group closed once every rank has written."""
    with open(os.path.join(out, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def skip_with_all_reduce(root, out, batch, stream=False, drop_last=False):
    """Each rank: one epoch under on_error="skip" with an all-reduce per batch; writes its counts
    and the record ids of its batches. ``root`` may name each rank's own copy: "d{rank}"."""
    import warnings
    from datetime import timedelta

    import torch
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    loader = make_loader(root.format(rank=dist.get_rank()), batch, stream, on_error="skip", drop_last=drop_last)
    steps, ids = 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in loader:
            t = torch.ones(1)
            dist.all_reduce(t)   # waits for every rank's step
            assert t.item() == dist.get_world_size()
            steps += 1
            ids.append(b["id"].tolist())
    s = loader.stats()
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"batches": steps, "len": None if stream else len(loader), "skipped": s["skipped"],
                   "stand_ins": s["stand_ins"], "samples": s["samples"], "ids": ids}, f)
    dist.barrier()
    dist.destroy_process_group()


def run(loader, checkpoint_after=None):
    batches, state = [], None
    for k, b in enumerate(loader):
        batches.append({"ids": b["id"].tolist(),
                        "hashes": [hashlib.sha1(x.tobytes()).hexdigest() for x in b["image"]]})
        if checkpoint_after is not None and k + 1 == checkpoint_after:
            state = loader.state_dict()
    return batches, state


def list_url(url, out):
    """Each rank builds an ImageFolder behind ``url`` and writes the paths it sees."""
    dist.init_process_group("gloo")
    src = fl.ImageFolder(url)
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"paths": list(src.paths), "classes": src.classes}, f)
    dist.barrier()
    dist.destroy_process_group()


def mislisted(root, other, out):
    """Rank 0 alone builds a source behind ``other`` first; then every rank builds one behind ``root``."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    if dist.get_rank() == 0:
        fl.ImageFolder("file://" + other)
    try:
        result = {"paths": list(fl.ImageFolder("file://" + root).paths)}
    except OSError as e:
        result = {"error": str(e)}
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(result, f)


def local_folders(same, other, out):
    """Rank r loads ``same[r]``, ``other[r]``, a list of 5 + r records, and the train half of ``same[r]``
    split with one seed, then with a seed per rank; writes, for each, the number of batches it yielded
    or the error that stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()

    def folder(root):
        return fl.Loader(fl.ImageFolder(root), batch_size=2, transforms=[fl.Resize((8, 8))])
    loaders = {"same": lambda: folder(same[r]), "other": lambda: folder(other[r]),
               "list": lambda: fl.Loader(fl.ListSource([{"x": i} for i in range(5 + r)]), batch_size=2,
                                         fields={"x": None}),
               "split": lambda: fl.Loader(fl.ImageFolder(same[r]).split(test_size=0.5, seed=0)[0], batch_size=2,
                                          transforms=[fl.Resize((8, 8))]),
               "split_per_rank": lambda: fl.Loader(fl.ImageFolder(same[r]).split(test_size=0.5, seed=r)[0],
                                                   batch_size=2, transforms=[fl.Resize((8, 8))])}
    result = {}
    for name, make in loaders.items():
        loader = make()
        try:
            result[name] = {"batches": len(list(loader))}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    if r == 0:   # a loop on rank 0 alone over a Loader sharded across both: rank 1 never comes
        os.environ["FASTLOAD_RANK_WAIT_S"] = "3"
        try:
            result["alone"] = {"batches": len(list(folder(same[r])))}
        except fl.FastloadError as e:
            result["alone"] = {"error": str(e)}
    finish(out, r, result)


def settings(out):
    """Rank r iterates Loaders over 8 records, each differing between the ranks in one setting (none
    in "same"); writes, for each, the record ids it yielded or the error that stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()
    src = fl.ListSource([{"x": i} for i in range(8)])
    cases = {"same": {"shuffle": True, "seed": 3}, "seed": {"shuffle": True, "seed": 100 + r},
             "shuffle": {"shuffle": r == 0}, "batch_size": {"batch_size": 2 + r}, "drop_last": {"drop_last": r == 1},
             "start": {}}
    result = {}
    for name, kw in cases.items():
        loader = fl.Loader(src, **{"batch_size": 2, "fields": {"x": None}, "workers": 1, **kw})
        if name == "start" and r == 0:   # rank 0 alone resumes after the first global step
            loader.load_state_dict({**loader.state_dict(), "batch": 1, "offset": 4})
        try:
            result[name] = {"ids": [int(i) for b in loader for i in b["x"]]}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def streams(same, other, out):
    """Rank r streams tar shards alike on both ranks, then ones that differ on rank 1 (through a
    step, on_error="skip"), then records whose Loader has seed r; writes, for each, the record ids
    it yielded or the error that stopped it."""
    import warnings
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()
    records = [{"x": i} for i in range(8)]
    loaders = {
        "same": lambda: fl.Loader(fl.TarShards(same + "/shard-{0..2}.tar").stream(), batch_size=2,
                                  fields={"cls": "index"}, workers=1),
        "other": lambda: fl.Loader(fl.TarShards((other if r else same) + "/shard-{0..2}.tar").stream().map(dict),
                                   batch_size=2, fields={"cls": "index"}, workers=1, on_error="skip"),
        "seed": lambda: fl.Loader(fl.IterableRecords(lambda: iter(records)), batch_size=2, seed=r,
                                  fields={"x": None}, workers=1),
        "stream seed": lambda: fl.Loader(fl.IterableRecords(lambda: iter(records)).shuffle(4, seed=r),
                                         batch_size=2, fields={"x": None}, workers=1)}
    result = {}
    for name, make in loaders.items():
        key = "x" if "seed" in name else "cls"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[name] = {"ids": [int(i) for b in make() for i in b[key]]}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def plus_100(record):
    return {"x": record["x"] + 100}


def stream_settings(shards, out):
    """Rank r streams records through steps alike on both ranks ("same"), then through steps one of
    whose settings differs on rank 1; writes, for each, the record ids it yielded or the error that
    stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()
    records = [{"x": i} for i in range(12)]

    def listed():
        return fl.IterableRecords(lambda: iter(records))
    streams = {
        "same": lambda: fl.mix([listed().shuffle(4, seed=1, initial=2).skip(2), listed().batch(5, drop_last=True).unbatch()
                                .map(plus_100)], weights=[1, 3], seed=0, stop="all"),
        "mix weights": lambda: fl.mix([listed(), listed().map(plus_100)], weights=[1, 3 + r], seed=0),
        "mix stop": lambda: fl.mix([listed(), listed().map(plus_100)], seed=0, stop="all" if r else "first"),
        "shuffle initial": lambda: listed().shuffle(4, seed=0, initial=1 + r),
        "batch drop_last": lambda: listed().batch(5, drop_last=r == 1).unbatch(),
        "tar shuffle_initial": lambda: fl.TarShards(shards + "/shard-{0..2}.tar").stream(
            shuffle_buffer=4, seed=0, shuffle_initial=1 + r)}
    result = {}
    for name, make in streams.items():
        key = "cls" if name.startswith("tar") else "x"
        loader = fl.Loader(make(), batch_size=2, fields={key: None}, workers=1)
        try:
            result[name] = {"ids": [int(i) for b in loader for i in b[key]]}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def folder_streams(same, other, out):
    """Rank r iterates Loaders over a step of ``same[r]``, of ``other[r]``, and a mix of both; writes,
    for each, the number of batches it yielded or the error that stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()
    streams = {"same": lambda: fl.ImageFolder(same[r]).map(tuple),
               "other": lambda: fl.ImageFolder(other[r]).map(tuple),
               "mix": lambda: fl.mix([fl.ImageFolder(same[r]), fl.ImageFolder(other[r])], seed=0, stop="all")}
    result = {}
    for name, make in streams.items():
        try:
            result[name] = {"batches": len(list(fl.Loader(make(), batch_size=2, transforms=[fl.Resize((8, 8))])))}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def combined(same, other, out):
    """Rank r iterates Loaders over ``same[r]`` and ``other[r]`` zipped with numbers, and joined by
    relative path with a record per file; writes, for each, its batch count or the error that stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r = dist.get_rank()

    def zipped(root):
        files = fl.ImageFiles(root)
        return fl.zip(image=files, n=fl.ListSource(list(range(len(files)))))

    def joined(root):
        files = fl.ImageFiles(root)
        meta = fl.ListSource([{"id": os.path.relpath(p, root), "n": k} for k, p in enumerate(files.paths)])
        return fl.join(image=files.key_by(lambda p: os.path.relpath(p, root)), meta=meta.key_by("id"))
    result = {}
    for name, make in (("zip_same", lambda: zipped(same[r])), ("zip_other", lambda: zipped(other[r])),
                       ("join_same", lambda: joined(same[r])), ("join_other", lambda: joined(other[r]))):
        fields = {"image": [fl.Resize((8, 8))], "n" if name.startswith("zip") else "meta": None}
        try:
            result[name] = {"batches": len(list(fl.Loader(make(), batch_size=2, fields=fields)))}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def explicit(out):
    """Rank r loads 5 + r records through Loaders given rank=/world_size=: the group's on every rank,
    then on rank 0 alone the group's and rank=0, world_size=1; writes, for each, the number of
    batches it yielded or the error that stopped it."""
    from datetime import timedelta
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    r, w = dist.get_rank(), dist.get_world_size()
    src = fl.ListSource([{"x": i} for i in range(5 + r)])
    cases = {"group": (r, w)}
    if r == 0:
        os.environ["FASTLOAD_RANK_WAIT_S"] = "3"
        cases.update({"alone_group": (r, w), "alone_own": (0, 1)})
    result = {}
    for name, (rank, world_size) in cases.items():
        loader = fl.Loader(src, batch_size=2, fields={"x": None}, workers=1, rank=rank, world_size=world_size)
        try:
            result[name] = {"batches": len(list(loader))}
        except fl.FastloadError as e:
            result[name] = {"error": str(e)}
    finish(out, r, result)


def main():
    if sys.argv[1] == "--stream-settings":
        return stream_settings(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "--folder-streams":
        return folder_streams(sys.argv[2:4], sys.argv[4:6], sys.argv[6])
    if sys.argv[1] == "--combined":
        return combined(sys.argv[2:4], sys.argv[4:6], sys.argv[6])
    if sys.argv[1] == "--explicit":
        return explicit(sys.argv[2])
    if sys.argv[1] == "--streams":
        return streams(sys.argv[2], sys.argv[3], sys.argv[4])
    if sys.argv[1] == "--settings":
        return settings(sys.argv[2])
    if sys.argv[1] == "--list":
        return list_url(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "--local-folders":
        return local_folders(sys.argv[2:4], sys.argv[4:6], sys.argv[6])
    if sys.argv[1] == "--mislisted":
        return mislisted(sys.argv[2], sys.argv[3], sys.argv[4])
    if sys.argv[1] in ("--skip", "--skip-stream"):
        return skip_with_all_reduce(sys.argv[2], sys.argv[3], int(sys.argv[4]), stream=sys.argv[1] == "--skip-stream",
                                    drop_last=sys.argv[5:] == ["drop_last"])
    root, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state = None
    if len(sys.argv) > 4 and sys.argv[4] != "-":
        with open(sys.argv[4]) as f:
            state = json.load(f)
    checkpoint_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
    dist.init_process_group("gloo")
    loader = make_loader(root, batch)
    assert (loader.rank, loader.world_size) == (dist.get_rank(), dist.get_world_size())
    if state is not None:
        loader.load_state_dict(state)
    batches, saved = run(loader, checkpoint_after)
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, len(batches))
    assert len(set(counts)) == 1, f"ranks yield different numbers of batches: {counts}"
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"batches": batches, "state": saved, "world_size": dist.get_world_size(),
                   "order": loader.order(0).tolist()}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
