"""Under torch.distributed every rank must shard the same records: a check, once per Loader, that they do.

A Loader cuts one global order of its source's records into per-rank parts
(:mod:`fastload.pipeline.sampler`), which is right only if every rank's source
holds the same records in the same order. A URL is listed by rank 0 for every
rank (:func:`fastload.sources.remote.listed_once`), but a local folder is
listed by each rank on its own machine, and one that differs (a file more on
one machine) would give each rank its part of another listing: every batch
misaligned, silently. So when a Loader first shards across the initialised
process group, the ranks exchange their record count and a digest of their
local file names (:meth:`Source.local_listing`): one small all-gather when
they agree. When they do not, every rank has seen every rank's summary, so all
take the same path: rank 0's names are broadcast, each rank finds its first
difference, and every rank raises, rather than one rank stopping and the others
waiting in their next collective.
"""
from __future__ import annotations

import itertools
import sys

from ..errors import FastloadError

__all__ = ["check_same_records"]


def check_same_records(source, rank: int, world_size: int) -> bool:
    """Whether the ranks compared ``source``; FastloadError on every rank when its records differ
    between them (see the module docstring).

    Nothing is compared (no collective) without an initialised process group, or for a Loader
    not sharded across it (``rank=``/``world_size=`` of its own, such as one rank's own data).
    """
    dist = sys.modules.get("torch.distributed")   # never imports torch itself
    if dist is None or not dist.is_available() or not dist.is_initialized() or world_size < 2 \
            or (rank, world_size) != (dist.get_rank(), dist.get_world_size()):
        return False
    listing = getattr(source, "local_listing", lambda: None)()
    summaries = [None] * world_size
    dist.all_gather_object(summaries, (len(source), None if listing is None else listing.digest()))
    differ = [r for r, s in enumerate(summaries) if s != summaries[0]]
    if not differ:
        return True
    theirs = [listing.relative() if rank == 0 and listing is not None else None]
    dist.broadcast_object_list(theirs, src=0)   # every rank is here: each saw the same summaries
    counts = ", ".join(f"rank {r} {summaries[r][0]}" for r in differ[:3])
    more = f" (and {len(differ) - 3} more ranks)" if len(differ) > 3 else ""
    where = ""
    if rank in differ and listing is not None and theirs[0] is not None:
        where = f"; rank {rank}'s " + _first_difference(listing.relative(), theirs[0])
    name = repr(source) if type(source).__repr__ is not object.__repr__ else type(source).__name__
    raise FastloadError(f"the ranks hold other records in {name}: rank 0 has {summaries[0][0]} records, "
                        f"{counts}{more}{where}; under torch.distributed each rank takes its part of one order "
                        "of the records, so every rank's source must hold the same ones (a folder the same files "
                        "on every machine)")


def _first_difference(mine, theirs) -> str:
    """Where the names ``mine`` first differ from rank 0's ``theirs``, in words."""
    for i, (a, b) in enumerate(itertools.zip_longest(mine, theirs)):
        if a != b:
            return f"first record that differs is {i}: " + (
                f"{a!r} where rank 0 has {b!r}" if a is not None and b is not None else
                f"{a!r}, past rank 0's last" if a is not None else f"none where rank 0 has {b!r}")
    return "names are rank 0's"
