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
* **Retries with back-off.** A transient failure (HTTP 5xx or 429, a dropped
  connection, a timeout) is retried ``retries`` times, sleeping
  ``backoff * 2**attempt`` seconds; a permanent one (404, 403, missing
  credentials) fails at once. Either way the caller gets a
  :class:`StorageError` naming the URL, which sources turn into a
  :class:`~fastload.RecordError` so the loader's ``on_error`` policy applies.
* **A disk cache** (``cache_dir=``, ``cache_limit=``): whole shards are
  downloaded once, then read locally (memory-mapped where the source wants
  it); the least recently used shards are evicted to stay under the limit.

Local paths bypass fsspec entirely (``os.pread`` on an open descriptor), so
the local-disk path costs nothing for the remote machinery. fsspec and its
backends are imported only when a URL is given.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Callable, Sequence

from .._kernels import _pread
from . import _files

__all__ = ["Storage", "StorageError", "cache_name", "expand_urls", "is_url", "listed_once", "local_copy",
           "url_name"]

_FAIL_MEMORY_S = 5.0
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


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


def _describe(e: BaseException) -> str:
    status = _status(e)
    what = f"HTTP {status}" if status is not None else type(e).__name__
    msg = str((getattr(e, "message", None) if status is not None else None) or e).strip()
    return f"{what}: {msg}" if msg else what


