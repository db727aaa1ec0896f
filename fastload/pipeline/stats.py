"""Per-stage counters of a running pipeline, and a plain-words verdict on them.

Each stage owns one :class:`StageStats` and is the only writer of its time
counters, except stages with several workers, whose threads add under the
stage's lock. Readers (``pipeline.stats()``, ``fastload doctor``) take a
:meth:`StageStats.copy` and may see a figure one batch stale; nothing here
blocks a stage.

The four times of a stage partition its wall time (per worker):

* ``busy_s``      doing its own work;
* ``wait_in_s``   waiting for its input (the stage before it is slower);
* ``wait_out_s``  blocked handing its output on (the stage after it is slower);
* the rest       start-up and bookkeeping.

So the bottleneck is the stage that is busiest, and a pipeline whose every
stage mostly waits on output is limited by its consumer (the training loop).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["StageStats", "Stats"]


@dataclass
class StageStats:
    """Counters of one stage. ``kind`` is "source", "python", "compiled" or "consumer"."""
    name: str
    kind: str = "python"
    workers: int = 1
    items: int = 0
    busy_s: float = 0.0
    wait_in_s: float = 0.0
    wait_out_s: float = 0.0
    queue_samples: int = 0        # how often the input queue was looked at
    queue_total: int = 0          # sum of the depths seen
    queue_capacity: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, items: int = 0, busy: float = 0.0, wait_in: float = 0.0, wait_out: float = 0.0) -> None:
        with self._lock:
            self.items += items
            self.busy_s += busy
            self.wait_in_s += wait_in
            self.wait_out_s += wait_out

    def sample_queue(self, depth: int, capacity: int) -> None:
        """Record the depth of this stage's input queue (one sample per item taken)."""
        self.queue_samples += 1
        self.queue_total += depth
        self.queue_capacity = capacity

    @property
    def queue_occupancy(self) -> float | None:
        """Mean fill of the input queue, 0 (always empty) to 1 (always full)."""
        if not self.queue_samples or not self.queue_capacity:
            return None
        return self.queue_total / (self.queue_samples * self.queue_capacity)

    def utilisation(self, elapsed_s: float) -> float:
        """Fraction of the stage's worker time spent busy."""
        return self.busy_s / (elapsed_s * max(self.workers, 1)) if elapsed_s > 0 else 0.0

    def copy(self) -> "StageStats":
        with self._lock:
            return StageStats(self.name, self.kind, self.workers, self.items, self.busy_s,
                              self.wait_in_s, self.wait_out_s, self.queue_samples,
                              self.queue_total, self.queue_capacity)


@dataclass
class Stats:
    """A snapshot of every stage of a pipeline, in pipeline order."""
    stages: list[StageStats]
    elapsed_s: float

    @classmethod
    def snapshot(cls, stages: list[StageStats], started: float | None) -> "Stats":
        elapsed = time.perf_counter() - started if started is not None else 0.0
        return cls([s.copy() for s in stages], elapsed)

    def as_dict(self) -> dict:
        """{stage name: figures}; names repeated in the pipeline get a ``#i`` suffix."""
        out = {}
        for i, s in enumerate(self.stages):
            key = s.name if s.name not in out else f"{s.name}#{i}"
            out[key] = {
                "kind": s.kind, "workers": s.workers, "items": s.items,
                "items_per_s": s.items / self.elapsed_s if self.elapsed_s > 0 else 0.0,
                "busy_s": s.busy_s, "wait_in_s": s.wait_in_s, "wait_out_s": s.wait_out_s,
                "busy": s.utilisation(self.elapsed_s), "queue_occupancy": s.queue_occupancy,
            }
        return out

    def __str__(self) -> str:
        head = f"{'stage':<24}{'kind':<10}{'items':>8}{'items/s':>10}{'busy':>7}{'wait in':>9}{'wait out':>10}{'queue':>7}"
        rows = [head, "-" * len(head)]
        for name, d in self.as_dict().items():
            occ = "" if d["queue_occupancy"] is None else f"{d['queue_occupancy']:.0%}"
            rows.append(f"{name[:23]:<24}{d['kind']:<10}{d['items']:>8}{d['items_per_s']:>10.1f}"
                        f"{d['busy']:>7.0%}{d['wait_in_s']:>8.2f}s{d['wait_out_s']:>9.2f}s{occ:>7}")
        rows.append(f"over {self.elapsed_s:.2f}s. {self.bottleneck()}")
        return "\n".join(rows)

    def bottleneck(self) -> str:
        """Name the stage that limits throughput, in plain words, with what to do about it."""
        if not self.stages or self.elapsed_s <= 0:
            return "nothing has run yet"
        top = max(self.stages, key=lambda s: s.utilisation(self.elapsed_s))
        busy = top.utilisation(self.elapsed_s)
        if top.kind == "consumer":
            return (f"the pipeline keeps up: your training loop is the bottleneck "
                    f"({busy:.0%} of the time is spent outside the pipeline)")
        if busy < 0.5:
            return (f"no stage is saturated (busiest: {top.name!r}, {busy:.0%} busy); "
                    f"the stages mostly wait on each other, so try larger queues or batches")
        if top.kind == "python":
            return (f"your Python stage {top.name!r} limits throughput: {busy:.0%} busy; "
                    f"replace it with a compiled stage or run it with .map(fn, workers=N)")
        if top.kind == "source":
            return f"the source {top.name!r} is the bottleneck: {busy:.0%} busy; prefetch it or read from faster storage"
        return f"{top.name} is the bottleneck: {busy:.0%} busy; add workers"
