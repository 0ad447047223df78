"""Regenerate ``fixtures/ctclip.safetensors`` from the official CT-CLIP code
(ibrahimethemhamamci/CT-CLIP).

Run with a Python environment that holds the official code's dependencies (torch, torchvision,
einops, beartype, vector-quantize-pytorch==1.1.2 as the reference pins, transformers, numpy,
pandas, nibabel), never ctbench:

    python tests/parity/make_ctclip.py PATH/TO/CT-CLIP [COMMIT]

What is official here, and what is not:
- network: ``transformer_maskgit/ctvit.py`` ``CTViT`` inside ``CT_CLIP/ct_clip/ct_clip.py``
  ``CTCLIP``, configured as ``scripts/run_zero_shot.py`` configures them but at ctbench's
  ``test`` size (the text tower is a small ``BertModel`` built from a config: the reference
  downloads CXR-BERT, and image latents do not depend on it), loaded strictly with key-seeded
  weights and run through ``CTCLIP.forward(..., return_latents=True)``: embedding = the image
  latent, tokens = the quantised tokens it returns; pre-quantisation tokens = the input of the
  official ``vq`` module (a forward hook, no code changed);
- the reference hard-codes ``torch.device('cuda')`` inside its forward passes; this script
  hands those two modules a ``torch`` whose ``device('cuda')`` is the CPU, nothing else; and
  ``CTCLIP.__init__`` fetches a tokenizer from the hub (used only by its prompt helpers), which
  is replaced by a placeholder;
- preprocessing at the real size: ``scripts/data_inference_nii.py``
  ``CTReportDatasetinfer.nii_img_to_tensor`` on the synthetic volume written as NIfTI, with
  the metadata row CT-RATE's table would hold (slope 1, intercept 0, its spacings). That
  loader takes one in-plane spacing for both axes, so the volume has square in-plane voxels
  (1.5, 1.5, 2.5 mm); its axis codes are LPS, the layout ctbench reorients every input to.
- not official: the ``test``-size network input is the centre (40, 80, 80) of the official
  (240, 480, 480) tensor (the loader's size is fixed); with even resampled sizes this equals a
  direct centre crop/pad to (40, 80, 80).
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import nibabel as nib
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_io import checkout_commit, key_list, seeded_state_dict, subsample, synthetic_volume, write_fixture  # noqa: E402

VOLUME = {"spacing": [1.5, 1.5, 2.5]}
# ctbench's "test" variant of the CTViT (the official constructor takes the same arguments).
TEST = dict(dim=32, codebook_size=64, image_size=80, patch_size=20, temporal_patch_size=10, spatial_depth=1,
            temporal_depth=1, dim_head=8, heads=2, channels=1)
TEST_INPUT = (40, 80, 80)  # (slice, row, col)
DIM_LATENT = 512
TEXT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=16)
TOLERANCE = {"input": 1e-5, "embedding": 1e-5, "tokens": 1e-3, "tokens_pre_quantisation": 1e-3}


def cpu_torch() -> types.ModuleType:
    """``torch`` whose ``device('cuda')`` is the CPU device (the reference's hard-coded device)."""
    proxy = types.ModuleType("torch")
    proxy.__dict__.update(torch.__dict__)
    proxy.device = lambda *a, **k: torch.device("cpu") if a and str(a[0]).startswith("cuda") else torch.device(*a, **k)
    return proxy


def official_modules(root: Path):
    """``CTViT``, ``CTCLIP`` and the inference loader's class, imported from the checkout (the
    ``transformer_maskgit`` package ``__init__`` pulls in training code, so it is bypassed)."""
    pkg = types.ModuleType("transformer_maskgit")
    pkg.__path__ = [str(root / "transformer_maskgit" / "transformer_maskgit")]
    sys.modules["transformer_maskgit"] = pkg
    import transformer_maskgit.attention as attention
    import transformer_maskgit.ctvit as ctvit

    attention.torch = ctvit.torch = cpu_torch()
    sys.path.insert(0, str(root / "CT_CLIP"))
    import ct_clip.ct_clip
    from ct_clip import CTCLIP

    # its constructor fetches the CXR-BERT tokenizer from the hub, used only by its prompt helpers
    ct_clip.ct_clip.BertTokenizer = types.SimpleNamespace(from_pretrained=lambda *a, **k: None)

    spec = importlib.util.spec_from_file_location("data_inference_nii", root / "scripts" / "data_inference_nii.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    return ctvit.CTViT, CTCLIP, data.CTReportDatasetinfer


def official_input(loader, workdir: Path) -> torch.Tensor:
    """``nii_img_to_tensor`` on the synthetic volume (a NIfTI file plus its metadata row)."""
    vol, aff = synthetic_volume(**VOLUME)
    path = workdir / "synthetic_a_1.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    xy, z = VOLUME["spacing"][0], VOLUME["spacing"][2]
    df = pd.DataFrame([{"VolumeName": path.name, "RescaleSlope": 1.0, "RescaleIntercept": 0.0,
                        "XYSpacing": f"[{xy}, {xy}]", "ZSpacing": z}])
    return loader.nii_img_to_tensor(None, str(path), df)


def centre(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    starts = [(n - s) // 2 for n, s in zip(x.shape[-3:], size)]
    return x[..., starts[0]:starts[0] + size[0], starts[1]:starts[1] + size[1], starts[2]:starts[2] + size[2]]


def main(root: Path, commit: str) -> None:
    from transformers import BertConfig, BertModel

    CTViT, CTCLIP, loader = official_modules(root)
    with tempfile.TemporaryDirectory() as tmp:
        full_input = official_input(loader, Path(tmp))
    assert tuple(full_input.shape) == (1, 240, 480, 480), full_input.shape
    network_input = centre(full_input, TEST_INPUT).contiguous()

    torch.manual_seed(0)
    image_encoder = CTViT(**TEST)
    grid = TEST["image_size"] // TEST["patch_size"]
    clip = CTCLIP(image_encoder=image_encoder, text_encoder=BertModel(BertConfig(**TEXT)),
                  dim_image=grid * grid * TEST["dim"], dim_text=TEXT["hidden_size"], dim_latent=DIM_LATENT,
                  extra_latent_projection=False, use_mlm=False, downsample_image_embeds=False,
                  use_all_token_embeds=False).eval()
    keys = key_list(clip.state_dict())
    clip.load_state_dict(seeded_state_dict(keys), strict=True)
    seen = {}
    clip.visual_transformer.vq.register_forward_hook(lambda m, args, out: seen.update(pre=args[0].detach()))
    ids = torch.tensor([[1, 5, 7, 2]])  # any text: the image latent does not depend on it
    text = types.SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        _, latent, tokens = clip(text, network_input[None], device=torch.device("cpu"), return_latents=True)
    embedding, tokens = latent[0], tokens[0].reshape(-1, TEST["dim"])  # (t h w, d)
    pre = seen["pre"][0]  # (t h w, d), the vq input
    assert torch.isfinite(pre).all() and pre.shape == tokens.shape
    for name, t in (("embedding", embedding), ("tokens", tokens), ("pre", pre)):
        assert torch.isfinite(t).all() and float(t.std()) > 1e-3, f"degenerate {name}"
    codes = torch.unique(tokens, dim=0).shape[0]
    print("official outputs:", tuple(embedding.shape), tuple(tokens.shape), f"{codes} distinct codebook rows")
    path = write_fixture("ctclip", {
        "input": subsample(full_input, 8), "network_input": subsample(network_input, 2),
        "embedding": embedding, "tokens": tokens, "tokens_pre_quantisation": pre,
    }, {
        "reference": "github.com/ibrahimethemhamamci/CT-CLIP", "reference_version": commit,
        "date": datetime.date.today().isoformat(), "tolerance": TOLERANCE,
        "config": {**TEST, "dim_latent": DIM_LATENT, "text_tower": TEXT}, "volume": VOLUME,
        "preprocessing": {"spatial_size": list(full_input.shape[1:]), "subsample": 8, "network_subsample": 2},
        "torch": torch.__version__, "vector_quantize_pytorch": _version("vector-quantize-pytorch"), "keys": keys,
        "tokens": "all tokens, (t, h, w) raster order of the (4, 4, 4) grid; distinct rows: %d" % codes,
    })
    print("wrote", path)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    main(src, sys.argv[2] if len(sys.argv) > 2 else checkout_commit(src))
