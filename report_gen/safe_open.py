"""Open input files only when they are regular files, without ever blocking on one that is not.

A run folder from an untrusted artifact can hold a FIFO named ``events.out.tfevents.x`` (opening it
for reading blocks until a writer appears: forever, in CI), a character device or a symlink to
``/dev/zero`` / ``/dev/urandom`` (endless data), or a socket. Discovery selects files by name, so every
reader opens through `open_regular`:

1. ``stat`` the path (following symlinks: ``last.ckpt -> epoch=3.ckpt`` is normal) and refuse anything
   that is not a regular file, before opening it (opening some devices has side effects);
2. ``os.open`` with ``O_RDONLY | O_NONBLOCK | O_NOCTTY`` (plus ``O_NOFOLLOW`` when the caller wants no
   symlink at all), so a FIFO swapped in between the two steps cannot block the open;
3. ``fstat`` the descriptor: still a regular file, and the same file (device and inode) that step 1
   saw; otherwise refused. ``O_NONBLOCK`` is then cleared (regular files ignore it anyway).

Refusals are `NotRegularFile`, an ``OSError`` whose ``strerror`` is a one-line reason, so existing
``except OSError`` handlers report them as "cannot read file (<reason>)".
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """An input path that is not a regular file (or changed into something else while opened)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, path)


class FileTooLarge(OSError):
    """A small input (JSON config, shard index) larger than its reader's bound."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"{size:,} bytes, more than the {limit:,} this file can hold", path)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISLNK, "a symbolic link"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', ... for a st_mode."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _reason(path: str, st: os.stat_result) -> str:
    what = file_kind(st.st_mode)
    try:
        if os.path.islink(path):
            return f"a symbolic link to {what} ({os.path.realpath(path)}), not a regular file"
    except (OSError, ValueError):
        pass
    return f"{what}, not a regular file"


def regular_file_problem(path: str | bytes | os.PathLike, *, follow_symlinks: bool = True) -> str | None:
    """Why `path` must not be opened as an input (one line), or None for a regular file.

    Never opens the path. A missing or unreadable path gives the OSError's reason."""
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except ValueError as exc:  # an embedded NUL byte
        return str(exc)
    if stat.S_ISREG(st.st_mode):
        return None
    return _reason(os.fsdecode(path), st)


def is_regular_file(path: str | bytes | os.PathLike, *, follow_symlinks: bool = True) -> bool:
    """True when `path` is (or, following symlinks, points to) a regular file; never opens it."""
    return regular_file_problem(path, follow_symlinks=follow_symlinks) is None


def open_regular(path: str | bytes | os.PathLike, *, follow_symlinks: bool = True,
                 buffering: int = -1) -> BinaryIO:
    """Open a regular file for binary reading (see the module docstring); NotRegularFile otherwise.
    `buffering` as for open(): 0 gives a raw file whose reads never read ahead of what is asked."""
    name = os.fsdecode(path)
    st = os.stat(path, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(name, _reason(name, st))
    flags = os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | _O_BINARY | _O_CLOEXEC | (0 if follow_symlinks else _O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFile(name, "a symbolic link, not a regular file") from None
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            raise NotRegularFile(name, f"{file_kind(now.st_mode)}, not a regular file (it changed while opened)")
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise NotRegularFile(name, "the file was replaced while it was opened")
        if _O_NONBLOCK:
            import fcntl  # POSIX only, where O_NONBLOCK exists

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_NONBLOCK)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | bytes | os.PathLike, max_bytes: int) -> bytes:
    """The whole content of a small regular file (a config.json, a shard index), at most
    `max_bytes`: FileTooLarge beyond that, whatever the size the file claims or grows to."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FileTooLarge(os.fsdecode(path), size, max_bytes)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(os.fsdecode(path), len(data), max_bytes)
    return data


__all__ = ["FileTooLarge", "NotRegularFile", "file_kind", "is_regular_file", "open_regular", "read_regular",
           "regular_file_problem"]
