"""Batch slots that are leased, never lent: a reused buffer is refilled only once nobody can see it.

Protocol. A :class:`SlotPool` holds batch slots (a dict of arrays, one per
declared output, each ``(batch_size, *shape)``) allocated once and reused.

* The producer calls :meth:`SlotPool.acquire`, which returns a :class:`Lease`
  on a free slot. The worker tasks that fill the slot hold the lease.
* The consumer receives :meth:`Lease.view` arrays: ordinary ndarrays whose
  ``base`` chain ends in the lease (a torch tensor made with ``from_numpy``,
  a ``jax.device_put`` alias or a list that keeps the batch all keep it alive).
* When the last reference to the lease goes, CPython's reference counting
  finalises it at once and the slot returns to the pool. Until then nobody
  writes into it: a batch stays valid for as long as anyone holds it.

So a synchronous loop that drops each batch cycles through ``prefetch + 2``
slots with no copies, while a consumer that keeps batches (a list, JAX's
asynchronous dispatch, a framework's prefetch queue, a second iterator) makes
the pool grow instead of seeing its data overwritten. Past ``max_bytes`` the
pool stops growing and hands out buffers it does not keep (a fresh allocation
per batch: correct, only slower), and says so once. Slots grown that way are
given back by :meth:`SlotPool.trim` (a Loader calls it as each pass begins)
once a whole pass went by without needing them: one evaluation pass kept in a
list does not pin an epoch of buffers for the loader's life, while a consumer
that holds a few batches every pass keeps its slots.

Asynchronous readers. A device copy that reads a slot records an event and
calls :meth:`Lease.release_after`; a released slot whose event has not
completed is not reused until it has (``event.query()``); at its bound the
pool waits on the oldest such event (``event.synchronize()``) rather than allocate. With ``guard_release`` set
(pinned slots on a CUDA machine) the pool records an event on the releasing
thread's current stream when a lease is finalised, so a user's own
``batch.to("cuda", non_blocking=True)`` has finished reading before the slot
is refilled. Events are duck-typed (``query()``, ``synchronize()``), so the
logic is tested without a GPU. Pinned slots are page-locked by the pool
itself, one block of exactly the slot's size each (:func:`page_locked`).
"""
from __future__ import annotations

import mmap
import threading
import warnings
from typing import Callable

import numpy as np

__all__ = ["Lease", "SlotPool", "check_memory", "page_locked"]

#: Default upper bound of one pool: slots past it are handed out untracked.
DEFAULT_MAX_BYTES = 8 << 30


def _cudart():
    """torch's bindings of the CUDA runtime (initialising CUDA on the current device)."""
    import torch
    return torch.cuda.cudart()


class _PageLocked:
    """``nbytes`` of anonymous memory registered with CUDA as page-locked, exactly that much (in
    whole pages), unregistered once the last array made from it goes.

    torch's pinned allocator rounds each block up to a power of two (a 38.5 MB slot of 256 uint8
    images at 224 px locks 64 MB) and keeps a block it frees locked in its cache for the life of
    the process; locked memory is memory the system can never page out, so a slot takes its own
    size and a slot the pool trims gives it back."""
    __slots__ = ("__array_interface__", "_memory", "_unregister")

    def __init__(self, nbytes: int):
        cudart = _cudart()
        # Page-aligned, and private: mmap's default is MAP_SHARED, which a forked child would share,
        # its fills landing in the parent's batches.
        private = {"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS} if hasattr(mmap, "MAP_PRIVATE") else {}
        memory = np.frombuffer(mmap.mmap(-1, max(nbytes, 1), **private), np.uint8)
        ptr = memory.ctypes.data
        err = int(cudart.cudaHostRegister(ptr, memory.nbytes, 1))   # Portable: pinned for every device
        if err:
            raise RuntimeError(f"could not page-lock {_size(memory.nbytes)} for a batch slot "
                               f"(cudaHostRegister: CUDA error {err}); pin_memory=False gives pageable slots")
        self._memory, self.__array_interface__ = memory, memory.__array_interface__
        self._unregister = lambda: cudart.cudaHostUnregister(ptr)

    def __del__(self):
        try:
            self._unregister()
        except Exception:   # interpreter shutdown, or CUDA torn down before us
            pass


def page_locked(nbytes: int) -> np.ndarray:
    """A uint8 array of ``nbytes`` of page-locked memory (see :class:`_PageLocked`). Raises when
    the memory cannot be locked."""
    return np.asarray(_PageLocked(nbytes))


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} bytes"


