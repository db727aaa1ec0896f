"""Run a pipeline written as Python generators, one thread per stage.

``GeneratorPipeline(source, *steps)`` accepts the pipelines people already
write. Each step is one of:

* a **coroutine** (a generator object) written with two yields, one to receive
  and one to emit::

      def augment():
          while True:
              images, labels = yield      # receive
              ...
              yield images, labels        # emit

  It is primed with ``next()`` unless already started. For each input item the
  driver calls ``out = coro.send(item)``; a non-None ``out`` is emitted, then
  ``next(coro)`` resumes it after the emitting yield, and it is driven on until
  it is back at a receiving yield (one that yields None). So a coroutine may
  emit one item per input (the usual case), several (yield more values before
  the next receive), or none (go straight back to the receiving yield: a
  filter). Returning ends the pipeline's stream.
* a **generator function** taking an iterator of items: ``fn(items)`` is called
  once and its yields are the stage's output;
* a **plain callable**, applied to every item (a map);
* a **compiled stage** from :mod:`fastload.stages` (a callable that does its
  work in GIL-free code and owns a pool of worker threads).

Threads. Iteration starts one thread for the source and one per step, linked
by bounded :class:`~fastload.pipeline.channel.Channel` queues (``queue_size``
items each), so a Python stage holding the GIL never stalls a compiled stage
that has released it, and at most a few items are in flight per link. A
pipeline's threads reference only their own stage, channels and a shared stop
event, never the pipeline object, so it can be garbage collected while they run.

Shutdown. ``close()``, leaving a ``for`` loop early (the loop's iterator is
closed when dropped), garbage collection, or reaching the end: the stop event
is set, every thread leaves its queue wait within ``POLL_S``, closes its own
generators (so their ``finally`` runs in the thread that drove them) and
compiled stages, and exits; ``close()`` joins them all. ``close()`` on a
pipeline that never ran closes the given generators directly.

Errors. A step that raises ends its thread; downstream threads pass the
failure along after the items before it, and the consumer raises it as
:class:`~fastload.errors.StageError` naming the stage and the item (its index
in the stage's input and a truncated repr), with the original exception as
``__cause__``; then the pipeline closes.
"""
from __future__ import annotations

import inspect
import threading
import time
import warnings
from typing import Any, Iterator

from ..errors import StageError
from .channel import END, STOPPED, Channel, Failure
from .fluent import close_iterator, record_context, stage_name
from .stats import StageStats, Stats

__all__ = ["GeneratorPipeline"]

_JOIN_S = 10.0   # how long close() waits for a thread stuck inside a user call


