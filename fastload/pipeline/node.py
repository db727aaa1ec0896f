"""The node protocol every pipeline piece speaks.

A :class:`Node` is an iterator with three more duties:

* ``state_dict()`` / ``load_state_dict(state)``: where it is, small and
  JSON-safe, so a pipeline resumes exactly: the count of items it gave out; a
  node made again over the same upstream and given that state reads those
  items again and drops them (a node that reads ahead cannot ask its upstream
  where it is: that is past the items in flight, which were never given out);
* ``stats()``: a list of :class:`~fastload.pipeline.stats.StageStats`, its
  upstream's first, for ``stats()`` reports and ``fastload doctor``;
* ``close()``: stop the threads it started, close its upstream, idempotent;
  called on exhaustion, on error, by ``with``, and when the node is collected
  (leaving a ``for`` loop early drops the iterator).

Three nodes own all the threading of fastload:

* :class:`IterNode` runs a generator function in the caller's thread;
* :class:`Prefetcher` runs its upstream in one producer thread feeding a
  bounded :class:`~fastload.pipeline.channel.Channel` (a generator stage, a
  ``.prefetch``);
* :class:`ThreadMap` applies a function on a pool of worker threads with a
  bounded window of items in flight, in order (the Loader's chunk fills, a
  threaded ``.map``).

Errors keep their order: items before a failure are delivered first, then the
failure is raised. A worker's exception is passed to the node's ``wrap``
callback, which turns it into the error the user sees (naming the stage and
the record); an upstream's exception passes through unchanged.

Shutdown is bounded: closing sets a stop event that every blocking wait and
every chunk of compiled work checks, cancels queued tasks, and waits at most
``JOIN_S`` in total for threads; a thread still inside a call after that (a user
function, a storage read and its retries, one sample's decode) is named, with what
it runs, in a :class:`RuntimeWarning` and exits when the call returns.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import queue
import threading
import time
import warnings
from typing import Any, Callable, Iterator

from .channel import END, POLL_S, STOPPED, Channel, Failure
from .stats import StageStats

__all__ = ["Node", "IterNode", "Prefetcher", "ThreadMap", "check_process", "join_threads", "close_iterator", "JOIN_S"]

JOIN_S = 1.0   # how long closing waits, in total, for threads to leave user code
_NEW_ITERATION = "iterate the stream (or loader) anew in the child"
USER_CALL = "a call (a user function or a storage read)"   # what a stage's thread runs, unless told


def close_iterator(it: Any) -> None:
    """Close a node, a generator or any iterator with ``close``; a no-op for others."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


def close_unless_running(it: Any) -> bool:
    """:func:`close_iterator`, but a generator that another thread is running (a close() from
    another thread than the consumer's) is left open, as closing it would raise: False then,
    and the thread running it closes it on its way out."""
    try:
        close_iterator(it)
    except ValueError as e:
        if "already executing" not in str(e):
            raise
        return False
    return True


def check_process(pid: int, what: str, remedy: str) -> None:
    """Refuse to advance ``what`` outside process ``pid``, where its threads run: a child made by
    ``os.fork()`` has none of them, and would wait on them for ever (or take their silence for an end)."""
    if os.getpid() != pid:
        raise RuntimeError(f"{what} was started in process {pid}, and this fork()ed child has none of its "
                           f"worker threads: {remedy}")


def join_threads(threads, what: str, inside: str = USER_CALL) -> None:
    """Join ``threads`` within one shared deadline; warn visibly about any that will not stop,
    saying what they run (``inside``)."""
    deadline = time.monotonic() + JOIN_S
    me = threading.current_thread()
    stuck = []
    for t in threads:
        if t is not me and not _join(t, max(0.0, deadline - time.monotonic())):
            stuck.append(t.name)
    if stuck:
        warnings.warn(f"fastload: {what} thread(s) {', '.join(stuck)} still inside {inside} {JOIN_S:.0f}s "
                      "after the stop; each exits when its call returns",
                      RuntimeWarning, stacklevel=3)


def _join(t: threading.Thread, timeout: float | None = None) -> bool:
    """Join ``t``; False if it is still alive. One whose start() was interrupted (a Ctrl-C) before
    it ran has nothing to wait for: join() would raise RuntimeError."""
    try:
        t.join(timeout)
    except RuntimeError:
        return True
    return not t.is_alive()


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not on Linux
        return os.cpu_count() or 1