def check_memory(nbytes: int, what: str, limit: int | None = None) -> None:
    """Refuse an allocation of ``nbytes`` that would not fit (``limit`` or half the available memory)."""
    avail = available_memory()
    bound = limit if limit is not None else (avail // 2 if avail else None)
    if bound is not None and nbytes > bound:
        raise MemoryError(
            f"{what} needs {_size(nbytes)}, over the bound of {_size(bound)} "
            f"({'max_memory' if limit is not None else 'half the available memory'}); "
            "use a smaller batch_size, prefetch or image size, or raise max_memory=")


class _Slot:
    __slots__ = ("arrays", "event", "tracked")

    def __init__(self, arrays: dict, tracked: bool):
        self.arrays, self.event, self.tracked = arrays, None, tracked


class _Held:
    """Exposes one slot array through ``__array_interface__`` so the ndarray made from it keeps the lease."""
    __slots__ = ("__array_interface__", "lease", "array")

    def __init__(self, array: np.ndarray, lease: "Lease"):
        self.__array_interface__ = array.__array_interface__
        self.array, self.lease = array, lease


class Lease:
    """The right to one slot. ``arrays`` are the slot's buffers (for the producer)."""
    __slots__ = ("_pool", "_slot", "__weakref__")

    def __init__(self, pool: "SlotPool", slot: _Slot):
        self._pool, self._slot = pool, slot

    @property
    def arrays(self) -> dict:
        return self._slot.arrays

    def view(self, name: str, n: int) -> np.ndarray:
        """The first ``n`` rows of output ``name``, as an array that holds this lease."""
        return np.asarray(_Held(self._slot.arrays[name][:n], self))

    def release_after(self, event) -> None:
        """The slot may be refilled only once ``event`` has completed (an asynchronous copy read it)."""
        self._slot.event = event

    def __del__(self):
        try:
            self._pool._release(self._slot)
        except Exception:   # interpreter shutdown: nothing is left to reuse the slot
            pass


class SlotPool:
    """Leased batch slots for ``outputs`` (see the module docstring)."""

    def __init__(self, outputs, batch_size: int, slots: int, *, pin: bool = False,
                 max_bytes: int | None = None, guard_release: Callable[[], object] | None = None,
                 owned: bool = False):
        """``owned``: every lease is on a new buffer the pool neither keeps nor reuses, which its
        batch's consumer then owns outright (a Loader's ``copy=True``: filled in place, not copied
        out of a slot); ``slots`` only bounds the memory check."""
        self.outputs, self.batch_size, self.pinned, self.owned = list(outputs), batch_size, pin, owned
        self.slot_bytes = sum(batch_size * int(np.prod(o.shape)) * np.dtype(o.dtype).itemsize for o in self.outputs)
        limit = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES
        check_memory(self.slot_bytes * slots, f"{slots} batch slots of {_size(self.slot_bytes)}",
                     max_bytes)
        self.max_slots = max(slots, limit // max(self.slot_bytes, 1))
        self.base_slots = slots
        self._peak = 0   # the most tracked slots held at once since the last trim
        self._guard_release = guard_release
        self._lock = threading.RLock()   # a finaliser may run while this thread holds it
        self._free: list[_Slot] = []
        self._waiting: list[_Slot] = []       # released, but an asynchronous reader may still be reading
        self._all: list[_Slot] = []
        self._untracked = 0
        for _ in range(0 if owned else slots):
            self._free.append(self._new(True))

    def _new(self, tracked: bool, rows: int | None = None) -> _Slot:
        shapes = [(o.name, (rows or self.batch_size, *o.shape), np.dtype(o.dtype)) for o in self.outputs]
        if not (self.pinned and tracked):
            arrays = {name: np.empty(shape, dtype) for name, shape, dtype in shapes}
        else:   # one locked block per slot, each output at a 64-byte boundary in it
            spans, end = [], 0
            for name, shape, dtype in shapes:
                start = (end + 63) // 64 * 64
                end = start + int(np.prod(shape)) * dtype.itemsize
                spans.append((name, shape, dtype, start, end))
            block = page_locked(end)
            arrays = {name: block[start:end].view(dtype).reshape(shape) for name, shape, dtype, start, end in spans}
        slot = _Slot(arrays, tracked)
        if tracked:
            self._all.append(slot)
        return slot

    def __len__(self) -> int:
        """Slots the pool owns (it grows while consumers hold batches)."""
        return len(self._all)

    def nbytes(self) -> int:
        return len(self._all) * self.slot_bytes

    @property
    def untracked(self) -> int:
        """Batches handed out in buffers of their own because the pool was at its bound."""
        return self._untracked

    def acquire(self, rows: int | None = None) -> Lease:
        """A lease on a slot nobody can see: a free one, else one whose reader finished, else a new one.
        ``rows``: an owned pool's new buffer holds that many rows (a short last batch), not a batch."""
        if self.owned:
            return Lease(self, self._new(False, rows))
        with self._lock:
            slot = self._free.pop() if self._free else self._reclaim()
            if slot is None and len(self._all) < self.max_slots:
                slot = self._new(True)
            elif slot is None:
                self._untracked += 1
                if self._untracked == 1:
                    warnings.warn(f"fastload: consumers hold {len(self._all)} batches "
                                  f"({_size(self.nbytes())}); further batches get buffers of their own",
                                  RuntimeWarning, stacklevel=3)
                slot = self._new(False)
            self._peak = max(self._peak, self._held())
        return Lease(self, slot)

    def _reclaim(self) -> _Slot | None:
        """A slot whose asynchronous reader has finished (waiting for the oldest if none has)."""
        for i, slot in enumerate(self._waiting):
            if slot.event.query():
                slot.event = None
                return self._waiting.pop(i)
        if self._waiting and len(self._all) >= self.max_slots:
            slot = self._waiting.pop(0)
            slot.event.synchronize()
            slot.event = None
            return slot
        return None

    def _release(self, slot: _Slot) -> None:
        if not slot.tracked:
            return
        if slot.event is None and self._guard_release is not None:
            try:
                slot.event = self._guard_release()
            except Exception:   # finalisers must not raise; an unguarded slot is only reused later
                slot.event = None
        with self._lock:
            (self._free if slot.event is None else self._waiting).append(slot)

    def trim(self) -> int:
        """Drop the free slots that neither the ``slots`` the pool began with nor the most held at once
        since the last trim needed; returns how many went.

        So a pattern that holds a few batches each pass (JAX's dispatch, a kept previous batch) keeps
        its slots, and slots grown for one pass's kept list go after a pass that did not need them.
        Only free slots go: one a batch still views, or an asynchronous reader may read, stays."""
        with self._lock:
            for slot in [s for s in self._waiting if s.event.query()]:   # their readers are done
                self._waiting.remove(slot)
                slot.event = None
                self._free.append(slot)
            keep = max(self.base_slots, self._peak)
            n = 0
            while self._free and len(self._all) > keep:
                self._all.remove(self._free.pop(0))   # the least recently used
                n += 1
            self._peak = self._held()
            return n

    def _held(self) -> int:   # a slot an asynchronous reader may still read counts as held
        return len(self._all) - len(self._free)

    def slots(self) -> list[dict]:
        """Every tracked slot's arrays (for tests and diagnostics)."""
        return [s.arrays for s in self._all]


class ArrayPool:
    """Reused output arrays of any shape for stages that produce one array per call.

    ``get(shape, dtype)`` returns an array holding a lease on its buffer (see
    :class:`SlotPool`): it is reused only once nothing references it, so a batch
    still queued downstream, viewed (``np.rot90`` returns views) or kept by the
    training loop is never overwritten. Pools of the ``shapes`` most recently
    asked for are kept.
    """

    def __init__(self, shapes: int = 4, max_bytes: int | None = None):
        self._pools: dict = {}
        self._shapes, self._max_bytes = shapes, max_bytes
        self._lock = threading.Lock()

    def get(self, shape: tuple, dtype) -> np.ndarray:
        from ..pipeline.fields import Output
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            pool = self._pools.pop(key, None)
            if pool is None:
                if len(self._pools) >= self._shapes:
                    self._pools.pop(next(iter(self._pools)))
                pool = SlotPool([Output("x", tuple(shape[1:]), np.dtype(dtype))], shape[0], 0,
                                max_bytes=self._max_bytes)
            self._pools[key] = pool     # most recently used last
        return pool.acquire().view("x", shape[0])

    def trim(self) -> int:
        """:meth:`SlotPool.trim` of every shape's pool: buffers grown for batches a consumer kept go
        once a pass went by without needing them. Returns how many went."""
        with self._lock:
            pools = list(self._pools.values())
        return sum(pool.trim() for pool in pools)
