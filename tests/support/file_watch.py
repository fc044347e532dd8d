"""Whether any process opens or reads given files: Linux inotify, through ctypes.

    with FileWatch([path]) as watch:
        ...              # anything, in this process or another
    assert watch.events() == 0

inotify reports every open and read of a watched file's inode, whoever makes it (the
service's threads, a decoder library, a subprocess), so a test can prove that a file was
never read, not merely that its contents did not show up in an answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path
from typing import Self

IN_ACCESS = 0x001
IN_OPEN = 0x020
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)


class FileWatch:
    """Counts open and read events on `paths` from creation until `close`."""

    def __init__(self, paths: list[Path]):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for path in paths:
            if libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.seen = 0

    def events(self) -> int:
        """Open and read events so far."""
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return self.seen
            at = 0
            while at < len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, at)
                self.seen += bool(mask & (IN_OPEN | IN_ACCESS))
                at += _EVENT.size + length

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
