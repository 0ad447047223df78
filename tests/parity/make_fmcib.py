"""Regenerate ``fixtures/fmcib.safetensors`` with the official FMCIB code (the
``foundation-cancer-image-biomarker`` package, github.com/AIM-Harvard/foundation-cancer-image-biomarker).

Run it with a Python environment holding torch, MONAI, itk, loguru, wget, torchvision and nibabel,
giving the folder that holds the ``fmcib`` package (an unpacked wheel or site-packages; the
package's own pins cannot be installed beside a current torch, so it is put on the path as is):

    python tests/parity/make_fmcib.py /path/to/folder-with-fmcib [--size test|full]

It imports only the reference, MONAI and ``parity_io`` (never ctbench):

1. the trunk is built with the keywords of ``fmcib.models.fmcib_model`` / ``fmcib.run.get_features``
   (``n_input_channels=1, widen_factor=2, conv1_t_stride=2, feed_forward=False,
   bias_downsample=True``): ``monai.networks.nets.resnet50`` for ``full``; the same MONAI ``ResNet``
   with one bottleneck block per stage and ``widen_factor=0.125`` for the small ``test`` size the
   suite uses. The key-seeded state is saved as ``{"trunk_state_dict": ...}`` and loaded by the
   official ``fmcib.models.LoadModel`` (checked afterwards to have taken every tensor);
2. the synthetic volume is written as NIfTI and preprocessed by the official
   ``fmcib.preprocessing.get_transforms()`` (ITKReader, NormalizeIntensity (-1024, 3072), 1 mm
   diagonal Spacing, LPS, ``SeedBasedPatchCropd`` around the seed given in LPS world mm as the
   package expects, transpose, pad to 50^3);
3. the forward is ``LoadModel``'s (the pooled 4096-d feature, or the small size's); the layer4 map
   is taken with a forward hook on the official trunk. The network input, the embedding, the map,
   the key list, the seed and the run's facts are saved; the same forward in float64 gives the
   noise floor.
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
    relative_error,
    seeded_state_dict,
    synthetic_volume,
    write_fixture,
    write_nifti,
)

NAME = "fmcib"
SIZES = {"full": ((3, 4, 6, 3), 2.0), "test": ((1, 1, 1, 1), 0.125)}
# a seed near the dense sphere, at a fractional voxel index (exercises the official int() truncation);
# the 50 mm cube reaches past the image on several sides (exercises the clamp and the symmetric pad)
SEED_INDEX = (17.3, 24.6, 20.2)
# tokens: ctbench stores them as float16 (relative rounding <= 2**-11), hence 1e-3
TOLERANCE = {"input": 1e-6, "embedding": 1e-5, "tokens": 1e-3}
OFFICIAL_KWARGS = dict(n_input_channels=1, conv1_t_stride=2, feed_forward=False, bias_downsample=True)


def build_trunk(size: str) -> torch.nn.Module:
    from monai.networks.nets import ResNet, resnet50
    from monai.networks.nets.resnet import get_inplanes

    layers, widen = SIZES[size]
    if size == "full":
        return resnet50(pretrained=False, widen_factor=widen, **OFFICIAL_KWARGS)
    return ResNet(block="bottleneck", layers=list(layers), block_inplanes=get_inplanes(), spatial_dims=3,
                  widen_factor=widen, **OFFICIAL_KWARGS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="folder holding the fmcib package")
    ap.add_argument("--size", choices=sorted(SIZES), default="test")
    ap.add_argument("--version", default=None, help="package version (default: fmcib.__version__)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.reference))

    import itk
    import monai

    import fmcib
    from fmcib.models import LoadModel
    from fmcib.preprocessing import get_transforms

    trunk = build_trunk(args.size)
    keys = key_list(trunk.state_dict())
    state = seeded_state_dict(keys)
    volume, affine = synthetic_volume()
    seed_ras = (affine @ np.r_[SEED_INDEX, 1.0])[:3]
    seed_lps = (-seed_ras[0], -seed_ras[1], seed_ras[2])  # the package takes ITK's LPS world mm
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model_weights.torch"
        torch.save({"trunk_state_dict": state}, weights)
        model = LoadModel(trunk=trunk, weights_path=str(weights), heads=[])
        loaded = model.trunk.state_dict()
        if set(loaded) != set(state) or not all(torch.equal(loaded[k], state[k]) for k in state):
            raise SystemExit("LoadModel did not load every seeded tensor")
        image = str(write_nifti(Path(tmp) / "ct.nii.gz", volume, affine))
        row = {"image_path": image, "coordX": float(seed_lps[0]), "coordY": float(seed_lps[1]),
               "coordZ": float(seed_lps[2])}
        x = get_transforms()(row).float()  # (1, 50, 50, 50)
    model.eval()
    grids: list = []
    model.trunk.layer4.register_forward_hook(lambda m, i, out: grids.append(out))
    with torch.inference_mode():
        emb = model(x[None])[0]
        emb64 = model.double()(x[None].double())[0]
    tokens, tokens64 = grids[0][0], grids[1][0]
    for what, t in (("embedding", emb), ("tokens", tokens)):
        if not torch.isfinite(t).all() or float(t.std()) < 1e-3 * float(t.abs().max()):
            raise SystemExit(f"degenerate reference {what}: the seeded network must give varied finite outputs")
    noise = {"embedding": relative_error(emb, emb64), "tokens": relative_error(tokens, tokens64)}
    layers, widen = SIZES[args.size]
    meta = {
        "reference": "foundation-cancer-image-biomarker (github.com/AIM-Harvard/foundation-cancer-image-biomarker)",
        "reference_version": args.version or getattr(fmcib, "__version__", None) or metadata.version(
            "foundation-cancer-image-biomarker"),
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "layers": list(layers),
        "widen_factor": widen,
        "checkpoint_layout": "torch.save({'trunk_state_dict': trunk.state_dict()}) loaded by fmcib.models.LoadModel",
        "preprocessing": "fmcib.preprocessing.get_transforms() (ITKReader, NormalizeIntensity(-1024, 3072), "
                         "Spacing 1 mm linear align_corners diagonal, Orientation LPS, SeedBasedPatchCropd 50^3 "
                         "LPS global coordinates, Transpose (0, 3, 2, 1), SpatialPad 50^3)",
        "seed_index": list(SEED_INDEX),
        "seed_ras_mm": [float(v) for v in seed_ras],
        "seed_lps_mm": [float(v) for v in seed_lps],
        "keys": keys,
        "tolerance": TOLERANCE,
        "fp32_vs_fp64": noise,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "itk": itk.Version.GetITKVersion(),
        "layouts": {
            "input": "(1, S, P, L) network input, 50^3",
            "embedding": "(C,) LoadModel output: global average of layer4",
            "tokens": "(C, S', P', L') layer4 map",
        },
    }
    path = write_fixture(NAME, {"input": x[0:1], "embedding": emb, "tokens": tokens}, meta)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): input {tuple(x.shape)}, tokens "
          f"{tuple(tokens.shape)}; fp32 vs fp64 {noise}")


if __name__ == "__main__":
    main()
