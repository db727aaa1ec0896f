"""The tar header reader behind TarShards' index and stream, against the standard library's tarfile:
every format tarfile writes (ustar, GNU, pax), long and non-ASCII names, pax global records, links,
directories and devices, numbers in base 256, signed checksums; then every kind of damaged header."""
import io
import random
import struct
import re
import tarfile

import pytest

from fastload.sources import _tar


def tarfile_listing(data: bytes):
    """(name, data offset, size, data) of every regular member, by tarfile."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return [(ti.name, ti.offset_data, ti.size, tf.extractfile(ti).read()) for ti in tf if ti.isreg()]


def listing(data: bytes):
    """The same, by fastload's reader, reading each member's data where it leaves the file; checked
    against its reader of members with their bytes (``member_runs``), in chunks that end on a block,
    inside a header and inside members, and of the default size: the same members, bytes, errors."""
    f = io.BytesIO(data)
    try:
        got = [(name, off, size, f.read(size)) for name, off, size in _tar.members(f, len(data))]
    except _tar.TarError as e:
        got = e
    for chunk in (1024, 1300, 4000, _tar.CHUNK):
        runs = runs_listing(data, chunk)
        if isinstance(got, _tar.TarError):
            assert isinstance(runs, _tar.TarError) and (runs.offset, runs.reason) == (got.offset, got.reason), chunk
        else:
            assert runs == got, chunk
    if isinstance(got, _tar.TarError):
        raise got
    return got


def runs_listing(data: bytes, chunk: int):
    """``member_runs``' members, read ``chunk`` bytes at a time, as :func:`listing` gives them (a
    member cut short: its bytes that are there), or the TarError it raised."""
    saved, _tar.CHUNK = _tar.CHUNK, chunk
    out = []
    try:
        for run in _tar.member_runs(io.BytesIO(data), len(data)):
            assert run and all(len(m) == 4 for m in run)
            for name, off, size, blob in run:
                if blob is None:   # reaches past the end: the last member
                    assert off + size > len(data) and run[-1][0] == name
                    blob = data[off:off + size]
                out.append((name, off, size, blob))
    except _tar.TarError as e:
        return e
    finally:
        _tar.CHUNK = saved
    return out


def archive(fmt, members, pax_headers=None) -> bytes:
    """A tar written by tarfile: members are (name, data) for files, or TarInfos for the rest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                name, data = m
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def special(name, kind, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def with_checksum(header: bytearray, signed=False) -> bytes:
    header[148:156] = b" " * 8
    total = sum(struct.unpack("512b" if signed else "512B", bytes(header)))
    header[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(header)


MEMBERS = [
    ("a.jpg", b"\xff\xd8" + bytes(range(256)) * 3),
    ("a.cls", b"3"),
    ("empty.txt", b""),
    ("one.bin", b"x"),
    ("block.bin", b"y" * 512),
    ("block1.bin", b"z" * 513),
    ("dir/" * 30 + "deep.json", b'{"k": 1}'),          # 124 characters: a ustar prefix, or a long name
    ("n" * 300 + ".txt", b"long"),                      # too long for a prefix: GNU L or pax path
    ("caf\u00e9/\u00fcber.txt", "\u00fcber".encode()),  # non-ASCII: pax path in PAX_FORMAT
    special("dir", tarfile.DIRTYPE),
    special("link", tarfile.SYMTYPE, linkname="a.jpg"),
    special("hard", tarfile.LNKTYPE, linkname="a.jpg"),
    special("fifo", tarfile.FIFOTYPE),
    special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
    ("after/all.bin", bytes(range(200))),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_format_lists_as_tarfile(fmt):
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [
        m for m in MEMBERS if isinstance(m, tarfile.TarInfo) or (len(m[0]) < 200 and m[0].isascii())]
    data = archive(fmt, members)
    ref = tarfile_listing(data)
    assert listing(data) == ref
    assert len(ref) == sum(not isinstance(m, tarfile.TarInfo) for m in members)
    assert [r[0] for r in ref] == [m[0] for m in members if not isinstance(m, tarfile.TarInfo)]


def test_pax_global_records_and_size_override():
    data = archive(tarfile.PAX_FORMAT, MEMBERS[:4], pax_headers={"comment": "global", "path": "everyone.txt"})
    ref = tarfile_listing(data)
    assert listing(data) == ref
    assert {r[0] for r in ref} == {"everyone.txt"}   # a global path applies to every member, as tarfile has it
    # a local pax size record overrides the size field of the header after it
    ustar = bytearray(archive(tarfile.USTAR_FORMAT, [("big.bin", b"b" * 1000)]))
    header = bytearray(ustar[:512])
    header[124:136] = b"%011o\0" % 7
    rec = b"13 size=1000\n"
    pax = bytearray(header)
    pax[0:100] = b"PaxHeader/big.bin".ljust(100, b"\0")
    pax[124:136] = b"%011o\0" % len(rec)
    pax[156:157] = b"x"
    data = with_checksum(pax) + rec.ljust(512, b"\0") + with_checksum(header) + bytes(ustar[512:])
    assert listing(data) == tarfile_listing(data) == [("big.bin", 1536, 1000, b"b" * 1000)]


def test_webdataset_writer():
    wds = pytest.importorskip("webdataset")
    buf = io.BytesIO()
    w = wds.TarWriter(buf)
    for i in range(20):
        w.write({"__key__": f"s/{i:04d}", "jpg": bytes([i]) * (i * 97), "cls": i, "json": {"i": i}})
    w.close()
    data = buf.getvalue()
    got = listing(data)
    assert got == tarfile_listing(data) and len(got) == 60


def test_pax_records_before_each_member_as_webdatasets_writer_puts_them():
    """tarfile, and so webdataset's writer, puts a pax header before every member (its fractional
    mtime). Read in runs, one that names no path, size or sparse map is passed over in the compiled
    scan; the others are the Python reader's: both list what tarfile lists, and a record of length
    0 is refused by both."""
    from fastload._kernels._tarheader import scan
    cases = [{"mtime": "1700000000.25"}, {"mtime": "1.5", "comment": "c" * 700}, {"path": "renamed.bin"},
             {"mtime": "2.5"}, {"size": "2"}, {"GNU.sparse.major": "1"}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, pax in enumerate(cases):
            ti = tarfile.TarInfo(f"k{i}.bin")
            ti.size, ti.pax_headers = 5, dict(pax)
            tf.addfile(ti, io.BytesIO(b"abcd%d" % i))
    data = buf.getvalue()
    with pytest.raises(_tar.TarError, match="sparse members are not supported"):
        listing(data)
    ok = data[:tarfile_listing(data)[-1][1] - 1536]   # the archive before the sparse member's pax header
    assert listing(ok) == tarfile_listing(ok)
    assert [m[0] for m in listing(ok)] == ["k0.bin", "k1.bin", "renamed.bin", "k3.bin", "k4.bin"]
    assert listing(ok)[-1][2:] == (2, b"ab")   # the pax size stands
    run, stop, need = scan(ok, 0, len(ok))
    assert [m[0] for m in run] == ["k0.bin", "k1.bin"] and need == 0   # the path record is the Python reader's
    assert ok[stop + 512:stop + 532] == b"20 path=renamed.bin\n"
    at = ok.index(b" mtime=1700000000.25")
    zero = ok[:at - 2] + b"00" + ok[at:]   # the record's length, "23", made 0
    with pytest.raises(_tar.TarError, match="invalid pax header at byte 0"):
        listing(zero)


def test_base256_size_and_signed_checksum():
    data = bytearray(archive(tarfile.GNU_FORMAT, [("a.bin", b"q" * 700), ("b.bin", b"r")]))
    data[124:136] = b"\x80" + (700).to_bytes(11, "big")          # GNU base-256, as for sizes over 8 GiB
    data[0:512] = with_checksum(bytearray(data[0:512]))
    assert listing(bytes(data)) == tarfile_listing(bytes(data)) == [
        ("a.bin", 512, 700, b"q" * 700), ("b.bin", 2048, 1, b"r")]
    latin = bytearray(archive(tarfile.USTAR_FORMAT, [("x.bin", b"s" * 3)]))
    latin[0:5] = b"\xe9t\xe9.b"                                   # bytes >= 128: the signed sum differs
    latin[0:512] = with_checksum(bytearray(latin[0:512]), signed=True)
    assert listing(bytes(latin)) == tarfile_listing(bytes(latin))
    assert listing(bytes(latin))[0][0] == "\udce9t\udce9.b"   # undecodable bytes kept, as tarfile keeps them


def test_end_of_archive():
    data = archive(tarfile.GNU_FORMAT, MEMBERS[:3])
    ref = tarfile_listing(data)
    cut = -(-len(data.rstrip(b"\0")) // 512) * 512   # the archive without its zero blocks
    assert listing(data[:cut]) == tarfile_listing(data[:cut]) == ref   # no end marker: the end of the file
    assert listing(data + b"garbage" * 200) == ref                      # what follows the marker is not read
    assert listing(data[:cut] + b"\0" * 100) == ref                     # a short zero tail ends it too
    assert listing(b"\0" * 1024) == tarfile_listing(b"\0" * 1024) == []


def test_a_file_cut_inside_a_members_padding_is_truncated_as_tarfile_says():
    """The last member's data is whole but the zeros after it are not: the archive was cut (what
    followed is lost), not ended. tarfile: "unexpected end of data"; a cut on a block boundary is
    the end of the file, as above."""
    data = archive(tarfile.GNU_FORMAT, [("a.cls", b"3"), ("a.jpg", b"j" * 700), ("b.cls", b"4")])
    last = tarfile_listing(data)[-1][1]   # b.cls's one byte of data, then 511 of padding
    for cut in (last + 1, last + 100, last + 511):
        with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
            tarfile_listing(data[:cut])
        with pytest.raises(_tar.TarError, match=rf"inside the padding after the last member: truncated at byte {cut}"):
            listing(data[:cut])
    assert listing(data[:last + 512]) == tarfile_listing(data[:last + 512])


def test_a_file_cut_inside_a_members_data_ends_with_that_member():
    """A member cut short is the archive's last: the listing stops there, as tarfile's does, and
    no unreadable 'header' is reported after it (the index took that for one more sample)."""
    data = archive(tarfile.PAX_FORMAT, [("a.cls", b"3"), ("a.jpg", b"j" * 1500), ("b.cls", b"4")])
    jpg = tarfile_listing(data)[1]
    for cut in (jpg[1] + 1, jpg[1] + 700, jpg[1] + 1499):
        got = listing(data[:cut])
        # a.jpg at its full size: the caller sees it reach past the end, and reads what there is
        assert [g[:3] for g in got] == [t[:3] for t in tarfile_listing(data)[:2]]
        assert got[-1][3] == data[jpg[1]:cut]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_damaged_headers_never_pass(fmt):
    """Any one bit flipped in a header block (extended headers included) fails at that header, or
    at the extended header before it: never a member listed with a wrong name, offset or size."""
    data = archive(fmt, MEMBERS)
    checked, unchecked = set(), set()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            checked |= {ti.offset, ti.offset_data - 512}                     # an extended header, the header
            unchecked |= set(range(ti.offset + 512, ti.offset_data - 512, 512)) - checked   # extended data
    rnd = random.Random(0)
    raised = 0
    for _ in range(600):
        at = rnd.choice(sorted(checked | unchecked))
        pos = at + rnd.randrange(512)
        damaged = bytearray(data)
        damaged[pos] ^= 1 << rnd.randrange(8)
        try:
            got = listing(bytes(damaged))
        except _tar.TarError as e:
            assert e.offset <= at, (pos, e)
            raised += 1
            continue
        # Only bytes no checksum covers may change without an error: an extended header's data (a
        # pax path, a GNU long name: renamed, as tarfile renames it) or the checksum field's own
        # terminator. The listing is then tarfile's.
        assert at in unchecked or 148 <= pos - at < 156, pos
        assert got == tarfile_listing(bytes(damaged)), pos
    assert raised > 400


def test_error_offsets_and_reasons():
    data = archive(tarfile.GNU_FORMAT, [("a.bin", b"a" * 600), ("b.bin", b"b" * 10), ("c.bin", b"c")])
    second = 512 + 1024
    renamed = data[:second] + b"c" + data[second + 1:]
    with pytest.raises(_tar.TarError, match="bad checksum at byte 1536") as e:
        listing(renamed)
    assert e.value.offset == second and e.value.reason == "bad checksum"
    with pytest.raises(_tar.TarError, match="invalid number in tar header at byte 1536"):
        listing(data[:second] + b"\x07" * 512 + data[second + 512:])
    with pytest.raises(_tar.TarError, match="truncated header at byte 1536"):
        listing(data[:second + 100])
    with pytest.raises(_tar.TarError, match="empty file at byte 0"):
        listing(b"")
    with pytest.raises(_tar.TarError, match="invalid number in tar header at byte 0"):
        listing(b"not a tar" * 100)   # text where the checksum's octal digits belong
    bad = bytearray(data[:512])
    bad[124:136] = b"12x45678901\0"
    with pytest.raises(_tar.TarError, match="invalid number in tar header at byte 0"):
        listing(with_checksum(bad) + data[512:])
    sparse = bytearray(data[:512])
    sparse[156:157] = b"S"
    with pytest.raises(_tar.TarError, match="sparse members are not supported"):
        listing(with_checksum(sparse) + data[512:])
    huge = bytearray(archive(tarfile.PAX_FORMAT, [("\u00e9.bin", b"x")])[:512])   # a pax header ...
    assert huge[156:157] == b"x"
    huge[124:136] = b"\x80" + (10 ** 15).to_bytes(11, "big")                   # ... claiming a petabyte
    with pytest.raises(_tar.TarError, match="truncated extended header at byte 0"):
        listing(with_checksum(huge) + data)   # refused before any read is attempted
    longname = archive(tarfile.GNU_FORMAT, [("L" * 200, b"x")])
    with pytest.raises(_tar.TarError, match="truncated extended header at byte 0"):
        listing(longname[:600])
    with pytest.raises(_tar.TarError, match="extended header without a member after it at byte 0"):
        listing(longname[:1024] + b"\0" * 1024)
    # cut on the block after a pax header: the header's member is what was lost, not padding
    pax = archive(tarfile.PAX_FORMAT, [("a.cls", b"1"), ("\u00e9.bin", b"x" * 600)])
    at = tarfile_listing(pax)[-1][1] - 1536   # the pax header of \u00e9.bin: its block, one of records, the member's
    with pytest.raises(_tar.TarError, match=rf"^extended header without a member after it: the file ends there, "
                                            rf"truncated at byte {at}$"):
        listing(pax[:at + 1024])


def test_links_and_directories_carry_no_data():
    """A link or directory header's size field is not followed by data (tarfile reads the next header
    right after it); an unknown type's data is skipped by its size."""
    data = bytearray(archive(tarfile.GNU_FORMAT, [special("link", tarfile.SYMTYPE, linkname="x"), ("a.bin", b"a")]))
    data[124:136] = b"%011o\0" % 600
    data[0:512] = with_checksum(bytearray(data[0:512]))
    assert listing(bytes(data)) == tarfile_listing(bytes(data)) == [("a.bin", 1024, 1, b"a")]
    unknown = bytearray(archive(tarfile.GNU_FORMAT, [("v.bin", b"v" * 600), ("a.bin", b"a")]))
    unknown[156:157] = b"V"   # a volume label: not a file, its data passed over
    unknown[0:512] = with_checksum(bytearray(unknown[0:512]))
    assert listing(bytes(unknown)) == tarfile_listing(bytes(unknown)) == [("a.bin", 2048, 1, b"a")]


def test_the_compiled_header_reader_agrees_or_leaves_the_header_to_python():
    """Every header the compiled reader takes, it reads as the field-by-field reader does; what it
    leaves (None) is the odd case: base-256 numbers, stray bytes in a number, a bad checksum."""
    from fastload._kernels._tarheader import header
    blocks = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = archive(fmt, MEMBERS if fmt != tarfile.USTAR_FORMAT else [
            m for m in MEMBERS if isinstance(m, tarfile.TarInfo) or (len(m[0]) < 200 and m[0].isascii())])
        blocks += [data[i:i + 512] for i in range(0, len(data), 512)]
    plain = [b for b in blocks if b.strip(b"\0")]
    assert sum(header(b) is not None for b in plain) >= 40   # the common case is taken
    rnd = random.Random(1)
    odd = b" \t\n\x0b\x0c\r\0+-_0o89\x80\xff"
    for _ in range(20000):
        block = bytearray(rnd.choice(plain))
        for _ in range(rnd.randrange(1, 4)):   # numbers and the checksum first, then anywhere
            pos = rnd.choice([rnd.randrange(124, 136), rnd.randrange(148, 156), rnd.randrange(512)])
            block[pos] = rnd.choice(odd) if rnd.random() < 0.7 else rnd.randrange(256)
        if rnd.random() < 0.5:   # a valid checksum over the change, unsigned or signed
            block = bytearray(with_checksum(block, signed=rnd.random() < 0.3))
        block = bytes(block)
        fast = header(block)
        try:
            slow = _tar._fields(block, 0)
        except _tar.TarError:
            assert fast is None, block
            continue
        assert fast is None or fast == slow, block
    assert header(b"\0" * 511) is None
    latin = bytearray(archive(tarfile.USTAR_FORMAT, [("x.bin", b"s")])[:512])
    latin[0:5] = b"\xe9t\xe9.b"
    for signed in (False, True):
        block = with_checksum(bytearray(latin), signed=signed)
        assert header(block) == _tar._fields(block, 0) == ("\udce9t\udce9.b", 1, ord("0"))


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_compressed_shard_says_so_naming_it(tmp_path, mode):
    """A .tar.gz (or .bz2, .xz) shard, as webdataset's writer makes it from a .tar.gz name, has no
    members to read in place: the error names the shard and the compression, indexed and streamed,
    where it was an unreadable header; the same members under a name that starts like a magic are
    a tar."""
    import fastload as fl
    kind = {"w:gz": "gzip", "w:bz2": "bzip2", "w:xz": "xz"}[mode]
    path = str(tmp_path / f"shard.tar.{mode[2:]}")
    if mode == "w:gz":
        import webdataset as wds
        with wds.TarWriter(path) as w:
            w.write({"__key__": "k0", "cls": 0, "txt": "a"})
    else:
        with tarfile.open(path, mode) as tf:
            ti = tarfile.TarInfo("k0.cls")
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"0"))
    with open(path, "rb") as f:
        assert tarfile.open(fileobj=f).getnames()[0] == "k0.cls"   # a valid archive, compressed
    why = f"not a readable tar archive (it is {kind}-compressed; decompress it to a plain .tar)"
    with pytest.raises(fl.RecordError, match=re.escape(f"{path}:@0: {why}")):
        fl.TarShards(path)[0]
    got = list(fl.TarShards(path).stream())
    assert len(got) == 1 and got[0].where == path and got[0].reason == why
    data = archive(tarfile.USTAR_FORMAT, [("BZh91AY&SY.cls", b"1"), ("\x1f\x8b.txt", b"x")])
    assert listing(data) == tarfile_listing(data)
