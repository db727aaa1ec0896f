"""Image files on disk: a class-per-subfolder tree, or a plain list of files.

Discovery walks directories with ``os.scandir`` and reads no pixels; records
are ``(path, label)`` tuples (``ImageFolder``) or paths (``ImageFiles``).

What the walk does with a tree that is not clean:

* A directory symbolic link back to one of its own ancestors (a loop) is
  skipped with a :class:`DiscoveryWarning`; links to elsewhere are followed.
* A subdirectory that cannot be listed (permissions, a stale mount) is, under
  ``on_error="skip"`` (the default), left out with a ``DiscoveryWarning``
  naming it and listed in ``.skipped``; under ``on_error="raise"`` it is an
  ``OSError`` naming it. The root itself must be readable.
* Images directly in an ``ImageFolder``'s root, beside its class folders, are
  no samples (as in torchvision); one ``DiscoveryWarning`` gives their count and
  the first name.
* An ``ImageFolder`` class folder with no images is an error naming it: its
  label would be a class no sample carries (delete the folder, or list the
  files with ``ImageFiles``).
* File names that are not valid UTF-8 keep their bytes in messages as
  ``\\xNN`` escapes, so an error about them can always be printed.

Behind a URL (``s3://bucket/train``, ``http(s)://``, anything fsspec knows) the
tree is listed once, recursively, through a
:class:`~fastload.sources.remote.Storage` (``storage_options``, ``cache_dir``,
``cache_limit``, ``max_in_flight``, ``retries``, ``backoff`` go to it); records
then carry the image's bytes instead of a path, read concurrently within the
in-flight window and retried, and a read that fails is a
:class:`~fastload.RecordError` naming the URL, so ``on_error`` applies. An HTTP
server's percent-encoded links (``cat%20dog/x%20y.png``) stand for the names
they encode: class names are those, and classes and files come in the order of
the same tree on disk; the URLs fetched keep their encoding.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterable, Sequence

import numpy as np

from ..errors import RecordError
from .base import Source
from .paths import PathTable
from .remote import Storage, StorageError, is_url, url_name

__all__ = ["DiscoveryWarning", "ImageFolder", "ImageFiles", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_POLICIES = ("skip", "raise")


class DiscoveryWarning(UserWarning):
    """A part of a directory tree was left out while looking for images."""


def printable(path: str) -> str:
    """``path`` as text that always encodes: undecodable file-name bytes shown as ``\\xNN``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _normalise_exts(extensions) -> tuple[str, ...]:
    exts = IMAGE_EXTENSIONS if extensions is None else extensions
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)


def _check_policy(on_error: str) -> str:
    if on_error not in _POLICIES:
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return on_error


