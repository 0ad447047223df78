"""Regenerate ``fixtures/merlin.safetensors`` with the official Merlin code (StanfordMIMI/Merlin,
PyPI ``merlin-vlm``).

Run it with a Python environment where ``pip install merlin-vlm`` succeeded, giving the folder
that holds the reference's ``merlin`` package (a checkout or site-packages):

    python tests/parity/make_merlin.py /path/to/folder-with-merlin [--size small|full] [--version V]

It imports only the reference and ``parity_io`` (never ctbench):

1. the image encoder is the reference's ``merlin.models.build.ImageEncoder`` (I3ResNet inflated
   from a torchvision ResNet, ``class_nb=1692``, ``conv_class=True``, ``ImageEmbedding`` mode).
   It asks torchvision for an ImageNet ResNet-152; its weights are replaced by the key-seeded
   state anyway, so the template is built without weights (no download): ResNet-152 for
   ``--size full``, and for ``small`` (the default, what the suite runs: seeding and loading
   122 M parameters takes too long there) torchvision's ``ResNet(Bottleneck, [1, 1, 1, 1])``,
   the same widths and heads with one bottleneck per stage (the adapter's ``small`` variant).
   The seeded state is keyed as the released checkpoint (``encode_image.i3_resnet.*``) and
   loaded strictly into the encoder after dropping ``encode_image.``, as the reference's
   ``Merlin`` loader does when it loads the whole CLIP model;
2. the synthetic volume is written as NIfTI and run through the reference's
   ``merlin.data.monai_transforms.ImageTransforms`` (RAS, 1.5 x 1.5 x 3 mm, HU [-1000, 1000] ->
   [0, 1], pad + centre crop to 224 x 224 x 160);
3. the network on the native 224 x 224 x 160 input takes seconds per volume on two CPU cores
   (~10 s at full size), too slow for the suite, so the reference forward runs on the central
   64 x 64 x 32 box of that input: the network is fully convolutional with a global average pool, and for a volume that
   fits the box (checked) the box equals the adapter's own pad + centre crop at
   ``input_size=(64, 64, 32)`` (both sizes are even, so the margins agree voxel for voxel).
   The official ``ImageEmbedding`` output (2048-d mean of layer4) and the layer4 map (forward
   hook) are saved with the preprocessed input (every 4th voxel), its affine, the network input,
   the key list and the run's facts. The same forward in float64 gives the noise floor.
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
    subsample,
    synthetic_volume,
    write_fixture,
    write_nifti,
)

NAME = "merlin"
PREFIX = "encode_image."  # the released CLIP checkpoint nests the image encoder here
EXTRA_KEYS = ("logit_scale",)  # a non-image entry of the released file, which loaders must drop
NATIVE = (224, 224, 160)
NET_SIZE = (64, 64, 32)  # even, multiples of the (32, 32, 16) strides
STEP = 4  # subsampling of the stored 224 x 224 x 160 input
# tokens: ctbench stores them as float16 (relative rounding <= 2**-11), hence 1e-3
TOLERANCE = {"input": 1e-6, "embedding": 1e-5, "tokens": 1e-3, "affine": 1e-6}


def image_encoder(size: str):
    """The reference's ``ImageEncoder(ImageEmbedding=True)``, its ResNet template built without
    downloading ImageNet weights (every weight is overwritten by the seeded state)."""
    import torchvision
    from torchvision.models.resnet import Bottleneck, ResNet

    from merlin.models import build

    resnet152 = torchvision.models.resnet152
    template = {"full": lambda: resnet152(weights=None), "small": lambda: ResNet(Bottleneck, [1, 1, 1, 1])}[size]
    torchvision.models.resnet152 = lambda *a, **k: template()
    try:
        return build.ImageEncoder(ImageEmbedding=True)
    finally:
        torchvision.models.resnet152 = resnet152


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="folder holding the reference's merlin package")
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--version", default=None, help="package version or commit (default: installed merlin-vlm)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.reference))

    import monai

    from merlin.data.monai_transforms import ImageTransforms

    torch.manual_seed(0)
    encoder = image_encoder(args.size)
    keys = key_list({PREFIX + k: v for k, v in encoder.state_dict().items()})
    state = seeded_state_dict(keys)
    encoder.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()}, strict=True)
    encoder.eval()

    volume, affine = synthetic_volume()
    with tempfile.TemporaryDirectory() as tmp:
        nifti = write_nifti(Path(tmp) / "ct.nii.gz", volume, affine)
        image = ImageTransforms({"image": str(nifti)})["image"]  # (1, 224, 224, 160) MetaTensor
    full = image.as_tensor().float()
    assert tuple(full.shape) == (1, *NATIVE), full.shape
    # the volume must fit the reduced box, so that its centre crop is the adapter's pad + crop
    inside = (full[0] != 0).nonzero()
    lo = [(n - s) // 2 for n, s in zip(NATIVE, NET_SIZE)]
    first, last = torch.tensor(lo), torch.tensor(lo) + torch.tensor(NET_SIZE)
    if (inside.min(0).values < first).any() or (inside.max(0).values >= last).any():
        raise SystemExit(f"the preprocessed volume does not fit the central {NET_SIZE} box")
    net_input = full[:, lo[0] : lo[0] + NET_SIZE[0], lo[1] : lo[1] + NET_SIZE[1], lo[2] : lo[2] + NET_SIZE[2]]

    seen: dict[str, torch.Tensor] = {}
    hook = encoder.i3_resnet.layer4.register_forward_hook(lambda _m, _a, out: seen.__setitem__("layer4", out))
    with torch.inference_mode():
        emb = encoder(net_input[None]).reshape(-1)  # ImageEmbedding: mean of layer4, (2048,)
    hook.remove()
    tokens = seen["layer4"][0]  # (2048, Z', X', Y'): the network's depth-first layout
    for what, t in (("embedding", emb), ("tokens", tokens)):
        if not torch.isfinite(t).all() or float(t.std()) < 1e-3 * float(t.abs().max()):
            raise SystemExit(f"degenerate reference {what}: the seeded network must give varied finite outputs")

    with torch.inference_mode():
        hook = encoder.i3_resnet.layer4.register_forward_hook(lambda _m, _a, out: seen.__setitem__("l64", out))
        emb64 = encoder.double()(net_input[None].double()).reshape(-1)
        hook.remove()
    noise = {"embedding": relative_error(emb, emb64), "tokens": relative_error(tokens, seen["l64"][0])}
    version = args.version or metadata.version("merlin-vlm")
    meta = {
        "reference": "merlin-vlm (github.com/StanfordMIMI/Merlin)",
        "reference_version": version,
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "builder": "merlin.models.build.ImageEncoder(ImageEmbedding=True), template without weights: "
                   + {"full": "resnet152()", "small": "ResNet(Bottleneck, [1, 1, 1, 1])"}[args.size],
        "preprocessing": "merlin.data.monai_transforms.ImageTransforms on a NIfTI file",
        "native_size": list(NATIVE),
        "net_size": list(NET_SIZE),
        "net_box_start": lo,
        "input_step": STEP,
        "checkpoint_layout": {"prefix": PREFIX, "extra_keys": list(EXTRA_KEYS)},
        "keys": keys,
        "tolerance": TOLERANCE,
        "fp32_vs_fp64": noise,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "layouts": {
            "input": f"(1, X, Y, Z) RAS network input at the native size, every {STEP}th voxel",
            "input_affine": "4x4 index -> world (RAS) of the native-size input",
            "net_input": "(1, X, Y, Z) the central box the forward ran on",
            "embedding": "(2048,) ImageEmbedding output",
            "tokens": "(2048, Z', X', Y') layer4 map, depth first",
        },
    }
    tensors = {
        "input": subsample(full, STEP),
        "input_affine": torch.as_tensor(np.asarray(image.affine), dtype=torch.float64),
        "net_input": net_input,
        "embedding": emb,
        "tokens": tokens,
    }
    path = write_fixture(NAME, tensors, meta)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): tokens {tuple(tokens.shape)}; fp32 vs fp64 {noise}")


if __name__ == "__main__":
    main()
