"""``ctbench pretrain``: VoxelFM self-distillation pre-training (DINO + iBOT + KoLeo).

Mount with ``app.command("pretrain")(pretrain)``; ``python -m voxelfm.train`` runs the same
command. Under ``torchrun --nproc-per-node N`` every process runs it and they train together.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .errors import CTBenchError

__all__ = ["pretrain", "build_config", "main"]


def build_config(preset: str, config: Optional[Path], overrides: List[str]):
    """Preset, then a reference-style YAML merged on top, then ``section.key=value`` overrides."""
    import yaml

    from voxelfm.pretrain_config import PRETRAIN_PRESETS, PretrainConfig, apply_overrides, merge

    if preset not in PRETRAIN_PRESETS:
        raise CTBenchError(f"unknown pre-training preset {preset!r}; choose one of {sorted(PRETRAIN_PRESETS)}")
    doc = PRETRAIN_PRESETS[preset].to_reference()
    if config is not None:
        try:
            extra = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CTBenchError(f"{config}: cannot read the config ({e})") from None
        if not isinstance(extra, dict):
            raise CTBenchError(f"{config}: the config must be a YAML mapping")
        doc = merge(doc, extra)
    try:
        return PretrainConfig.from_reference(apply_overrides(doc, overrides))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise CTBenchError(f"invalid pre-training config: {e}") from None


def pretrain(
    preset: str = typer.Option("tiny", "--preset", help="tiny (CPU, phantom-sized crops) or base (the reference ViT-B)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="reference-style config.yaml merged on the preset"),
    overrides: List[str] = typer.Option([], "--set", help="override, e.g. --set crops.local_crops_number=4 (repeatable)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="built-in name or prepared dataset folder (default phantom)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default $CTBENCH_HOME/pretrain/<preset>-seed<seed>)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of initialisation, data order, crops and masks"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="volumes per device per micro-batch"),
    accum: Optional[int] = typer.Option(None, "--accum", min=1, help="gradient accumulation steps"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="data loader processes"),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, help="stop after this many iterations in total (the schedule is unchanged)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per process (1 is fastest on a busy machine)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from the run folder's last checkpoint"),
    quiet: bool = typer.Option(False, "--quiet", help="no live display (the log file is still written)"),
) -> None:
    """Pre-train VoxelFM with DINO + iBOT + KoLeo self-distillation; resumable; exports the teacher
    in the official layout (load it with `ctbench run --model voxelfm --weights RUN/teacher_checkpoint.pth`)."""
    import os

    from rich.console import Console

    from .paths import home

    extra = list(overrides)
    for key, value in (("datasets.0.name", dataset), ("train.seed", seed), ("train.batch_size_per_gpu", batch_size),
                       ("train.grad_accum_steps", accum), ("train.num_workers", workers)):
        if value is not None:
            extra.append(f"{key}={value}")
    cfg = build_config(preset, config, extra)
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_dir = Path(out) if out else home() / "pretrain" / f"{preset}-seed{cfg.train.seed}"
    main_rank = int(os.environ.get("RANK", "0")) == 0
    console = Console(stderr=True)
    if main_rank:
        s = cfg.student
        console.print(f"pre-training VoxelFM ({s.embed_dim}-d, {s.depth} blocks) on {cfg.data.dataset!r} -> {run_dir}", soft_wrap=True)
    summary = _run(cfg, run_dir, device, resume, stop_after, show=main_rank and not quiet, console=console)
    if main_rank:
        last = summary["last"] or {}
        console.print(
            f"iterations {summary['start']} -> {summary['iterations']} of {summary['total_iterations']} in "
            f"{summary['seconds']:.0f} s; total loss {last.get('total', float('nan')):.4f}; "
            f"teacher: {summary['teacher']}")
        if summary["skipped_cases"]:
            console.print(f"[yellow]skipped {len(summary['skipped_cases'])} unreadable case(s)[/]; see {summary['log']}", soft_wrap=True)


def _run(cfg, run_dir: Path, device: str, resume: bool, stop_after: Optional[int], *, show: bool, console) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from voxelfm.collapse import CollapseWatch
    from voxelfm.schedules import Schedules
    from voxelfm.train import train

    watch = CollapseWatch()

    def warn(rec: dict) -> None:
        message = watch.update(rec)
        if message:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)

    if not show:
        return train(cfg, run_dir, device=device, resume=resume, stop_after=stop_after, callback=warn)
    total = len(Schedules.build(cfg.schedules)) if stop_after is None else min(stop_after, cfg.schedules.total_iters)
    columns = (TextColumn("pre-training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pretrain", total=total, losses="")

        def update(rec: dict) -> None:
            losses = (f"total {rec['total']:.3f} | dino {rec['dino_local'] + rec['dino_global']:.3f} "
                      f"ibot {rec['ibot']:.3f} koleo {rec['koleo']:.3f} | lr {rec['lr']:.2e} "
                      f"T {rec['teacher_temp']:.3f}")
            progress.update(task, completed=rec["iteration"] + 1, losses=losses)
            warn(rec)

        return train(cfg, run_dir, device=device, resume=resume, stop_after=stop_after, callback=update)


def main() -> None:
    """Stand-alone entry (``python -m voxelfm.train``): exit codes as in :mod:`ctbench.launch`."""
    from .launch import run_app

    app = typer.Typer(add_completion=False)
    app.command()(pretrain)
    run_app(app)
