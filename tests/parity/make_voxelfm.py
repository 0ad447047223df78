"""Regenerate ``fixtures/voxelfm.safetensors`` with the official VoxelFM code (rmaguado/VoxelFM).

Run it with a Python 3.12+ environment (the reference's inference package subscripts
``multiprocessing.queues.Queue`` at import) that holds the reference's dependencies (torch,
nibabel, einops, omegaconf, pydicom, SimpleITK), giving the path of a checkout of the reference:

    python tests/parity/make_voxelfm.py /path/to/VoxelFM [--size tiny|base]

It imports only the reference and ``parity_io`` (never ctbench), so the fixture is an
independent statement of what the reference computes:

1. the reference's backbone at the chosen size (``dinov2.models.build_model`` on the
   reference's ``ssl_default_config.yaml``, ``student`` section resized for ``tiny``) gives the
   official key list; key-seeded weights are saved in the released layout (``{"teacher":
   {"backbone.<key>": tensor}}``) and loaded back by the reference's own
   ``dinov2.inference.build_model`` (prefix stripping, strict load);
2. the synthetic volume is written as a NIfTI file with equal in-plane spacing (the reference's
   NIfTI loader asserts it) and run through ``dinov2.inference.extract_features`` with the
   evaluation pipeline's settings (foreground crop on, at most 25,000 tokens), which loads,
   crops, resamples, normalises and runs the forward pass;
3. the network input (caught by a forward pre-hook), the normalised CLS and the patch tokens
   are saved with the key list and the run's facts. The same forward in float64 gives the
   numerical noise floor that the suite's tolerance is set against.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import (  # noqa: E402
    checkout_commit,
    key_list,
    read_fixture,
    relative_error,
    seeded_state_dict,
    synthetic_volume,
    write_fixture,
    write_nifti,
)

NAME = "voxelfm"
SPACING = (1.3, 1.3, 2.5)  # equal in-plane spacing: the reference's NIfTI loader asserts it
MAX_PATCHES = 25_000  # the evaluation pipeline's token budget
SIZES = {"tiny": {"embed_dim": 48, "depth": 2, "num_heads": 2}, "base": {}}
# tokens: ctbench stores them as float16 (relative rounding <= 2**-11), hence 1e-3
TOLERANCE = {"input": 1e-6, "embedding": 1e-5, "tokens": 1e-3}
HEAD_KEY = "dino_head.mlp.0.bias"  # a head entry in the file, which loaders must drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="checkout of rmaguado/VoxelFM")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--sha", default=None, help="commit of the checkout (when it is not a git work tree)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.reference))

    from omegaconf import OmegaConf

    from dinov2.inference import build_model as load_reference
    from dinov2.inference import extract_features
    from dinov2.models import build_model

    torch.manual_seed(0)
    config = OmegaConf.load(args.reference / "dinov2" / "configs" / "ssl_default_config.yaml")
    for key, value in SIZES[args.size].items():
        config.student[key] = value

    _, teacher = build_model(config)
    keys = key_list({f"backbone.{k}": v for k, v in teacher.state_dict().items()})
    state = seeded_state_dict(keys)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "teacher_checkpoint.pth"
        torch.save({"teacher": {**state, HEAD_KEY: torch.zeros(4)}}, ckpt)
        model = load_reference(str(ckpt), config, device)
        volume, affine = synthetic_volume(spacing=SPACING)
        nifti = write_nifti(Path(tmp) / "ct.nii.gz", volume, affine)

        seen: dict[str, torch.Tensor] = {}
        hook = model.register_forward_pre_hook(lambda _m, a: seen.setdefault("input", a[0].detach().clone()))
        feats = extract_features(model, config, str(nifti), device, crop_background=True, max_patches=MAX_PATCHES)
        hook.remove()

    x = seen["input"][0]  # (D, H, W), normalised
    emb = feats.cls[0]  # (E,)
    tokens = feats.patch  # (d, h, w, E), the reference's layout
    for what, t in (("embedding", emb), ("tokens", tokens)):
        if not torch.isfinite(t).all() or float(t.std()) < 1e-3:
            raise SystemExit(f"degenerate reference {what}: the seeded network must give varied finite outputs")

    with torch.inference_mode():  # the same network in float64: the fp32 noise floor
        out64 = model.double()(x[None].double())
    d, h, w = tokens.shape[:3]
    noise = {
        "embedding": relative_error(emb, out64["x_norm_clstoken"][0]),
        "tokens": relative_error(tokens, out64["x_norm_patchtokens"][0].reshape(d, h, w, -1)),
    }
    meta = {
        "reference": "github.com/rmaguado/VoxelFM",
        "reference_version": args.sha or checkout_commit(args.reference),
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "student": OmegaConf.to_container(config.student),
        "datasets": OmegaConf.to_container(config.datasets),
        "pipeline": f"extract_features(crop_background=True, max_patches={MAX_PATCHES}) on a NIfTI file",
        "volume": {"spacing": list(SPACING), "affine": np.asarray(affine).tolist()},
        "checkpoint_layout": {"wrapper": "teacher", "extra_keys": [HEAD_KEY]},
        "keys": keys,
        "tolerance": TOLERANCE,
        "fp32_vs_fp64": noise,
        "torch": torch.__version__,
        "layouts": {"input": "(D, H, W) network input", "embedding": "(E,) x_norm_clstoken",
                    "tokens": "(d, h, w, E) x_norm_patchtokens"},
    }
    path = write_fixture(NAME, {"input": x, "embedding": emb, "tokens": tokens}, meta)
    tensors, _ = read_fixture(NAME)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): input {tuple(tensors['input'].shape)}, "
          f"tokens {tuple(tensors['tokens'].shape)}; fp32 vs fp64 {noise}")


if __name__ == "__main__":
    main()
