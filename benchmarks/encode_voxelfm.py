"""VoxelFM backbone inference speed: volumes/s, peak memory and achieved TFLOP/s.

    python benchmarks/encode_voxelfm.py                    # CUDA: the MODELS.md table; CPU: small cases
    python benchmarks/encode_voxelfm.py --preset tiny --case 28x28x28:2 --time-cap 2
    python benchmarks/encode_voxelfm.py --compile          # torch.compile the backbone first

The backbone is built straight from ``voxelfm/model.py`` (random weights, random input tensors:
the architecture, not the checkpoint, sets the cost), loaded as a private package so neither
ctbench nor MONAI is needed: torch alone runs it. On CUDA it runs under bf16 autocast (``--fp32``
to disable) with SDPA attention, measures the card's bf16 matmul rate (8192^3) to report % of
peak, and the relative error of the bf16 CLS against fp32. Forward FLOPs per volume with ``N``
patch tokens: ``depth * (24 N E^2 + 4 N^2 E) + 2 N p^3 E`` (MODELS.md; 31 TFLOP at N = 24,986).
"""

from __future__ import annotations

import argparse
import importlib
import math
import resource
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_CASES = ["112x112x112:16", "224x224x224:2", "336x336x280:1", "434x434x364:1"]
CPU_CASES = ["112x112x112:2", "224x224x224:1"]
PRESETS = {  # (embed_dim, depth, num_heads) as in voxelfm.config.PRESETS
    "base": (864, 12, 12),
    "tiny": (48, 2, 2),
}


def forward_flops(n_tokens: int, embed_dim: int = 864, depth: int = 12, patch: int = 14) -> float:
    """Forward FLOPs of one volume with ``n_tokens`` patch tokens (multiply-add = 2 FLOPs)."""
    n, e = float(n_tokens), float(embed_dim)
    return depth * (24 * n * e * e + 4 * n * n * e) + 2 * n * patch**3 * e


def backbone_module():
    """``voxelfm/model.py`` (+ config, rope) imported as the private package ``_voxelfm_light``,
    so that ``voxelfm/__init__.py`` (which needs ctbench) is never run."""
    name = "_voxelfm_light"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ROOT / "voxelfm")]  # type: ignore[attr-defined]
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.model"), importlib.import_module(f"{name}.config")


def build(preset: str, device: torch.device):
    model_mod, config_mod = backbone_module()
    e, d, h = PRESETS[preset]
    cfg = config_mod.VoxelFMConfig(embed_dim=e, depth=d, num_heads=h)
    torch.manual_seed(0)
    return model_mod.VoxelFM(cfg).eval().requires_grad_(False).to(device), cfg


def parse_case(text: str) -> tuple[tuple[int, int, int], int]:
    shape, _, batch = text.partition(":")
    dims = tuple(int(v) for v in shape.lower().split("x"))
    if len(dims) == 1:
        dims = dims * 3
    if len(dims) != 3:
        raise SystemExit(f"bad --case {text!r}: use DxHxW:BATCH, e.g. 224x224x224:2")
    return dims, int(batch or 1)  # type: ignore[return-value]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """Achieved TFLOP/s of an ``n^3`` matrix product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def cls_relative_error(model, x: torch.Tensor, layerscale: float | None = None) -> float:
    """``||cls_bf16 - cls_fp32|| / ||cls_fp32||`` (fp32 with TF32 off). With ``layerscale``
    every LayerScale gamma is set to it for the measurement (the init value 1e-5 leaves the
    residual stream almost untouched by the blocks; trained gammas are far larger)."""
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    saved = [g.detach().clone() for g in gammas]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            if layerscale is not None:
                for g in gammas:
                    g.fill_(layerscale)
            ref = model(x)["cls"].float()
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                low = model(x)["cls"].float()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        with torch.no_grad():
            for g, v in zip(gammas, saved):
                g.copy_(v)
    return float((low - ref).norm() / ref.norm())


