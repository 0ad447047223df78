"""End-to-end feature extraction throughput against encoder-only throughput, same volumes.

    python benchmarks/extract_pipeline.py                         # voxelfm on 16 phantom volumes
    python benchmarks/extract_pipeline.py -m voxelfm --variant tiny -n 24 --workers 0 1 2

Stages timed one by one in the main process (where the time goes):
  hash (content sha256), read (file -> canonical volume), prepare (the adapter's preprocessing),
  encode (network forward on prepared inputs, batched), write (cache file).
Then ``ctbench.extract.extract`` end to end into an empty cache (read + preprocess in DataLoader
workers overlapping the encoder, batching, cache writes), once per worker count.
The ratio end-to-end / encoder-only is the figure of merit (1.0 = preprocessing fully hidden).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default="voxelfm")
    p.add_argument("--variant", default=None)
    p.add_argument("-n", "--volumes", type=int, default=16, help="phantom volumes to use")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="*", default=None, help="worker counts (default: 0 and the default)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import os

    import torch

    from ctbench.cache import FeatureCache, content_hash
    from ctbench.datasets import load_dataset_folder
    from ctbench.extract import _encoders, default_workers, extract
    from ctbench.phantom import generate_phantom
    from ctbench.readers import read_volume
    from ctbench.runner import build_encoder, pick_device

    device = pick_device(args.device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    scratch = Path(tempfile.mkdtemp(prefix="ctbench-pipeline-"))
    os.environ["CTBENCH_HOME"] = str(scratch / "home")
    folder = generate_phantom(scratch / "data", n_patients=max(3, args.volumes), seed=0)
    ds = load_dataset_folder(folder)
    cases = ds.manifest.head(args.volumes)
    enc = build_encoder(args.model, "random", device, args.variant)
    prepare, encode_many = _encoders(enc)
    paths = [ds.resolve(i) for i in cases["image"]]

    def timed(fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t

    _, t_hash = timed(lambda: [content_hash(q) for q in paths])
    vols, t_read = timed(lambda: [read_volume(q) for q in paths])
    items = vols
    t_prep = 0.0
    if prepare is not None:
        items, t_prep = timed(lambda: [prepare(v) for v in vols])
    encode_many(items[:1])  # warm-up
    bs = args.batch_size
    feats, t_enc = timed(lambda: sum((encode_many(items[i:i + bs]) for i in range(0, len(items), bs)), []))
    cache = FeatureCache("bench", "random", "x", root=scratch / "stage-cache")
    _, t_write = timed(lambda: [cache.put(f"{i:064x}", f) for i, f in enumerate(feats)])

    n = len(paths)
    rows = [("hash", t_hash), ("read", t_read), ("prepare (in workers)" if prepare else "prepare (inside encode)", t_prep),
            ("encode" + ("" if prepare else " incl. preprocessing"), t_enc), ("cache write", t_write)]
    print(f"\n{args.model}{'-' + args.variant if args.variant else ''} on {device}, {n} phantom volumes, "
          f"batch {bs}, {torch.get_num_threads()} threads, {os.cpu_count()} cores\n")
    print("| stage | s total | ms/volume |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} | {1000 * t / n:.0f} |")
    enc_only = n / t_enc
    print(f"\nencoder-only: {enc_only:.2f} volumes/s\n")
    print("| workers | end-to-end volumes/s | end-to-end / encoder-only |\n|---|---|---|")
    for w in args.workers if args.workers is not None else sorted({0, default_workers(device)}):
        home = scratch / f"home-w{w}"
        os.environ["CTBENCH_HOME"] = str(home)
        _, t = timed(lambda: extract(enc, args.model, ds, cases, batch_size=bs, workers=w, load=False))
        print(f"| {w} | {n / t:.2f} | {n / t / enc_only:.2f} |")


if __name__ == "__main__":
    main()
