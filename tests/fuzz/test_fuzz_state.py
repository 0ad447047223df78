"""Damaged state left by an earlier run, through the real command line: a cut-short feature-cache
file is moved aside and re-extracted (never fatal, nothing valid lost), a pre-training log whose
last line a power loss cut in half still resumes, and a broken ``--llm`` folder is one message
naming it, before any feature is extracted."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fuzz.conftest import Sandbox, assert_user_error


def _run_args(sandbox: Sandbox, data: Path, task: str = "classification", *extra: str) -> list[str]:
    return ["run", "--model", "test-histogram", "--task", task, "--dataset", str(data), "--weights", "random",
            "--trials", "2", "--bootstrap", "20", "--device", "cpu", "--out", str(sandbox.out), *extra]


def test_a_truncated_cache_file_is_moved_aside_and_re_extracted(sandbox: Sandbox, phantom24: Path):
    from safetensors import safe_open

    data = sandbox.copy_dataset(phantom24)
    first = sandbox.ctbench(*_run_args(sandbox, data))
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    files = sorted((sandbox.home / "features").rglob("*.safetensors"))
    assert len(files) > 2
    victim = files[len(files) // 2]
    good = {f: f.read_bytes() for f in files}
    victim.write_bytes(good[victim][: len(good[victim]) // 2])  # a copy cut short / a full disk

    again = sandbox.ctbench(*_run_args(sandbox, data))
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    flat = "".join(text.split())  # rich wraps long paths
    assert "".join(str(victim).split()) in flat and "re-extracted" in text
    (kept,) = victim.parent.glob(victim.name + ".corrupt-*")
    assert kept.read_bytes() == good[victim][: len(good[victim]) // 2]  # the bad copy, kept aside
    assert {f: f.read_bytes() for f in files} == good  # valid again; every other entry untouched
    with safe_open(str(victim), framework="np") as f:
        assert f.get_tensor("embedding").ndim == 1
    result = json.loads((sandbox.out / "result.json").read_text())
    assert result["timings"]["cases_recovered"] == 1 and result["timings"]["cases_extracted"] == 1
    assert not sandbox.snapshot()


def test_pretraining_resumes_past_a_torn_last_log_line(sandbox: Sandbox, phantom24: Path, monkeypatch):
    """The checkpoint comes from an in-process run (seconds); the resume is the real command."""
    import torch

    from ctbench.pretrain_cli import build_config
    from tests.voxelfm.pretrain_fixtures import TINY_OVERRIDES, tiny_args
    from voxelfm.train import train

    data = sandbox.copy_dataset(phantom24)
    run = sandbox.out / "pretrain"
    monkeypatch.setenv("CTBENCH_HOME", str(sandbox.home))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(build_config("tiny", None, [*TINY_OVERRIDES, f"datasets.0.name={data}"]), run, device="cpu",
              stop_after=1)
    finally:
        torch.set_num_threads(threads)
    log = run / "log.jsonl"
    whole = log.read_text()
    assert len(whole.splitlines()) == 1
    log.write_text(whole + '{"iteration": 1, "dino_local": 10.9')  # power loss mid-append

    proc = sandbox.ctbench("pretrain", *tiny_args(data), "--out", str(run), "--stop-after", "1",
                           "--device", "cpu", "--threads", "1", "--quiet")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    flat = " ".join(text.split())
    assert f"{log}: line 2 is incomplete" in flat
    assert log.read_text() == whole  # rewritten without the torn line
    assert not sandbox.snapshot()


def test_a_broken_llm_folder_fails_before_extraction(sandbox: Sandbox, phantom24: Path):
    data = sandbox.copy_dataset(phantom24)
    lm = sandbox.data / "my-lm"
    lm.mkdir()
    (lm / "config.json").write_text('{"model_type": "gpt2", "n_layer": ')  # cut short
    proc = sandbox.ctbench(*_run_args(sandbox, data, "report-generation", "--llm", str(lm)))
    assert_user_error(proc, str(lm), "cannot read", "config.json", "save_pretrained")
    assert not (sandbox.home / "features").exists()  # nothing was extracted
    assert not sandbox.snapshot()
