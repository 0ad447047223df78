"""Atomic writes: same permissions as a plain ``open()``, synced, renamed, no leftovers."""

import os
import stat

import pytest

from ctbench import atomic
from ctbench.atomic import atomic_path, atomic_write_text


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_umask_permissions_of_a_plain_open(tmp_path, umask):
    umask(0o022)
    atomic_write_text(tmp_path / "a.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    assert _mode(tmp_path / "a.json") == 0o644 == _mode(tmp_path / "plain.json")
    umask(0o077)
    atomic_write_text(tmp_path / "private.json", "{}")
    assert _mode(tmp_path / "private.json") == 0o600
    umask(0o002)
    with atomic_path(tmp_path / "sub" / "b.bin") as tmp:
        tmp.write_bytes(b"xyz")
    assert _mode(tmp_path / "sub" / "b.bin") == 0o664
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"xyz" and (tmp_path / "a.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "plain.json", "private.json", "sub"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files via /proc (Linux)")
def test_the_temporary_file_is_synced_before_the_rename_and_removed_on_error(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                        real_fsync(fd))[1])
    target = tmp_path / "r.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    assert synced[0].startswith(str(tmp_path / ".r.txt.")) and synced[0].endswith(".tmp")  # the temp file first
    assert synced[1:] == [str(tmp_path)]  # then the folder holding the rename
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_temporary_names_never_collide(tmp_path, monkeypatch):
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    first = atomic._create_temp_beside(tmp_path / "x")
    second = atomic._create_temp_beside(tmp_path / "x")
    assert (first.name, second.name) == (".x.aaaa.tmp", ".x.bbbb.tmp")


@pytest.mark.skipif(not hasattr(os, "O_ACCMODE"), reason="reads a descriptor's access mode (POSIX)")
def test_the_file_is_fsynced_through_a_writable_handle_and_a_read_only_file_still_syncs(tmp_path, monkeypatch):
    import fcntl

    modes, real_fsync, real_open = [], os.fsync, os.open
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (modes.append(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE),
                                                        real_fsync(fd))[1])
    atomic_write_text(tmp_path / "w.txt", "data")
    assert modes[0] == os.O_RDWR  # Windows flushes only handles with write access

    def no_write_access(path, flags, *a):  # as for a file the umask left read-only (not as root)
        if flags & os.O_ACCMODE == os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    modes.clear()
    monkeypatch.setattr(atomic.os, "open", no_write_access)
    atomic_write_text(tmp_path / "r.txt", "still written")
    assert modes[0] == os.O_RDONLY and (tmp_path / "r.txt").read_text() == "still written"