class _Walker:
    """Finds image files under directories, collecting what it had to leave out in ``skipped``."""

    def __init__(self, exts: tuple[str, ...], on_error: str, owner: str):
        self.exts, self.on_error, self.owner = exts, on_error, owner
        self.skipped: list[tuple[str, str]] = []   # (directory, why)

    def files(self, root: str, within: str | None = None) -> list[str]:
        """Every file under ``root`` with one of the extensions, sorted by path; hidden entries skipped.

        ``within``: a directory above ``root`` (the dataset root) that a link back to is a loop too.
        """
        found: list[str] = []
        above = frozenset({self._identity(within)} - {None}) if within is not None else frozenset()
        # Each directory carries the (device, inode) of its ancestors: a link to one of them is a
        # loop, but two links to the same directory elsewhere are both followed, as
        # os.walk(followlinks=True) would. Iterative, so depth is bounded by paths, not the stack.
        stack = [(root, self._identity(root), above)]
        while stack:
            path, ident, ancestors = stack.pop()
            if ident is not None:
                ancestors = ancestors | {ident}
            for sub in self._scan(path, found):
                sub_ident = self._identity(sub)
                if sub_ident is not None and sub_ident in ancestors:
                    self._skip(sub, f"is a link back to {printable(os.path.realpath(sub))!r} (a loop)", None)
                else:
                    stack.append((sub, sub_ident, ancestors))
        found.sort()
        return found

    def _scan(self, path: str, found: list[str]) -> list[str]:
        """Add the image files directly in ``path`` to ``found``; return its subdirectories."""
        subdirs = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if self._is_dir(entry):
                        subdirs.append(entry.path)
                    elif os.path.splitext(entry.name)[1].lower() in self.exts:
                        found.append(entry.path)
        except OSError as e:
            self._skip(path, f"cannot be listed ({e.strerror or e})", e)
            return []
        return subdirs

    def subdirs(self, root: str) -> list[str]:
        """The visible subdirectory names of ``root`` (which must be readable), sorted."""
        try:
            with os.scandir(root) as it:
                return sorted(e.name for e in it if not e.name.startswith(".") and self._is_dir(e))
        except OSError as e:
            raise OSError(e.errno, f"{self.owner}: cannot list {printable(root)!r}: {e.strerror}") from e

    def images_in(self, directory: str) -> list[str]:
        """The names of the image files directly in ``directory`` (not below it), sorted."""
        with os.scandir(directory) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and not self._is_dir(e)
                          and os.path.splitext(e.name)[1].lower() in self.exts)

    @staticmethod
    def _identity(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @staticmethod
    def _is_dir(entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir(follow_symlinks=True)
        except OSError:   # e.g. a link to itself (ELOOP): not a directory we can enter
            return False

    def _skip(self, path: str, why: str, error: OSError | None) -> None:
        if error is not None and self.on_error == "raise":
            raise OSError(error.errno, f"{self.owner}: {printable(path)!r} {why}") from error
        self.skipped.append((path, why))
        warnings.warn(f"{self.owner}: skipping {printable(path)!r}: it {why}", DiscoveryWarning, stacklevel=2)


class _Remote:
    """Reading the bytes of URL records (shared by both folder sources)."""

    storage: Storage | None = None

    def _read(self, urls: list[str]) -> list[bytes]:
        st = self.storage
        try:
            ranges = [(u, 0, st.size(u)) for u in urls]
        except StorageError as e:
            raise RecordError(e.url, e.reason) from e
        out = st.read_ranges(ranges)
        for data in out:
            if isinstance(data, StorageError):
                raise RecordError(data.url, data.reason)
        return out

    def _one(self, url: str) -> bytes:
        return self._read([url])[0]

    def local_listing(self):   # URLs are listed by rank 0 for every rank (remote.listed_once)
        return None if self.storage else self.paths


def _listing(root: str, exts: tuple[str, ...], storage: dict, owner: str) -> tuple[Storage, list[str]]:
    st = Storage(**storage)
    try:
        urls = st.find(root, exts)
    except StorageError as e:
        raise FileNotFoundError(f"{owner}: cannot list {root!r}: {e}") from e
    return st, urls


def _warn_unlabeled(root: str, names: list[str]) -> None:
    """Images beside the class folders are no samples (as in torchvision): say so, once."""
    if names:
        warnings.warn(f"ImageFolder: leaving out the {len(names)} image(s) directly in {printable(root)!r} "
                      f"(e.g. {printable(names[0])!r}): only images in class folders are samples; move them "
                      "into one, or use ImageFiles for unlabeled images", DiscoveryWarning, stacklevel=3)


class ImageFolder(_Remote, Source):
    """``root/<class>/**/<image>``: sorted class names in ``.classes``, records ``(path, label)``.

    Args:
        root: the directory holding one subfolder per class.
        extensions: file name endings that count as images (default ``IMAGE_EXTENSIONS``).
        on_error: what an unreadable subdirectory does: ``"skip"`` (warn, leave it out,
            list it in ``.skipped``) or ``"raise"``.
    """

    pairs = True

    def __init__(self, root: str | os.PathLike, extensions: Iterable[str] | None = None, *,
                 on_error: str = "skip", **storage):
        self.root = os.fspath(root)
        if is_url(self.root):
            self._from_url(_normalise_exts(extensions), storage)
            return
        if storage:
            raise TypeError(f"ImageFolder: {sorted(storage)} apply to URLs only")
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: {printable(self.root)!r} is not a directory")
        exts = _normalise_exts(extensions)
        walker = _Walker(exts, _check_policy(on_error), "ImageFolder")
        self.classes = walker.subdirs(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        counts, empty = [], []

        def per_class():   # one class's file list at a time: no list of every path is ever built
            for c in self.classes:
                files = walker.files(os.path.join(self.root, c), within=self.root)
                if not files:
                    empty.append(c)
                counts.append(len(files))
                yield files

        paths = PathTable(per_class(), prefix=os.path.join(self.root, ""))
        flat = walker.images_in(self.root)
        if not len(paths):
            if flat:
                raise FileNotFoundError(
                    f"ImageFolder: {printable(self.root)!r} holds {len(flat)} images but no class subfolders; "
                    "ImageFolder wants root/<class>/<image> (one folder per class). "
                    "For unlabeled images use ImageFiles(root)")
            raise FileNotFoundError(f"ImageFolder: no images with extensions {exts} under {printable(self.root)!r}")
        if empty:   # as torchvision's ImageFolder: a class no sample carries is a mistake, not a class
            raise FileNotFoundError(f"ImageFolder: class folder(s) without images under {printable(self.root)!r}: "
                             f"{[printable(c) for c in empty]}; each class needs at least one image "
                             f"(extensions {exts}); remove the empty folders")
        _warn_unlabeled(self.root, flat)
        self.skipped = walker.skipped
        self.paths = paths
        self._labels = np.repeat(np.arange(len(self.classes), dtype=np.int64), counts)

    def _from_url(self, exts, storage):
        self.storage, urls = _listing(self.root, exts, storage, "ImageFolder")
        base = self.root.rstrip("/") + "/"
        by_class: dict[str, list[str]] = {}
        flat = []
        for u in urls:
            rel = u[len(base):]
            if "/" not in rel:
                flat.append(url_name(self.root, rel))
                continue
            by_class.setdefault(url_name(self.root, rel.split("/", 1)[0]), []).append(u)
        if not by_class:
            raise FileNotFoundError(
                f"ImageFolder: no images with extensions {exts} in class folders under {self.root!r}"
                + (f" ({len(flat)} images directly under it: for unlabeled images use ImageFiles)" if flat else ""))
        _warn_unlabeled(self.root, flat)
        self.classes = sorted(by_class)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.paths = PathTable((by_class[c] for c in self.classes), prefix=base)
        self._labels = np.asarray([i for i, c in enumerate(self.classes) for _ in by_class[c]], dtype=np.int64)
        self.skipped = []

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        index = self._check_index(index)
        path = self.paths[index]
        return (self._one(path) if self.storage else path), int(self._labels[index])

    def gather(self, indices) -> list:
        paths, labels = self.paths.take(indices), self._labels[indices].tolist()
        if self.storage:
            paths = self._read(paths)
        return list(zip(paths, labels))

    def record_id(self, index):
        return printable(self.paths[self._check_index(index)])

    def labels(self):
        return self._labels

    def __repr__(self):
        return f"ImageFolder({printable(self.root)!r}, {len(self)} images, {len(self.classes)} classes)"


class ImageFiles(_Remote, Source):
    """Unlabeled images: a directory (searched recursively, sorted by path) or a list of paths.

    ``on_error`` decides what an unreadable subdirectory does, as for :class:`ImageFolder`.
    """

    def __init__(self, dir_or_list: str | os.PathLike | Sequence[str | os.PathLike],
                 extensions: Iterable[str] | None = None, *, on_error: str = "skip", **storage):
        walker = _Walker(_normalise_exts(extensions), _check_policy(on_error), "ImageFiles")
        if is_url(dir_or_list):
            self.storage, urls = _listing(dir_or_list, _normalise_exts(extensions), storage, "ImageFiles")
            self.paths = PathTable.of(urls)
            if not self.paths:
                raise FileNotFoundError(f"ImageFiles: no images under {dir_or_list!r}")
            self.skipped = []
            return
        if not isinstance(dir_or_list, (str, os.PathLike)) and any(is_url(p) for p in dir_or_list):
            self.storage, self.paths, self.skipped = Storage(**storage), PathTable.of(dir_or_list), []
            return
        if storage:
            raise TypeError(f"ImageFiles: {sorted(storage)} apply to URLs only")
        if isinstance(dir_or_list, (str, os.PathLike)):
            root = os.fspath(dir_or_list)
            if not os.path.isdir(root):
                raise FileNotFoundError(f"ImageFiles: {printable(root)!r} is not a directory")
            self.paths = PathTable([walker.files(root)], prefix=os.path.join(root, ""))
        else:
            self.paths = PathTable.of(dir_or_list)
        self.skipped = walker.skipped

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[self._check_index(index)]
        return self._one(path) if self.storage else path

    def gather(self, indices) -> list:
        paths = self.paths.take(indices)
        return self._read(paths) if self.storage else paths

    def record_id(self, index):
        return printable(self.paths[self._check_index(index)])

    def __repr__(self):
        return f"ImageFiles({len(self)} images)"
