"""Under torch.distributed every rank must shard the same records: a check, once per Loader, that they do.

A Loader cuts one global order of its source's records into per-rank parts
(:mod:`fastload.pipeline.sampler`), which is right only if every rank's source
holds the same records in the same order. A URL is listed by rank 0 for every
rank (:func:`fastload.sources.remote.listed_once`), but a local folder is
listed by each rank on its own machine, and one that differs (a file more on
one machine) would give each rank its part of another listing: every batch
misaligned, silently. So when a Loader first shards across the initialised
process group, the ranks exchange their record count and a digest of their
local file names (:meth:`Source.local_listing`) through the process group's
store, which every backend has. The Loader's settings that cut that order into
steps go with them (seed, shuffle, batch_size, drop_last, where the first read
starts, and a stream's lineage: its steps with every setting that changes which records
come out, in what order and how many): a rank given its own seed (``seed=base + rank``) would
take its part of another permutation, some records twice and others never. When they
agree, that is all; when they do not, every rank has seen every rank's summary,
so all take the same path: rank 0's names go through the store too, each rank
finds its first difference, and every rank raises, rather than one rank
stopping and the others waiting in their next collective.

A stream (no length, read front to back) is cut into global steps as it is
read, so the same holds for it: its settings are compared, the listing of a
local folder it reads (through its steps), and its local tar shards by name and
size (a shard missing or cut short on one machine); a stream with no local
listing (records from a function) by its settings alone.

A rank that never reads the Loader (a loop on rank 0 alone over a Loader
sharded across the group) would leave the others waiting: after
``FASTLOAD_RANK_WAIT_S`` seconds (default 600, NCCL's own default timeout)
those waiting raise, naming the ranks that did not come, instead of hanging.
"""
from __future__ import annotations

import itertools
import os
import pickle
import sys
from datetime import timedelta

from ..errors import FastloadError
from ..sources.paths import PathTable

__all__ = ["check_same_records", "listing_of"]

_checks = itertools.count()   # a process's n-th check: every rank's n-th is of the same Loader

# What to do about a Loader setting that differs between ranks, by the name the Loader gives it.
_HINTS = {"seed": "give every rank the same seed (per-rank augmentation randomness already differs by record)",
          "start": "load the same state_dict() on every rank, and set_epoch() the same epoch",
          "stream": "build the same stream on every rank, with the same settings (seeds, weights, buffers, "
                    "counts) for its steps"}


def check_same_records(source, rank: int, world_size: int, settings: dict | None = None) -> bool:
    """Whether the ranks compared ``source``; FastloadError on every rank when its records, or the
    ``settings`` (name: value) that cut them into steps, differ between them, or on those that
    waited when a rank never came (see the module docstring).

    Nothing is compared without an initialised process group, or for a Loader not sharded
    across it (``rank=``/``world_size=`` other than the group's, such as one rank's own data).
    """
    dist = sys.modules.get("torch.distributed")   # never imports torch itself
    if dist is None or not dist.is_available() or not dist.is_initialized() or world_size < 2 \
            or (rank, world_size) != (dist.get_rank(), dist.get_world_size()):
        return False
    listing, noun = listing_of(source)
    name = repr(source) if type(source).__repr__ is not object.__repr__ else type(source).__name__
    exchange = _Exchange(dist, f"fastload/records/{next(_checks)}", rank, world_size, name)
    # A stream's record count is known only once it is read: its listing and settings stand in.
    count = len(source) if hasattr(source, "__len__") and hasattr(source, "__getitem__") else None
    summaries = exchange.all((count, None if listing is None else listing.digest(), dict(settings or {})))
    _check_settings([s[2] for s in summaries], name)
    differ = [r for r, s in enumerate(summaries) if s != summaries[0]]
    if not differ:
        return True
    theirs = exchange.from_rank0(listing.relative() if rank == 0 and listing is not None else None)
    more = f" (and {len(differ) - 3} more ranks)" if len(differ) > 3 else ""
    if summaries[0][0] is None or all(s[0] == summaries[0][0] for s in summaries):   # the listings differ
        who = f"ranks {', '.join(map(str, differ[:3]))}{more} list" if len(differ) > 1 else f"rank {differ[0]} lists"
        counts = f"{who} other {noun}s than rank 0"
    else:
        counts = f"rank 0 has {summaries[0][0]} records, " + ", ".join(
            f"rank {r} {summaries[r][0]}" for r in differ[:3]) + more
    where = ""
    if rank in differ and listing is not None and theirs is not None:
        where = f"; rank {rank}'s " + _first_difference(listing.relative(), theirs, noun)
    raise FastloadError(f"the ranks hold other records in {name}: {counts}{where}; under torch.distributed each "
                        "rank takes its part of one order of the records, so every rank's source must hold the "
                        "same ones (a folder the same files on every machine)")


