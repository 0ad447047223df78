"""Two processes under torchrun (gloo, CPU) pre-train together."""

import json
import os
import subprocess
import sys

import torch

from voxelfm.checkpointing import load_checkpoint
from tests.voxelfm.pretrain_fixtures import tiny_args


def test_torchrun_two_processes(small_phantom, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CTBENCH_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "voxelfm.train", *tiny_args(small_phantom), "--out", str(out), "--stop-after", "2",
           "--device", "cpu", "--quiet", "--threads", "1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in recs] == [0, 1]  # written once, by rank 0
    # 2 processes x 2 accumulation steps x 2 volumes per iteration
    assert [r["samples"] for r in recs] == [8, 16]
    assert all(r["ibot"] > 0 and r["total"] > 0 for r in recs)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-rank drop-path RNG
    # the teacher stayed in sync: the export equals the checkpoint's teacher
    teacher = torch.load(out / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    assert all(torch.equal(v, ckpt["model"]["teacher." + k]) for k, v in teacher.items())