class DaemonPool(cf.Executor):
    """``workers`` threads running submitted calls, as ``concurrent.futures.ThreadPoolExecutor``,
    but daemons: that pool joins its threads when the interpreter exits, so one call stuck in a
    stalled read (a hung mount, a server that stopped answering) held the exit of a script that
    had left its loop, or been interrupted, until the call returned. The loop's own stop still
    joins them (:func:`join_threads`), and warns of one that will not stop."""

    def __init__(self, workers: int, name: str):
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers, self._name = workers, name
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._shut:
                raise RuntimeError(f"{self._name}: cannot start work after shutdown")
            self._work.put((fut, fn, args, kwargs))
            if len(self.threads) < self._workers:
                t = threading.Thread(target=_serve, args=(self._work,), daemon=True,
                                     name=f"{self._name}_{len(self.threads)}")
                self.threads.append(t)   # first: a start() interrupted once the thread runs leaves it listed,
                t.start()                # so shutdown() sends it its stop
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if cancel_futures:
            while True:
                try:
                    job = self._work.get_nowait()
                except queue.Empty:
                    break
                job[0].cancel()
        for _ in self.threads:
            self._work.put(None)   # one stop per thread, after the work already queued
        if wait:
            for t in self.threads:
                _join(t)


def interruptible_result(fut: cf.Future):
    """``fut.result()``, waited for in slices: an interrupt another thread raises in this one
    (``_thread.interrupt_main``, a notebook's) is taken at the next, not when the call returns."""
    while True:
        try:
            return fut.result(POLL_S)
        except cf.TimeoutError:
            if fut.done():   # the call's own TimeoutError (a socket's), not the wait's
                raise


def _serve(work: queue.SimpleQueue) -> None:
    while (job := work.get()) is not None:
        _run(*job)
        del job   # a finished call's arguments (a batch's lease) are not held while waiting


def _run(fut: cf.Future, fn, args, kwargs) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:   # the caller's result() raises it
        fut.set_exception(e)
    else:
        fut.set_result(result)


class Node:
    """Base of pipeline nodes: an iterator that saves its position and closes what it started."""

    name = "node"
    kind = "python"
    upstream: Any = None

    def __iter__(self) -> "Node":
        return self

    _given = 0   # items given out: the position state_dict() saves
    _skip = 0    # items a loaded state says were given out before: produced again and dropped

    def __next__(self) -> Any:
        return self._give(self._produce)

    def _produce(self) -> Any:
        raise NotImplementedError

    def _give(self, produce: Callable[[], Any]) -> Any:
        while self._skip:
            produce()
            self._skip -= 1
            self._given += 1
        item = produce()
        self._given += 1
        return item

    def state_dict(self) -> dict:
        return {"given": self._given + self._skip}

    def load_state_dict(self, state: dict) -> None:
        given = state.get("given") if isinstance(state, dict) else None
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise ValueError(f"{self.name}: load_state_dict needs the dict state_dict() returned, got {state!r}")
        if self._given:
            raise RuntimeError(f"{self.name}: load_state_dict() goes before the first item, on a node made anew")
        self._skip = given

    def stats(self) -> list[StageStats]:
        up = self.upstream
        mine = getattr(self, "_stats", None)
        return (up.stats() if isinstance(up, Node) else []) + ([mine] if mine is not None else [])

    def close(self) -> None:
        close_unless_running(self.upstream)   # one being run is closed by its thread's own close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # interpreter shutdown or a half-built node: nothing left to stop
            pass


class IterNode(Node):
    """Items of ``make_iter()`` (called on first use), driven in the caller's thread."""

    def __init__(self, make_iter: Callable[[], Iterator[Any]], name: str = "stage", kind: str = "python",
                 upstream: Any = None):
        self._make_iter, self.name, self.kind, self.upstream = make_iter, name, kind, upstream
        self._it: Iterator[Any] | None = None
        self._stats = StageStats(name, kind)
        self._closed = False

    def _produce(self) -> Any:
        if self._closed:
            raise StopIteration
        if self._it is None:
            self._it = iter(self._make_iter())
        t0 = time.perf_counter()
        try:
            item = next(self._it)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        self._stats.add(items=1, busy=time.perf_counter() - t0)
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        it, self._it = self._it, None
        close_iterator(it)
        super().close()


