"""Does ctbench's VoxelFM pre-training help? The tiny VoxelFM pre-trained on a phantom against the
same architecture with random weights, on that phantom's task, under the same protocol.

    python benchmarks/pretrain_vs_random.py --out runs/pvr                 # 500 patients, CPU
    python benchmarks/pretrain_vs_random.py --out runs/pvr --task survival

Steps, each skipped when its output exists (so an interrupted run resumes):
1. ``ctbench datasets phantom`` writes the phantom (``--patients``, ``--seed``);
2. ``python -m voxelfm.train --preset tiny`` pre-trains on its train+val volumes (test unseen);
3. ``ctbench run --variant tiny`` for ``--weights random`` and for the exported teacher, into
   ``OUT/results/<task>/{random,pretrained}``;
4. ``ctbench leaderboard build`` scores both on the same patient resamples and gives the paired
   difference (pre-trained - random) with its 95% interval (``OUT/board/<task>``).

The first call records ``--patients``, ``--seed`` and ``--set`` in ``OUT/config.json``; a later
call on the same ``OUT`` with other values stops (use another ``--out``). ``--task`` may change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _call(args: list[str], env: dict[str, str]) -> None:
    """Echo and run one command; a non-zero exit raises ``CalledProcessError``."""
    print("+", " ".join(args), flush=True)
    subprocess.run(args, env=env, check=True)


def _check_config(out: Path, config: dict) -> None:
    """Record ``config`` in ``OUT/config.json`` on first use; stop if a recorded one differs."""
    path = out / "config.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != config:
            raise SystemExit(f"{out} holds a phantom/pre-training made with {saved}, not {config}; "
                             "pass the same --patients/--seed/--set or another --out")
        return
    if (out / "phantom").exists() or (out / "pretrain").exists():
        raise SystemExit(f"{out} holds a phantom/pre-training of unknown arguments (no config.json); "
                         "use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    """Run the steps above (skipping those already done) and return the summary it prints:
    task, metric, patients, test cases, each arm's main metric and the paired comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (phantom, run, results)")
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="classification")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], help="pre-training override (repeatable)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    env = {**os.environ, "CTBENCH_HOME": str(out / "home"), "OMP_NUM_THREADS": "1"}
    _check_config(out, {"patients": args.patients, "seed": args.seed, "set": args.set})
    ctbench = [sys.executable, "-m", "ctbench"]
    phantom, run = out / "phantom", out / "pretrain"
    if not (phantom / "dataset.json").is_file():
        _call([*ctbench, "datasets", "phantom", "--out", str(phantom), "--patients", str(args.patients),
               "--seed", str(args.seed)], env)
    teacher = run / "teacher_checkpoint.pth"
    if not teacher.is_file():
        overrides = [x for s in args.set for x in ("--set", s)]
        _call([sys.executable, "-m", "voxelfm.train", "--preset", "tiny", "--dataset", str(phantom),
               "--out", str(run), "--threads", "1", "--device", "cpu", *overrides], env)
    results, board_dir = out / "results" / args.task, out / "board" / args.task
    for name, weights in (("random", "random"), ("pretrained", str(teacher))):
        if not (results / name / "result.json").is_file():
            _call([*ctbench, "run", "--model", "voxelfm", "--variant", "tiny", "--task", args.task,
                   "--dataset", str(phantom), "--weights", weights, "--trials", str(args.trials),
                   "--device", "cpu", "--out", str(results / name)], env)
    _call([*ctbench, "leaderboard", "build", "--results", str(results), "--format", "json",
           "--out", str(board_dir)], env)
    board = json.loads((board_dir / "leaderboard.json").read_text())
    table = board["tables"][0]
    summary = {"task": args.task, "metric": table["main_metric"], "patients": args.patients,
               "test_cases": table["n_cases"],
               "rows": {r["label"]: r["main"] for r in table["rows"]}, "paired": table["comparisons"]}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
