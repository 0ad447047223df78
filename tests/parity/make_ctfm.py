"""Regenerate ``fixtures/ctfm.safetensors`` with the official CT-FM code (project-lighter/CT-FM:
the ``lighter-zoo`` package's ``SegResEncoder``, which the hub's feature extractor is built with).

Run it with a Python environment holding torch, MONAI, nibabel and ``lighter-zoo``, giving the
folder that holds the ``lighter_zoo`` package (an unpacked wheel or site-packages):

    python tests/parity/make_ctfm.py /path/to/folder-with-lighter_zoo [--size test|full]

It imports only the reference, MONAI and ``parity_io`` (never ctbench):

1. ``lighter_zoo.SegResEncoder`` is built as the hub config says (``spatial_dims=3,
   in_channels=1``, ``init_filters`` 32 and ``blocks_down`` (1, 2, 2, 4, 4) for ``full``; 8 and
   (1, 1, 1, 1, 1) for the small ``test`` size the suite uses); its key list is the hub file's
   (``model.safetensors``, unprefixed) and the key-seeded state is loaded strictly;
2. the synthetic volume, padded on five sides with -1024 HU (as outside a scanner's field of
   view) so that the foreground crop has something to remove, is written as NIfTI and
   preprocessed as the feature extractor's model card does (MONAI:
   ``LoadImage(ensure_channel_first=True)``, ``EnsureType()``,
   ``Orientation(axcodes="SPL")``, ``ScaleIntensityRange(a_min=-1024, a_max=2048, b_min=0,
   b_max=1, clip=True)``, ``CropForeground()``); the card gives this pipeline as code to run,
   not as a function of the package, so its transforms are built here with the card's arguments;
3. the forward is the card's: the last of the encoder's feature maps, averaged
   (``adaptive_avg_pool3d(output, 1)``) for the embedding. The network input, its affine, the
   embedding, the last map, the key list and the run's facts are saved; the same forward in
   float64 gives the noise floor.
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
    synthetic_volume,
    write_fixture,
    write_nifti,
)

NAME = "ctfm"
PAD = ((3, 5), (0, 4), (2, 0))  # voxels of -1024 HU before / after each index axis
SIZES = {"full": (32, (1, 2, 2, 4, 4)), "test": (8, (1, 1, 1, 1, 1))}
# tokens: ctbench stores them as float16 (relative rounding <= 2**-11), hence 1e-3
TOLERANCE = {"input": 1e-6, "embedding": 1e-5, "tokens": 1e-3, "affine": 1e-6}


def card_preprocessing():
    """The feature extractor model card's MONAI pipeline, with the card's arguments."""
    from monai.transforms import Compose, CropForeground, EnsureType, LoadImage, Orientation, ScaleIntensityRange

    return Compose([
        LoadImage(ensure_channel_first=True),
        EnsureType(),
        Orientation(axcodes="SPL"),
        ScaleIntensityRange(a_min=-1024, a_max=2048, b_min=0, b_max=1, clip=True),
        CropForeground(),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="folder holding the lighter_zoo package")
    ap.add_argument("--size", choices=sorted(SIZES), default="test")
    ap.add_argument("--version", default=None, help="lighter-zoo version (default: the installed one)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.reference))

    import monai

    from lighter_zoo import SegResEncoder

    init_filters, blocks_down = SIZES[args.size]
    model = SegResEncoder(spatial_dims=3, in_channels=1, init_filters=init_filters, blocks_down=blocks_down)
    keys = key_list(model.state_dict())
    model.load_state_dict(seeded_state_dict(keys), strict=True)
    model.eval()

    volume, affine = pad_volume(*synthetic_volume(), PAD, -1024.0)
    with tempfile.TemporaryDirectory() as tmp:
        image = card_preprocessing()(str(write_nifti(Path(tmp) / "ct.nii.gz", volume, affine)))
    x = image.as_tensor().float()  # (1, S, P, L)
    with torch.inference_mode():
        last = model(x[None])[-1]
        emb = torch.nn.functional.adaptive_avg_pool3d(last, 1).reshape(-1)
        last64 = model.double()(x[None].double())[-1]
    tokens = last[0]
    for what, t in (("embedding", emb), ("tokens", tokens)):
        if not torch.isfinite(t).all() or float(t.std()) < 1e-3 * float(t.abs().max()):
            raise SystemExit(f"degenerate reference {what}: the seeded network must give varied finite outputs")
    emb64 = last64.mean(dim=(2, 3, 4)).reshape(-1)
    noise = {"embedding": relative_error(emb, emb64), "tokens": relative_error(tokens, last64[0])}
    meta = {
        "reference": "lighter-zoo SegResEncoder (github.com/project-lighter/CT-FM)",
        "reference_version": args.version or metadata.version("lighter-zoo"),
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "init_filters": init_filters,
        "blocks_down": list(blocks_down),
        "preprocessing": "feature extractor model card: LoadImage, EnsureType, Orientation SPL, "
                         "ScaleIntensityRange(-1024, 2048 -> 0, 1, clip), CropForeground",
        "volume": {"pad": [list(p) for p in PAD], "pad_value": -1024.0},
        "keys": keys,
        "tolerance": TOLERANCE,
        "fp32_vs_fp64": noise,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "layouts": {
            "input": "(1, S, P, L) network input",
            "input_affine": "4x4 index -> world (RAS) of the input",
            "embedding": "(C,) adaptive_avg_pool3d of the last map",
            "tokens": "(C, S', P', L') last feature map",
        },
    }
    tensors = {
        "input": x,
        "input_affine": torch.as_tensor(np.asarray(image.affine), dtype=torch.float64),
        "embedding": emb,
        "tokens": tokens,
    }
    path = write_fixture(NAME, tensors, meta)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): input {tuple(x.shape)}, tokens "
          f"{tuple(tokens.shape)}; fp32 vs fp64 {noise}")


if __name__ == "__main__":
    main()
