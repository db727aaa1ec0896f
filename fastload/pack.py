"""``fastload pack SRC OUT``: write any source into page-aligned shards that :class:`~fastload.PackedDataset` reads.

Records are read and encoded on worker threads (Pillow releases the GIL while
re-encoding) and written in source order by one writer, so the output does not
depend on the number of workers. Shards are finished one at a time: a shard
file and its piece of the index are renamed into place together, and a packing
run that stops part-way resumes after the last finished shard. ``pack.json``
records the settings and a digest of what is packed (each record's name, the
size and time of each local file behind the records, the labels; for records
with no file of their own, such as dicts naming files, what each holds), and a run
into an OUT whose ``pack.json`` differs, or that holds a pack's files without
one, is refused (``overwrite`` starts again), so shards of one source never
end up beside another's. ``meta.json``
is written last; its presence means the dataset is complete.

Fields: an image folder's ``(path, label)`` records become ``image`` (the file's
bytes) and ``label``, longer tuples ``field2``, ``field3``, ... after them, and
come back as tuples; a dict record keeps its keys (``"__url__"`` dropped). A
value of an image field (``image``, ``jpg``, ``png``, ...) that is a path is stored as the file's bytes;
integers go into the index (so labels are known without reading shards),
strings as UTF-8, NumPy arrays as ``.npy`` (read back with their dtype and
shape), other values as JSON (NumPy scalars as the numbers they hold). ``max_side`` re-encodes images larger
than that (EXIF orientation applied, JPEG stays JPEG at ``quality``, others
become PNG); smaller images keep their original bytes.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import itertools
import json
import numbers
import os
import re
import sys

import numpy as np

from .errors import RecordError
from .sources.packed import FORMAT_VERSION
from .sources.remote import is_url

__all__ = ["pack", "add_parser", "run"]

ALIGN = 4096
_IMAGE_EXTS = frozenset("jpg jpeg png bmp gif webp tif tiff ppm pgm".split())
_CHUNK = 16


def _shape_and_fields(record):
    """How records look (tuple, single, dict) and their field names in order."""
    if isinstance(record, dict):
        return "dict", [k for k in record if k != "__url__"]
    if isinstance(record, tuple) and len(record) >= 2:   # (image, label, more...): read back as tuples
        return "tuple", ["image", "label"] + [f"field{i}" for i in range(2, len(record))]
    return "single", ["image"]


def _as_dict(record, shape, names):
    if shape == "dict":
        return {n: record.get(n) for n in names}
    if shape == "tuple":
        return dict(zip(names, record))
    return {names[0]: record}


# A field's first value sets how all its values are stored.
_SAME_KIND = "a field is packed as its first value's kind, so make its values one type (e.g. with a .map)"


def _kind(name: str, value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "json"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (bytes, bytearray, memoryview, os.PathLike)) or (isinstance(value, str) and _is_image(name)):
        return "bytes"
    if isinstance(value, str):
        return "str"
    if isinstance(value, np.ndarray):   # a CSV row, a feature vector: read back as the same array
        return "npy"
    return "json"


def _plain(value):
    """NumPy's scalars and arrays inside a JSON value as the Python numbers and lists they hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def _is_image(name: str) -> bool:
    return name == "image" or name.rsplit(".", 1)[-1].lower() in _IMAGE_EXTS


