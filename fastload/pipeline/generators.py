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
  filter). Returning ends the pipeline's stream. A coroutine written with one
  yield that both receives and emits (``x = yield out``) takes the None that
  resumes it for an input and may emit for ever: a million items for one
  input is an error naming it.
* a **generator function** taking an iterator of items: ``fn(items)`` is called
  once and its yields are the stage's output;
* a **plain callable**, applied to every item (a map);
* a **compiled stage** from :mod:`fastload.stages` (a callable that does its
  work in GIL-free code and owns a pool of worker threads).

Threads. Iteration starts one :class:`~fastload.pipeline.node.Prefetcher` node
for the source and one per step, each a thread feeding a bounded queue
(``queue_size`` items), so a Python stage holding the GIL never stalls a
compiled stage that has released it, and at most a few items are in flight per
link. The nodes never reference the pipeline object, so it can be garbage
collected while they run.

Shutdown. ``close()``, leaving a ``for`` loop early (the loop's iterator is
closed when dropped), garbage collection, or reaching the end: every node's
stop event is set, every thread leaves its queue wait within ``POLL_S``,
closes its own generators (so their ``finally`` runs in the thread that drove
them) and exits; ``close()`` waits for them all within one second and warns,
naming it, about a stage stuck in user code. It then closes the compiled
stages (their threads start again when next called), and the coroutine steps
unless the run reached its end (see Running again).

Running again. Reaching the end leaves coroutine steps open (waiting at their
receiving yield), so iterating the pipeline again over a re-iterable source
runs it again: ``for epoch in range(3): for x in pipeline: ...``. A pipeline
that was closed early, one whose coroutine step returned, or one whose source
is a one-shot iterator already used, says so instead of silently yielding
nothing. Two iterators taken during one run share it (each item goes to one of
them); the run ends early only when the last of them is left.

