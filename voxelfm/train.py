"""VoxelFM pre-training loop (``python -m voxelfm.train`` / ``ctbench pretrain``), single process
or DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA).

One iteration: set the schedules, then for each of ``grad_accum_steps`` micro-batches draw the
iBOT masks, get the teacher targets, run the student and back-propagate; divide the gradients by
the accumulation count, clip them, step AdamW, update the EMA teacher and the centres, log, and
checkpoint. ``run_dir`` holds ``config.yaml``, ``log.jsonl`` (one line per iteration),
``checkpoints/last.pt`` and the teacher export ``teacher_checkpoint.pth`` (+ ``eval/<it>/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import yaml

from ctbench.errors import CTBenchError

from .checkpointing import export_teacher, load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_config
from .crops import MultiCrop
from .data import CropStream, MicroBatchSampler, VolumeSource, collate_crops
from .masking import sample_masks
from .optim import apply_schedule, param_groups
from .pretrain_config import PretrainConfig
from .runlog import read_log, truncate_log
from .schedules import Schedules
from .ssl import SSLModel, StudentForward

__all__ = ["train", "validate", "main"]

# settings that do not change the numbers: they may differ between a run and its resumption
_FREE_KEYS = {"train.num_workers", "ctbench.cache_volumes", "checkpointing.period", "ctbench.export_period"}
Callback = Callable[[dict], None]


def validate(cfg: PretrainConfig) -> None:
    """Raise ``CTBenchError`` for settings that cannot train."""
    p = cfg.student.patch_size
    for name, size in (("global", cfg.crops.global_size), ("local", cfg.crops.local_size)):
        if any(n % p or n < p for n in size):
            raise CTBenchError(f"{name} crop size {size} must be a positive multiple of the patch size {p}")
    if cfg.loss.koleo_weight and cfg.train.batch_size_per_device < 2:
        raise CTBenchError("KoLeo needs at least 2 volumes per device batch; raise the batch size "
                           "or set dino.koleo_loss_weight=0")
    if cfg.train.grad_accum_steps < 1 or cfg.train.batch_size_per_device < 1:
        raise CTBenchError("batch size and gradient accumulation steps must be >= 1")


def _setup(device: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world, device, whether this call created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise CTBenchError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return rank, world, dev, created


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [{"c": 2}]}`` -> ``{"a.b": 1, "l.0.c": 2}`` (after a YAML round trip)."""
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list) and any(isinstance(v, (dict, list)) for v in doc):
        items = enumerate(doc)
    else:
        return {prefix[:-1]: doc}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _check_same_config(saved: dict, current: dict, path: Path) -> None:
    a, b = (_flat(yaml.safe_load(yaml.safe_dump(d))) for d in (saved, current))
    diffs = sorted(k for k in set(a) | set(b) if k not in _FREE_KEYS and a.get(k) != b.get(k))
    if diffs:
        raise CTBenchError(f"{path} was written with a different config ({', '.join(diffs[:8])}); "
                           "resume with the same config, or use --no-resume / another run folder")


