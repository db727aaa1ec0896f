"""Labels as class indices (int64) or one-hot rows (float32), the LabelBinarizer of the classic tutorial."""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..errors import RecordError
from ..pipeline.fields import Field, Output

__all__ = ["Labels"]

_INT64_END = 2**63   # labels are written as int64
# NumPy before 1.24 makes an object array of a ragged column (a [2] among ints), with a warning that
# later versions turn into the ValueError caught below: the same answer, without the warning.
_RAGGED_WARNS = np.lib.NumpyVersion(np.__version__) < "1.24.0"


class Labels(Field):
    """Class labels: ``mode="index"`` writes int64 class indices, ``"onehot"`` float32 rows of
    ``num_classes`` (needed for one-hot). A label that is not a whole number in [0, num_classes),
    or not a single value (``[2]``), fails its record. ``name``: the output's key."""

    error_class = RecordError

    def __init__(self, num_classes: int | None = None, mode: str = "index", name: str = "label"):
        if mode not in ("index", "onehot"):
            raise ValueError(f"labels must be 'index' or 'onehot', got {mode!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
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
        try:   # the common case: a clean integer column, no Python loop
            if _RAGGED_WARNS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", np.VisibleDeprecationWarning)
                    labels = np.asarray(values)
            else:
                labels = np.asarray(values)
        except (TypeError, ValueError, OverflowError):
            labels = None
        # Floats would be truncated (1.7 -> 1) and uint64 wrapped by a cast: those take the loop.
        # A column of one-element lists ([2]) is 2-D: the loop reports each, never a broadcast write.
        if labels is not None and labels.ndim == 1 and labels.dtype.kind in "biu" and \
                np.can_cast(labels.dtype, np.int64):
            labels = labels.astype(np.int64, copy=False)
            bad = (labels < 0) | (labels >= self.num_classes) if self.num_classes else labels < 0
            if not bad.any():
                self._write(out, labels)
                return {}
        labels = np.full(len(values), -1, dtype=np.int64)
        failures = {}
        for i, v in enumerate(values):
            label, reason = self._index(v)
            if reason:
                failures[i] = reason
            else:
                labels[i] = label
        self._write(out, labels)
        return failures

    def _index(self, v):
        """(class index, None), or (None, why ``v`` is not one); checked as a Python int, so no value overflows."""
        if not isinstance(v, (numbers.Number, str, bytes)) and np.ndim(v) != 0:
            return None, f"label {v!r} is not a single value (a class index per record)"
        if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and not float(v).is_integer():
            return None, f"label {v!r} is not a whole number"
        try:
            label = int(v)
        except (TypeError, ValueError, OverflowError):
            return None, f"label {v!r} is not an integer"
        if label < 0:
            return None, f"label {label} outside [0, {self.num_classes})" if self.num_classes else \
                f"label {label} is negative (labels are class indices: 0, 1, ...)"
        if label >= (self.num_classes or _INT64_END):
            return None, f"label {label} outside [0, {self.num_classes or '2**63'})"
        return label, None

    def _write(self, out, labels):
        if self.mode == "index":
            out[:len(labels)] = labels
        else:
            out[:len(labels)] = 0
            ok = np.flatnonzero(labels >= 0)
            out[ok, labels[ok]] = 1.0
