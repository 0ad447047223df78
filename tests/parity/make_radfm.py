"""Regenerate ``fixtures/radfm.safetensors`` from the official RadFM code (chaoyi-wu/RadFM).

Run with a Python environment that holds the official code's dependencies (torch, einops, numpy,
nibabel, opencv), never ctbench:

    python tests/parity/make_radfm.py PATH/TO/RadFM [COMMIT]

What is official here, and what is not:
- network: ``src/Model/RadFM/vit_3d.py`` ``ViT`` (with its ``PositionEmbeddingLearned3d``) as
  ``my_embedding_layer.py`` builds the vision encoder, at ctbench's ``test`` size, loaded
  strictly with key-seeded weights; tokens = its output, embedding = their mean (RadFM has no
  pooled output; the mean is ctbench's documented choice, applied here to the official tokens);
- preprocessing at the real size: in-plane bilinear resize of each slice to 512 x 512 with
  ``cv2.resize(..., INTER_LINEAR)`` (as the official datasets do), the official per-volume
  min-max, then the official batch collation ``stack_images`` of ``src/Dataset/multi_dataset.py``
  (depth to the multiple of 4 nearest the slice count, at most 64; nearest neighbour);
- not official (the reference starts from display-windowed 8-bit images, it never reads HU):
  the volume is the synthetic NIfTI reoriented to PLI (rows anterior -> posterior, columns
  right -> left, slices superior -> inferior) and windowed to [-160, 240] HU in float, as
  ctbench's card states. The network input at the ``test`` size (64 x 64 in-plane) uses the same
  cv2 resize on a 16-slice version of the volume, so no depth resize is involved there.
"""

from __future__ import annotations

import ast
import datetime
import sys
import tempfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import checkout_commit, key_list, seeded_state_dict, subsample, synthetic_volume, write_fixture  # noqa: E402

WINDOW = (-160.0, 240.0)
ORIENTATION = ("P", "L", "I")
FULL_SIZE = 512
# ctbench's "test" variant (the official constructor takes the same arguments).
TEST = dict(image_size=64, image_patch_size=32, frames=64, frame_patch_size=4, dim=48, depth=2, heads=2,
            dim_head=16, mlp_dim=64, channels=3)
NETWORK_VOLUME = {"shape": [48, 40, 16]}  # 16 slices: the test variant's maximum depth, no depth resize
TOLERANCE = {"input": 1e-5, "embedding": 1e-5, "tokens": 1e-3}  # tokens: fp16 storage


def official_stack_images(root: Path):
    """``stack_images`` of ``src/Dataset/multi_dataset.py`` (the module itself imports spaCy,
    scispaCy and the dataset zoo, so only this function of it is compiled)."""
    tree = ast.parse((root / "src/Dataset/multi_dataset.py").read_text())
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "stack_images"]
    ns: dict = {"torch": torch}
    exec(compile(ast.Module(fn, []), "multi_dataset.py", "exec"), ns)
    return ns["stack_images"]


def official_vit(root: Path, cfg: dict) -> torch.nn.Module:
    sys.path.insert(0, str(root / "src" / "Model"))
    from RadFM.vit_3d import ViT

    return ViT(**cfg, dropout=0.1, emb_dropout=0.1).eval()  # dropout as in my_embedding_layer.py; off in eval


def windowed(workdir: Path, **volume) -> np.ndarray:
    """The synthetic volume through a NIfTI file, reoriented to PLI, HU window -> [0, 1]."""
    vol, aff = synthetic_volume(**volume)
    path = workdir / "synthetic.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    img = nib.load(str(path))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(ORIENTATION))
    arr = nib.orientations.apply_orientation(np.asarray(img.dataobj, dtype=np.float32), ornt)
    lo, hi = WINDOW
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def inplane(arr: np.ndarray, size: int) -> np.ndarray:
    """Every slice resized to ``size`` x ``size`` (cv2 bilinear; slices are the channel axis),
    then the official per-volume min-max."""
    out = cv2.resize(arr, (size, size), interpolation=cv2.INTER_LINEAR)
    out = out.reshape(size, size, arr.shape[2])
    return (out - out.min()) / (out.max() - out.min())


def main(root: Path, commit: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        full = inplane(windowed(Path(tmp)), FULL_SIZE)
        small = inplane(windowed(Path(tmp), **NETWORK_VOLUME), TEST["image_size"])
    full_input = official_stack_images(root)([torch.as_tensor(full)[None].expand(3, -1, -1, -1)])[0]
    assert torch.equal(full_input[0], full_input[2]), "grey repeated to 3 channels"
    network_input = torch.as_tensor(small)[None]

    torch.manual_seed(0)
    net = official_vit(root, TEST)
    keys = key_list(net.state_dict())
    net.load_state_dict(seeded_state_dict(keys), strict=True)
    with torch.no_grad():
        out, _ = net(network_input[None].expand(-1, 3, -1, -1, -1))
    tokens, embedding = out[0], out[0].mean(0)
    for name, t in (("embedding", embedding), ("tokens", tokens)):
        assert torch.isfinite(t).all() and float(t.std()) > 1e-3, f"degenerate {name}"
    print("official outputs:", tuple(embedding.shape), tuple(tokens.shape), "full input", tuple(full_input.shape))
    path = write_fixture("radfm", {
        "input": subsample(full_input[:1], 8), "network_input": network_input,
        "embedding": embedding, "tokens": tokens,
    }, {
        "reference": "github.com/chaoyi-wu/RadFM", "reference_version": commit,
        "date": datetime.date.today().isoformat(), "tolerance": TOLERANCE,
        "config": TEST, "network_volume": NETWORK_VOLUME,
        "preprocessing": {"orientation": "".join(ORIENTATION), "hu_window": WINDOW,
                          "spatial_size": list(full_input.shape[1:]), "subsample": 8},
        "torch": torch.__version__, "opencv": cv2.__version__, "keys": keys,
        "tokens": "all patch tokens, (h, w, d) raster order of the (2, 2, 4) grid",
    })
    print("wrote", path)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    main(src, sys.argv[2] if len(sys.argv) > 2 else checkout_commit(src))
