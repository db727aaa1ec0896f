"""Errors raised by fastload, and the policy that decides what a bad record does.

Every error names the record it came from (a path, a key or an index) and
what was wrong, so a user can find the file and fix or exclude it.
"""
from __future__ import annotations

import os
import re

__all__ = ["DecodeError", "FailedRecord", "RecordError", "FastloadError", "StageError"]


class FastloadError(Exception):
    """Base class of fastload's own errors."""


class RecordError(FastloadError, ValueError):
    """A record could not be turned into a training sample."""

    def __init__(self, record, reason: str):
        self.record = record
        self.reason = reason
        super().__init__(f"{record}: {reason}")


class DecodeError(RecordError):
    """An image or other encoded payload could not be decoded."""


class FailedRecord:
    """What a stream yields in place of a record it could not read, so that its pass goes on.

    A Loader turns it into the :class:`RecordError` ``error()`` gives (``where``:
    the shard or record, ``reason``: what was wrong), or into a counted skip
    under ``on_error="skip"``.
    """

    __slots__ = ("where", "reason")

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason

    def error(self) -> RecordError:
        return RecordError(self.where, self.reason)

    def __repr__(self):
        return f"FailedRecord({self.where!r}, {self.reason!r})"


class StageError(FastloadError, RuntimeError):
    """A pipeline stage raised; the original exception is the ``__cause__``."""

    def __init__(self, stage: str, record, cause: BaseException):
        self.stage = stage
        self.record = record
        where = f" on record {record!r}" if record is not None else ""
        super().__init__(f"stage {stage!r} failed{where}: {type(cause).__name__}: {cause}")


def named_record(where: str, record) -> str:
    """``where``, with the file a record is (a path, or a ``(path, label)`` pair) named beside it:
    the file is what a user must find when it fails. A string is taken for a path when it looks
    like one (a separator, or a short extension), not a caption or a label. A dict record names
    the paths among its values, by key (an image and its mask are two files)."""
    if isinstance(record, dict):
        paths = [f"{k}={os.fspath(v)}" for k, v in record.items() if _is_path(v)]
        return f"{where} ({', '.join(paths)})" if paths else where
    path = record[0] if isinstance(record, tuple) and record else record
    return f"{where} ({os.fspath(path)})" if _is_path(path) else where


def _is_path(value) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and bool(_PATH_LIKE.search(value))
                                             and len(value) <= 4096 and "\n" not in value)


_PATH_LIKE = re.compile(r"[/\\]|\.[A-Za-z0-9]{1,5}$")
