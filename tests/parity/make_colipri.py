"""Regenerate ``fixtures/colipri.safetensors`` with the official COLIPRI code (the ``colipri``
package, Microsoft Health Futures, and the ``dynamic-network-architectures`` it builds the image
encoder from).

Run it with a Python environment holding the package's dependencies (torch, torchio, hydra-core,
omegaconf, transformers, accelerate, einops, jaxtyping, ``timm<1.0.23``, nibabel), never ctbench,
giving the folder that holds the ``colipri`` and ``dynamic_network_architectures`` packages (an
unpacked wheel or site-packages):

    python tests/parity/make_colipri.py /path/to/folder-with-colipri [--size test|full]

Everything below is the package's own code path:

1. ``colipri.get_model(pretrained=False, image_only=True, **overrides)`` instantiates the
   package's hydra config (no download, no text tower); ``full`` uses the config as shipped,
   ``test`` overrides it to ctbench's small size (48-d, 2 blocks, 4 heads, 16^3 patches,
   projection 24; input size and preprocessing unchanged). Its key list is the state dict's
   (``image_encoder.*`` and ``softmax_temperature``, the layout of the hub's ``model.safetensors``
   without the text tower) and the key-seeded state is loaded strictly;
2. the synthetic volume, padded with -1024 HU along two axes (so that ``CropOrPad`` both pads and
   crops, with odd differences), is written as NIfTI and read and transformed by
   ``colipri.get_processor(image_only=True).process_images`` (torchio: RAS, 2 mm linear
   resampling, clamp and rescale to [-1, 1], crop/pad to 192^3 with the minimum);
3. ``Model.encode_image`` gives the tokens (the backbone's patch embeddings) and
   ``encode_image(pool=True, project=True)`` the embedding, in fp32; the same in fp64 gives
   the noise floor. The network input (every 4th voxel), its affine, the embedding, all tokens,
   the key list and the run's facts are saved.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import (  # noqa: E402
    key_list,
    pad_volume,
    relative_error,
    seeded_state_dict,
    subsample,
    synthetic_volume,
    write_fixture,
    write_nifti,
)

NAME = "colipri"
PAD = ((0, 0), (1, 2), (60, 100))  # voxels of -1024 HU before / after each index axis
SIZES = {
    "full": {},
    "test": {
        "image_embed_dim": 48,
        "projection_dim": 24,
        "model.image_encoder.backbone.eva_depth": 2,
        "model.image_encoder.backbone.eva_numheads": 4,
        "model.image_encoder.backbone.patch_embed_size": "[16,16,16]",
    },
}
STEP = 4  # input subsampling
# tokens: ctbench stores them as float16 (relative rounding <= 2**-11), hence 1e-3
TOLERANCE = {"input": 1e-5, "embedding": 1e-5, "tokens": 1e-3, "affine": 1e-6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="folder holding the colipri and dynamic_network_architectures packages")
    ap.add_argument("--size", choices=sorted(SIZES), default="test")
    args = ap.parse_args()
    sys.path.insert(0, str(args.reference))

    import timm
    import torchio

    import colipri
    from colipri import get_model, get_processor

    model = get_model(pretrained=False, image_only=True, **SIZES[args.size]).eval()
    keys = key_list(model.state_dict())
    model.load_state_dict(seeded_state_dict(keys), strict=True)

    volume, affine = pad_volume(*synthetic_volume(), PAD, -1024.0)
    with tempfile.TemporaryDirectory() as tmp:
        (image,) = get_processor(image_only=True).process_images(str(write_nifti(Path(tmp) / "ct.nii.gz", volume, affine)))
    batch = get_processor(image_only=True).to_images_batch([image])  # (1, 1, 192, 192, 192)
    with torch.inference_mode():
        tokens = model.encode_image(batch)[0]
        emb = model.encode_image(batch, pool=True, project=True)[0]
        model64 = model.double()
        tokens64 = model64.encode_image(batch.double())[0]
        emb64 = model64.encode_image(batch.double(), pool=True, project=True)[0]
    for what, t in (("embedding", emb), ("tokens", tokens)):
        if not torch.isfinite(t).all() or float(t.std()) < 1e-3 * float(t.abs().max()):
            raise SystemExit(f"degenerate reference {what}: the seeded network must give varied finite outputs")
    noise = {"embedding": relative_error(emb, emb64), "tokens": relative_error(tokens, tokens64)}
    meta = {
        "reference": "colipri (huggingface.co/microsoft/colipri) with dynamic-network-architectures",
        "reference_version": colipri.__version__,
        "dynamic_network_architectures": metadata.version("dynamic-network-architectures")
        if _installed("dynamic-network-architectures") else "unpacked wheel",
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "overrides": SIZES[args.size],
        "preprocessing": "colipri processor: ToOrientation RAS, Resample 2 mm linear, Clamp(-1000, 1000), "
                         "RescaleIntensity -> [-1, 1], CropOrPad 192^3 (minimum)",
        "volume": {"pad": [list(p) for p in PAD], "pad_value": -1024.0},
        "input_step": STEP,
        "keys": keys,
        "tolerance": TOLERANCE,
        "fp32_vs_fp64": noise,
        "torch": torch.__version__,
        "torchio": torchio.__version__,
        "timm": timm.__version__,
        "layouts": {
            "input": f"(1, X, Y, Z) network input (RAS), every {STEP}th voxel",
            "input_affine": "4x4 index -> world (RAS) of the full network input",
            "embedding": "(P,) encode_image(pool=True, project=True)",
            "tokens": "(E, X', Y', Z') encode_image() patch embeddings",
        },
    }
    x = image.data.float()
    tensors = {
        "input": subsample(x, STEP),
        "input_affine": torch.as_tensor(np.asarray(image.affine), dtype=torch.float64),
        "embedding": emb,
        "tokens": tokens,
    }
    path = write_fixture(NAME, tensors, meta)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): input {tuple(x.shape)}, tokens "
          f"{tuple(tokens.shape)}; fp32 vs fp64 {noise}")


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
