"""Hostile names and paths in dataset cards and result files, through the real command line:
``ctbench run`` never writes outside its results folder, ``ctbench leaderboard build|publish``
never writes outside ``--out`` nor opens files outside a result's folder, markdown shows
names inertly, and an unreadable result.json is one message naming the file and the fix."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fuzz.conftest import Sandbox, assert_user_error

BOOT = "20"
SAFE_FILE = re.compile(r"[a-z0-9._-]+")


def _run_args(data: Path, out: Path | None, task: str = "classification") -> list[str]:
    """``ctbench run`` of the fast test encoder; ``out`` None: the default folder under home."""
    return ["run", "--model", "test-histogram", "--task", task, "--dataset", str(data), "--weights", "random",
            "--trials", "2", "--bootstrap", BOOT, "--device", "cpu", *(["--out", str(out)] if out else [])]


@pytest.fixture(scope="module")
def one_result(phantom24: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one real ``ctbench run`` result (read-only: tests copy it to damage it)."""
    box = Sandbox(tmp_path_factory.mktemp("fuzz-paths") / "sandbox")
    box.root.mkdir()
    box.copy_dataset(phantom24)
    proc = box.ctbench(*_run_args(box.data, box.out / "r"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (box.out / "r" / "result.json").is_file()
    return box.out / "r"


def _results(sandbox: Sandbox, one_result: Path, **change) -> Path:
    """A copy of ``one_result`` under ``home/results`` whose result.json had ``change`` applied
    (``section="..."`` sets a top-level field; ``section={...}`` updates that section)."""
    folder = sandbox.home / "results" / "r"
    shutil.copytree(one_result, folder)
    path = folder / "result.json"
    data = json.loads(path.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(data))
    return path


def _leaderboard(sandbox: Sandbox, command: str, results: Path) -> subprocess.CompletedProcess:
    extra = ["--format", "md,html,csv,json"] if command == "build" else []
    return sandbox.ctbench("leaderboard", command, "--results", str(results), *extra,
                           "--out", str(sandbox.out / command), "--bootstrap", BOOT)


# ctbench run: a card or task name that is a path ----------------------------------------------


def test_run_with_a_path_for_a_card_name_writes_nothing_outside(sandbox: Sandbox, phantom24: Path):
    """Refused when the card is read, or else when the result folder is built: either way one
    message, and nothing lands beside the sandbox (``home/results/../../../evil``)."""
    data = sandbox.copy_dataset(phantom24)
    card = json.loads((data / "dataset.json").read_text())
    card["name"] = "../../../evil"
    (data / "dataset.json").write_text(json.dumps(card))
    before = sandbox.snapshot()
    proc = sandbox.ctbench(*_run_args(data, None))  # results go under home
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    if proc.returncode != 0:
        assert_user_error(proc, "../../../evil")
        assert "plain name" in text or "plain identifier" in text, text[-2000:]
    assert sandbox.snapshot() == before
    assert not any(p.name == "result.json" for p in sandbox.home.rglob("*")
                   if not p.is_relative_to(sandbox.home / "results"))


# leaderboards: hostile names are slugified, everything stays inside --out -----------------------


def test_hostile_names_stay_inside_out_and_are_escaped(sandbox: Sandbox, one_result: Path):
    script = "<script>alert(1)</script>|`x`"
    path = _results(sandbox, one_result,
                    task={"dataset": "../../../../evil", "name": "/tmp/evil-task"},
                    model={"name": f"../../{script}", "variant": "../v"},
                    split={"hash": "../../../../../split"})
    before = sandbox.snapshot()
    for command in ("build", "publish"):
        proc = _leaderboard(sandbox, command, path.parent)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    assert sandbox.snapshot() == before
    written = [p for p in sandbox.out.rglob("*") if p.is_file()]
    assert {"leaderboard.md", "leaderboard.html", "index.html"} <= {p.name for p in written}
    for p in written:
        assert SAFE_FILE.fullmatch(p.name), p
    md = (sandbox.out / "build" / "leaderboard.md").read_text()
    assert "<script" not in md and "&lt;script&gt;" in md
    assert "<script>alert" not in (sandbox.out / "publish" / "index.html").read_text()


# leaderboards: predictions_file outside the result's folder -------------------------------------


@pytest.mark.parametrize("command, bad", [("build", "/etc/passwd"), ("publish", "../../../x.csv")])
def test_predictions_file_outside_the_folder_is_refused(sandbox: Sandbox, one_result: Path, command: str,
                                                        bad: str):
    path = _results(sandbox, one_result, predictions_file=bad)
    before = sandbox.snapshot()
    proc = _leaderboard(sandbox, command, path.parent)
    assert_user_error(proc, str(path), "'predictions_file'", "beside the result file", code=2)
    assert sandbox.snapshot() == before and not (sandbox.out / command).exists()


# leaderboards: a result.json that cannot be decoded ---------------------------------------------


def test_undecodable_result_file_is_one_message(sandbox: Sandbox, one_result: Path):
    """Latin-1 bytes in a result.json (empty and truncated files: unit tests)."""
    path = _results(sandbox, one_result)
    path.write_bytes(b'{"schema_version": 1, "task": "\xff\xfe caf\xe9"}')
    before = sandbox.snapshot()
    proc = _leaderboard(sandbox, "build", path.parent)
    assert_user_error(proc, str(path), "not UTF-8", "re-run this result or remove the file", code=2)
    assert sandbox.snapshot() == before
