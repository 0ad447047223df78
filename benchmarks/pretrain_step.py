"""Time one VoxelFM pre-training iteration (teacher + student forward, DINO/iBOT/KoLeo losses,
backward, clipping, AdamW, EMA, centring) on random crops: the model cost without the data.

    python benchmarks/pretrain_step.py                       # tiny preset, CPU (or CUDA if present)
    python benchmarks/pretrain_step.py --preset base --batch 16 --device cuda

Prints s/iteration, crops (volumes) per second and peak memory as a markdown table; on CUDA the
step runs under bf16 autocast like ``voxelfm.train``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    from voxelfm.masking import sample_masks
    from voxelfm.optim import apply_schedule, param_groups
    from voxelfm.pretrain_config import PRETRAIN_PRESETS
    from voxelfm.ssl import SSLModel, StudentForward

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRETRAIN_PRESETS))
    ap.add_argument("--batch", type=int, default=None, help="volumes per iteration (default: the preset's)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    cfg = PRETRAIN_PRESETS[args.preset]
    B = args.batch or cfg.train.batch_size_per_device
    c = cfg.crops
    torch.manual_seed(0)
    ssl = SSLModel(cfg).to(dev).train()
    fwd = StudentForward(ssl.student)
    opt = torch.optim.AdamW(param_groups(ssl.student["backbone"], ssl.student["dino_head"]), lr=0.0)
    apply_schedule(opt, 1e-4, 0.04, 1e-4)
    g = torch.randn(2 * B, *c.global_size, device=dev)
    loc = torch.randn(c.n_local * B, *c.local_size, device=dev)
    grid = tuple(n // cfg.student.patch_size for n in c.global_size)
    bf16 = dev.type == "cuda"
    params = [p for p in ssl.student.parameters()]

    def step(i: int) -> None:
        masks = sample_masks(2 * B, grid, np.random.default_rng(i))
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            targets = ssl.teacher_targets(g, masks, 0.04)
            out = fwd(g, loc, masks.masks.to(dev), masks.indices.to(dev))
            loss, _ = ssl.losses(out, targets, masks, c.n_local)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        ssl.update_teacher(0.994)
        ssl.dino_center.apply()
        ssl.ibot_center.apply()

    step(0)
    if bf16:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(args.iterations):
        step(i + 1)
    if bf16:
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t) / args.iterations
    mem = (torch.cuda.max_memory_allocated() if bf16 else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    row = {"preset": args.preset, "batch": B, "global": "x".join(map(str, c.global_size)), "n_local": c.n_local,
           "local": "x".join(map(str, c.local_size)), "s_per_it": sec, "vol_s": B / sec, "mem_gib": mem / 2**30,
           "device": torch.cuda.get_device_name() if bf16 else f"CPU ({torch.get_num_threads()} threads)"}
    print("| preset | device | batch | global crops | local crops | s/iteration | volumes/s | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {row['preset']} | {row['device']} | {B} | 2 x {row['global']} | {row['n_local']} x {row['local']} | "
          f"{sec:.3g} | {B / sec:.3g} | {row['mem_gib']:.2f} |")
    return row


if __name__ == "__main__":
    main()
