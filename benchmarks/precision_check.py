"""How far bf16 autocast moves each adapter's features from fp32 on the same volumes.

For every adapter, the same synthetic CT volumes are encoded twice, ``--precision fp32`` and
``bf16``, with the same weights; printed per model: the embedding cosine (lowest over the
volumes), the largest relative difference of embeddings and of tokens (max |bf16 - fp32| /
max |fp32|), seconds per volume in each precision, and for CT-CLIP the share of tokens whose
codebook row changes. The real numbers need a GPU and the published variants::

    python benchmarks/precision_check.py --device cuda --full --weights auto   # or random

On a machine without a GPU it runs the small test variants with random weights under CPU bf16
autocast (``--device cpu``, the default there), which shows the script works, not what bf16
does to the published models.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

MODELS = {"voxelfm": "tiny", "merlin": "test", "ct-clip": "test", "m3d": "test", "radfm": "test", "ct-fm": "test"}
PUBLISHED = {"voxelfm": "base", "merlin": "full", "ct-clip": "full", "m3d": "full", "radfm": "full", "ct-fm": "full"}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-12))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _encode(enc, volumes) -> tuple[list, float]:
    import torch

    enc.encode(volumes[0])  # warm-up (kernels, autotuning) outside the timing
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    feats = [enc.encode(v) for v in volumes]
    if enc.device.type == "cuda":
        torch.cuda.synchronize()
    return feats, (time.perf_counter() - start) / len(volumes)


def _codebook_changes(enc_fp32, enc_bf16, volumes) -> float:
    """Share of CT-CLIP tokens whose codebook row differs between fp32 and bf16 forwards."""
    from ctbench.adapters._common import run_batch

    def rows(enc, v):
        vt = enc.model.visual_transformer
        return run_batch(lambda x: vt.vq.indices(vt.encode(x)), [enc.preprocess(v)], enc.device, enc.autocast)

    changed = [float((rows(enc_fp32, v) != rows(enc_bf16, v)).float().mean()) for v in volumes]
    return float(np.mean(changed))


def check(name: str, variant: str, weights: str, device: str, volumes) -> dict:
    from ctbench.runner import build_encoder

    encs = {p: build_encoder(name, weights, device, variant, p) for p in ("fp32", "bf16")}
    (f32, t32), (f16, t16) = (_encode(encs[p], volumes) for p in ("fp32", "bf16"))
    row = {
        "model": f"{name}-{variant}",
        "emb_cos_min": min(_cos(a.embedding, b.embedding) for a, b in zip(f16, f32)),
        "emb_rel_max": max(_rel(a.embedding, b.embedding) for a, b in zip(f16, f32)),
        "tok_rel_max": max(_rel(a.tokens, b.tokens) for a, b in zip(f16, f32) if a.tokens is not None),
        "s_fp32": t32, "s_bf16": t16,
        "codebook_changed": _codebook_changes(encs["fp32"], encs["bf16"], volumes) if name == "ct-clip" else None,
    }
    return row


def main() -> None:
    import torch

    from ctbench.check_adapter import probe_volumes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--full", action="store_true", help="the published variants (GPU sized)")
    ap.add_argument("--weights", default="random", help="random | auto (published variants only) | PATH")
    args = ap.parse_args()
    torch.manual_seed(0)
    volumes = list(probe_volumes()[:2])
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"torch {torch.__version__}, {len(volumes)} volumes, weights {args.weights}")
    print(f"{'model':<16} {'emb cos min':>12} {'emb rel max':>12} {'tok rel max':>12} {'s/vol fp32':>11} "
          f"{'s/vol bf16':>11} {'codebook rows changed':>22}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        variant = (PUBLISHED if args.full else MODELS)[name]
        r = check(name, variant, args.weights, args.device, volumes)
        cb = "-" if r["codebook_changed"] is None else f"{100 * r['codebook_changed']:.2f}%"
        print(f"{r['model']:<16} {r['emb_cos_min']:>12.6f} {r['emb_rel_max']:>12.2e} {r['tok_rel_max']:>12.2e} "
              f"{r['s_fp32']:>11.3f} {r['s_bf16']:>11.3f} {cb:>22}", flush=True)


if __name__ == "__main__":
    main()