def _reencode(data: bytes, max_side: int, quality: int) -> bytes:
    from PIL import Image, ImageOps
    with Image.open(io.BytesIO(data)) as im:
        if max(im.size) <= max_side:
            return data
        fmt = "JPEG" if im.format in ("JPEG", "MPO") else "PNG"   # MPO: a camera's JPEG with previews
        im = ImageOps.exif_transpose(im)
        scale = max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        if fmt == "JPEG" and im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        out = io.BytesIO()
        im.resize(size, Image.LANCZOS).save(out, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        return out.getvalue()


class _Encoder:
    """Turns one record into (blobs, ints) for the declared fields; raises RecordError when it cannot."""

    def __init__(self, shape, fields, max_side, quality):
        self.shape, self.fields, self.max_side, self.quality = shape, fields, max_side, quality

    def __call__(self, record, rid):
        names = [n for n, _ in self.fields]
        values = _as_dict(record, self.shape, names)
        if self.shape == "dict":
            extra = sorted(set(record) - set(names) - {"__url__"})
            if extra:   # the fields are the first record's: say so rather than drop data
                raise RecordError(rid, f"field {extra[0]!r} is not among the packed fields {names} "
                                       "(taken from the first record)")
        blobs, ints = [], []
        for name, kind in self.fields:
            v = values.get(name)
            if v is None and not (kind == "json" and (self.shape != "dict" or name in record)):   # JSON has null
                raise RecordError(rid, f"no value for field {name!r}")
            if kind == "int":
                # int() would truncate 0.75 and take "7" or True: the field's kind is the first record's
                if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                    raise RecordError(rid, f"field {name!r}: {v!r} is not an integer as the first record's "
                                           f"is; {_SAME_KIND}")
                if not -2**63 <= v < 2**63:   # the index holds int64s
                    raise RecordError(rid, f"field {name!r}: {v} is beyond the 64-bit integers the index holds")
                ints.append(int(v))
                continue
            if kind == "bytes":
                if isinstance(v, (str, os.PathLike)):
                    try:
                        with open(v, "rb") as f:
                            v = f.read()
                    except OSError as e:
                        raise RecordError(rid, f"field {name!r}: cannot read {os.fspath(v)!r}: {e}") from None
                v = bytes(v)
                if self.max_side and _is_image(name):
                    try:
                        v = _reencode(v, self.max_side, self.quality)
                    except Exception as e:   # Pillow raises many kinds for a bad image
                        from .image.decode import _pillow_failed   # what was wrong, in decode's words
                        reason = _pillow_failed(e, v, rid).reason
                        raise RecordError(rid, f"field {name!r}: cannot re-encode the image: {reason}") from None
            elif kind == "str":
                if not isinstance(v, str):   # str() would store a repr, not the value
                    raise RecordError(rid, f"field {name!r}: {v!r} is not a string as the first record's is; "
                                           f"{_SAME_KIND}")
                v = v.encode("utf-8")
            elif kind == "npy":
                if not isinstance(v, np.ndarray) or v.dtype.hasobject:
                    raise RecordError(rid, f"field {name!r}: {type(v).__name__} {v!r:.60} is not an array of numbers "
                                           f"as the first record's is; {_SAME_KIND}")
                out = io.BytesIO()
                np.save(out, v, allow_pickle=False)
                v = out.getvalue()
            else:
                try:
                    v = json.dumps(v, default=_plain).encode("utf-8")
                except (TypeError, ValueError) as e:
                    raise RecordError(rid, f"field {name!r}: {v!r:.60} cannot be stored as JSON: {e}") from None
            blobs.append(v)
        return blobs, ints


def _open_source(src: str):
    """A source from the command line: an image folder (a path or URL), tar shards, or ``module:function``."""
    import fastload as fl
    if os.path.isdir(src):   # first: a folder may be named 'photos.tar.d' or 'set{1}'
        return _local_folder(src)
    if src.endswith(".tar") or ".tar" in src.rsplit("/", 1)[-1] or "{" in src:
        return fl.TarShards(src)
    if "://" in src:   # a folder in object storage or on a web server
        try:
            return fl.ImageFolder(src)
        except (ValueError, OSError) as e:   # no class subfolders: the images themselves, else that error
            try:
                return fl.ImageFiles(src)
            except (ValueError, OSError):
                raise e from None
    if ":" in src and not os.path.exists(src):
        import importlib
        module, _, attr = src.partition(":")
        cwd = os.getcwd()
        # The console script's sys.path starts at its bin folder, not here as `python -m` does:
        # a module beside the user is found all the same (as gunicorn and uvicorn find an app).
        added = not {"", ".", cwd} & set(sys.path)
        if added:
            sys.path.insert(0, cwd)
        try:
            obj = getattr(importlib.import_module(module), attr)
            source = obj() if callable(obj) and not hasattr(obj, "__getitem__") else obj
        except ModuleNotFoundError as e:
            if not (module + ".").startswith(f"{e.name}."):   # the module is there; something it imports is not
                raise
            raise ModuleNotFoundError(f"{src}: {e} (not in the current directory, {cwd}, nor on Python's path)",
                                      name=e.name) from None
        finally:
            if added:
                sys.path.remove(cwd)
        if not isinstance(source, fl.Source):
            raise ValueError(f"{src} gave a {type(source).__name__}, not a fastload Source "
                             "(for a list of image paths: return fl.ImageFiles(paths))")
        return source
    if not os.path.exists(src) and ":" not in src:
        raise FileNotFoundError(f"{src}: no such file or directory")
    raise ValueError(f"cannot tell what kind of source {src!r} is: give a directory, tar shards "
                     "(a .tar path or brace pattern) or module:function returning a Source")


def _local_folder(src: str):
    """Class subfolders: an ImageFolder; else the images in it and below it."""
    import fastload as fl
    from .sources.folders import IMAGE_EXTENSIONS, _Walker
    with os.scandir(src) as it:   # _is_dir: a link to itself is no folder, not a crash
        has_dirs = any(_Walker._is_dir(e) and not e.name.startswith(".") for e in it)
    source = fl.ImageFolder(src) if has_dirs else fl.ImageFiles(src)
    if not len(source):
        raise FileNotFoundError(f"{src}: no images with extensions {IMAGE_EXTENSIONS} in it or below it")
    return source


def _stat(path: str, storage=None):
    """What tells this version of a file from another: a local file's size and time; a URL's size and
    ETag (or version, or modification time) from its storage, which the listing that found it gave
    where the store lists them. None for what is no file (a record in a tar shard) or cannot be asked
    (packing reports it)."""
    if storage is not None and is_url(path):
        try:
            return storage.size(path), sorted(storage.identity(path).items())
        except OSError:
            return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):   # not a local file (a URL, a record in a tar shard)
        return None
    return st.st_size, st.st_mtime_ns


