"""The installed ``ctbench`` console script fails the way a user expects: usage errors exit 2
with click's usage message, failed work exits 1, user errors exit 2 with one message naming the
fix, never a traceback, and nothing is written outside the folders the command was given."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from tests.fuzz.conftest import Sandbox, assert_user_error

AS_ROOT = os.geteuid() == 0  # root ignores permissions: block folders with a file in the way instead


def _blocked(sandbox: Sandbox, folder: Path) -> Path:
    """A path below ``folder`` that cannot be written: ``folder`` is read-only (0o500), or, as
    root, a regular file."""
    if AS_ROOT:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.write_text("not a folder")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o500)
    return folder / "sub"


@pytest.fixture
def restore_modes(sandbox: Sandbox):
    """Make read-only folders writable again so the sandbox can be removed."""
    yield
    for p in [sandbox.root, *sandbox.root.rglob("*")]:
        if p.is_dir():
            p.chmod(0o700)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--model", "voxelfm", "--task", "classification", "--trials", "0"], "--trials"),
        (["run", "--model", "voxelfm", "--task", "classification", "--no-such-flag"], "--no-such-flag"),
        (["run", "--task", "classification"], "Missing option '--model'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["datasets", "no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_exit_2_with_usage(sandbox: Sandbox, args: list[str], needle: str) -> None:
    before = sandbox.snapshot()
    proc = sandbox.ctbench(*args, console_script=True)
    text = assert_user_error(proc, needle, "Usage: ctbench", code=2)
    assert "Try 'ctbench" in text and sandbox.snapshot() == before


def test_bench_with_a_failed_cell_exits_1(sandbox: Sandbox, phantom24: Path) -> None:
    # both cells fail before any model work: voxelfm has no weights offline, the other is unknown
    proc = sandbox.ctbench("bench", "--models", "voxelfm,nosuchmodel", "--tasks", "classification", "--trials", "1",
                           "--dataset", str(phantom24), "--out", str(sandbox.out), console_script=True)
    assert_user_error(proc, "0 run, 0 skipped, 2 failed", "nosuchmodel", code=1)


def test_check_adapter_with_a_failing_check_exits_1(sandbox: Sandbox) -> None:
    sandbox.data.mkdir()
    (sandbox.data / "broken_adapter.py").write_text(
        "class Broken:\n    def __init__(self, weights='random', device='cpu'):\n"
        "        raise RuntimeError('cannot build')\n")
    proc = sandbox.ctbench("check-adapter", "broken_adapter:Broken", console_script=True,
                           env={"PYTHONPATH": str(sandbox.data), "PYTHONDONTWRITEBYTECODE": "1"})
    assert_user_error(proc, "FAIL", "construct offline", code=1)


@pytest.mark.usefixtures("restore_modes")
def test_unwritable_out_fails_before_any_work(sandbox: Sandbox, phantom24: Path) -> None:
    out = _blocked(sandbox, sandbox.out)
    before = sandbox.snapshot()
    proc = sandbox.ctbench("run", "--model", "voxelfm", "--variant", "tiny", "--weights", "random", "--task",
                           "classification", "--dataset", str(phantom24), "--out", str(out), console_script=True)
    assert_user_error(proc, f"result folder (--out) {out}", "pass --out a folder you can write", code=2)
    assert sandbox.snapshot() == before and not (sandbox.home / "features").exists()


@pytest.mark.usefixtures("restore_modes")
def test_read_only_home_fails_before_any_work(sandbox: Sandbox, phantom24: Path) -> None:
    home = _blocked(sandbox, sandbox.home)
    proc = sandbox.ctbench("run", "--model", "voxelfm", "--variant", "tiny", "--weights", "random", "--task",
                           "classification", "--dataset", str(phantom24), "--out", str(sandbox.out),
                           env={"CTBENCH_HOME": str(home)}, console_script=True)
    assert_user_error(proc, f"feature cache {home / 'features'}", "set $CTBENCH_HOME to a folder you can write",
                      code=2)
    assert not sandbox.out.exists()


def test_weights_auto_offline_is_fast_and_names_the_local_path(sandbox: Sandbox, phantom24: Path) -> None:
    started = time.perf_counter()
    proc = sandbox.ctbench("run", "--model", "voxelfm", "--task", "classification", "--dataset", str(phantom24),
                           "--out", str(sandbox.out), console_script=True)  # the sandbox sets HF_HUB_OFFLINE=1
    assert time.perf_counter() - started < 30  # seconds of start-up, not the hub client's retry loop
    assert_user_error(proc, "HF_HUB_OFFLINE", str(sandbox.home / "weights" / "voxelfm" / "99999.pth"),
                      "--weights PATH", code=2)


def test_a_pickle_named_safetensors_is_one_error(sandbox: Sandbox, phantom24: Path) -> None:
    sandbox.data.mkdir()
    fake = sandbox.data / "x.safetensors"
    fake.write_bytes(pickle.dumps({"patch_embed.weight": [0.0] * 8}))
    proc = sandbox.ctbench("run", "--model", "voxelfm", "--variant", "tiny", "--weights", str(fake), "--task",
                           "classification", "--dataset", str(phantom24), "--out", str(sandbox.out),
                           console_script=True)
    assert_user_error(proc, f"{fake}: not a readable safetensors file", ".pt/.pth", code=2)
