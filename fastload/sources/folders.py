"""Image files on disk: a class-per-subfolder tree, or a plain list of files.

Discovery walks directories with ``os.scandir`` and reads no pixels; records
are ``(path, label)`` tuples (``ImageFolder``) or paths (``ImageFiles``).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from .base import Source

__all__ = ["ImageFolder", "ImageFiles", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _normalise_exts(extensions) -> tuple[str, ...]:
    exts = IMAGE_EXTENSIONS if extensions is None else extensions
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)


def _walk(root: str, exts: tuple[str, ...]) -> list[str]:
    """Every file under root with one of exts, sorted by path; hidden entries skipped."""
    found, stack = [], [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in exts:
                    found.append(entry.path)
    found.sort()
    return found


class ImageFolder(Source):
    """``root/<class>/**/<image>``: sorted class names in ``.classes``, records ``(path, label)``."""

    def __init__(self, root: str | os.PathLike, extensions: Iterable[str] | None = None):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: {self.root!r} is not a directory")
        exts = _normalise_exts(extensions)
        with os.scandir(self.root) as it:
            self.classes = sorted(e.name for e in it if e.is_dir(follow_symlinks=True) and not e.name.startswith("."))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        paths, labels = [], []
        for i, c in enumerate(self.classes):
            files = _walk(os.path.join(self.root, c), exts)
            paths += files
            labels += [i] * len(files)
        if not paths:
            raise FileNotFoundError(f"ImageFolder: no images with extensions {exts} under {self.root!r}")
        self.paths = paths
        self._labels = np.asarray(labels, dtype=np.int64)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        index = self._check_index(index)
        return self.paths[index], int(self._labels[index])

    def gather(self, indices) -> list:
        paths, labels = self.paths, self._labels[indices].tolist()
        return [(paths[i], lab) for i, lab in zip(indices.tolist(), labels)]

    def record_id(self, index):
        return self.paths[self._check_index(index)]

    def labels(self):
        return self._labels

    def __repr__(self):
        return f"ImageFolder({self.root!r}, {len(self)} images, {len(self.classes)} classes)"


class ImageFiles(Source):
    """Unlabeled images: a directory (searched recursively, sorted by path) or a list of paths."""

    def __init__(self, dir_or_list: str | os.PathLike | Sequence[str | os.PathLike],
                 extensions: Iterable[str] | None = None):
        if isinstance(dir_or_list, (str, os.PathLike)):
            root = os.fspath(dir_or_list)
            if not os.path.isdir(root):
                raise FileNotFoundError(f"ImageFiles: {root!r} is not a directory")
            self.paths = _walk(root, _normalise_exts(extensions))
        else:
            self.paths = [os.fspath(p) for p in dir_or_list]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.paths[self._check_index(index)]

    def gather(self, indices) -> list:
        paths = self.paths
        return [paths[i] for i in indices.tolist()]

    def record_id(self, index):
        return self.paths[self._check_index(index)]

    def __repr__(self):
        return f"ImageFiles({len(self)} images)"
