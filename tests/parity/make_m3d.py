"""Regenerate ``fixtures/m3d.safetensors`` from the official M3D code (BAAI-DCAI/M3D).

Run with a Python environment that holds the official code's dependencies (torch, MONAI 1.3.x,
which the official ViT is written against, numpy, nibabel, Pillow, unidecode, tqdm), never ctbench:

    python tests/parity/make_m3d.py PATH/TO/M3D [COMMIT]

What is official here, and what is not:
- network: ``LaMed/src/model/multimodal_encoder/vit.py`` ``ViT`` built as ``LaMed/src/model/CLIP.py``
  builds its vision encoder (perceptron patch embedding, CLS token), at ctbench's ``test`` size,
  loaded strictly with key-seeded weights; embedding = the CLS row of its output, tokens = the rest;
- preprocessing: ``Data/process/m3d_cap_data_prepare.py`` run as published (its per-case
  ``process_subfolder`` on a folder of 8-bit PNG slices: /255, per-volume min-max,
  ``CropForeground`` + ``Resize`` to (32, 256, 256)); its module-level folder listing and
  process pool are skipped and its input/output folders point at a scratch folder;
- not official (the reference starts from display-windowed 8-bit slices, it never reads HU):
  the slices are the synthetic NIfTI reoriented to IPL (slices superior -> inferior, rows
  anterior -> posterior, columns right -> left) and windowed to [-160, 240] HU, as ctbench's
  card states. ``input`` feeds that float window (no 8-bit rounding) through the official
  min-max and ``transform``, so the network comparison is exact; ``input_8bit`` is the
  published per-case pipeline on the rounded PNG slices (agrees within the 8-bit step).
"""

from __future__ import annotations

import ast
import datetime
import importlib.util
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import (  # noqa: E402
    checkout_commit,
    key_list, relative_error, seeded_state_dict, subsample, synthetic_volume, write_fixture)

WINDOW = (-160.0, 240.0)
ORIENTATION = ("I", "P", "L")
FULL_SIZE = (32, 256, 256)
# ctbench's "test" variant of the ViT (the official constructor takes the same arguments).
TEST = dict(in_channels=1, img_size=(8, 64, 64), patch_size=(4, 16, 16), hidden_size=48, mlp_dim=96,
            num_layers=2, num_heads=4)
TOLERANCE = {"input": 1e-5, "input_8bit": 2.5e-3, "embedding": 1e-5, "tokens": 1e-3}  # tokens: fp16 storage


def official_prepare(root: Path, size: tuple[int, int, int]) -> dict:
    """The namespace of ``m3d_cap_data_prepare.py`` without its folder listing and process pool,
    its ``transform`` resizing to ``size`` (the published value is (32, 256, 256))."""
    tree = ast.parse((root / "Data/process/m3d_cap_data_prepare.py").read_text())
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)):
            keep.append(node)
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "transform":
            for sub in ast.walk(node):
                if isinstance(sub, ast.keyword) and sub.arg == "spatial_size":
                    assert ast.literal_eval(sub.value) == list(FULL_SIZE), "official size changed"
                    sub.value = ast.copy_location(ast.parse(repr(list(size)), mode="eval").body, sub.value)
            keep.append(node)
    ns: dict = {"__name__": "m3d_cap_data_prepare"}
    module = ast.fix_missing_locations(ast.Module(keep, []))
    exec(compile(module, "m3d_cap_data_prepare.py", "exec"), ns)
    return ns


def official_vit(root: Path, cfg: dict) -> torch.nn.Module:
    """``ViT`` of the official vision encoder, configured as ``M3DCLIP`` configures it."""
    spec = importlib.util.spec_from_file_location("m3d_vit", root / "LaMed/src/model/multimodal_encoder/vit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ViT(**cfg, pos_embed="perceptron", dropout_rate=0.0, spatial_dims=3, classification=True).eval()


def display_slices(vol: np.ndarray, aff: np.ndarray, workdir: Path) -> np.ndarray:
    """The synthetic volume through a NIfTI file, reoriented to IPL, HU window -> [0, 1]."""
    path = workdir / "synthetic.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    img = nib.load(str(path))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(ORIENTATION))
    arr = nib.orientations.apply_orientation(np.asarray(img.dataobj, dtype=np.float32), ornt)
    lo, hi = WINDOW
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def run_official_case(ns: dict, slices: np.ndarray, workdir: Path) -> np.ndarray:
    """``process_subfolder`` on 8-bit PNG slices of ``slices`` (numbered in slice order)."""
    case = workdir / "in" / "00001" / "scan"
    case.mkdir(parents=True)
    (workdir / "out").mkdir()
    for n, s in enumerate(np.rint(slices * 255).astype(np.uint8)):
        Image.fromarray(s).save(case / f"{n}.png")
    ns["input_dir"], ns["output_dir"] = f"{workdir / 'in'}/", f"{workdir / 'out'}/"
    ns["process_subfolder"]("00001")
    return np.load(workdir / "out" / "00001" / "scan.npy")


def official_float(ns: dict, slices: np.ndarray) -> torch.Tensor:
    """The float window through the official min-max and ``transform`` (no 8-bit rounding)."""
    image = slices[None] - slices.min()
    image = image / np.clip(image.max(), a_min=1e-8, a_max=None)
    return torch.as_tensor(np.asarray(ns["transform"](image)), dtype=torch.float32)


def main(root: Path, commit: str) -> None:
    vol, aff = synthetic_volume()
    with tempfile.TemporaryDirectory() as tmp:
        slices = display_slices(vol, aff, Path(tmp))
        full_ns, test_ns = official_prepare(root, FULL_SIZE), official_prepare(root, TEST["img_size"])
        input_8bit = torch.as_tensor(run_official_case(full_ns, slices, Path(tmp)))
    full_input, test_input = official_float(full_ns, slices), official_float(test_ns, slices)

    torch.manual_seed(0)
    net = official_vit(root, TEST)
    keys = key_list(net.state_dict())
    net.load_state_dict(seeded_state_dict(keys), strict=True)
    with torch.no_grad():
        out, _ = net(test_input[None])
    embedding, tokens = out[0, 0], out[0, 1:]
    for name, t in (("embedding", embedding), ("tokens", tokens)):
        assert torch.isfinite(t).all() and float(t.std()) > 1e-3, f"degenerate {name}"
    measured = {"input_8bit_vs_float": relative_error(subsample(input_8bit), subsample(full_input))}
    print("official outputs:", {k: tuple(v.shape) for k, v in dict(embedding=embedding, tokens=tokens).items()},
          "8-bit vs float input:", measured)
    path = write_fixture("m3d", {
        "input": subsample(full_input, 4), "input_8bit": subsample(input_8bit, 4),
        "network_input": test_input, "embedding": embedding, "tokens": tokens,
    }, {
        "reference": "github.com/BAAI-DCAI/M3D", "reference_version": commit,
        "date": datetime.date.today().isoformat(), "tolerance": TOLERANCE, "measured": measured,
        "config": {**TEST, "pos_embed": "perceptron", "classification": True},
        "preprocessing": {"orientation": "".join(ORIENTATION), "hu_window": WINDOW, "spatial_size": FULL_SIZE,
                          "subsample": 4},
        "torch": torch.__version__, "monai": __import__("monai").__version__, "keys": keys,
        "tokens": "all patch tokens, (d, h, w) raster order of the (2, 4, 4) grid",
    })
    print("wrote", path)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    main(src, sys.argv[2] if len(sys.argv) > 2 else checkout_commit(src))
