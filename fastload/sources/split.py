"""Deterministic train/test splits of any random-access source.

The split is a pure function of ``(len(source), sizes, seed, labels)``: it
draws from ``fastload.pipeline.rng.generator(seed, SPLIT)``, never the global
NumPy state, so the same call gives the same split on every machine and run.
Both halves are :class:`~fastload.sources.base.Subset` views in source order
(sorted indices keep file reads sequential; the loader shuffles per epoch).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..pipeline import rng as randomness
from .base import Source, Subset

__all__ = ["split"]


def _count(size: float | int | None, n: int, what: str, round_up: bool) -> int | None:
    if size is None:
        return None
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int or a fraction, got {size!r}")
    if isinstance(size, (int, np.integer)):
        if not 0 <= size <= n:
            raise ValueError(f"{what}={size} is outside [0, {n}] for {n} records")
        return int(size)
    if not 0.0 <= size <= 1.0:
        raise ValueError(f"{what}={size} must be a fraction in [0, 1] or a record count")
    exact = size * n
    # 0.29 * 100 is 28.999999999999996: a product that far from a whole number counts as one. The
    # float's error grows with n (3e-9 at 1e8 records), so the margin does too.
    eps = max(1e-9, 1e-12 * exact)
    return min(n, math.ceil(exact - eps) if round_up else math.floor(exact + eps))


def _labels(source: Source, stratify: Any) -> np.ndarray:
    """Class codes 0..C-1 of every record, from an array, ``source.labels()`` or a dict field."""
    n = len(source)
    if isinstance(stratify, str):
        values = source.labels() if stratify == "label" else None
        if values is None:
            values = []
            for i in range(n):
                record = source[i]
                if not isinstance(record, dict) or stratify not in record:
                    raise ValueError(f"split: cannot stratify on {stratify!r}: record {source.record_id(i)} "
                                     "has no such field and the source reports no labels")
                values.append(record[stratify])
    elif isinstance(stratify, bool) or not hasattr(stratify, "__len__"):
        raise TypeError(f"split: stratify takes 'label', a field name of dict records, or one label per "
                        f"record, got {type(stratify).__name__} {stratify!r}")
    elif hasattr(stratify, "__array__"):   # one array (NumPy, torch): its values, as Python scalars
        arr = np.asarray(stratify)   # grouped by value below: ints and strings as they are, others as Python scalars
        values = arr if arr.ndim == 1 and arr.dtype.kind in "biuU" else arr.tolist() if arr.ndim == 1 else list(arr)
    else:
        values = stratify
    if len(values) != n:
        raise ValueError(f"split: stratify has {len(values)} labels for {n} records")
    arr = values if isinstance(values, np.ndarray) else None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "biuU":   # (not floats: each NaN is its own class)
        # The codes below, numbered by first appearance, without a Python step per record.
        _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        return rank[inverse.reshape(-1)]
    codes: dict[Any, int] = {}
    return np.fromiter((codes.setdefault(_class_key(v), len(codes)) for v in values), dtype=np.int64, count=n)


def _class_key(v):
    """A label as a value to group by: a tensor or array by its values (a torch tensor hashes by
    identity, which would make each record a class of its own), a list as a tuple."""
    if hasattr(v, "__array__") and not isinstance(v, (str, bytes)):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else (a.shape, a.tobytes())
    return tuple(v) if isinstance(v, list) else v


def _stratified_counts(class_sizes: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """Test records per class: proportional, each within 1 of exact, summing to ``n_test``.

    Each class gets the floor of its exact share; the remaining records go to
    the classes with the largest fractional parts, ties broken at random.
    """
    n = int(class_sizes.sum())
    if n == 0:
        return np.zeros_like(class_sizes)
    exact = class_sizes * (n_test / n)
    counts = np.floor(exact).astype(np.int64)
    short = n_test - int(counts.sum())
    if short:
        frac = exact - counts
        order = np.lexsort((rng.random(len(frac)), -frac))
        counts[order[:short]] += 1
    return counts


def split(source: Source, test_size: float | int | None = None, train_size: float | int | None = None,
          seed: int = 0, stratify: str | Sequence[Any] | np.ndarray | None = None) -> tuple[Subset, Subset]:
    """Split ``source`` into disjoint ``(train, test)`` subsets.

    Args:
        test_size, train_size: a record count (int) or a fraction of the
            source. A fractional test size rounds up and a fractional train
            size rounds down. Give either; the other half gets the rest. With
            neither, the test set is 25%. Giving both may leave records in
            neither half when they sum to less than the whole.
        seed: the split is a pure function of the seed.
        stratify: keep class proportions in both halves. ``"label"`` uses
            ``source.labels()`` (or a "label" field of dict records); another
            string names a field of dict records; or pass one label per record.
            Each class is split with counts within 1 of its exact share, and
            the totals are exactly the requested sizes.
    """
    n = len(source)
    n_test = _count(test_size, n, "test_size", round_up=True)
    n_train = _count(train_size, n, "train_size", round_up=False)
    if n_test is None and n_train is None:
        n_test = math.ceil(0.25 * n)
    if n_test is None:
        n_test = n - n_train
    if n_train is None:
        n_train = n - n_test
    if n_train + n_test > n:
        raise ValueError(f"split: train ({n_train}) + test ({n_test}) exceeds the {n} records")
    rng = randomness.generator(randomness.check_seed(seed), randomness.SPLIT)
    if stratify is None:
        perm = rng.permutation(n)
        test, train = perm[:n_test], perm[n_test:n_test + n_train]
    else:
        codes = _labels(source, stratify)
        sizes = np.bincount(codes)
        test_counts = _stratified_counts(sizes, n_test, rng)
        train_counts = _stratified_counts(sizes - test_counts, n_train, rng)
        test_parts, train_parts = [], []
        by_class = np.argsort(codes, kind="stable")   # each class's records in index order, side by side
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for c in range(len(sizes)):
            members = rng.permutation(by_class[bounds[c]:bounds[c + 1]])
            test_parts.append(members[:test_counts[c]])
            train_parts.append(members[test_counts[c]:test_counts[c] + train_counts[c]])
        test, train = np.concatenate(test_parts), np.concatenate(train_parts)
    return Subset(source, np.sort(train)), Subset(source, np.sort(test))