def _seed_process(seed: int, rank: int) -> None:
    s = int(np.random.SeedSequence([seed, 3, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def train(
    cfg: PretrainConfig,
    run_dir: str | Path,
    *,
    device: str = "auto",
    resume: bool = True,
    stop_after: int | None = None,
    callback: Callback | None = None,
) -> dict[str, Any]:
    """Pre-train (or resume) in ``run_dir`` up to the schedule's end or ``stop_after``
    iterations in total; ``callback(record)`` sees every logged iteration on rank 0.
    Returns a summary (paths, iterations, wall time, last record)."""
    validate(cfg)
    rank, world, dev, created = _setup(device)
    try:
        return _train(cfg, Path(run_dir), rank, world, dev, resume, stop_after, callback)
    finally:
        if created:
            dist.destroy_process_group()


def _train(cfg: PretrainConfig, run_dir: Path, rank: int, world: int, dev: torch.device, resume: bool,
           stop_after: int | None, callback: Callback | None) -> dict[str, Any]:
    t, doc = cfg.train, cfg.to_reference()
    main_rank = rank == 0
    ckpt_path, log_path = run_dir / "checkpoints" / "last.pt", run_dir / "log.jsonl"
    sched = Schedules.build(cfg.schedules)
    stop = len(sched) if stop_after is None else min(int(stop_after), len(sched))

    torch.manual_seed(t.seed)  # identical initialisation on every rank
    ssl = SSLModel(cfg).to(dev)
    ssl.train()
    fwd: torch.nn.Module = StudentForward(ssl.student)
    if world > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(fwd, device_ids=[dev.index] if dev.type == "cuda" else None)
    ssl.sync_teacher()
    opt = torch.optim.AdamW(param_groups(ssl.student["backbone"], ssl.student["dino_head"],
                                         cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult),
                            lr=0.0, betas=(cfg.optim.adamw_beta1, cfg.optim.adamw_beta2))

    start, state = 0, None
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        _check_same_config(state["config"], doc, ckpt_path)
        ssl.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir / "config.yaml", doc)
        truncate_log(log_path, start)  # a torn last line (power loss) is dropped with a warning
    elif start:
        read_log(log_path, warn=lambda message: None)  # a corrupt log stops every rank, not rank 0 alone

    if main_rank and dist.is_initialized():  # the phantom is generated once, by rank 0
        VolumeSource.from_dataset(cfg.data.dataset, cfg.data.splits, cache_volumes=0)
    if dist.is_initialized():
        dist.barrier()
    s = cfg.student
    source = VolumeSource.from_dataset(cfg.data.dataset, cfg.data.splits, min_spacing=cfg.data.min_spacing,
                                       crop_background=cfg.data.crop_background, hu_range=(s.hu_min, s.hu_max),
                                       patch_size=s.patch_size, cache_volumes=cfg.data.cache_volumes)
    stream = CropStream(source, MultiCrop(cfg.multicrop()), t.seed)
    sampler = MicroBatchSampler(start, stop, accum=t.grad_accum_steps, world=world, rank=rank,
                                batch=t.batch_size_per_device)
    loader = torch.utils.data.DataLoader(stream, batch_sampler=sampler, collate_fn=collate_crops,
                                         num_workers=t.num_workers, pin_memory=dev.type == "cuda",
                                         generator=torch.Generator().manual_seed(t.seed),
                                         persistent_workers=False)
    batches = iter(loader)

    if state is not None and int(state["world_size"]) == world:
        set_rng_state(state["rng"][rank])
    else:
        if state is not None and main_rank:
            print(f"warning: resuming with {world} processes from a checkpoint of {state['world_size']}: "
                  "the run continues but will not match an uninterrupted one")
        _seed_process(t.seed, rank)

    bf16 = dev.type == "cuda" and t.compute_precision == "bf16"
    grid = tuple(n // s.patch_size for n in cfg.crops.global_size)
    params = [p for p in ssl.student.parameters() if p.requires_grad]
    started, last = time.perf_counter(), None
    for it in range(start, stop):
        t0 = time.perf_counter()
        vals = sched.at(it)
        apply_schedule(opt, vals["lr"], vals["wd"], vals["last_layer_lr"])
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for m in range(t.grad_accum_steps):
            g, loc = next(batches)
            g, loc = g.to(dev, non_blocking=True), loc.to(dev, non_blocking=True)
            masks = sample_masks(g.shape[0], grid, np.random.default_rng([t.seed, 11, it, m, rank]),
                                 cfg.loss.mask_ratio, cfg.loss.mask_probability)
            sync = contextlib.nullcontext()
            if world > 1 and m < t.grad_accum_steps - 1:
                sync = fwd.no_sync()  # type: ignore[operator]
            with sync:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    targets = ssl.teacher_targets(g, masks, vals["teacher_temp"])
                    out = fwd(g, loc, masks.masks.to(dev), masks.indices.to(dev))
                    loss, terms = ssl.losses(out, targets, masks, cfg.crops.n_local)
                loss.backward()
            terms.update(ssl.monitors(targets))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.float() / t.grad_accum_steps
        if t.grad_accum_steps > 1:
            torch._foreach_div_([p.grad for p in params if p.grad is not None], float(t.grad_accum_steps))
        clip = cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        ssl.update_teacher(vals["momentum"])
        ssl.dino_center.apply()
        ssl.ibot_center.apply()

        names = sorted(sums)
        stacked = torch.stack([sums[k] for k in names] + [grad_norm.float()])
        if dist.is_initialized():
            dist.all_reduce(stacked)
            stacked /= world
        values = stacked.tolist()
        if not np.isfinite(values[names.index("total")]):
            raise CTBenchError(f"the loss became {values[names.index('total')]} at iteration {it}; "
                               "lower the learning rate or check the data")
        last = {"iteration": it, **dict(zip(names, values[:-1])), "grad_norm": values[-1], **vals,
                "seconds": time.perf_counter() - t0,
                "samples": (it + 1) * t.grad_accum_steps * world * t.batch_size_per_device}
        done = it + 1
        checkpoint_now = done % t.checkpoint_period == 0 or done == stop
        rng: list = [rng_state()] if checkpoint_now else []
        if checkpoint_now and dist.is_initialized():
            rng = [None] * world
            dist.all_gather_object(rng, rng_state())
        if main_rank:
            with open(log_path, "a") as f:
                f.write(json.dumps(last) + "\n")
            if checkpoint_now:
                save_checkpoint(ckpt_path, iteration=done, model=ssl, optimizer=opt, config=doc, rng=rng,
                                world_size=world)
            if t.export_period and done % t.export_period == 0:
                export_teacher(ssl.teacher, run_dir / "eval" / str(done), doc)
            if callback is not None:
                callback(last)
    teacher = run_dir / "teacher_checkpoint.pth"
    if main_rank:
        export_teacher(ssl.teacher, run_dir, doc)
    if dist.is_initialized():
        dist.barrier()
    return {"run_dir": str(run_dir), "start": start, "iterations": stop, "total_iterations": len(sched),
            "seconds": time.perf_counter() - started, "teacher": str(teacher), "checkpoint": str(ckpt_path),
            "log": str(log_path), "last": last, "skipped_cases": dict(source.failed)}


def main() -> None:
    """``python -m voxelfm.train``: the ``ctbench pretrain`` command."""
    from ctbench.pretrain_cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
