"""The members of a tar archive, read header by header: what :mod:`tarfile` reads, at an eighth of its cost.

Shards are read front to back by :meth:`TarShards.stream <fastload.sources.shards.TarShards.stream>`
and scanned once to build their index. ``tarfile`` spends 18 to 20 us on a member's
header here (a ``TarInfo`` with every field decoded, each number through ``nti``);
this reader takes about 0.9 us. The common header (octal numbers, a matching
checksum) is read in one compiled call (``_kernels._tarheader``); any other goes
field by field through :func:`_fields` (2.5 us: one ``struct`` unpack, the
checksum summed by ``zlib``). With ``tarfile``, the stream of a 64 px set
stopped at about 9,000 images/s on two cores.

It reads headers as ``tarfile`` does: ustar name prefixes, GNU long names, pax
``path`` and ``size`` records (local and global), octal or base-256 numbers, the
unsigned or signed header checksum, a V7 directory (a regular type with a trailing
slash). Only regular members are listed (types ``0``, NUL and ``7``); links,
directories and devices are passed over, and other types' data skipped, as by
``tarfile``. Sparse members are refused with an error (``tarfile`` expands them;
no shard writer makes them). The archive ends at a zero block or at the end of
the file; any other unreadable header raises :class:`TarError` with its offset.
"""
from __future__ import annotations

import re
import struct
import zlib
from typing import BinaryIO, Iterator

from .._kernels._tarheader import header as _header
from .._kernels._tarheader import scan as _scan

__all__ = ["TarError", "member_runs", "members"]

BLOCK = 512
#: Bytes :func:`member_runs` reads at a time; a larger member is read alone.
CHUNK = 1 << 20
_REGULAR = frozenset(b"0\x007")
_PASSED = frozenset(b"123456")   # links, devices, directories, FIFOs: no data follows, as in tarfile
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_SIGNED = struct.Struct("148b8x356b")
# name, size, checksum, type, ustar prefix: the fields read from every header, in one unpack
_FIELDS = struct.Struct("100s24x12s12x8sB188x155s12x")


class TarError(Exception):
    """An unreadable header (or the extended header before it) at byte ``offset``."""

    def __init__(self, offset: int, reason: str):
        super().__init__(f"{reason} at byte {offset}")
        self.offset, self.reason = offset, reason


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes, offset: int) -> int:
    """A numeric field: octal digits (NUL- or space-terminated), or GNU's base-256."""
    if field[0] in (0x80, 0xFF):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0xFF else n
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise TarError(offset, "invalid number in tar header") from None


def _checksum_ok(block: bytes, stored: bytes, offset: int) -> bool:
    """Whether the header ``block`` sums to its checksum field ``stored`` (unsigned or signed bytes)."""
    want = _number(stored, offset)
    # Adler-32's low half is 1 + the byte sum modulo 65521, exact for 256 bytes (at most 65,280):
    # two calls sum the block at C speed. The checksum field itself counts as eight spaces.
    view = memoryview(block)
    total = (zlib.adler32(view[:256]) & 0xFFFF) + (zlib.adler32(view[256:]) & 0xFFFF) - 2
    return want == total - sum(stored) + 8 * 0x20 or want == 8 * 0x20 + sum(_SIGNED.unpack(block))


def _fields(block: bytes, offset: int) -> tuple[str, int, int]:
    """``(name, size, type byte)`` of a header block read field by field: the headers that
    ``_kernels._tarheader.header`` leaves to Python (base-256 numbers, odd bytes, bad checksums)."""
    raw_name, raw_size, stored, kind, raw_prefix = _FIELDS.unpack(block)
    if not _checksum_ok(block, stored, offset):
        raise TarError(offset, "bad checksum")
    size = _number(raw_size, offset)
    name = _text(raw_name)
    if raw_prefix[0] and kind != 0x53:   # S: GNU sparse, whose header holds sparse maps there
        name = _text(raw_prefix) + "/" + name
    return name, size, kind


def _pax(data: bytes, offset: int) -> dict[str, bytes]:
    """The ``keyword=value`` records of a pax extended header."""
    out, pos = {}, 0
    while (m := _PAX_RECORD.match(data, pos)) is not None:
        length = int(m.group(1))
        if length <= 0:
            raise TarError(offset, "invalid pax header")
        out[m.group(2).decode("utf-8", "surrogateescape")] = data[m.end(2) + 1:m.start(1) + length - 1]
        pos += length
    return out


