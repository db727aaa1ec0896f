"""Shard files on local disk or behind any fsspec URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``).

A :class:`Storage` is the one place file-based sources read bytes through:

* **Listing once.** A glob pattern or folder is listed once per Storage, and
  under ``torch.distributed`` once for the whole job (rank 0 lists and
  broadcasts); a shard's size comes from one listing of its directory, shared
  by every thread that asks (loaders that list per rank or per thread set off
  request storms).
* **A bounded in-flight window.** At most ``max_in_flight`` requests are
  outstanding at any time, however many worker threads read; a bulk read
  (:meth:`Storage.read_ranges`) issues its ranges concurrently inside it.
* **A stall is a failure.** A read that receives nothing for ``read_timeout``
  seconds (a server that stops sending mid-body without closing the connection)
  fails as a timeout, for HTTP(S) and S3 (a timeout the user's
  ``storage_options`` set wins): without one, aiohttp waits 300 s per try.
* **Retries with back-off.** A transient failure (HTTP 5xx or 429, a dropped
  connection, a timeout) is retried ``retries`` times, sleeping
  ``backoff * 2**attempt`` seconds; a permanent one (404, 403, missing
  credentials) fails at once. Either way the caller gets a
  :class:`StorageError` naming the URL, which sources turn into a
  :class:`~fastload.RecordError` so the loader's ``on_error`` policy applies.
* **A disk cache** (``cache_dir=``, ``cache_limit=``): whole shards are
  downloaded once, then read locally (memory-mapped where the source wants
  it); the least recently used shards are evicted to stay under the limit. A
  cached copy is used only while it matches the remote object's size and
  identity (its ETag, version or modification time, as the store reports it),
  checked the first time a Storage uses it: a shard rewritten at the same URL is
  fetched again.

Local paths bypass fsspec entirely (``os.pread`` on an open descriptor), so
the local-disk path costs nothing for the remote machinery. fsspec and its
backends are imported only when a URL is given.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import email.utils
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Callable, Sequence

from .._kernels import _pread
from .._optional import need
from ..pipeline.node import DaemonPool, interruptible_result
from . import _files

__all__ = ["Storage", "StorageError", "cache_name", "expand_urls", "is_url", "listed_once", "local_copy",
           "url_name"]

_FAIL_MEMORY_S = 5.0
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_KEEP_OPEN = 64   # descriptors of local files kept open between reads, per table

# Fields of an fsspec listing or info() entry that change when the object does, strongest first
# (S3, GCS, Azure and HTTP servers give an ETag). Only the first kind present is the identity:
# a listing and an info() of one object differ in what else they carry (S3 lists no VersionId,
# and gives LastModified to another precision), and must agree.
_IDENTITY = (("etag", ("ETag", "etag", "Etag")),
             ("version", ("VersionId", "generation", "version_id")),
             ("modified", ("LastModified", "Last-Modified", "last_modified", "updated", "mtime", "created")))


def cache_name(url: str) -> str:
    """A file name for ``url`` in a cache directory: unique, and still readable."""
    return hashlib.sha1(url.encode()).hexdigest()[:16] + "-" + re.sub(r"[^\w.-]", "_", url.rsplit("/", 1)[-1])[-80:]


class StorageError(OSError):
    """Reading ``url`` failed (after retries when the failure looked transient)."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"{url}: {reason}")


def is_url(path) -> bool:
    """True for ``scheme://...`` strings (``file://`` included), False for plain local paths."""
    return isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def url_name(root: str, part: str) -> str:
    """The name a part of a URL under ``root`` stands for: percent-decoded for ``http(s)://``
    (whose listings are links, ``cat%20dog``), as it is for object stores (whose keys are names)."""
    return urllib.parse.unquote(part) if root.startswith(("http://", "https://")) else part


def _racy(identity: dict) -> bool:
    """Whether a copy fetched now may be of a version its identity cannot tell from the next one: an
    object known by no identity, or only by a modification time (HTTP's Last-Modified counts whole
    seconds) less than two seconds before now, when a rewrite of the same size may follow within
    the same second."""
    if not identity:
        return True
    if set(identity) != {"modified"}:
        return False
    stamp = identity["modified"]
    try:
        when = float(stamp)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(stamp).timestamp()
        except (TypeError, ValueError):   # a form not read: not trusted
            return True
    return time.time() - when < 2.0


def _identity(info: dict) -> dict:
    """``{kind: value}`` of the first field of ``_IDENTITY`` that ``info`` has; ``{}`` for none."""
    for kind, keys in _IDENTITY:
        for key in keys:
            value = info.get(key)
            if value not in (None, ""):
                stamp = getattr(value, "timestamp", None)   # a datetime here, a float there: one form
                return {kind: repr(float(stamp())) if callable(stamp) else str(value)}
    return {}