def _described(value):
    """A record's values for the digest: a file it names by its size and time, bytes and arrays by a
    hash of their content, the rest as they are."""
    if isinstance(value, dict):
        return sorted((str(k), _described(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return [_described(v) for v in value]
    if isinstance(value, (str, os.PathLike)):
        st = _stat(os.fspath(value)) if os.path.isfile(value) else None
        return os.fspath(value) if st is None else (os.fspath(value), st)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    return repr(value)


def _digest(source, n: int) -> str:
    """What the records are, without reading them: each record's name, the size and time (ETag, for a
    URL) of each file behind them (a folder's images, tar shards), the labels and the classes."""
    h = hashlib.sha256()
    labels = source.labels()
    storage = getattr(source, "storage", None)
    paths = getattr(source, "paths", None) if storage is not None else None   # a folder's image URLs
    files = getattr(source, "urls", ())   # tar shards: a shard rewritten keeps its records' names
    stats = iter(())
    if storage is not None:   # URLs a store did not list with sizes are asked about, side by side
        asked = list(paths[:n]) + list(files) if paths is not None else list(files)
        with concurrent.futures.ThreadPoolExecutor(min(storage.max_in_flight, 32)) as pool:
            stats = iter(list(pool.map(lambda u: _stat(u, storage), asked)))
    for i in range(n):
        rid = source.record_id(i)
        st = next(stats) if paths is not None else _stat(rid)
        if st is None and not files:   # no file behind its name (a list of dicts, a zip): what it holds
            try:
                st = _described(source[i])
            except RecordError as e:
                st = e.reason
        h.update(repr((rid, st, None if labels is None else int(labels[i]))).encode("utf-8", "replace"))
    for url in files:
        st = next(stats) if storage is not None else _stat(url)
        h.update(repr((url, st)).encode("utf-8", "replace"))
    h.update(repr(getattr(source, "classes", None)).encode("utf-8", "replace"))
    return h.hexdigest()


# The names packing writes, temporaries included: OUT may hold the user's own files beside them.
_PACK_FILES = re.compile(r"pack\.json|meta\.json(\.tmp)?|index\.npz(\.tmp)?"
                         r"|shard-\d{5,}\.(bin(\.part)?|idx\.npz(\.tmp)?)")
_REPLACE = "give a new output directory, or overwrite=True (--overwrite) to replace that pack"


def _files_of_a_pack(out: str) -> list[str]:
    return sorted(n for n in os.listdir(out) if _PACK_FILES.fullmatch(n))


@contextlib.contextmanager
def _writing(path: str):
    """An OSError while writing ``path`` names it: write() and close() give only the reason (a full disk)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = path
        raise


def pack(source, out: str | os.PathLike, *, shard_size: int = 1 << 30, max_side: int | None = None,
         quality: int = 90, workers: int = 4, on_error: str = "raise", progress: bool = True,
         overwrite: bool = False) -> dict:
    """Write ``source`` into ``out``; resumes a run of the same source and settings that stopped.

    ``out`` holding a pack of other records or settings is a ValueError saying what differs;
    ``overwrite=True`` removes that pack's files and starts again.

    Returns ``meta.json``'s content plus ``skipped`` (records left out under
    ``on_error="skip"``, over all runs) and ``failures`` (this run's, with reasons).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if shard_size < ALIGN:
        raise ValueError(f"shard_size must be at least {ALIGN} bytes")
    if max_side is not None and max_side < 1:   # 0 was ignored, a negative size made 1x1 images
        raise ValueError(f"max_side must be at least 1 pixel, got {max_side}")
    if not 1 <= quality <= 100:   # Pillow would clamp it without a word
        raise ValueError(f"quality must be 1..100, got {quality}")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: exists and is not a directory (give a new output directory)")
    n = len(source)
    if n == 0:
        raise ValueError("the source has no records")
    for at in range(n):   # the fields are the first readable record's; an unreadable one is skipped below too
        try:
            first = source[at]
            break
        except RecordError:
            if on_error == "raise" or at == n - 1:
                raise
    shape, names = _shape_and_fields(first)
    values = _as_dict(first, shape, names)
    fields = [(name, _kind(name, values[name])) for name in names]
    settings = {"version": FORMAT_VERSION, "records": n, "record": shape, "fields": fields,
                "max_side": max_side, "quality": quality, "shard_size": shard_size, "align": ALIGN,
                "source": _digest(source, n)}
    settings = json.loads(json.dumps(settings))   # as read back: lists, not tuples
    os.makedirs(out, exist_ok=True)
    plan_path = os.path.join(out, "pack.json")
    if overwrite:
        for name in _files_of_a_pack(out):
            os.unlink(os.path.join(out, name))
    if os.path.exists(plan_path):
        _check_same_run(out, plan_path, settings)
    else:
        found = _files_of_a_pack(out)
        if found:   # pack.json is written before any shard: these are no run of this one's to resume
            raise ValueError(f"{out} holds the files of a pack ({', '.join(found[:2])}"
                             + (f", ... {len(found)} in all" if len(found) > 2 else "")
                             + f") but no pack.json saying which records and settings they are; {_REPLACE}")
        with _writing(plan_path + ".tmp"), open(plan_path + ".tmp", "w") as f:
            json.dump(settings, f)
        os.replace(plan_path + ".tmp", plan_path)   # whole or absent: a run cut short in it starts again
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        os.unlink(meta_path)   # rewritten below, once every shard is there

    done = []   # finished shards: their index pieces, in order
    while os.path.exists(os.path.join(out, f"shard-{len(done):05d}.idx.npz")) and \
            os.path.exists(os.path.join(out, f"shard-{len(done):05d}.bin")):
        with np.load(os.path.join(out, f"shard-{len(done):05d}.idx.npz")) as z:
            done.append({k: z[k] for k in z.files})
    start = int(done[-1]["next"]) if done else 0
    encode = _Encoder(shape, fields, max_side, quality)
    writer = _ShardWriter(out, len(done), shard_size, fields)
    skipped_before = sum(int(d["skipped"]) for d in done)
    failures = []   # (record, reason) of the records left out by this run
    bar = _progress(n, start, progress)

    def work(lo):
        idx = np.arange(lo, min(lo + _CHUNK, n), dtype=np.int64)
        try:
            recs = source.gather(idx)
        except RecordError:
            recs = [None] * len(idx)   # one bad record: find it below, one at a time
        results = []
        for i, r in zip(idx.tolist(), recs):
            rid = source.record_id(i)
            try:
                results.append((i, encode(source[i] if r is None else r, rid)))
            except RecordError as e:
                results.append((i, e))
        return results

    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="fastload-pack") as pool:
            chunks = iter(range(start, n, _CHUNK))
            pending = [pool.submit(work, lo) for lo in itertools.islice(chunks, 2 * max(1, workers))]
            while pending:
                for i, res in pending.pop(0).result():
                    if isinstance(res, RecordError):
                        if on_error == "raise":
                            raise res
                        failures.append((res.record, res.reason))
                        writer.skipped += 1
                    else:
                        done += writer.add(i, *res)
                    bar.update(1)
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append(pool.submit(work, nxt))
        done += writer.finish(n)
    finally:
        writer.abort()
        bar.close()
    if not done:   # every record left out under on_error="skip": nothing to index
        record, reason = failures[0]
        raise ValueError(f"none of the {n} records could be packed (the first: {record}: {reason})")

    index = {"shard": np.concatenate([np.full(len(d["offset"]), s, np.int32) for s, d in enumerate(done)]),
             "offset": np.concatenate([d["offset"] for d in done])}
    for name, kind in fields:
        key = f"int:{name}" if kind == "int" else f"size:{name}"
        index[key] = np.concatenate([d[key] for d in done])
    if "__key__" in names:   # record names for error messages, without reading shards
        index["key"] = np.concatenate([d["key"] for d in done])
    tmp = os.path.join(out, "index.npz.tmp")
    with _writing(tmp), open(tmp, "wb") as f:
        np.savez(f, **index)
    os.replace(tmp, os.path.join(out, "index.npz"))
    classes = getattr(source, "classes", None)
    meta = {"version": FORMAT_VERSION, "record": shape, "count": len(index["offset"]), "align": ALIGN,
            "fields": [{"name": nm, "kind": k} for nm, k in fields],
            "classes": list(classes) if classes is not None else None,
            "shards": [{"name": f"shard-{s:05d}.bin",
                        "size": os.path.getsize(os.path.join(out, f"shard-{s:05d}.bin"))} for s in range(len(done))]}
    with _writing(meta_path + ".tmp"), open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path + ".tmp", meta_path)
    return {**meta, "skipped": skipped_before + len(failures), "failures": failures}


def _check_same_run(out: str, plan_path: str, settings: dict) -> None:
    """Finished shards are reused only for the same records packed the same way: say what differs."""
    try:
        with open(plan_path) as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = {}
    if before == settings:
        return
    if {k: v for k, v in before.items() if k != "source"} == {k: v for k, v in settings.items() if k != "source"}:
        raise ValueError(f"{out} holds a pack of other files (their names, sizes, times or labels differ "
                         f"from this source's); {_REPLACE}")
    changed = sorted(k for k in settings.keys() | before.keys() if k != "source" and before.get(k) != settings.get(k))
    raise ValueError(f"{out} holds a packing run with other settings ("
                     + ", ".join(f"{k}: {before.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
                     + f"); {_REPLACE}")


class _ShardWriter:
    """Appends records at page-aligned offsets; a full shard is renamed into place with its index piece."""

    def __init__(self, out, number, shard_size, fields):
        self.out, self.number, self.shard_size, self.fields = out, number, shard_size, fields
        self.skipped = 0
        self._f = None

    def _open(self):
        self._path = os.path.join(self.out, f"shard-{self.number:05d}.bin.part")
        self._f = open(self._path, "wb")
        self._pos = 0
        self._rows = {"offset": [], "key": [], **{
            (f"int:{n}" if k == "int" else f"size:{n}"): [] for n, k in self.fields}}

    def add(self, i, blobs, ints) -> list:
        size = sum(len(b) for b in blobs)
        finished = []
        if self._f is not None and self._pos and self._pos + size > self.shard_size:
            finished = self._close(i)
        if self._f is None:
            self._open()
        with _writing(self._path):
            self._f.write(b"".join(blobs))
        rows = self._rows
        rows["offset"].append(self._pos)
        bi = ii = 0
        for name, kind in self.fields:
            if kind == "int":
                rows[f"int:{name}"].append(ints[ii])
                ii += 1
            else:
                rows[f"size:{name}"].append(len(blobs[bi]))
                if name == "__key__":
                    rows["key"].append(blobs[bi].decode("utf-8"))
                bi += 1
        pad = -(self._pos + size) % ALIGN
        with _writing(self._path):
            self._f.write(b"\0" * pad)
        self._pos += size + pad
        return finished

    def _close(self, next_record: int) -> list:
        """Finish the open shard; the next one starts at record ``next_record``."""
        with _writing(self._path):
            self._f.close()
        self._f = None
        base = os.path.join(self.out, f"shard-{self.number:05d}")
        piece = {"offset": np.asarray(self._rows["offset"], np.int64), "next": np.int64(next_record),
                 "skipped": np.int64(self.skipped)}
        for name, kind in self.fields:
            key = f"int:{name}" if kind == "int" else f"size:{name}"
            piece[key] = np.asarray(self._rows[key], np.int64)
        if self._rows["key"]:
            piece["key"] = np.asarray(self._rows["key"], dtype=str)
        os.replace(base + ".bin.part", base + ".bin")
        with _writing(base + ".idx.npz.tmp"), open(base + ".idx.npz.tmp", "wb") as f:
            np.savez(f, **piece)
        os.replace(base + ".idx.npz.tmp", base + ".idx.npz")
        self.number += 1
        self.skipped = 0
        return [piece]

    def abort(self) -> None:
        """Close an unfinished shard (its .part file is rewritten when the run resumes)."""
        if self._f is not None:
            f, self._f = self._f, None
            with contextlib.suppress(OSError):   # a full disk fails the flush too: the first error is the one
                f.close()

    def finish(self, n) -> list:
        return self._close(n) if self._f is not None else []


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, initial, enabled):
    try:
        from tqdm import tqdm
    except ImportError:   # tqdm is optional: no bar without it
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="rec", desc="packing", disable=not enabled, file=sys.stderr)