Errors. A step that raises ends its thread; downstream threads pass the
failure along after the items before it, and the consumer raises it as
:class:`~fastload.errors.StageError` naming the stage and the item (its index
in the stage's input and a truncated repr), with the original exception as
``__cause__``; then the pipeline closes.
"""
from __future__ import annotations

import collections.abc
import inspect
import os
import time
from typing import Any, Iterator

from ..errors import StageError
from .fluent import record_context, stage_name
from .node import Prefetcher, check_process, close_iterator, close_unless_running, join_threads
from .stats import StageStats, Stats

__all__ = ["GeneratorPipeline"]


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
        self._nodes: list[Prefetcher] = []
        self._runs = 0
        self._started: float | None = None
        self._ended: float | None = None
        self._last_return: float | None = None
        self._loops = 0            # iterators reading the current run
        self._closed = False       # the current run is over
        self._broken = False       # closed before its end: coroutine steps are closed for good

    def __len__(self) -> int:
        """The source's length (every step is taken to emit one item per input)."""
        return len(self._source)

    def __iter__(self) -> Iterator[Any]:
        if self._closed:
            self._restart()
        return self._loop()

    def _restart(self) -> None:
        if self._broken:
            coros = [s.name for s in self._steps if s.mode == "coroutine"]
            if coros:
                raise RuntimeError(f"this pipeline was closed before its end, which closed its coroutine "
                                   f"step(s) {coros}; build a new pipeline to run again")
        ended = [s.name for s in self._steps
                 if s.mode == "coroutine" and inspect.getgeneratorstate(s.obj) == inspect.GEN_CLOSED]
        if ended:   # it would yield nothing, silently
            raise RuntimeError(f"coroutine step(s) {ended} returned, which ended the last run, and cannot run "
                               "again: loop (while True) to serve every run, or build a new pipeline")
        if isinstance(self._source, collections.abc.Iterator):   # not iter(source): that starts a Stream's pass
            raise RuntimeError("the pipeline's source is a one-shot iterator, already used; give a re-iterable "
                               "source (a list, a Source, a Stream) to iterate the pipeline again")
        self._nodes, self._closed, self._last_return = [], False, None

    def _loop(self) -> Iterator[Any]:
        self._loops += 1   # iterators over one run share it: the last one left early ends it
        try:
            while True:
                try:
                    item = next(self)
                except StopIteration:
                    return
                yield item
        finally:
            self._loops -= 1
            if not self._closed and not self._loops:   # left early: stop everything (a normal end already has)
                self.close()

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        if self._nodes:
            check_process(self._pid, "this pipeline's run", "build a new GeneratorPipeline in the child")
        nodes = self._nodes or self._start()   # a local: close() from another thread may empty the list
        consumer = self._stage_stats[-1]
        out = nodes[-1]
        t0 = time.perf_counter()
        if self._last_return is not None:
            consumer.add(busy=t0 - self._last_return)
        consumer.sample_queue(out.qsize(), out.capacity)
        try:
            msg = next(out)
        except StopIteration:
            self._finish(broken=False)
            raise
        except BaseException:
            self.close()
            raise
        t1 = time.perf_counter()
        consumer.add(wait_in=t1 - t0, items=1)
        self._last_return = t1
        return msg

    def _start(self) -> list[Prefetcher]:
        self._runs += 1
        for step in self._steps:
            step.trim()
        self._pid = os.getpid()   # the threads below are this process's
        if self._started is None:
            self._started = time.perf_counter()
        stats = self._stage_stats
        node = Prefetcher(_bind(_source_items, self._source, stats[0].name), self._queue_size,
                          name=f"{self._runs}-0-{stats[0].name}", kind="source", stats=stats[0])
        nodes = [node]
        for i, step in enumerate(self._steps, 1):
            inputs = _Inputs(node, stats[i])
            node = Prefetcher(_bind(_step_items, step, inputs), self._queue_size,
                              name=f"{self._runs}-{i}-{step.name}", kind=step.kind, stats=stats[i],
                              waited=inputs.waited_s)
            nodes.append(node)
        self._nodes = nodes
        for n in nodes:
            n.start()
        return nodes

    def _finish(self, broken: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._broken = self._broken or broken
        nodes, self._nodes = self._nodes, []
        for n in nodes:              # every thread sees its stop before anyone waits
            n.request_stop()
        join_threads([n.thread for n in nodes if n.thread is not None], "pipeline stage")
        for n in nodes:              # waited for above: one deadline and one warning for them all
            n.close(wait=False)
        for step in self._steps:    # compiled stages start their threads again when next called
            if broken or not nodes or step.mode != "coroutine":
                step.close()
        self._ended = time.perf_counter()

    def close(self) -> None:
        """Stop every thread, close every stage, and wait for them (idempotent)."""
        if self._closed and self._broken:
            return
        if self._closed:             # ended normally earlier: now close the coroutine steps too
            self._broken = True
            for step in self._steps:
                step.close()
            return
        self._finish(broken=True)

    def __enter__(self) -> "GeneratorPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_broken", True):
            try:
                self.close()
            except Exception:   # interpreter shutdown: the modules close() needs may be gone
                pass

    def stats(self) -> Stats:
        """Per-stage figures so far (source, each step, then the consuming loop)."""
        snap = Stats.snapshot(self._stage_stats, self._started)
        if self._closed and self._ended is not None and self._started is not None:
            snap.elapsed_s = self._ended - self._started
        return snap

    def __repr__(self) -> str:
        names = " -> ".join(s.name for s in self._stage_stats[:-1])
        return f"<GeneratorPipeline {names}>"


def _bind(fn, *args):
    return lambda: fn(*args)


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
            return _drive(self.obj, inputs, self.name)
        if self.mode == "generator function":
            return self.obj(inputs)
        return _apply(self.obj, self.name, inputs)

    def trim(self) -> None:
        """A compiled stage gives back buffers a consumer kept in the last run (see fastload.stages)."""
        if self.kind == "compiled" and callable(getattr(self.obj, "trim", None)):
            self.obj.trim()

    def close(self) -> None:
        if self.mode == "coroutine":
            close_unless_running(self.obj)   # one stuck in its thread: join_threads warned of it
        elif self.kind == "compiled":
            close_iterator(self.obj)


def _apply(fn, name: str, inputs: "_Inputs") -> Iterator[Any]:
    """``fn`` on every input. Not the built-in ``map``: a StopIteration escaping ``fn`` would end it
    as if the inputs had ended, silently dropping the rest of the stream."""
    for item in inputs:
        try:
            out = fn(item)
        except StopIteration as e:
            raise _stage_error(name, inputs.context(), e)
        yield out


# Items a coroutine may emit for one input before it is taken for one written with a single
# yield (``x = yield out``), which takes the None that resumes it for an input and emits for ever.
# A yield's place cannot tell it from a valid one (a helper's yield reached through ``yield from``
# both receives and emits); only a run without end can. Many items from one input: a generator
# function step.
_MAX_EMITS = 1_000_000


def _drive(coro, inputs: Iterator[Any], name: str) -> Iterator[Any]:
    """Drive a two-yield coroutine over ``inputs`` (protocol in the module docstring).

    At the end of the inputs the coroutine stays open at its receiving yield, so
    another run can drive it again; any other exit closes it.
    """
    ended = False
    try:
        state = inspect.getgeneratorstate(coro)
        if state == inspect.GEN_CLOSED:
            return
        out = next(coro) if state == inspect.GEN_CREATED else None
        while True:
            emitted = 0
            while out is not None:
                yield out
                emitted += 1
                if emitted == _MAX_EMITS:
                    raise TypeError(
                        f"coroutine step {name!r} emitted {_MAX_EMITS:,} items for one input without asking "
                        "for another (yielding None): written with one yield ('x = yield out'), it takes the "
                        "None that resumes it after an emission for an input. A pipeline coroutine receives "
                        "with 'x = yield', emits with 'yield out', then goes back to receive; for that many "
                        "items from one input, give a generator function step")
                out = next(coro)
            try:
                item = next(inputs)
            except StopIteration:
                ended = True
                return
            out = coro.send(item)
    except StopIteration:   # the coroutine returned
        return
    finally:
        if not ended:
            coro.close()


class _Inputs:
    """A step's view of the node before it: an iterator that ends on its end, its
    failure (kept in ``failure``, raised after this step's own outputs) or a stop,
    and remembers the last item for error messages."""

    def __init__(self, upstream: Prefetcher, stats: StageStats):
        self._up = upstream
        self._stats = stats
        self.index = -1
        self.last: Any = None
        self.failure: BaseException | None = None
        self.ended: str | None = None
        self.waited = 0.0
        self._done = False

    def waited_s(self) -> float:
        return self.waited

    def __iter__(self) -> "_Inputs":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        self._stats.sample_queue(self._up.qsize(), self._up.capacity)
        t0 = time.perf_counter()
        try:
            msg = self._up.__next__()
        except StopIteration:
            self._end(None)
            raise
        except BaseException as e:
            self._end(e)
            raise StopIteration from None
        finally:
            dt = time.perf_counter() - t0
            self.waited += dt
            self._stats.add(wait_in=dt)
        self.index += 1
        self.last = msg
        return msg

    def _end(self, failure: BaseException | None) -> None:
        # The last item named now and let go (it may hold a batch's buffer): a step may still fail after it.
        self.ended = None if self.index < 0 else f"after its last input, {record_context(self.index, self.last)}"
        self.failure, self._done, self.last = failure, True, None

    def context(self) -> str | None:
        if self._done:
            return self.ended
        return None if self.index < 0 else record_context(self.index, self.last)


def _stage_error(name: str, where: str | None, exc: BaseException) -> BaseException:
    # Raise it without "from exc": that would make a passed-on StageError its own cause.
    if isinstance(exc, StageError):     # already names its stage (a nested pipeline)
        return exc
    err = StageError(name, where, exc)
    err.__cause__ = exc
    return err


def _source_items(source: Any, name: str) -> Iterator[Any]:
    it = None
    count = 0
    try:
        it = iter(source)
        for item in it:
            yield item
            count += 1
    except Exception as e:
        raise _stage_error(name, None, e)
    finally:
        close_iterator(it)


def _step_items(step: _Step, inputs: _Inputs) -> Iterator[Any]:
    """The step's outputs; its errors name it and the input they came from; an upstream failure follows them."""
    outputs = None
    try:
        outputs = step.transform(inputs)
        while True:
            try:
                item = next(outputs)
            except StopIteration:
                break
            yield item
            if inputs.failure is not None:
                break
    except GeneratorExit:
        raise
    except Exception as e:
        raise _stage_error(step.name, inputs.context(), e)
    finally:
        close_iterator(outputs)
    if inputs.failure is not None:
        raise inputs.failure


def _source_name(source: Any) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else type(source).__name__
