"""Regenerate ``fixtures/spectre.safetensors`` from the official SPECTRE package (``spectre-fm``).

Run with a Python environment that holds the official package and its dependencies (torch, timm,
numpy, huggingface_hub, transformers, loralib; nibabel and MONAI for its ``[inference]`` reader),
never ctbench:

    python tests/parity/make_spectre.py [VERSION]

What is official here:
- preprocessing: ``spectre.io.load_and_window`` on the synthetic volume written as an int16 NIfTI (load as
  RAS, HU window [-1000, 1000] -> [0, 1], pad short axes, centre crop to whole 128x128x64 crops,
  grid patch), at native spacing (the default), on a volume large enough for a 2 x 1 x 2 crop grid.
  Not covered: its resampling path (``spacing=...``), which fails in spectre-fm 0.2.1 with MONAI >= 1.0
  (``resample`` calls ``Spacing(...)(x, affine=...)``, a keyword MONAI 1.x no longer takes);
- network: ``spectre.model.SpectreImageFeatureExtractor`` whose backbone and combiner are the
  official ``VisionTransformer`` / ``FeatureVisionTransformer`` built with the preset kwargs
  (``spectre.presets.BACKBONE_KWARGS`` / ``COMBINER_KWARGS``) and the layer settings of
  ``vit_*_patch16_128`` / ``feat_vit_*``, at ctbench's ``test`` size (the official builders fix
  their widths), loaded strictly with key-seeded weights; its forward on the official crops gives
  the combiner output: row 0 = embedding, rows 1.. = one token per crop (C order over the grid).
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import key_list, seeded_state_dict, subsample, synthetic_volume, write_fixture  # noqa: E402

from spectre.io import load_and_window  # noqa: E402
from spectre.model import SpectreImageFeatureExtractor  # noqa: E402
from spectre.models import FeatureVisionTransformer, VisionTransformer  # noqa: E402
from spectre.presets import BACKBONE_KWARGS, COMBINER_KWARGS  # noqa: E402

# ctbench's "test" variant: backbone 48-d x 2 blocks x 2 heads, combiner 48-d x 1 block x 2 heads
TEST = {"embed_dim": 48, "depth": 2, "num_heads": 2, "combiner_dim": 48, "combiner_depth": 1, "combiner_heads": 2}
LARGE_SHAPE = (272, 140, 136)  # native spacing -> RAS (272, 140, 136) -> crops 2 x 1 x 2
TOLERANCE = {"input": 1e-6, "embedding": 1e-5, "tokens": 1e-3}  # tokens: fp16 storage in ctbench
SUBSAMPLE = 4


def write_int16_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """The volume rounded to int16 HU, as scanners store CT. (The official ``load_ct`` fails on
    a float32 NIfTI that is not RAS: ``as_closest_canonical`` returns a flipped view, which
    ``torch.from_numpy`` refuses; an integer file is converted, hence copied, by ``get_fdata``.)"""
    nib.save(nib.Nifti1Image(np.rint(volume).astype(np.int16), affine), str(path))
    return path


def official_network() -> nn.Module:
    """The official extractor with backbone + combiner at the test size."""
    model = SpectreImageFeatureExtractor.from_pretrained("spectre-small", pretrained=False)
    model.backbone = VisionTransformer(
        img_size=(128, 128, 64), patch_size=(16, 16, 8), embed_dim=TEST["embed_dim"], depth=TEST["depth"],
        num_heads=TEST["num_heads"], mlp_ratio=4, qkv_bias=True, norm_layer=nn.LayerNorm, **BACKBONE_KWARGS)
    model.feature_combiner = FeatureVisionTransformer(
        patch_dim=2 * TEST["embed_dim"], embed_dim=TEST["combiner_dim"], depth=TEST["combiner_depth"],
        num_heads=TEST["combiner_heads"], mlp_ratio=4, qkv_bias=True, norm_layer=nn.LayerNorm, **COMBINER_KWARGS)
    return model.eval()


def crops_to_volume(crops: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Official crops ``(N, 1, cH, cW, cD)`` back to the cropped volume ``(1, H, W, D)``."""
    n_h, n_w, n_d = grid
    c_h, c_w, c_d = crops.shape[2:]
    x = crops.reshape(n_h, n_w, n_d, 1, c_h, c_w, c_d).permute(3, 0, 4, 1, 5, 2, 6)
    return x.reshape(1, n_h * c_h, n_w * c_w, n_d * c_d)


def main(ref_version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vol, aff = synthetic_volume(shape=LARGE_SHAPE)
        crops, grid, _ = load_and_window(write_int16_nifti(Path(tmp) / "large.nii", vol, aff))
    assert tuple(grid) == (2, 1, 2), grid
    torch.manual_seed(0)
    net = official_network()
    keys = key_list(net.state_dict())
    net.load_state_dict(seeded_state_dict(keys), strict=True)
    with torch.no_grad():
        out = net(crops, grid_size=grid)
    embedding, tokens = out[0], out[1:]
    for name, t in (("embedding", embedding), ("tokens", tokens)):
        assert torch.isfinite(t).all() and float(t.std()) > 1e-3, f"degenerate {name}"
    assert float(tokens.std(dim=0).mean()) > 1e-3, "tokens do not differ between crops"
    print("official outputs:", tuple(embedding.shape), tuple(tokens.shape), "grid", grid)
    path = write_fixture("spectre", {
        "input": subsample(crops_to_volume(crops, grid), SUBSAMPLE),
        "embedding": embedding, "tokens": tokens,
    }, {
        "reference": "spectre-fm (github.com/cclaess/SPECTRE)", "reference_version": ref_version,
        "date": datetime.date.today().isoformat(), "tolerance": TOLERANCE,
        "config": TEST, "backbone_kwargs": BACKBONE_KWARGS, "combiner_kwargs": COMBINER_KWARGS,
        "preprocessing": {"hu_window": [-1000.0, 1000.0], "crop_size": [128, 128, 64], "orientation": "RAS",
                          "shape": LARGE_SHAPE, "spacing": "native", "grid": list(grid), "subsample": SUBSAMPLE},
        "torch": torch.__version__, "monai": version("monai"), "keys": keys,
        "tokens": "combiner rows 1.., one per crop, C order over the (nH, nW, nD) grid",
    })
    print("wrote", path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else version("spectre-fm"))