def listing_of(source):
    """The local files ``source`` lists itself (a PathTable) and what each is, or (None, None):
    its :meth:`Source.local_listing`, else its local shards (``local_shards``) by name and size,
    a stream's each through its steps: a shard missing or cut short on one machine changes a
    stream's records though not their names."""
    own = getattr(source, "local_listing", lambda: None)()
    if own is not None:
        return own, "record"
    shards = getattr(source, "local_shards", list)()
    if not shards:
        return None, None
    return PathTable.of([f"{u} ({_size(u)})" for u in shards]), "shard"


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path.removeprefix('file://'))} bytes"
    except OSError:
        return "missing"


def _check_settings(by_rank: list, name: str) -> None:
    """FastloadError, on every rank alike, naming each setting that differs and each rank's value."""
    wrong = [k for k in by_rank[0] if any(s.get(k) != by_rank[0][k] for s in by_rank)]
    if not wrong:
        return
    said = []
    for k in wrong:
        differ = [r for r, s in enumerate(by_rank) if s.get(k) != by_rank[0][k]]
        more = f" (and {len(differ) - 3} more ranks)" if len(differ) > 3 else ""
        said.append(f"{k} differs between ranks: rank 0 has {by_rank[0][k]}, "
                    + ", ".join(f"rank {r} has {by_rank[r].get(k)}" for r in differ[:3]) + more)
    raise FastloadError("; ".join(said) + f"; every rank must shard one order of {name} in the same steps: "
                        + "; ".join(_HINTS.get(k, f"give every rank the same {k}") for k in wrong))


class _Exchange:
    """Values shared through the process group's store under ``key``, each wait bounded."""

    def __init__(self, dist, key, rank, world_size, name):
        self.store = dist.distributed_c10d._get_default_store()
        self.key, self.rank, self.world_size, self.name = key, rank, world_size, name
        try:
            self.wait_s = float(os.environ.get("FASTLOAD_RANK_WAIT_S", 600))
        except ValueError:
            raise ValueError(f"FASTLOAD_RANK_WAIT_S must be a number of seconds, got "
                             f"{os.environ['FASTLOAD_RANK_WAIT_S']!r}") from None

    def all(self, value) -> list:
        """Every rank's ``value``, by rank."""
        self.store.set(f"{self.key}/{self.rank}", pickle.dumps(value))
        keys = [f"{self.key}/{r}" for r in range(self.world_size)]
        self._wait(keys)
        return [pickle.loads(self.store.get(k)) for k in keys]

    def from_rank0(self, value):
        """Rank 0's ``value``, on every rank."""
        if self.rank == 0:
            self.store.set(f"{self.key}/rank0", pickle.dumps(value))
        self._wait([f"{self.key}/rank0"])
        return pickle.loads(self.store.get(f"{self.key}/rank0"))

    def _wait(self, keys):
        try:
            self.store.wait(keys, timedelta(seconds=self.wait_s))
        except RuntimeError:   # DistStoreError: the wait timed out
            away = [r for r in range(self.world_size) if not self.store.check([f"{self.key}/{r}"])]
            raise FastloadError(
                f"rank {self.rank} reads {self.name}, which is sharded across the {self.world_size} ranks, but "
                f"rank{'s' * (len(away) > 1)} {', '.join(map(str, away))} did not read it within "
                f"{self.wait_s:g} s (FASTLOAD_RANK_WAIT_S): every rank must read a Loader sharded across them, "
                "each its part of every batch; for a loop on one rank alone, give its Loader rank=0, "
                "world_size=1") from None


def _first_difference(mine, theirs, noun="record") -> str:
    """Where the names ``mine`` first differ from rank 0's ``theirs``, in words."""
    for i, (a, b) in enumerate(itertools.zip_longest(mine, theirs)):
        if a != b:
            return f"first {noun} that differs is {i}: " + (
                f"{a!r} where rank 0 has {b!r}" if a is not None and b is not None else
                f"{a!r}, past rank 0's last" if a is not None else f"none where rank 0 has {b!r}")
    return "names are rank 0's"
