"""``log.jsonl`` of a pre-training run: a torn last line (power loss) is dropped with a warning
and the file rewritten atomically; a damaged line elsewhere is corruption, named by line."""

import json

import pytest

from ctbench.errors import CTBenchError
from voxelfm.runlog import read_log, truncate_log


def _write(path, n: int, tail: str = "") -> str:
    text = "".join(json.dumps({"iteration": i, "total": 1.0 / (i + 1)}) + "\n" for i in range(n))
    path.write_text(text + tail)
    return text


@pytest.mark.parametrize("tail", ['{"iteration": 3, "tot', '{"iterat', "\0\0\0\0", '{"total": 1}', "[3]"])
def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, tail):
    log = tmp_path / "log.jsonl"
    whole = _write(log, 3, tail)
    warnings: list[str] = []
    records, torn = read_log(log, warnings.append)
    assert torn and [r["iteration"] for r in records] == [0, 1, 2]
    assert len(warnings) == 1 and str(log) in warnings[0] and "line 4" in warnings[0]
    assert truncate_log(log, 3, warnings.append) == records
    assert log.read_text() == whole and len(warnings) == 2  # rewritten without the torn line
    assert read_log(log, warnings.append) == (records, False) and len(warnings) == 2


def test_a_damaged_line_before_the_last_is_corruption(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = _write(log, 4).splitlines()
    lines[1] = "garbage"
    log.write_text("\n".join(lines) + "\n")
    for call in (lambda: read_log(log), lambda: truncate_log(log, 3)):
        with pytest.raises(CTBenchError, match=r"log\.jsonl: line 2 is not a valid log record"):
            call()
    assert log.read_text() == "\n".join(lines) + "\n"  # never rewritten


def test_truncation_keeps_records_before_the_checkpoint_and_says_when_some_are_missing(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, 6)
    warnings: list[str] = []
    assert [r["iteration"] for r in truncate_log(log, 4, warnings.append)] == [0, 1, 2, 3] and not warnings
    assert [r["iteration"] for r in truncate_log(log, 6, warnings.append)] == [0, 1, 2, 3]
    assert "checkpoint is at iteration 6" in warnings[0] and "up to iteration 3" in warnings[0]
    log.write_text("garbage\nmore garbage\n")
    assert truncate_log(log, 0) == [] and log.read_text() == ""  # a fresh start reads nothing
    assert read_log(tmp_path / "absent.jsonl") == ([], False) and truncate_log(tmp_path / "absent", 3) == []