def _brace(pattern: str) -> list[str]:
    """Expand ``{000..123}`` (zero-padded to the width given) and ``{a,b}`` groups, left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        a, b = rng.group(1), rng.group(2)
        width = len(a) if a.startswith("0") or len(a) == len(b) else 0
        step = 1 if int(b) >= int(a) else -1
        parts = [str(i).zfill(width) for i in range(int(a), int(b) + step, step)]
    else:
        parts = body.split(",")
    return [x for p in parts for x in _brace(head + p + tail)]


def expand_urls(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A brace pattern (``train-{0000..0127}.tar``), a list of paths/URLs, or one of them, as a list."""
    if isinstance(spec, (str, os.PathLike)):
        return _brace(os.fspath(spec))
    return [u for s in spec for u in _brace(os.fspath(s))]


def _status(e: BaseException) -> int | None:
    status = getattr(e, "status", None) or getattr(e, "code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None


def _cause(e: BaseException) -> BaseException:
    """The failure behind ``e``. fsspec's HTTP ``info()`` reports every failure of its HEAD and GET
    (a 500, a timeout, a dropped connection) as FileNotFoundError, the real one in its chain: that
    one decides whether to retry and is what an error names. A 404 (or 410) stays not found."""
    if not isinstance(e, FileNotFoundError):
        return e
    inner, seen = e.__cause__ or e.__context__, 0
    while inner is not None and seen < 8:
        status = _status(inner)
        if status is not None:
            return e if status in (404, 410) else inner
        if isinstance(inner, (TimeoutError, ConnectionError)) or type(inner).__module__.split(".")[0] == "aiohttp":
            return inner
        inner, seen = inner.__cause__ or inner.__context__, seen + 1
    return e


def _transient(e: BaseException) -> bool:
    status = _status(e)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(e, _PERMANENT):
        return False
    return isinstance(e, (OSError, TimeoutError, ConnectionError)) or type(e).__module__.split(".")[0] == "aiohttp"


def _with_timeout(protocol: str, options: dict, seconds: float) -> dict:
    """``options`` with a read timeout of ``seconds`` for the backends that would otherwise wait on a
    stalled read for minutes (aiohttp's 300 s a try for HTTP(S)), unless ``options`` set one."""
    if protocol in ("http", "https") and importlib.util.find_spec("aiohttp") is not None:   # else fsspec says
        client = dict(options.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp
            client["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
            return {**options, "client_kwargs": client}
    elif protocol in ("s3", "s3a"):
        # botocore tries each request up to 5 times on its own, and s3fs each call 5 times more: a
        # stalled endpoint held a read_timeout of 1 s for two minutes. One try each; this storage's
        # retries are the ones asked for.
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("retries", {"total_max_attempts": 1})
        if "read_timeout" not in config:
            config.setdefault("connect_timeout", seconds)
            config["read_timeout"] = seconds
        return {**options, "config_kwargs": config}
    return options


def _find(fs, path: str) -> dict:
    """``fs.find(path, detail=True)``, in which a folder whose listing fails is an error. fsspec's own
    walk (HTTP's find) leaves such a folder out, its ``on_error`` reaching only the top one: a page
    that timed out was a class gone missing, with the labels after it shifted. A filesystem with a
    flat listing of its own (S3's) raises its errors already."""
    from fsspec.asyn import AsyncFileSystem
    from fsspec.spec import AbstractFileSystem
    walks = type(fs)._find is AsyncFileSystem._find if isinstance(fs, AsyncFileSystem) else \
        type(fs).find is AbstractFileSystem.find
    if not walks:
        return fs.find(path, detail=True)
    found, folders, seen = {}, [path.rstrip("/")], set()
    while folders:
        folder = folders.pop()
        if folder in seen:   # a page linking back to itself
            continue
        seen.add(folder)
        for info in fs.ls(folder, detail=True):
            name = info["name"].rstrip("/")
            if name == folder:   # a page's link to itself
                continue
            if info["type"] == "directory":
                folders.append(name)
            else:
                found[name] = info
    return dict(sorted(found.items()))


def _describe(e: BaseException) -> str:
    status = _status(e)
    what = f"HTTP {status}" if status is not None else type(e).__name__
    msg = str((getattr(e, "message", None) if status is not None else None) or e).strip()
    return f"{what}: {msg}" if msg else what


class Storage:
    """Where a source's files live, and how their bytes are fetched.

    One Storage serves one source object and all its threads. ``storage_options``
    go to fsspec (``endpoint_url``, ``key``/``secret``, ``anon``, ...).
    ``read_timeout``: seconds a read may receive nothing before it fails (and is
    retried) as a timeout, on HTTP(S) and S3 (see the module docstring).
    """

    def __init__(self, *, cache_dir: str | os.PathLike | None = None, cache_limit: int | None = None,
                 max_in_flight: int = 16, retries: int = 3, backoff: float = 0.05,
                 read_timeout: float = 30.0, storage_options: dict | None = None):
        if max_in_flight < 1 or retries < 0 or backoff < 0:
            raise ValueError("max_in_flight must be >= 1, retries and backoff >= 0")
        if not read_timeout > 0:
            raise ValueError(f"read_timeout must be a number of seconds > 0, got {read_timeout!r}")
        if cache_limit is not None and cache_dir is None:
            raise ValueError("cache_limit needs a cache_dir")
        self.max_in_flight, self.retries, self.backoff = int(max_in_flight), int(retries), float(backoff)
        self.read_timeout = float(read_timeout)
        self.storage_options = dict(storage_options or {})
        self.cache = None if cache_dir is None else DiskCache(cache_dir, cache_limit)
        self._window = threading.BoundedSemaphore(self.max_in_flight)
        self._pool = None
        self._fs = {}          # protocol -> filesystem
        self._stats = {}       # url -> (bytes, identity), filled by directory listings
        self._listed = set()   # directories already listed
        self._fds = _Descriptors()   # of local paths (a cached file's are the cache's)
        self._failed = {}      # url -> (when, why) of its last failure
        self._paths = {}       # url -> local path, or None for a remote URL
        self._lock, self._list_lock = threading.Lock(), threading.Lock()

    # -- state that does not cross pickling (descriptors, locks, the pool) -----------
    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_window", "_pool", "_fs", "_fds", "_lock", "_list_lock"):
            state.pop(k)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._window = threading.BoundedSemaphore(self.max_in_flight)
        self._pool, self._fs, self._fds = None, {}, _Descriptors()
        self._lock, self._list_lock = threading.Lock(), threading.Lock()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        self._fds.close()
        if self.cache is not None:
            self.cache.close()
        if pool is not None:
            pool.shutdown(wait=False)

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass

    # -- filesystems and listing ------------------------------------------------------
    def filesystem(self, url: str):
        """The fsspec filesystem of ``url`` and the path within it."""
        need("fsspec", f"reading {url}", "fastload[remote]")
        import fsspec.core
        protocol = url.split("://", 1)[0]
        with self._lock:
            fs = self._fs.get(protocol)
        if fs is None:
            fs, _ = fsspec.core.url_to_fs(url, **_with_timeout(protocol, self.storage_options, self.read_timeout))
            # fsspec hands out one instance per set of options, with the listings an earlier dataset
            # made: sizes and ETags from before a rewrite at the same URLs. This storage lists anew.
            if hasattr(fs, "invalidate_cache"):
                fs.invalidate_cache()
            if protocol in ("s3", "s3a") and hasattr(fs, "retries"):   # s3fs's own tries of a call (see _with_timeout)
                fs.retries = 1
            with self._lock:
                fs = self._fs.setdefault(protocol, fs)
        return fs, fs._strip_protocol(url)

    def glob(self, pattern: str) -> list[str]:
        """Every file matching a ``*``/``?``/``[...]`` pattern, sorted, listed once; a file named
        as written (``a[1].tar``) is that file, not the pattern's ``a1.tar``."""
        if not is_url(pattern):
            import glob
            return [pattern] if os.path.isfile(pattern) else sorted(glob.glob(pattern))
        fs, path = self.filesystem(pattern)
        protocol = pattern.split("://", 1)[0]
        try:
            literal = fs.isfile(path)
        except Exception:   # a pattern no store holds as a name: matched below, where errors are reported
            literal = False
        if literal:
            return [pattern]
        found = listed_once(pattern, lambda: self._call(pattern, lambda: fs.glob(path, detail=True)))
        urls = []
        for p, info in sorted(found.items()):
            url = p if is_url(p) else f"{protocol}://{p.lstrip('/') if protocol != 'file' else p}"
            self._remember(url, info)
            urls.append(url)
        return urls

    def find(self, root: str, extensions: Sequence[str] = ()) -> list[str]:
        """Every file under the URL ``root`` (recursively) ending in one of ``extensions``, from one
        recursive listing, sorted by the names their paths stand for (:func:`url_name`: for an HTTP
        server's percent-encoded links, the order of the same tree on disk); their sizes are
        remembered for :meth:`read_ranges`."""
        fs, path = self.filesystem(root)
        found = listed_once(root, lambda: self._call(root, lambda: _find(fs, path)))
        base, exts = root.rstrip("/"), tuple(e.lower() for e in extensions)
        named = []
        for p, info in found.items():
            rel = p[len(path.rstrip("/")):].lstrip("/") if p.startswith(path.rstrip("/")) else p
            url, name = f"{base}/{rel}", url_name(root, rel)
            if any(part.startswith(".") for part in name.split("/")) or (exts and not name.lower().endswith(exts)):
                continue
            self._remember(url, info)
            named.append((name, url))
        return [url for _, url in sorted(named)]

    def _remember(self, url: str, info: dict) -> None:
        """Keep the size and identity of a listed or inspected file (none kept without a size)."""
        if info.get("size") is not None:
            self._stats[url] = (int(info["size"]), _identity(info))

    def size(self, url: str) -> int:
        """Bytes in ``url``: one listing of its directory serves every file in it."""
        if not is_url(url):
            try:
                return os.path.getsize(url)
            except OSError as e:
                raise StorageError(url, _describe(e)) from e
        return self._stat(url)[0]

    def identity(self, url: str) -> dict:
        """What tells this version of ``url`` from another of the same size: ``{"etag": ...}`` (or a
        version, or a modification time) as its store reports it, from the listing that gave its
        size; ``{}`` where the store reports none. For a local file, its modification time."""
        path = self._direct(url)
        if path is not None:
            try:
                return {"mtime_ns": str(os.stat(path).st_mtime_ns)}
            except OSError as e:
                raise StorageError(url, _describe(e)) from e
        return self._stat(url)[1]

    def _stat(self, url: str) -> tuple[int, dict]:
        """``(bytes, identity)`` of a URL, asked once: one listing of its directory serves every
        file in it; a store that does not list is asked about each file."""
        got = self._stats.get(url)
        if got is not None:
            return got
        parent = url.rsplit("/", 1)[0]
        # A web URL with a query (a presigned one) names one object: its "directory" is no page to
        # list, and a "/" inside the query would make one out of a file, downloaded whole.
        query = url.startswith(("http://", "https://")) and "?" in url
        with self._list_lock:   # the first asker lists; the others wait for its answer
            if url not in self._stats and parent not in self._listed and not query:
                self._listed.add(parent)
                fs, path = self.filesystem(parent)
                try:   # not every store lists (plain HTTP servers): then each file is asked once
                    entries = self._call(parent, lambda: fs.ls(path, detail=True))
                except StorageError:
                    entries = []
                for e in entries:
                    if e.get("type", "file") == "file":
                        self._remember(parent + "/" + e["name"].rstrip("/").rsplit("/", 1)[-1], e)
        if url not in self._stats:
            fs, path = self.filesystem(url)
            info = self._call(url, lambda: fs.info(path))
            if info.get("size") is None:
                raise StorageError(url, "the server does not say how large the file is")
            self._remember(url, info)
        return self._stats[url]

    # -- reads ------------------------------------------------------------------------
    def _call(self, url: str, fn: Callable):
        """fn() inside the in-flight window, retried with back-off when the failure is transient.

        A URL that has just failed fails again at once for a few seconds, so a
        dead shard costs its retries once, not once per sample read from it.
        """
        recent = self._failed.get(url)
        if recent is not None and time.monotonic() - recent[0] < _FAIL_MEMORY_S:
            raise StorageError(url, recent[1])
        for attempt in range(self.retries + 1):
            try:
                with self._window:
                    return fn()
            except Exception as failure:
                e = _cause(failure)
                if not _transient(e):
                    reason = _describe(e)
                elif attempt == self.retries:
                    reason = f"{_describe(e)} (after {self.retries + 1} tries)"
                else:
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                self._failed[url] = (time.monotonic(), reason)
                raise StorageError(url, reason) from e

    def _direct(self, url: str) -> str | None:
        """The local path of a plain path or ``file://`` URL (None for remote URLs); remembered."""
        try:
            return self._paths[url]
        except KeyError:
            path = url if not is_url(url) else url[len("file://"):] if url.startswith("file://") else None
            self._paths[url] = path
            return path

    def local_path(self, url: str) -> str | None:
        """A local file holding ``url``'s bytes: the path itself, or its copy in the disk cache
        (which a later download may evict: this Storage's own reads hold the file open instead)."""
        path = self._direct(url)
        if path is not None or self.cache is None:
            return path
        return self.cache.get(url, self.size(url), self._fetcher(url), self.identity(url))

    def _fetcher(self, url: str) -> Callable[[str], None]:
        return lambda dst: self._download(url, dst)

    def _download(self, url: str, dst: str) -> None:
        fs, path = self.filesystem(url)
        self._call(url, lambda: fs.get_file(path, dst))

    def open_stream(self, url: str, buffer_size: int = 1 << 22, *, local_buffer: int = 1 << 20, ahead: int = 0):
        """A binary file object over ``url``: seekable, read in ``buffer_size`` ranges, each retried.

        ``ahead``: for a reader that goes front to back, the ranges after the one it
        reads that are requested before it gets to them (see :class:`_RangeReader`).
        A local file is read ``local_buffer`` bytes at a time: large for reading it
        through, small for skipping through it (a scan of tar headers). A file in the
        disk cache is opened before anything can evict it."""
        path = self._direct(url)
        try:
            if path is not None:
                return open(path, "rb", buffering=local_buffer)
            if self.cache is not None:
                return self.cache.open(url, self.size(url), self._fetcher(url), self.identity(url), local_buffer)
        except StorageError:
            raise
        except OSError as e:
            raise StorageError(url, _describe(e)) from e
        return io.BufferedReader(_RangeReader(self, url, buffer_size, ahead), buffer_size)

    def opening(self, url: str, **kw) -> cf.Future:
        """:meth:`open_stream` begun before the file is read: a local file, or a remote one read in
        ranges, is opened now (its first ranges requested: ``ahead=``); one the disk cache is to
        hold is downloaded and opened on the I/O threads. Its ``result()`` is the file or the
        StorageError of opening it."""
        if self._direct(url) is None and self.cache is not None:
            return self._io_pool().submit(self.open_stream, url, **kw)
        # Opened by the thread that reads it: each pool thread started to open one took a memory arena
        # glibc kept for the stream's next reader thread, whose samples were then faulted in afresh.
        opened = cf.Future()
        try:
            opened.set_result(self.open_stream(url, **kw))
        except StorageError as e:
            opened.set_exception(e)
        return opened

    def _io_pool(self) -> DaemonPool:
        with self._lock:
            if self._pool is None:
                self._pool = DaemonPool(self.max_in_flight, "fastload-io")
            return self._pool

    def read(self, url: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``url``."""
        if self._direct(url) is not None or self.cache is not None:
            got = self._pread_many([(url, start, end)])[0]
            if isinstance(got, StorageError):
                raise got
            return got
        if end <= start:   # an empty member: s3fs would send "bytes=S-(S-1)", which servers ignore
            return b""
        fs, path = self.filesystem(url)
        data = self._call(url, lambda: fs.cat_file(path, start=start, end=end))
        if len(data) > end - start:
            raise StorageError(url, f"the server ignored the byte range [{start}, {end}) (sent {len(data)} bytes): "
                                    "without range requests read shards whole, through cache_dir= or .stream()")
        if len(data) != end - start:
            raise StorageError(url, f"file ends at byte {start + len(data)}, before {end} (truncated?)")
        return data

    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list:
        """Several ``(url, start, end)`` reads: concurrently within the window for URLs, in order.

        Each item of the result is the bytes or the :class:`StorageError` of that range,
        so one bad range does not cost the others.
        """
        def one(r):
            try:
                return self.read(*r)
            except StorageError as e:
                return e
        if all(self.local_path_cached(u) is not None for u in {u for u, _, _ in ranges}):
            return self._pread_many(ranges)
        if len(ranges) <= 1:
            return [one(r) for r in ranges]
        return list(self._io_pool().map(one, ranges))

    def local_path_cached(self, url: str) -> str | None:
        """Like :meth:`local_path` but never downloads (None for a URL not in the cache, or not yet
        checked against the remote by this process)."""
        path = self._direct(url)
        return path if path is not None or self.cache is None else self.cache.peek(url)

    def _hold(self, url: str):
        """``(table, held)``: a descriptor of ``url``'s local file (the path, or its copy in the disk
        cache, fetched if it is not there), open until ``table.release(held)``."""
        path = self._direct(url)
        if path is not None:
            return self._fds, self._fds.acquire(path)
        return self.cache, self.cache.acquire(url, self.size(url), self._fetcher(url), self.identity(url))

    def _pread_many(self, ranges) -> list:
        """``read_ranges`` of local files (plain paths, or copies in the disk cache), one positional
        read each. A batch of small samples is thousands of these: where the OS has ``pread`` they
        are one compiled call that releases the GIL. The files' descriptors are held for the batch,
        so a cached file evicted meanwhile is still read whole."""
        fds, held = {}, []
        try:
            for url in dict.fromkeys(u for u, _, _ in ranges):
                try:
                    table, h = self._hold(url)
                except OSError as e:   # a StorageError (a failed download) too
                    fds[url] = e
                    continue
                held.append((table, h))
                fds[url] = h.fd
            if _pread.AVAILABLE:
                out, bad = _pread.pread_ranges(ranges, fds)
            else:
                out, bad = self._pread_each(ranges, fds)
        finally:
            for table, h in held:
                table.release(h)
        for j in bad:
            url, start, end = ranges[j]
            if isinstance(out[j], StorageError):
                continue
            if isinstance(out[j], OSError):
                err = StorageError(url, _describe(out[j]))
                err.__cause__ = out[j]
            elif out[j]:
                err = StorageError(url, f"file ends at byte {start + len(out[j])}, before {end} (truncated?)")
            else:
                err = StorageError(url, f"bytes {start}..{end} are past the end of the file (truncated?)")
            out[j] = err
        return out

    def _pread_each(self, ranges, fds: dict) -> tuple[list, list]:
        """``_pread.pread_ranges`` through ``os.pread``, or a seek and a read under the lock."""
        out, bad, pread, lock = [], [], _files.pread, self._lock
        for url, start, end in ranges:
            fd = fds[url]
            try:
                data = fd if isinstance(fd, OSError) else pread(fd, end - start, start, lock)
            except OSError as e:
                data = e
            if isinstance(data, OSError) or len(data) != end - start:
                bad.append(len(out))
            out.append(data)
        return out, bad


class _Held:
    """An open descriptor, the number of reads using it, and whether it is to be closed after them."""
    __slots__ = ("fd", "users", "dropped")

    def __init__(self, fd: int):
        self.fd, self.users, self.dropped = fd, 0, False


class _Descriptors:
    """Descriptors of local files kept open between reads, shared by threads.

    A read takes one with :meth:`acquire` and gives it back with :meth:`release`.
    Of those no read holds, at most ``keep`` stay open, the least recently used
    closed first. A path :meth:`drop`-ped (its file evicted or replaced) is closed
    as soon as no read holds it, so a deleted file gives its disk space back.
    """

    def __init__(self, keep: int = _KEEP_OPEN):
        self.keep = keep
        self._lock = threading.Lock()
        self._open = collections.OrderedDict()   # path -> _Held, least recently used first

    def acquire(self, path: str) -> _Held:
        """The descriptor of ``path`` (OSError if it cannot be opened), held until :meth:`release`."""
        with self._lock:   # opened under the lock: a drop cannot come between the open and the entry
            held = self._open.get(path)
            if held is None:
                held = self._open[path] = _Held(_files.open_binary(path))
            else:
                self._open.move_to_end(path)
            held.users += 1
            return held

    def release(self, held: _Held) -> None:
        with self._lock:
            held.users -= 1
            if held.users:
                return
            if held.dropped:
                os.close(held.fd)
            elif len(self._open) > self.keep:
                idle = [p for p, h in self._open.items() if not h.users][:len(self._open) - self.keep]
                for p in idle:
                    os.close(self._open.pop(p).fd)

    def drop(self, path: str) -> None:
        """Close ``path``'s descriptor now, or when the last read holding it ends."""
        with self._lock:
            held = self._open.pop(path, None)
            if held is not None:
                held.dropped = True
                if not held.users:
                    os.close(held.fd)

    def close(self) -> None:
        with self._lock:
            paths = list(self._open)
        for p in paths:
            self.drop(p)


def listed_once(url: str, listing: Callable[[], dict]) -> dict:
    """``listing()`` run once for the whole job: under an initialised ``torch.distributed``, rank 0
    lists and broadcasts the result (a bucket listed by every rank is a request storm); else here.

    Sources list in their constructors, in the same order on every rank and from the
    main thread, which is what a collective call needs. Broadcasts pair up by order alone,
    so rank 0 sends the URL with its listing: a rank that built another source meanwhile
    (one rank 0 did not build, or in another order) is stopped, not handed another
    source's files.
    """
    dist = sys.modules.get("torch.distributed")   # never imports torch itself
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return listing()
    box, error = [None], None
    if dist.get_rank() == 0:
        try:
            box[0] = (url, True, listing())
        except Exception as e:   # the other ranks must hear of it, not wait for a broadcast forever
            error, box[0] = e, (url, False, str(e))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    sent, ok, value = box[0]
    if sent != url:
        raise StorageError(url, f"rank {dist.get_rank()} lists this while rank 0 listed {sent!r}: under "
                                "torch.distributed rank 0 lists for every rank, so every rank must build the "
                                "same URL sources in the same order")
    if not ok:
        raise StorageError(url, f"listing failed on rank 0: {value}")
    return value


def local_copy(path_or_url, owner: str, **storage) -> tuple[str, int]:
    """A local file holding ``path_or_url``'s bytes, for sources that index a whole file: its path,
    and a read-only descriptor of it that is the caller's to close.

    A plain path (or ``file://``) is itself; a remote URL is downloaded once,
    through ``storage`` (retried; into ``cache_dir`` when given, else into a
    temporary folder removed when the process exits). A copy in the disk cache is
    opened before anything can evict it, and an evicted file is unlinked, not
    rewritten: read through the descriptor, the copy stays whole for as long as
    the caller keeps it open, whatever the cache does meanwhile.
    """
    path = os.fspath(path_or_url)
    if not is_url(path):
        if storage:
            raise TypeError(f"{owner}: {sorted(storage)} apply to URLs only")
        return path, _files.open_binary(path)
    st = Storage(**storage)
    local = st._direct(path)
    if local is not None:
        return local, _files.open_binary(local)
    if st.cache is not None:
        fd = st.cache.descriptor(path, st.size(path), st._fetcher(path), st.identity(path))
        return st.cache.path(path), fd
    import atexit
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="fastload-")
    atexit.register(shutil.rmtree, folder, True)
    dst = os.path.join(folder, cache_name(path))
    st._download(path, dst)
    return dst, _files.open_binary(dst)


class _RangeReader(io.RawIOBase):
    """A remote file as a raw stream: every read is ranged requests through the Storage.

    With ``ahead=0`` a read is one request for the bytes asked for. With ``ahead=k`` the file
    is read in aligned blocks of ``block`` bytes, and the k blocks after the one being read
    are requested before the reader gets to them (on the Storage's I/O threads, within its
    window): a reader going front to back waits for the network once per file, not once per
    block, and a far-off server's latency overlaps the work on the blocks already there. The
    first blocks are requested on opening. A seek outside them drops them; a block's failure
    is raised when the reader gets to it, where a read of it alone would have failed.
    """

    def __init__(self, storage: Storage, url: str, block: int = 1 << 22, ahead: int = 0):
        self.storage, self.url, self.size, self.pos = storage, url, storage.size(url), 0
        self.block, self.ahead = int(block), int(ahead)
        self._blocks: dict[int, cf.Future] = {}   # block number -> the future of its bytes
        if self.ahead:
            self._request(0)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = offset if whence == io.SEEK_SET else self.pos + offset if whence == io.SEEK_CUR \
            else self.size + offset
        return self.pos

    def _request(self, k: int) -> None:
        """Blocks ``k`` to ``k + ahead`` requested, and none other kept."""
        last = min(k + self.ahead, (self.size - 1) // self.block)
        for j in [j for j in self._blocks if not k <= j <= last]:
            self._blocks.pop(j).cancel()
        for j in range(k, last + 1):
            if j not in self._blocks:
                start = j * self.block
                self._blocks[j] = self.storage._io_pool().submit(
                    self.storage.read, self.url, start, min(start + self.block, self.size))

    def readinto(self, b):
        end = min(self.pos + len(b), self.size)
        if end <= self.pos:
            return 0
        if not self.ahead:
            data = self.storage.read(self.url, self.pos, end)
            b[:len(data)] = data
            self.pos += len(data)
            return len(data)
        k, at = divmod(self.pos, self.block)
        self._request(k)
        data = interruptible_result(self._blocks[k])   # the block's StorageError, raised here
        n = min(end - self.pos, len(data) - at)
        b[:n] = memoryview(data)[at:at + n]
        self.pos += n
        return n

    def close(self):
        for fut in self._blocks.values():
            fut.cancel()   # those running finish on their thread and are dropped
        self._blocks.clear()
        super().close()


class DiskCache:
    """Whole remote files under ``root``, at most ``limit`` bytes, least recently used evicted first.

    Beside each file a hidden record (``.<name>.id``) holds the URL, size and
    identity (ETag, version or modification time) of the remote object it copies.
    The first time this process asks for a file it is checked against the remote's
    (:meth:`get`'s ``size`` and ``identity``): a file that differs, or that has no
    record, is fetched again. Files are written to a temporary name and renamed
    into place, so a crash leaves no partial shard. A file being opened is not
    evicted; one evicted while reads hold it open is unlinked and closed when they
    end, which frees its space. A download starts only once it fits beside those
    under way, partial files included. Processes sharing a directory (the ranks of
    one node) reuse each other's files, but each keeps the limit over what it knows
    of, so give each process a share of the disk.
    """

    def __init__(self, root, limit: int | None):
        self.root, self.limit = os.fspath(root), None if limit is None else int(limit)
        if self.limit is not None and self.limit <= 0:
            raise ValueError("cache_limit must be positive")
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)   # a download ended, or a file was opened
        self._inflight = {}                        # name -> size while being downloaded
        self._lru = collections.OrderedDict()      # name -> size, least recent first
        self._checked = {}                         # name -> record, for files this process has checked
        self._pins = collections.Counter()         # name -> threads opening it: not to be evicted
        self._fds = _Descriptors()
        entries = []
        for e in os.scandir(self.root):
            if e.is_file() and not e.name.startswith(".") and not e.name.endswith(".part"):
                st = e.stat()
                entries.append((st.st_atime, e.name, st.st_size))
        for _, name, size in sorted(entries):
            self._lru[name] = size

    def __getstate__(self):
        return {"root": self.root, "limit": self.limit}

    def __setstate__(self, state):
        self.__init__(state["root"], state["limit"])

    def close(self) -> None:
        self._fds.close()

    def path(self, url: str) -> str:
        return os.path.join(self.root, cache_name(url))

    def _record_path(self, name: str) -> str:
        return os.path.join(self.root, f".{name}.id")

    def nbytes(self) -> int:
        with self._lock:
            return sum(self._lru.values())

    def peek(self, url: str) -> str | None:
        """The cached copy of ``url`` if this process has checked it, else None; never fetches."""
        name = cache_name(url)
        with self._lock:
            if name in self._checked:
                self._lru.move_to_end(name)
                return os.path.join(self.root, name)
        return None

    def get(self, url: str, size: int, fetch: Callable[[str], None], identity: dict | None = None) -> str:
        """The cached copy of ``url`` (``size`` bytes, ``identity`` as :meth:`Storage.identity` gives it),
        calling ``fetch(tmp_path)`` once if it is absent or a copy of another version."""
        return self._fetched(url, size, fetch, identity, pin=False)

    def acquire(self, url: str, size: int, fetch: Callable[[str], None], identity: dict | None = None) -> _Held:
        """A descriptor of the cached copy of ``url`` (fetched as :meth:`get` does), open until
        :meth:`release`."""
        return self._opened(url, size, fetch, identity, self._fds.acquire)

    def release(self, held: _Held) -> None:
        self._fds.release(held)

    def descriptor(self, url: str, size: int, fetch: Callable[[str], None], identity: dict | None = None) -> int:
        """A read-only descriptor of the cached copy of ``url`` (fetched as :meth:`get` does), the
        caller's to close: the copy stays readable through it after an eviction."""
        return self._opened(url, size, fetch, identity, _files.open_binary)

    def open(self, url: str, size: int, fetch: Callable[[str], None], identity: dict | None = None,
             buffering: int = -1):
        """The cached copy of ``url`` (fetched as :meth:`get` does) as a binary file object."""
        return self._opened(url, size, fetch, identity, lambda path: open(path, "rb", buffering=buffering))

    def _opened(self, url, size, fetch, identity, opener):
        """``opener(path)`` of the cached copy of ``url``. The file cannot be evicted from when it is
        found until it is open; one deleted all the same (by another process sharing the
        directory) is fetched again."""
        for _ in range(3):
            path = self._fetched(url, size, fetch, identity, pin=True)
            name = os.path.basename(path)
            try:
                return opener(path)
            except FileNotFoundError:
                with self._lock:
                    self._forget(name)
            finally:
                with self._lock:
                    self._pins[name] -= 1
                    if not self._pins[name]:
                        del self._pins[name]
                    self._changed.notify_all()
        raise StorageError(url, f"its copy in the disk cache {self.root} was deleted each time it was "
                                "fetched (by another process sharing the directory?)")

    def _fetched(self, url: str, size: int, fetch: Callable[[str], None], identity: dict | None, pin: bool) -> str:
        """The path of the cached copy of ``url``, fetched if need be; counted as being opened if ``pin``."""
        name = cache_name(url)
        record = {"url": url, "size": int(size), **(identity or {})}
        if self.limit is not None and size > self.limit:
            raise StorageError(url, f"the shard is {size} bytes, larger than the cache limit of {self.limit} "
                                    "bytes: raise cache_limit or write smaller shards")
        with self._lock:
            while True:
                if name not in self._inflight:
                    self._check(name, record)
                if name in self._checked:
                    self._lru.move_to_end(name)
                    if pin:
                        self._pins[name] += 1
                    return os.path.join(self.root, name)
                if name not in self._inflight and self._make_room(size):
                    self._inflight[name] = size
                    break
                # another thread is fetching it, or downloads and files being opened fill the limit
                self._changed.wait()
        final = os.path.join(self.root, name)
        tmp = f"{final}.{os.getpid()}-{threading.get_ident()}.part"
        try:
            fetch(tmp)
            got = os.path.getsize(tmp)
            if got != size:
                raise StorageError(url, f"downloaded {got} bytes, expected {size}")
            # the record first: a file is never beside another version's record, even after a crash.
            # A racy one is trusted by this cache only: the next dataset to open the directory fetches
            # the object again, whose rewrite within the second would have the same identity.
            self._write_record(name, {**record, "racy": True} if _racy(identity or {}) else record)
            os.replace(tmp, final)
            with self._lock:
                self._lru[name] = size
                self._checked[name] = record
                if pin:
                    self._pins[name] += 1
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            with self._lock:
                del self._inflight[name]
                self._changed.notify_all()
        return final

    def _write_record(self, name: str, record: dict) -> None:
        path = self._record_path(name)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.part"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)

    def _check(self, name: str, record: dict) -> None:
        """Forget ``name``'s file unless it is a copy of what ``record`` describes (lock held). A file
        this process has not checked yet (left by an earlier run, or by another process) is
        checked against the record beside it, once."""
        if self._checked.get(name) == record:
            return
        path = os.path.join(self.root, name)
        if name not in self._checked:
            if name not in self._lru and not os.path.exists(path):
                return
            try:
                with open(self._record_path(name)) as f:
                    same = json.load(f) == record and os.path.getsize(path) == record["size"]
            except (OSError, ValueError):
                same = False
            if same:
                self._lru.setdefault(name, record["size"])
                self._checked[name] = record
                return
        self._remove(name)

    def _forget(self, name: str) -> None:
        """Stop counting ``name``'s file as cached, and close its descriptor once unused (lock held)."""
        self._lru.pop(name, None)
        self._checked.pop(name, None)
        self._fds.drop(os.path.join(self.root, name))

    def _remove(self, name: str) -> None:
        """Delete ``name``'s file and its record (lock held)."""
        self._forget(name)
        for path in (os.path.join(self.root, name), self._record_path(name)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _make_room(self, incoming: int) -> bool:
        """Evict least-recently-used files, but none being opened, until ``incoming`` more bytes fit
        beside the downloads under way (lock held). False when they do not fit even then."""
        if self.limit is None:
            return True
        total = sum(self._lru.values()) + sum(self._inflight.values())
        for name in [n for n in self._lru if n not in self._pins]:
            if total + incoming <= self.limit:
                break
            total -= self._lru[name]
            self._remove(name)
        return total + incoming <= self.limit