class Prefetcher(Node):
    """Runs ``upstream`` (an iterable, made by ``make_upstream`` in the producer thread) ``capacity`` items ahead.

    The producer thread owns the upstream iterator from creation to close, so a
    generator's ``finally`` runs in the thread that drove it. ``busy_s`` of the
    stage's stats is time spent producing, ``wait_out_s`` time blocked on a full
    queue; the consumer's wait is ``wait_in_s`` of whoever reads this node.
    """

    def __init__(self, make_upstream: Callable[[], Any], capacity: int = 2, name: str = "prefetch",
                 kind: str = "python", stats: StageStats | None = None, upstream: Any = None,
                 waited: Callable[[], float] | None = None):
        if capacity < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {capacity}")
        self._make_upstream, self.capacity, self.name, self.kind = make_upstream, capacity, name, kind
        self.upstream = upstream
        self._stats = stats if stats is not None else StageStats(name, kind)
        self._stop = threading.Event()
        self._chan = Channel(capacity, self._stop)
        self._waited = waited           # the upstream's input wait so far, not counted as busy
        self.thread: threading.Thread | None = None
        self._done = False

    def start(self) -> "Prefetcher":
        if self.thread is None and not self._done:
            # The thread holds only what it needs, never the node, so dropping the node closes it.
            self._pid = os.getpid()
            self.thread = threading.Thread(target=_produce, name=f"fastload-{self.name}", daemon=True,
                                           args=(self._make_upstream, self._chan, self._stop, self._stats,
                                                 self._waited or (lambda: 0.0)))
            self.thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the producer to stop without waiting for it (``close`` waits)."""
        self._stop.set()

    def qsize(self) -> int:
        return self._chan.qsize()

    def _produce(self) -> Any:
        if self._done:
            raise StopIteration
        if self.thread is not None:
            check_process(self._pid, f"stage {self.name}", _NEW_ITERATION)
        self.start()
        msg = self._chan.get(self.thread.is_alive)
        if msg is STOPPED:   # whoever stopped this node waits for its thread; not this consumer
            raise StopIteration
        if msg is END:
            self.close()
            raise StopIteration
        if isinstance(msg, Failure):
            self.close()
            raise msg.error
        return msg

    def close(self, wait: bool = True) -> None:
        """Stop the producer and wait for it (``wait=False``: its caller already waited, within one
        deadline for several nodes, and warned about any still stuck)."""
        if self._done:
            return
        self._done = True
        self._stop.set()
        if wait and self.thread is not None:
            join_threads([self.thread], self.name)
        self._chan.drain()


def _produce(make_upstream, chan: Channel, stop: threading.Event, stats: StageStats, waited) -> None:
    """A Prefetcher's thread: owns the upstream iterator from creation to close."""
    it = None
    end: Any = END
    try:
        it = iter(make_upstream())
        while not stop.is_set():
            t0, w0 = time.perf_counter(), waited()
            try:
                item = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            stats.add(items=1, busy=t1 - t0 - (waited() - w0))
            if not chan.put(item):
                break
            del item
            stats.add(wait_out=time.perf_counter() - t1)
    except BaseException as e:   # handed to the consumer, which raises it after the items before it
        end = Failure(e)
    try:
        close_iterator(it)
    except BaseException as e:
        if end is END:
            end = Failure(e)
    chan.put(end)