def time_case(run, x: torch.Tensor, device: torch.device, time_cap: float, repeats: int) -> tuple[float, int]:
    """(seconds per forward, timed forwards): one warm-up, then up to ``repeats`` forwards within
    ``time_cap`` s (the warm-up itself counts when it alone exceeds the cap)."""
    t = time.perf_counter()
    run(x)
    _sync(device)
    warm = time.perf_counter() - t
    if warm >= time_cap:
        return warm, 1
    n, t = 0, time.perf_counter()
    while n < repeats and (n == 0 or time.perf_counter() - t < time_cap):
        run(x)
        n += 1
    _sync(device)
    return (time.perf_counter() - t) / n, n


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable; default base (+ tiny on CPU)")
    ap.add_argument("--case", action="append", help="DxHxW:BATCH, repeatable")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--time-cap", type=float, default=None, help="seconds per case (default 10 on CUDA, 20 on CPU)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    args = ap.parse_args(argv)

    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = dev.type == "cuda"
    presets = args.preset or (["base"] if cuda else ["tiny", "base"])
    cases = [parse_case(c) for c in (args.case or (GPU_CASES if cuda else CPU_CASES))]
    cap = args.time_cap if args.time_cap is not None else (10.0 if cuda else 20.0)
    bf16 = cuda and not args.fp32
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    peak = matmul_tflops(dev, 8192, torch.bfloat16) if cuda else matmul_tflops(dev, 1024, torch.float32, 3)
    peak_label = "bf16 8192^3" if cuda else "fp32 1024^3"
    print(f"device: {name}; torch {torch.__version__}; matmul {peak_label}: {peak:.2f} TFLOP/s\n")

    rows = []
    for preset in presets:
        model, cfg = build(preset, dev)
        run_model = torch.compile(model) if args.compile else model

        def run(x: torch.Tensor):
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                return run_model(x)

        for shape, batch in cases:
            n_tok = math.prod(s // cfg.patch_size for s in shape)
            crop = tuple(s - s % cfg.patch_size for s in shape)
            x = torch.randn(batch, *crop, device=dev)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                sec, n = time_case(run, x, dev, cap, args.repeats)
            except torch.cuda.OutOfMemoryError:
                rows.append({"preset": preset, "shape": shape, "batch": batch, "tokens": n_tok, "error": "OOM"})
                continue
            mem = (torch.cuda.max_memory_allocated(dev) if cuda else
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
            tflops = forward_flops(n_tok, cfg.embed_dim, cfg.depth, cfg.patch_size) * batch / sec / 1e12
            row = {"preset": preset, "shape": shape, "batch": batch, "tokens": n_tok, "vol_s": batch / sec,
                   "s_per_vol": sec / batch, "mem_gib": mem, "tflops": tflops, "pct_peak": 100 * tflops / peak,
                   "timed": n, "dtype": "bf16" if bf16 else "fp32"}
            if cuda and not args.fp32:
                row["cls_rel_err"] = cls_relative_error(model, x[:1])
                row["cls_rel_err_ls"] = cls_relative_error(model, x[:1], layerscale=0.1)
            rows.append(row)
        del model, run_model
    print_table(rows, "peak GPU memory" if cuda else "process peak RSS", peak_label)
    return rows


def print_table(rows: list[dict], mem_label: str, peak_label: str) -> None:
    err = any("cls_rel_err" in r for r in rows)
    head = ["model", "input", "batch", "tokens", "compute", "vol/s", "s/vol", f"{mem_label} (GiB)", "TFLOP/s",
            f"% of {peak_label}"] + (["CLS rel. err bf16/fp32 (init)", "(LayerScale 0.1)"] if err else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        if "error" in r:
            print(f"| {r['preset']} | {shape} | {r['batch']} | {r['tokens']:,} | {r['error']} |")
            continue
        cells = [r["preset"], shape, str(r["batch"]), f"{r['tokens']:,}", r["dtype"], f"{r['vol_s']:.3g}",
                 f"{r['s_per_vol']:.3g}", f"{r['mem_gib']:.2f}", f"{r['tflops']:.3g}", f"{r['pct_peak']:.1f}"]
        if err:
            cells += [f"{r[k]:.2e}" if k in r else "" for k in ("cls_rel_err", "cls_rel_err_ls")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
