"""A bounded hand-off between two threads that can always be abandoned.

Protocol. One producer thread puts, one consumer takes; both share a stop
``Event`` owned by whoever started the producer. Every blocking call waits in
slices of ``POLL_S`` and gives up once the event is set, so setting it frees
both sides within one slice, whether the queue is full or empty. The producer
ends its stream with exactly one terminal message, :data:`END` or a
:class:`Failure`, unless it was stopped. Items are passed by reference; the
capacity bounds how many are in flight between the two threads.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Channel", "END", "STOPPED", "Failure", "POLL_S"]

POLL_S = 0.05


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


END = _Marker("END")            # the producer finished normally
STOPPED = _Marker("STOPPED")    # returned by get() once the stop event is set


@dataclass
class Failure:
    """The producer (or a stage before it) raised; ``error`` is re-raised by the consumer."""
    error: BaseException


class Channel:
    def __init__(self, capacity: int, stop: threading.Event):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._q: queue.Queue = queue.Queue(capacity)
        self._stop = stop

    def put(self, item: Any) -> bool:
        """Hand ``item`` on; False (item dropped) when the stop event was set first."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def get(self, producer_alive: Callable[[], bool] | None = None) -> Any:
        """The next message; STOPPED once stopped. ``producer_alive`` guards against a
        producer that died without its terminal message (then END is returned)."""
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=POLL_S)
            except queue.Empty:
                if producer_alive is not None and not producer_alive() and self._q.empty():
                    return END
        return STOPPED

    def qsize(self) -> int:
        return self._q.qsize()

    def drain(self) -> None:
        """Drop whatever is queued (releases references to buffers after a stop)."""
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return
