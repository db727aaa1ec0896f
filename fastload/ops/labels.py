"""Labels as class indices (int64) or one-hot rows (float32), the LabelBinarizer of the classic tutorial."""
from __future__ import annotations

import numpy as np

from ..errors import RecordError
from ..pipeline.fields import Field, Output

__all__ = ["Labels"]


class Labels(Field):
    error_class = RecordError

    def __init__(self, num_classes: int | None = None, mode: str = "index", name: str = "label"):
        if mode not in ("index", "onehot"):
            raise ValueError(f"labels must be 'index' or 'onehot', got {mode!r}")
        if mode == "onehot" and not num_classes:
            raise ValueError(f"one-hot labels for {name!r} need the number of classes, which this source does "
                             f"not say (no single class list): give fields={{{name!r}: fl.Labels(num_classes=N, "
                             "mode='onehot')}")
        self.num_classes, self.mode, self.name = num_classes, mode, name

    def outputs(self):
        if self.mode == "index":
            return [Output(self.name, (), np.dtype(np.int64))]
        return [Output(self.name, (self.num_classes,), np.dtype(np.float32))]

    def fill(self, values, outs, ctx):
        out = outs[self.name]
        failures = {}
        try:   # the common case: a clean integer column, no Python loop
            labels = np.asarray(values, dtype=np.int64)
            bad = (labels < 0) | (labels >= self.num_classes) if self.num_classes else labels < 0
            if not bad.any():
                self._write(out, labels)
                return failures
        except (TypeError, ValueError, OverflowError):
            pass
        labels = np.full(len(values), -1, dtype=np.int64)
        for i, v in enumerate(values):
            try:
                labels[i] = int(v)
            except (TypeError, ValueError):
                failures[i] = f"label {v!r} is not an integer"
                continue
            if labels[i] < 0 or (self.num_classes and labels[i] >= self.num_classes):
                failures[i] = f"label {labels[i]} outside [0, {self.num_classes})" if self.num_classes else \
                    f"label {labels[i]} is negative (labels are class indices: 0, 1, ...)"
                labels[i] = -1
        self._write(out, labels)
        return failures

    def _write(self, out, labels):
        if self.mode == "index":
            out[:len(labels)] = labels
        else:
            out[:len(labels)] = 0
            ok = np.flatnonzero(labels >= 0)
            out[ok, labels[ok]] = 1.0
