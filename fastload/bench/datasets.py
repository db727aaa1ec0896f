"""The suite's data sets: photo-like images (fastload.synthetic), deterministic from a seed, cached.

Each set is written once under ``<cache>/data/<kind>-<n>-s<seed>`` and marked
complete only when fully written, so an interrupted run starts it again.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import string

import numpy as np

from ..synthetic import encode, make_image_folder, photo_like

__all__ = ["KINDS", "cache_dir", "dataset", "linked_copies"]

CLASSES = 10
#: kind -> (description, image size (h, w), size jitter, format)
KINDS = {
    "imagenet": ("ImageNet-like JPEG, q90, ~460x400", (400, 460), 0.15, "JPEG"),
    "small": ("64x64 JPEG, q90", (64, 64), 0.0, "JPEG"),
    "png": ("PNG, ~256x256", (256, 256), 0.15, "PNG"),
    "multimodal": ("image (JPEG 96x128) + caption (JSON Lines) + 16 floats (CSV)", (96, 128), 0.0, "JPEG"),
}


def cache_dir() -> str:
    """Where data sets, converted copies and contenders' environments live (FASTLOAD_BENCH_CACHE)."""
    return os.environ.get("FASTLOAD_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastload-bench")


def dataset(kind: str, n: int, *, seed: int = 0, cache: str | None = None) -> str:
    """The folder of data set ``kind`` with ``n`` samples, written on first use."""
    _, size, jitter, fmt = KINDS[kind]
    path = os.path.join(cache or cache_dir(), "data", f"{kind}-{n}-s{seed}")
    if os.path.exists(os.path.join(path, ".complete")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    if kind == "multimodal":
        _multimodal(path, n, size, seed)
    else:
        make_image_folder(path, classes=CLASSES, per_class=-(-n // CLASSES), size=size, jitter=jitter,
                          seed=seed, quality=90, fmt=fmt)
        _trim(path, n)
    open(os.path.join(path, ".complete"), "w").close()
    return path


def linked_copies(src: str, n: int, *, cache: str | None = None) -> str:
    """A class folder of ``n`` entries that are hard links (copies where links fail) of ``src``'s
    files, cycled: a large file count for memory scaling without generating every image."""
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs if not f.startswith("."))
    path = os.path.join(cache or cache_dir(), "data", f"links-{n}-of-{os.path.basename(src)}")
    if os.path.exists(os.path.join(path, ".complete")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    per_class = -(-n // CLASSES)
    for i in range(n):
        d = os.path.join(path, f"class_{i // per_class:03d}")
        if i % per_class == 0:
            os.makedirs(d)
        target, ext = files[i % len(files)], os.path.splitext(files[i % len(files)])[1]
        try:
            os.link(target, os.path.join(d, f"img_{i:06d}{ext}"))
        except OSError:
            shutil.copyfile(target, os.path.join(d, f"img_{i:06d}{ext}"))
    open(os.path.join(path, ".complete"), "w").close()
    return path


def _trim(path: str, n: int) -> None:
    """Remove the images past the n-th from the last classes (the folder was written in whole classes),
    and the classes that leaves empty."""
    names = sorted(os.path.join(c, f) for c in sorted(os.listdir(path)) for f in os.listdir(os.path.join(path, c)))
    for name in names[n:]:
        os.remove(os.path.join(path, name))
    for c in os.listdir(path):   # a class left without images is no class (ImageFolder refuses it)
        if not os.listdir(os.path.join(path, c)):
            os.rmdir(os.path.join(path, c))


def _multimodal(root: str, n: int, size: tuple[int, int], seed: int) -> None:
    """images/NNNNNN.jpg, texts.jsonl ({"text": ~20 words}), numeric.csv (16 floats, header), vocab.txt."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(5000)})
    os.makedirs(os.path.join(root, "images"))
    with open(os.path.join(root, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(root, "texts.jsonl"), "w") as texts, \
            open(os.path.join(root, "numeric.csv"), "w", newline="") as numeric:
        writer = csv.writer(numeric)
        writer.writerow([f"f{j}" for j in range(16)])
        for i in range(n):
            img = photo_like(*size, seed=int(rng.integers(1 << 31)))
            with open(os.path.join(root, "images", f"{i:06d}.jpg"), "wb") as f:
                f.write(encode(img, quality=90))
            texts.write(json.dumps({"text": " ".join(rng.choice(vocab, 20).tolist()).capitalize() + "."}) + "\n")
            writer.writerow([f"{v:.5f}" for v in rng.normal(size=16)])
