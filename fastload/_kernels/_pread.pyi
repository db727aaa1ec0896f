"""Type stubs for the compiled batch of positional reads (see _pread.pyx)."""

AVAILABLE: bool

def pread_ranges(ranges: list[tuple[object, int, int]], fds: dict[object, int | OSError]) \
        -> tuple[list[bytes | OSError], list[int]]: ...