# The magic numbers of compressed files, named when the first header is unreadable.
_COMPRESSED = ((b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
               *((b"BZh" + bytes([c]) + b"1AY&SY", "bzip2") for c in b"123456789"))


def members(f: BinaryIO, length: int) -> Iterator[tuple[str, int, int]]:
    """``(name, data offset, size)`` of each regular member of the tar archive ``f`` reads, in order.

    ``f`` is a seekable binary file positioned at the start of an archive of
    ``length`` bytes. After each member is yielded, ``f`` is at its data: read
    it, or not; the next step seeks past it. A member may reach past ``length``
    (a truncated archive): it is the last one, and the caller checks before reading. Raises
    :class:`TarError` for an unreadable header, and ``OSError`` from ``f``.
    """
    yield from _named(_members(f, length, False), f)


def member_runs(f: BinaryIO, length: int) -> Iterator[list[tuple[str, int, int, bytes | None]]]:
    """The regular members of the archive with their bytes, as :func:`members` lists them, in lists:
    ``(name, data offset, size, bytes)``, the bytes shorter than ``size`` where the file ends first,
    None for a member that reaches past ``length`` (the last). ``f``'s position is this reader's.

    For a reader that wants every member's bytes (a stream of samples): runs of plain members are
    read ``CHUNK`` bytes at a time and their headers in one compiled call per run
    (:func:`~fastload._kernels._tarheader.scan`), a list of them at once; any other member comes
    in a list of its own. Against :func:`members` and a read of each: 0.77 us a member instead
    of 1.07, and 1.23 instead of 2.09 where a pax header comes before each (webdataset's writer).
    """
    yield from _named(_members(f, length, True), f)


def _named(items: Iterator, f: BinaryIO) -> Iterator:
    """``items``, with an unreadable first header of a compressed file named as such."""
    try:
        yield from items
    except TarError as e:
        if e.offset != 0:
            raise
        f.seek(0)
        start = f.read(16)
        packed = next((name for magic, name in _COMPRESSED if start.startswith(magic)), None)
        if packed is None:
            raise
        # Members are read in place, by offset: a compressed archive has none to read.
        raise TarError(0, f"it is {packed}-compressed; decompress it to a plain .tar") from None


def _members(f: BinaryIO, length: int, runs: bool) -> Iterator:
    offset = 0
    glob: dict[str, bytes] = {}   # pax global records: they apply to every later member
    ext: dict[str, bytes] = {}    # the extended records (pax, GNU long name) of the next member
    ext_at = None                 # where those began, to name in an error
    chunk, base = b"", 0          # runs: bytes [base, base + len(chunk)) of the file

    def read(at: int, n: int) -> bytes:
        """Bytes ``[at, at + n)`` of the file, fewer where it ends first. With runs, from the chunk,
        read on from ``at`` where they are not in it: the file is read front to back, once."""
        nonlocal chunk, base
        if runs and base <= at and at + n <= base + len(chunk):
            return chunk[at - base:at - base + n]
        f.seek(at)
        if not runs or n > CHUNK:
            return f.read(n)
        chunk, base = f.read(CHUNK), at
        return chunk[:n]

    while True:
        if runs and not glob and ext_at is None:   # a run of plain members, read from the chunk
            while True:
                run, stop, need = _scan(chunk, offset - base, length - base, base)
                if run:
                    yield run
                offset = base + stop
                # Read on where the next member runs past the chunk, unless it is large (read alone) or
                # past the archive's length or the file's end (the Python reader says what is wrong).
                if not need or need > CHUNK or offset + need > length or len(read(offset, need)) < need:
                    break
        block = read(offset, BLOCK)
        if len(block) < BLOCK:   # the end of the file: after a header, only zeros may be left
            if offset == 0 or block.strip(b"\0"):
                raise TarError(offset, "empty file" if not block else "truncated header")
            if ext_at is not None:
                raise TarError(ext_at, "extended header without a member after it: the file ends there, truncated")
            if offset > length:   # a member's data is whole, but its padding is cut: so is what followed
                raise TarError(length, "the file ends there, inside the padding after the last member: truncated")
            end = True
        else:   # a header's name starts it; a zero block (the end-of-archive marker) has none
            end = block[0] == 0 and not block.strip(b"\0")
        if end:
            if ext_at is not None:
                raise TarError(ext_at, "extended header without a member after it")
            return
        parsed = _header(block)   # the common header in one compiled call; None for any other
        name, size, kind = parsed if parsed is not None else _fields(block, offset)
        data_at = offset + BLOCK
        if size < 0:
            raise TarError(offset, "negative size")
        if kind in (0x78, 0x67, 0x4C, 0x4B):   # x g: pax records; L K: GNU long name or link
            if data_at + size > length:   # checked first: a damaged size must not become a huge read
                raise TarError(offset, "truncated extended header")
            here = read(data_at, size)
            if len(here) != size:
                raise TarError(offset, "truncated extended header")
            if kind == 0x78:
                ext.update(_pax(here, offset))
            elif kind == 0x67:
                glob.update(_pax(here, offset))
            elif kind == 0x4C:
                ext["path"] = here.split(b"\0", 1)[0]
            ext_at = offset if ext_at is None else ext_at
            offset = data_at + -(-size // BLOCK) * BLOCK
            continue
        records = {**glob, **ext} if glob else ext
        if "path" in records:
            name = records["path"].decode("utf-8", "surrogateescape")
        if "size" in records:
            try:
                size = int(records["size"])
            except ValueError:
                raise TarError(offset if ext_at is None else ext_at, "invalid pax size") from None
        if kind == 0x53 or records and any(k.startswith("GNU.sparse.") for k in records):
            raise TarError(offset, f"member {name}: sparse members are not supported")
        ext, ext_at = {}, None
        offset = data_at + -(-size // BLOCK) * BLOCK
        if kind in _REGULAR and not (kind == 0 and name.endswith("/")):
            cut = data_at + size > length   # cut inside this member's data: nothing follows it
            if not runs:
                yield name, data_at, size
            else:
                yield [(name, data_at, size, None if cut else read(data_at, size))]
            if cut:
                return
        elif kind in _PASSED:
            offset = data_at   # as tarfile: these types carry no data, whatever the size field says
