"""Writing report files without following a planted symlink, and without half-written files.

The output folder may sit inside an untrusted artifact (``-o artifact/report``), where anyone could
have planted ``report.html -> ~/.bashrc`` or ``report_files -> /etc``. So every file is written as:

1. a fresh temporary name in the output folder (``.report.html.<random>.tmp``), created with
   ``O_CREAT | O_EXCL | O_NOFOLLOW``: never an existing file, never through a symlink;
2. written and closed, then renamed over the final name with ``os.replace``. A rename replaces the
   directory entry: a symlink planted under the final name is replaced, its target never touched.

The folder is opened once and pinned by its descriptor (``dir_fd``) where the platform allows, so
swapping the folder path for a symlink mid-way changes nothing. A subfolder (``report_files``) that
is a symlink, or anything but a real directory, is replaced by a fresh directory; its target is
never written to.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from report_gen.core import InputError

log = logging.getLogger("report_gen")

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: dir_fd-relative calls are used when the platform has them all (Linux, macOS, BSDs; not Windows);
#: os.replace shares os.rename's implementation but is not listed in supports_dir_fd
_DIR_FD = (_O_DIRECTORY != 0 and os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
           and os.mkdir in os.supports_dir_fd and os.unlink in os.supports_dir_fd
           and os.stat in os.supports_dir_fd)


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


class OutputFolder:
    """A folder files are written into safely (see the module docstring). Use as a context manager."""

    def __init__(self, path: str | Path, *, create: bool = True, _parent: "OutputFolder | None" = None,
                 _name: str | None = None) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        try:
            if _parent is not None and _name is not None:
                self._fd = _parent._open_subfolder(_name)
            else:
                if create:
                    self.path.mkdir(parents=True, exist_ok=True)
                if _DIR_FD:
                    self._fd = os.open(self.path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
                elif not self.path.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.path))
        except OSError as error:
            raise InputError(f"{self.path}: cannot create output directory ({_reason(error)})") from None

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- writing -------------------------------------------------------------------------------
    def _at(self, name: str) -> str:
        return name if self._fd is not None else str(self.path / name)

    def write(self, name: str, data: bytes) -> Path:
        """Write `data` as `name` in this folder: a fresh O_EXCL|O_NOFOLLOW temporary, then a rename
        over `name` (a symlink there is replaced, never followed). Returns the final path."""
        if "/" in name or os.sep in name or name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        target = self.path / name
        temporary = f".{name}.{os.urandom(8).hex()}.tmp"  # secrets.token_hex(8), without importing hashlib
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY | _O_CLOEXEC
        try:
            fd = os.open(self._at(temporary), flags, 0o666, **self._dir())
        except OSError as error:
            raise InputError(f"{target}: cannot write ({_reason(error)})") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(self._at(temporary), self._at(name), **self._dirs())
        except OSError as error:
            self._discard(temporary)
            raise InputError(f"{target}: cannot write ({_reason(error)})") from None
        except BaseException:
            self._discard(temporary)
            raise
        return target

    def write_text(self, name: str, text: str) -> Path:
        """UTF-8; a lone surrogate that got this far is written as a backslash escape, never raises."""
        return self.write(name, text.encode("utf-8", "backslashreplace"))

    def subfolder(self, name: str) -> "OutputFolder":
        """The real directory `name` inside this folder, created if needed. A symlink (or a file)
        planted there is removed first: its target is never written to."""
        return OutputFolder(self.path / name, _parent=self, _name=name)

    # -- internals -----------------------------------------------------------------------------
    def _dir(self) -> dict:
        return {"dir_fd": self._fd} if self._fd is not None else {}

    def _dirs(self) -> dict:
        return {"src_dir_fd": self._fd, "dst_dir_fd": self._fd} if self._fd is not None else {}

    def _discard(self, temporary: str) -> None:
        try:
            os.unlink(self._at(temporary), **self._dir())
        except OSError:
            pass

    def _open_subfolder(self, name: str) -> int | None:
        for _ in range(3):  # a racing attacker may re-plant; give up after a few rounds
            try:
                st = os.stat(self._at(name), follow_symlinks=False, **self._dir())
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
                log.warning("%s was %s; replaced by a fresh folder (nothing written through it)",
                            self.path / name, kind)
                os.unlink(self._at(name), **self._dir())
                st = None
            if st is None:
                try:
                    os.mkdir(self._at(name), 0o777, **self._dir())
                except FileExistsError:
                    continue
            if self._fd is None:
                return None
            try:
                return os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=self._fd)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
        raise OSError(errno.EEXIST, "keeps being replaced while it is created", str(self.path / name))


def is_inside(child: str | Path, parent: str | Path) -> bool:
    """True when `child` is `parent` or lies under it (both resolved, symlinks followed)."""
    try:
        child_path, parent_path = Path(child).resolve(), Path(parent).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return child_path == parent_path or parent_path in child_path.parents


__all__ = ["OutputFolder", "is_inside"]
