"""Output folders are checked before any work, and the check leaves nothing behind."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest

from ctbench.errors import CTBenchError
from ctbench.writable import check_output_folders, check_writable


def test_a_creatable_folder_passes_and_nothing_is_left(tmp_path: Path, ctbench_home: Path) -> None:
    check_writable(tmp_path / "a" / "b", "result folder (--out)", "fix")
    check_output_folders(tmp_path / "res")
    assert list(tmp_path.iterdir()) == []  # neither the folders nor a probe file were left


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CTBenchError, match=r"result folder \(--out\) .*f/out cannot be created: .*f is a file, not "
                                           r"a folder; pass --out elsewhere"):
        check_writable(tmp_path / "f" / "out", "result folder (--out)", "pass --out elsewhere")


def test_a_read_only_folder_is_named_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a 0o500 folder does to a non-root user
    with pytest.raises(CTBenchError) as e:
        check_output_folders(None)
    msg = str(e.value)
    assert "results folder" in msg and "is not writable (its existing parent" in msg
    assert "Permission denied" in msg and "set $CTBENCH_HOME to a folder you can write" in msg