class ThreadMap(Node):
    """``fn(item)`` for the items of ``upstream`` on ``workers`` threads, at most ``window`` in flight.

    Yields in input order (or as completed with ``ordered=False``). ``workers=0``
    runs ``fn`` in the caller's thread as items are taken. ``fn`` may accept a
    keyword ``stop`` (a ``threading.Event`` set on close) to leave long work early. ``inside``
    says what ``fn`` is, for the warning about a worker that will not stop.
    """

    def __init__(self, upstream: Any, fn: Callable[[Any], Any], workers: int, window: int | None = None,
                 ordered: bool = True, name: str = "map", kind: str = "python",
                 wrap: Callable[[int, Any, BaseException], BaseException] | None = None,
                 stop: threading.Event | None = None, inside: str = USER_CALL):
        self.upstream, self._fn, self.workers, self.ordered = upstream, fn, workers, ordered
        self.window = window or max(2 * workers, 1)
        self.name, self.kind, self._wrap, self._inside = name, kind, wrap, inside
        self._stats = StageStats(name, kind, max(workers, 1))
        self._it: Iterator[Any] | None = None
        self._pool: DaemonPool | None = None
        self._pending: collections.deque = collections.deque()   # (index, item, future)
        self._index = 0
        self._exhausted = False
        self._upstream_error: BaseException | None = None
        self._closed = False
        self._lock = threading.Lock()   # close() from another thread against the consumer starting work
        self.stop = stop if stop is not None else threading.Event()

    def _submit(self, item) -> cf.Future:
        if self.workers:
            with self._lock:
                if self._closed:   # by another thread while this one topped the window up: start nothing more
                    raise StopIteration
                if self._pool is None:
                    self._pid = os.getpid()
                    self._pool = DaemonPool(self.workers, f"fastload-{self.name}")
                return self._pool.submit(_timed, self._fn, self._stats, item)   # tasks never hold the node
        f: cf.Future = cf.Future()
        try:
            f.set_result(_timed(self._fn, self._stats, item))
        except BaseException as e:   # surfaced by result(), in order, like a worker's error
            f.set_exception(e)
        return f

    def _fill(self) -> None:
        if self._it is None:
            self._it = iter(self.upstream)
        it = self._it
        while not self._exhausted and not self._closed and len(self._pending) < self.window:
            try:
                item = next(it)
            except StopIteration:
                self._exhausted = True
                break
            except Exception as e:   # raised after the items already in flight
                self._exhausted, self._upstream_error = True, e
                break
            self._pending.append((self._index, item, self._submit(item)))
            self._index += 1

    def ready(self) -> bool:
        """Whether the next item is already computed (nothing to wait for)."""
        return bool(self._pending) and self._pending[0][2].done()

    def _produce(self) -> Any:
        return self._next(top_up=True)

    def take(self) -> Any:
        """The next result without topping the window up first (to pace what is started)."""
        return self._give(self._untopped)

    def _untopped(self) -> Any:
        return self._next(top_up=False)

    def _next(self, top_up: bool) -> Any:
        if self._closed:
            self.close()   # what a close() from another thread left to this one: the upstream it was running
            raise StopIteration
        if self._pool is not None:
            check_process(self._pid, f"stage {self.name}", _NEW_ITERATION)
        try:
            if top_up or not self._pending:
                self._fill()
            return self._take()
        except BaseException:
            self.close()
            raise

    def _take(self) -> Any:
        if not self._pending:
            err, self._upstream_error = self._upstream_error, None
            if err is not None:
                raise err
            raise StopIteration
        if self.ordered:
            index, item, fut = self._pending.popleft()
        else:
            done = ()
            while not done:   # in slices, as interruptible_result waits
                done, _ = cf.wait([p[2] for p in self._pending], POLL_S, return_when=cf.FIRST_COMPLETED)
            entry = next(p for p in self._pending if p[2] in done)
            self._pending.remove(entry)
            index, item, fut = entry
        t0 = time.perf_counter()
        try:
            return interruptible_result(fut)
        except Exception as e:
            if self._wrap is None:
                raise
            raise self._wrap(index, item, e) from e
        finally:
            self._stats.add(wait_out=time.perf_counter() - t0)

    def close(self) -> None:
        with self._lock:
            first, self._closed = not self._closed, True
            pool, self._pool = self._pool, None
        if first:
            self.stop.set()
            for *_, fut in self._pending:
                fut.cancel()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                join_threads(pool.threads, self.name, self._inside)
            self._pending.clear()
        if close_unless_running(self._it):   # else the consumer's thread is inside it: closed from there
            self._it = None
        super().close()


def _timed(fn, stats: StageStats, item):
    t0 = time.perf_counter()
    try:
        return fn(item)
    finally:
        stats.add(items=1, busy=time.perf_counter() - t0)