class Storage:
    """Where a source's files live, and how their bytes are fetched.

    One Storage serves one source object and all its threads. ``storage_options``
    go to fsspec (``endpoint_url``, ``key``/``secret``, ``anon``, ...).
    """

    def __init__(self, *, cache_dir: str | os.PathLike | None = None, cache_limit: int | None = None,
                 max_in_flight: int = 16, retries: int = 3, backoff: float = 0.05,
                 storage_options: dict | None = None):
        if max_in_flight < 1 or retries < 0 or backoff < 0:
            raise ValueError("max_in_flight must be >= 1, retries and backoff >= 0")
        if cache_limit is not None and cache_dir is None:
            raise ValueError("cache_limit needs a cache_dir")
        self.max_in_flight, self.retries, self.backoff = int(max_in_flight), int(retries), float(backoff)
        self.storage_options = dict(storage_options or {})
        self.cache = None if cache_dir is None else DiskCache(cache_dir, cache_limit)
        self._window = threading.BoundedSemaphore(self.max_in_flight)
        self._pool = None
        self._fs = {}          # protocol -> filesystem
        self._sizes = {}       # url -> bytes, filled by directory listings
        self._listed = set()   # directories already listed
        self._fds = {}         # local path -> descriptor
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
        self._pool, self._fs, self._fds = None, {}, {}
        self._lock, self._list_lock = threading.Lock(), threading.Lock()

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
            pool, self._pool = self._pool, None
        for fd in fds.values():
            os.close(fd)
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
        import fsspec.core
        protocol = url.split("://", 1)[0]
        with self._lock:
            fs = self._fs.get(protocol)
        if fs is None:
            fs, _ = fsspec.core.url_to_fs(url, **self.storage_options)
            with self._lock:
                fs = self._fs.setdefault(protocol, fs)
        return fs, fs._strip_protocol(url)

    def glob(self, pattern: str) -> list[str]:
        """Every file matching a ``*``/``?`` pattern, sorted, listed once."""
        if not is_url(pattern):
            import glob
            return sorted(glob.glob(pattern))
        fs, path = self.filesystem(pattern)
        protocol = pattern.split("://", 1)[0]
        found = listed_once(pattern, lambda: self._call(pattern, lambda: fs.glob(path, detail=True)))
        urls = []
        for p, info in sorted(found.items()):
            url = p if is_url(p) else f"{protocol}://{p.lstrip('/') if protocol != 'file' else p}"
            if info.get("size") is not None:
                self._sizes[url] = int(info["size"])
            urls.append(url)
        return urls

    def find(self, root: str, extensions: Sequence[str] = ()) -> list[str]:
        """Every file under the URL ``root`` (recursively) ending in one of ``extensions``, from one
        recursive listing, sorted by the names their paths stand for (:func:`url_name`: for an HTTP
        server's percent-encoded links, the order of the same tree on disk); their sizes are
        remembered for :meth:`read_ranges`."""
        fs, path = self.filesystem(root)
        found = listed_once(root, lambda: self._call(root, lambda: fs.find(path, detail=True)))
        base, exts = root.rstrip("/"), tuple(e.lower() for e in extensions)
        named = []
        for p, info in found.items():
            rel = p[len(path.rstrip("/")):].lstrip("/") if p.startswith(path.rstrip("/")) else p
            url, name = f"{base}/{rel}", url_name(root, rel)
            if any(part.startswith(".") for part in name.split("/")) or (exts and not name.lower().endswith(exts)):
                continue
            if info.get("size") is not None:
                self._sizes[url] = int(info["size"])
            named.append((name, url))
        return [url for _, url in sorted(named)]

    def size(self, url: str) -> int:
        """Bytes in ``url``: one listing of its directory serves every file in it."""
        if not is_url(url):
            try:
                return os.path.getsize(url)
            except OSError as e:
                raise StorageError(url, _describe(e)) from e
        parent = url.rsplit("/", 1)[0]
        with self._list_lock:   # the first asker lists; the others wait for its answer
            if url not in self._sizes and parent not in self._listed:
                self._listed.add(parent)
                fs, path = self.filesystem(parent)
                try:   # not every store lists (plain HTTP servers): then each file is asked once
                    entries = self._call(parent, lambda: fs.ls(path, detail=True))
                except StorageError:
                    entries = []
                for e in entries:
                    if e.get("size") is not None and e.get("type", "file") == "file":
                        self._sizes[parent + "/" + e["name"].rstrip("/").rsplit("/", 1)[-1]] = int(e["size"])
        if url not in self._sizes:
            fs, path = self.filesystem(url)
            self._sizes[url] = int(self._call(url, lambda: fs.info(path))["size"])
        return self._sizes[url]

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
        """A local file holding ``url``'s bytes: the path itself, or its copy in the disk cache."""
        path = self._direct(url)
        if path is not None or self.cache is None:
            return path
        return self.cache.get(url, self.size(url), lambda dst: self._download(url, dst))

    def _download(self, url: str, dst: str) -> None:
        fs, path = self.filesystem(url)
        self._call(url, lambda: fs.get_file(path, dst))

    def open_stream(self, url: str, buffer_size: int = 1 << 22, *, local_buffer: int = 1 << 20):
        """A binary file object over ``url``: seekable, read in ``buffer_size`` ranges, each retried.

        A local file is read ``local_buffer`` bytes at a time: large for reading it
        through, small for skipping through it (a scan of tar headers)."""
        local = self.local_path(url)
        if local is not None:
            try:
                return open(local, "rb", buffering=local_buffer)
            except OSError as e:
                raise StorageError(url, _describe(e)) from e
        return io.BufferedReader(_RangeReader(self, url), buffer_size)

    def read(self, url: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``url``."""
        local = self.local_path(url)
        if local is not None:
            return self._pread(url, local, start, end)
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
        paths = {u: self.local_path_cached(u) for u in {u for u, _, _ in ranges}}
        if None not in paths.values():
            return self._pread_many(ranges, paths)
        if len(ranges) <= 1:
            return [one(r) for r in ranges]
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.max_in_flight,
                                                                   thread_name_prefix="fastload-io")
            pool = self._pool
        return list(pool.map(one, ranges))

    def local_path_cached(self, url: str) -> str | None:
        """Like :meth:`local_path` but never downloads (None for a URL not in the cache)."""
        path = self._direct(url)
        return path if path is not None or self.cache is None else self.cache.peek(url)

    def _fd(self, path: str) -> int:
        """The descriptor this storage keeps open for a local file (OSError if it cannot be opened)."""
        fd = self._fds.get(path)
        if fd is None:
            new = _files.open_binary(path)
            with self._lock:
                fd = self._fds.setdefault(path, new)
            if fd != new:
                os.close(new)
        return fd

    def _pread(self, url: str, path: str, start: int, end: int) -> bytes:
        got = self._pread_many([(url, start, end)], {url: path})[0]
        if isinstance(got, StorageError):
            raise got
        return got

    def _pread_many(self, ranges, paths: dict) -> list:
        """``read_ranges`` of local files (``paths``: url -> path), one positional read each. A
        batch of small samples is thousands of these: where the OS has ``pread`` they are one
        compiled call that releases the GIL."""
        fds = {}
        for url, path in paths.items():
            try:
                fds[url] = self._fd(path)
            except OSError as e:
                fds[url] = e
        if _pread.AVAILABLE:
            out, bad = _pread.pread_ranges(ranges, fds)
        else:
            out, bad = self._pread_each(ranges, fds)
        for j in bad:
            url, start, end = ranges[j]
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


def listed_once(url: str, listing: Callable[[], dict]) -> dict:
    """``listing()`` run once for the whole job: under an initialised ``torch.distributed``, rank 0
    lists and broadcasts the result (a bucket listed by every rank is a request storm); else here.

    Sources list in their constructors, in the same order on every rank and from the
    main thread, which is what a collective call needs.
    """
    dist = sys.modules.get("torch.distributed")   # never imports torch itself
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return listing()
    box, error = [None], None
    if dist.get_rank() == 0:
        try:
            box[0] = (True, listing())
        except Exception as e:   # the other ranks must hear of it, not wait for a broadcast forever
            error, box[0] = e, (False, str(e))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    ok, value = box[0]
    if not ok:
        raise StorageError(url, f"listing failed on rank 0: {value}")
    return value


def local_copy(path_or_url, owner: str, **storage) -> str:
    """A local file holding ``path_or_url``'s bytes, for sources that index a whole file.

    A plain path (or ``file://``) is itself; a remote URL is downloaded once,
    through ``storage`` (retried; into ``cache_dir`` when given, else into a
    temporary folder removed when the process exits).
    """
    path = os.fspath(path_or_url)
    if not is_url(path):
        if storage:
            raise TypeError(f"{owner}: {sorted(storage)} apply to URLs only")
        return path
    st = Storage(**storage)
    local = st.local_path(path)
    if local is not None:
        return local
    import atexit
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="fastload-")
    atexit.register(shutil.rmtree, folder, True)
    dst = os.path.join(folder, cache_name(path))
    st._download(path, dst)
    return dst


class _RangeReader(io.RawIOBase):
    """A remote file as a raw stream: every read is one ranged request through the Storage."""

    def __init__(self, storage: Storage, url: str):
        self.storage, self.url, self.size, self.pos = storage, url, storage.size(url), 0

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

    def readinto(self, b):
        end = min(self.pos + len(b), self.size)
        if end <= self.pos:
            return 0
        data = self.storage.read(self.url, self.pos, end)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


class DiskCache:
    """Whole remote files under ``root``, at most ``limit`` bytes, least recently used evicted first.

    Files are written to a temporary name and renamed into place, so a crash
    leaves no partial shard; a file evicted while open stays readable through
    its descriptor (POSIX unlink semantics). A download starts only once it fits
    beside those under way, partial files included. Processes sharing a directory
    (the ranks of one node) reuse each other's files, but each keeps the limit
    over what it knows of, so give each process a share of the disk.
    """

    def __init__(self, root, limit: int | None):
        self.root, self.limit = os.fspath(root), None if limit is None else int(limit)
        if self.limit is not None and self.limit <= 0:
            raise ValueError("cache_limit must be positive")
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()
        self._inflight = {}                        # name -> (Event, size) while being downloaded
        self._lru = collections.OrderedDict()      # name -> size, least recent first
        entries = []
        for e in os.scandir(self.root):
            if e.is_file() and not e.name.endswith(".part"):
                st = e.stat()
                entries.append((st.st_atime, e.name, st.st_size))
        for _, name, size in sorted(entries):
            self._lru[name] = size

    def __getstate__(self):
        return {"root": self.root, "limit": self.limit}

    def __setstate__(self, state):
        self.__init__(state["root"], state["limit"])

    def path(self, url: str) -> str:
        return os.path.join(self.root, cache_name(url))

    def nbytes(self) -> int:
        with self._lock:
            return sum(self._lru.values())

    def peek(self, url: str) -> str | None:
        name = cache_name(url)
        with self._lock:
            if name in self._lru:
                self._lru.move_to_end(name)
                return os.path.join(self.root, name)
        return None

    def get(self, url: str, size: int, fetch: Callable[[str], None]) -> str:
        """The cached copy of ``url`` (``size`` bytes), calling ``fetch(tmp_path)`` once if absent."""
        name = cache_name(url)
        if self.limit is not None and size > self.limit:
            raise StorageError(url, f"the shard is {size} bytes, larger than the cache limit of {self.limit} "
                                    "bytes: raise cache_limit or write smaller shards")
        while True:
            with self._lock:
                if name not in self._lru and name not in self._inflight and os.path.exists(self.path(url)):
                    self._lru[name] = size   # put there by another process sharing the directory
                if name in self._lru:
                    self._lru.move_to_end(name)
                    return os.path.join(self.root, name)
                waiting = self._inflight.get(name)
                if waiting is None:
                    if self._make_room(size):
                        self._inflight[name] = (threading.Event(), size)
                        break
                    # the downloads under way fill the limit: wait for the oldest, then evict it if need be
                    waiting = next(iter(self._inflight.values()))
            waiting[0].wait()   # another thread is fetching it (or what must make room); then look again
        final = os.path.join(self.root, name)
        tmp = f"{final}.{os.getpid()}-{threading.get_ident()}.part"
        try:
            fetch(tmp)
            got = os.path.getsize(tmp)
            if got != size:
                raise StorageError(url, f"downloaded {got} bytes, expected {size}")
            os.replace(tmp, final)
            with self._lock:
                self._lru[name] = size
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            with self._lock:
                self._inflight.pop(name)[0].set()
        return final

    def _make_room(self, incoming: int) -> bool:
        """Evict least-recently-used files until ``incoming`` more bytes fit beside the downloads
        under way (lock held). False when they do not fit even then."""
        if self.limit is None:
            return True
        total = sum(self._lru.values()) + sum(size for _, size in self._inflight.values())
        while self._lru and total + incoming > self.limit:
            name, size = self._lru.popitem(last=False)
            total -= size
            try:
                os.unlink(os.path.join(self.root, name))
            except FileNotFoundError:
                pass
        return total + incoming <= self.limit