PACK_HELP = """\
Write an image folder (a path or a URL), tar shards or any source
(module:function returning one) into page-aligned shard files and an index,
which fl.PackedDataset(OUT) reads. A run that stopped resumes after its last
finished shard; an OUT that holds a pack of other files or settings is refused.

examples:
  fastload pack data/train packed/train
  fastload pack data/train packed/train --max-side 512 --shard-size 1000000000
  fastload pack 'shards/train-{0000..0127}.tar' packed/train --on-error skip
"""


def add_parser(subparsers):
    """Register ``fastload pack`` on the ``fastload`` command's subparsers."""
    p = subparsers.add_parser("pack", help="write a folder, tar shards or any source into packed shards",
                              description=PACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="image folder, tar shards (path or brace pattern), or module:function")
    p.add_argument("out", help="output directory")
    p.add_argument("--max-side", type=int, default=None, help="re-encode images larger than this many pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images, 1..100 (default 90)")
    p.add_argument("--shard-size", type=int, default=1 << 30, help="bytes per shard file (default 1 GiB)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="what an unreadable record does: stop, or be left out and reported")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a pack of other files or settings in OUT (otherwise refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def run(args) -> int:
    """Run ``fastload pack`` with parsed arguments."""
    from .cli import UsageError
    if args.shard_size < ALIGN:   # the mistakes of the command line are one line, not a traceback
        raise UsageError(f"--shard-size must be at least {ALIGN} bytes, got {args.shard_size}")
    if args.max_side is not None and args.max_side < 1:
        raise UsageError(f"--max-side must be at least 1 pixel, got {args.max_side}")
    if not 1 <= args.quality <= 100:
        raise UsageError(f"--quality must be 1..100, got {args.quality}")
    if args.workers < 1:   # was taken for 1 without a word
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if os.path.isdir(args.src) and _within(args.out, args.src):
        raise UsageError(f"{args.out} is inside the folder it packs, {args.src}: the next run (and any loader of "
                         "that folder) would read the pack's folder as part of it; give an OUT outside it")
    try:
        source = _open_source(args.src)
        len(source)   # tar shards are indexed here: one that cannot be read is the user's to fix
    except (ValueError, OSError, ImportError, AttributeError) as e:
        raise UsageError(str(e)) from e
    try:
        meta = pack(source, args.out, shard_size=args.shard_size, max_side=args.max_side, quality=args.quality,
                    workers=args.workers, on_error=args.on_error, progress=not args.quiet,
                    overwrite=args.overwrite)
    except RecordError as e:   # one line naming the record; the packed part stays, to resume
        raise UsageError(f"{e} (--on-error skip leaves such records out)") from e
    except ValueError as e:   # OUT holds another pack, the source has no records, ...
        raise UsageError(str(e)) from e
    except OSError as e:   # a full disk, say
        raise UsageError(f"{e.filename or args.out}: {e.strerror or e} (the finished shards are kept: "
                         "the same command again resumes after them)") from e
    for record, reason in meta["failures"]:
        print(f"fastload pack: skipped {record}: {reason}", file=sys.stderr)
    print(f"packed {meta['count']} records into {len(meta['shards'])} shards in {args.out}"
          + (f" ({meta['skipped']} skipped)" if meta["skipped"] else ""))
    return 0
