"""Time each model's ``encode`` per volume at its native input size, on CPU (and CUDA when
available), with random weights (the architecture, not the checkpoint, sets the cost).

    python benchmarks/encode_adapters.py                       # every registered model
    python benchmarks/encode_adapters.py -m merlin -m ct-fm    # some of them
    python benchmarks/encode_adapters.py -m ctbench.adapters.ctfm:CTFMEncoder --shape 256 256 128

The input is a synthetic CT (an elliptic body with lungs and a spine in air, HU) of
``--shape`` voxels at ``--spacing`` mm; each adapter applies its own preprocessing, so models
with a fixed native box (Merlin 224 x 224 x 160) cost the same for any volume, while models
that keep native resolution (CT-FM) scale with the volume. The network input shape is printed.
"CPU s/volume" is process CPU time (all threads): on a busy machine, CPU s / threads estimates
the wall time an idle machine would give.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def synthetic_ct(shape: tuple[int, int, int], spacing: tuple[float, float, float]):
    """A body-like volume in HU with a RAS affine (MetaTensor ``(1, X, Y, Z)``)."""
    import torch
    from monai.data import MetaTensor

    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.4) ** 2 < 1
    spine = x**2 + (y + 0.45) ** 2 < 0.01
    plane = np.where(body, 40.0, -1000.0)
    plane[body & lungs] = -850.0
    plane[spine] = 700.0
    vol = np.repeat(plane[:, :, None], shape[2], axis=2).astype(np.float32)
    vol += np.random.default_rng(0).normal(0, 10, vol.shape).astype(np.float32)
    return MetaTensor(torch.from_numpy(vol[None]), affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))


def time_model(ref: str, device: str, variant: str | None, volume, repeats: int) -> dict:
    """Build the adapter (random weights), warm up once, then time ``repeats`` encodes."""
    import torch

    from ctbench.check_adapter import resolve_adapter

    cls = resolve_adapter(ref)
    kwargs = {"weights": "random", "device": device, **({"variant": variant} if variant else {})}
    t = time.perf_counter()
    enc = cls(**kwargs)
    build = time.perf_counter() - t
    if getattr(enc, "seed_columns", None) is not None:  # seed-conditioned (ctbench.seeds): seed at the centre
        from ctbench.seeds import attach_seed

        centre = np.asarray(volume.affine, dtype=float) @ np.r_[(np.asarray(volume.shape[1:]) - 1) / 2, 1.0]
        volume = attach_seed(volume.clone(), centre[:3])

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    shape = tuple(enc.preprocess(volume).shape[1:]) if hasattr(enc, "preprocess") else None
    enc.encode(volume)  # warm-up: allocator, kernels, lazy imports
    sync()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        enc.encode(volume)
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    prep = None
    if hasattr(enc, "preprocess"):
        t = time.perf_counter()
        enc.preprocess(volume)
        prep = time.perf_counter() - t
    return {"model": ref, "device": device, "build_s": build, "input": shape,
            "encode_s": float(np.mean(times)), "min_s": float(np.min(times)), "preprocess_s": prep,
            "cpu_s": float(np.mean(cpu))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", action="append", help="registered name or module:Class (repeatable)")
    p.add_argument("--variant", default=None, help="adapter variant (default: the adapter's own)")
    p.add_argument("--device", choices=["cpu", "cuda", "both"], default="both", help="'both' = CPU, then CUDA if present")
    p.add_argument("--shape", type=int, nargs=3, default=(256, 256, 128))
    p.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 2.5))
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from ctbench.registry import MODELS

    models = args.model or [n for n in MODELS.names() if not n.startswith("test-")]
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "both" and torch.cuda.is_available():
        devices.append("cuda")
    volume = synthetic_ct(tuple(args.shape), tuple(args.spacing))
    table = Table(title=f"encode time per volume (random weights, {torch.get_num_threads()} CPU threads, "
                        f"{os.cpu_count()} cores; volume {tuple(args.shape)} at {tuple(args.spacing)} mm)")
    for col in ("model", "device", "network input", "build s", "preprocess s", "encode s/volume", "min s",
                "CPU s/volume"):
        table.add_column(col)
    for dev in devices:
        for ref in models:
            r = time_model(ref, dev, args.variant, volume, args.repeats)
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            table.add_row(ref.split(":")[-1], dev, "x".join(map(str, r["input"])) if r["input"] else "?", fmt(r["build_s"]),
                          fmt(r["preprocess_s"]), fmt(r["encode_s"]), fmt(r["min_s"]), fmt(r["cpu_s"]))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
