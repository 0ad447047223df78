"""Atomic file writes: write to a temporary file in the same folder, then rename over.

The temporary file is created with mode ``0o666`` and the kernel applies the process umask, as
for a plain ``open(path, "w")``; so the renamed file gets the usual permissions (``0o644``
under umask ``0o022``), not ``tempfile.mkstemp``'s private ``0o600``. Nothing reads or changes
the umask, so there is no window in which another thread could create files with a wrong one.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def _create_temp_beside(path: Path | str) -> Path:
    """Create a new empty file next to ``path`` (mode ``0o666`` minus the umask) and return it."""
    path = Path(path)
    for _ in range(_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue  # name taken by a concurrent writer: draw another
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name next to {path} after {_ATTEMPTS} attempts")


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk through a read-write handle (Windows flushes only handles
    with write access; nothing is written). A file the umask left read-only for its owner falls
    back to a read-only handle, which POSIX ``fsync`` accepts."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | cloexec)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | cloexec)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Best-effort flush of a folder entry (the rename); not every platform or filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is synced to disk and replaces
    ``path`` atomically (with the permissions a plain ``open()`` would give); on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` so readers never see a partial file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