class GeneratorPipeline:
    """An iterator over ``source`` passed through ``steps``; see the module docstring."""

    def __init__(self, source: Any, *steps: Any, queue_size: int = 2):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._source = source
        self._steps = [_Step(s) for s in steps]
        self._queue_size = queue_size
        self._stage_stats = ([StageStats(_source_name(source), "source")]
                             + [StageStats(s.name, s.kind) for s in self._steps]
                             + [StageStats("consumer", "consumer")])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channels: list[Channel] = []
        self._started: float | None = None
        self._ended: float | None = None
        self._last_return: float | None = None
        self._closed = False

    def __len__(self) -> int:
        """The source's length (every step is taken to emit one item per input)."""
        return len(self._source)

    def __iter__(self) -> Iterator[Any]:
        return self._loop()

    def _loop(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    item = next(self)
                except StopIteration:
                    return
                yield item
        finally:
            self.close()

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        if not self._threads:
            self._start()
        consumer = self._stage_stats[-1]
        out = self._channels[-1]
        t0 = time.perf_counter()
        if self._last_return is not None:
            consumer.add(busy=t0 - self._last_return)
        consumer.sample_queue(out.qsize(), out.capacity)
        msg = out.get(self._threads[-1].is_alive)
        t1 = time.perf_counter()
        consumer.add(wait_in=t1 - t0)
        if msg is END or msg is STOPPED:
            self.close()
            raise StopIteration
        if isinstance(msg, Failure):
            self.close()
            raise msg.error
        consumer.add(items=1)
        self._last_return = t1
        return msg

    def _start(self) -> None:
        self._started = time.perf_counter()
        stop = self._stop
        chans = [Channel(self._queue_size, stop) for _ in range(len(self._steps) + 1)]
        self._channels = chans
        threads = [threading.Thread(target=_run_source, args=(self._source, chans[0], self._stage_stats[0], stop),
                                    name=f"fastload-0-{self._stage_stats[0].name}", daemon=True)]
        for i, step in enumerate(self._steps, 1):
            threads.append(threading.Thread(
                target=_run_step, args=(step, chans[i - 1], threads[i - 1].is_alive, chans[i], self._stage_stats[i], stop),
                name=f"fastload-{i}-{step.name}", daemon=True))
        self._threads = threads
        for t in threads:
            t.start()

    def close(self) -> None:
        """Stop every thread, close every stage, and wait for them (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(_JOIN_S)
                if t.is_alive():
                    warnings.warn(f"fastload stage thread {t.name!r} is still inside a user call after "
                                  f"{_JOIN_S:.0f}s; it will exit when that call returns", ResourceWarning)
        if not self._threads:      # never ran: close the stages from here
            for step in self._steps:
                step.close()
        for ch in self._channels:
            ch.drain()
        self._channels = []
        self._ended = time.perf_counter()

    def __enter__(self) -> "GeneratorPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def stats(self) -> Stats:
        """Per-stage figures so far (source, each step, then the consuming loop)."""
        snap = Stats.snapshot(self._stage_stats, self._started)
        if self._ended is not None and self._started is not None:
            snap.elapsed_s = self._ended - self._started
        return snap

    def __repr__(self) -> str:
        names = " -> ".join(s.name for s in self._stage_stats[:-1])
        return f"<GeneratorPipeline {names}>"


class _Step:
    """One user step, normalised to ``transform(inputs) -> iterator``."""

    def __init__(self, obj: Any):
        self.obj = obj
        self.name = stage_name(obj)
        self.kind = "compiled" if getattr(obj, "compiled", False) else "python"
        if inspect.isgenerator(obj):
            self.mode = "coroutine"
        elif inspect.isgeneratorfunction(obj):
            self.mode = "generator function"
        elif callable(obj):
            self.mode = "callable"
        else:
            raise TypeError(f"pipeline step {obj!r} is not a coroutine, a generator function or a callable")

    def transform(self, inputs: Iterator[Any]) -> Iterator[Any]:
        if self.mode == "coroutine":
            return _drive(self.obj, inputs)
        if self.mode == "generator function":
            return self.obj(inputs)
        return map(self.obj, inputs)

    def close(self) -> None:
        if self.mode == "coroutine":
            self.obj.close()
        elif self.kind == "compiled":
            close_iterator(self.obj)


def _drive(coro, inputs: Iterator[Any]) -> Iterator[Any]:
    """Drive a two-yield coroutine over ``inputs`` (protocol in the module docstring)."""
    try:
        out = next(coro) if inspect.getgeneratorstate(coro) == inspect.GEN_CREATED else None
        while True:
            while out is not None:
                yield out
                out = next(coro)
            try:
                item = next(inputs)
            except StopIteration:
                return
            out = coro.send(item)
    except StopIteration:   # the coroutine returned
        return
    finally:
        coro.close()


class _Inputs:
    """A step's view of its input channel: an iterator that ends on END, a
    failure upstream (kept in ``failure``) or a stop, and remembers the last item
    for error messages."""

    def __init__(self, chan: Channel, producer_alive, stats: StageStats):
        self._chan = chan
        self._alive = producer_alive
        self._stats = stats
        self.index = -1
        self.last: Any = None
        self.failure: Failure | None = None
        self.waited = 0.0
        self._done = False

    def __iter__(self) -> "_Inputs":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        self._stats.sample_queue(self._chan.qsize(), self._chan.capacity)
        t0 = time.perf_counter()
        msg = self._chan.get(self._alive)
        dt = time.perf_counter() - t0
        self.waited += dt
        self._stats.add(wait_in=dt)
        if msg is END or msg is STOPPED or isinstance(msg, Failure):
            self.failure = msg if isinstance(msg, Failure) else None
            self._done = True
            self.last = None
            raise StopIteration
        self.index += 1
        self.last = msg
        return msg

    def context(self) -> str | None:
        return None if self.index < 0 else record_context(self.index, self.last)


def _error(name: str, where: str | None, exc: BaseException) -> Failure:
    if isinstance(exc, StageError):     # already names its stage (a nested pipeline)
        return Failure(exc)
    err = StageError(name, where, exc)
    err.__cause__ = exc
    return Failure(err)


def _pump(outputs: Iterator[Any], out: Channel, stats: StageStats, stop: threading.Event,
          inputs: _Inputs | None, name: str) -> Any:
    """Move ``outputs`` into ``out`` until done; return the terminal message."""
    waited = 0.0
    count = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            item = next(outputs)
        except StopIteration:
            break
        except BaseException as e:
            where = inputs.context() if inputs is not None else f"#{count} (while producing it)"
            return _error(name, where, e)
        t1 = time.perf_counter()
        if inputs is not None:
            stats.add(items=1, busy=t1 - t0 - (inputs.waited - waited))
            waited = inputs.waited
            if inputs.failure is not None:
                break
        else:
            stats.add(items=1, busy=t1 - t0)
        count += 1
        if not out.put(item):
            break
        del item
        stats.add(wait_out=time.perf_counter() - t1)
    return inputs.failure if inputs is not None and inputs.failure is not None else END


def _run_source(source: Any, out: Channel, stats: StageStats, stop: threading.Event) -> None:
    it = None
    try:
        it = iter(source)
        end = _pump(it, out, stats, stop, None, stats.name)
    except BaseException as e:
        end = _error(stats.name, None, e)
    finally:
        close_iterator(it)
    out.put(end)


def _run_step(step: _Step, inp: Channel, producer_alive, out: Channel, stats: StageStats,
              stop: threading.Event) -> None:
    inputs = _Inputs(inp, producer_alive, stats)
    outputs = None
    try:
        outputs = step.transform(inputs)
        end = _pump(outputs, out, stats, stop, inputs, step.name)
    except BaseException as e:   # a generator function that failed when called
        end = _error(step.name, None, e)
    try:
        close_iterator(outputs)
        step.close()
    except BaseException as e:
        if end is END:
            end = _error(step.name, "(while closing)", e)
    out.put(end)


def _source_name(source: Any) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else type(source).__name__
