"""Backbone: SDPA against a hand-written attention, shapes, masks, keys and parameter count."""

import math

import numpy as np
import pytest
import torch

from voxelfm.config import VoxelFMConfig
from voxelfm.model import VoxelFM


def tiny(seed=0, **changes):
    torch.manual_seed(seed)
    model = VoxelFM(VoxelFMConfig.preset("tiny").replace(**changes)).eval()
    with torch.no_grad():  # make every term matter: O(1) LayerScale, norms, CLS/registers
        for name, p in model.named_parameters():
            if name.endswith("gamma") or "norm" in name or name in ("cls_token", "register_tokens"):
                p.normal_(0.0, 0.5).add_(1.0 if name.endswith(("gamma", "weight")) else 0.0)
    return model


def reference_forward(model, x):
    """Naive forward: unfold patches by hand, RoPE as complex rotations, softmax(QK^T/sqrt d)V."""
    cfg = model.config
    B, D, H, W = x.shape
    p, E, nh = cfg.patch_size, cfg.embed_dim, cfg.num_heads
    d, h, w = D // p, H // p, W // p
    patches = x.reshape(B, d, p, h, p, w, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, d * h * w, -1)
    conv = model.patch_embed.proj
    tokens = patches @ conv.weight.reshape(E, -1).T + conv.bias
    special = torch.cat((model.cls_token, model.register_tokens), 1).expand(B, -1, -1)
    t = torch.cat((special, tokens), 1)
    ns = special.shape[1]
    # angles from the formula, in float64 numpy
    F = cfg.head_dim // 6
    periods = cfg.rope_base ** (2 * np.arange(F) / (2 * F))
    axes = [((np.arange(n) + 0.5) / n) * 2 - 1 for n in (d, h, w)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    rot = torch.from_numpy(np.exp(1j * (2 * np.pi * coords[:, :, None] / periods))).to(torch.complex64)

    def rope(q):
        qp = q[:, :, ns:].reshape(*q.shape[:2], -1, 3, F, 2)
        qc = torch.view_as_complex(qp.contiguous()) * rot
        return torch.cat((q[:, :, :ns], torch.view_as_real(qc).reshape(q[:, :, ns:].shape)), 2)

    for blk in model.blocks:
        y = blk.norm1(t)
        qkv = y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.reshape(B, -1, 3, nh, E // nh).permute(2, 0, 3, 1, 4)
        q, k = rope(q), rope(k)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(E // nh), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, -1, E)
        t = t + blk.ls1.gamma * (y @ blk.attn.proj.weight.T + blk.attn.proj.bias)
        y = blk.norm2(t)
        y = torch.nn.functional.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        t = t + blk.ls2.gamma * (y @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias)
    return model.norm(t)


def test_sdpa_matches_hand_written_attention():
    model = tiny()
    x = torch.randn(2, 28, 42, 28)
    with torch.no_grad():
        out = model.forward_features(x)
        ref = reference_forward(model, x)
    assert (ref[:, 0] - out["cls"]).abs().max() < 1e-5
    assert (ref[:, 1:5] - out["registers"]).abs().max() < 1e-5
    assert (ref[:, 5:] - out["patch_tokens"]).abs().max() < 1e-5
    # the comparison is not vacuous: attention changes the output noticeably
    assert out["patch_tokens"].std() > 0.1


@pytest.mark.parametrize("shape", [(28, 42, 56), (14, 14, 14), (56, 28, 14)])
def test_non_cubic_grid(shape):
    model = VoxelFM(VoxelFMConfig.preset("tiny")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *shape))
    grid = tuple(s // 14 for s in shape)
    n = math.prod(grid)
    assert out["grid"] == grid
    assert out["cls"].shape == (1, 48)
    assert out["registers"].shape == (1, 4, 48)
    assert out["patch_tokens"].shape == (1, n, 48)


def test_bad_input_sizes():
    model = VoxelFM(VoxelFMConfig.preset("tiny"))
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        model(torch.randn(1, 28, 30, 28))
    with pytest.raises(ValueError, match="channel"):
        model(torch.randn(1, 1, 28, 28, 28))


def test_masks_replace_patch_embeddings():
    model = tiny()
    with torch.no_grad():
        model.mask_token.fill_(7.0)
    x = torch.randn(2, 28, 28, 28)
    masks = torch.zeros(2, 8, dtype=torch.bool)
    masks[0, 3] = masks[1, 0] = True
    plain, _ = model.prepare_tokens(x)
    masked, _ = model.prepare_tokens(x, masks)
    assert torch.all(masked[0, 5 + 3] == 7.0) and torch.all(masked[1, 5] == 7.0)
    keep = torch.ones_like(masked[..., 0], dtype=torch.bool)
    keep[0, 8] = keep[1, 5] = False
    assert torch.equal(masked[keep], plain[keep])
    out = model(x, masks=masks)
    assert out["patch_tokens"].shape == (2, 8, 48)


def test_init_and_drop_path():
    torch.manual_seed(0)
    model = VoxelFM(VoxelFMConfig.preset("tiny").replace(drop_path_rate=0.5))
    assert torch.count_nonzero(model.mask_token) == 0
    assert model.cls_token.abs().max() < 1e-4 and model.register_tokens.abs().max() < 1e-4
    assert torch.all(model.blocks[0].ls1.gamma == 1e-5)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0
    assert abs(model.blocks[0].mlp.fc1.weight.std().item() - 0.02) < 0.004
    # trunc_normal_(std=0.02) truncates at +-2 absolute (as the reference): effectively normal
    x = torch.randn(4, 14, 14, 14)
    with torch.no_grad():
        for blk in model.blocks:  # large LayerScale so dropped residuals are visible
            blk.ls1.gamma.fill_(1.0)
            blk.ls2.gamma.fill_(1.0)
        model.eval()
        assert torch.equal(model(x)["cls"], model(x)["cls"])
        model.train()
        torch.manual_seed(1)
        a = model(x)["cls"]
        torch.manual_seed(2)
        b = model(x)["cls"]
    assert not torch.allclose(a, b)


def expected_base_keys():
    """The state-dict layout listed in shared/reference/MODELS.md (E = 864)."""
    E = 864
    keys = {
        "cls_token": (1, 1, E),
        "register_tokens": (1, 4, E),
        "mask_token": (1, E),
        "patch_embed.proj.weight": (E, 1, 14, 14, 14),
        "patch_embed.proj.bias": (E,),
        "rope_embed.periods": (12,),
        "norm.weight": (E,),
        "norm.bias": (E,),
    }
    for i in range(12):
        b = f"blocks.{i}."
        keys.update(
            {
                b + "norm1.weight": (E,),
                b + "norm1.bias": (E,),
                b + "attn.qkv.weight": (3 * E, E),
                b + "attn.qkv.bias": (3 * E,),
                b + "attn.proj.weight": (E, E),
                b + "attn.proj.bias": (E,),
                b + "ls1.gamma": (E,),
                b + "norm2.weight": (E,),
                b + "norm2.bias": (E,),
                b + "mlp.fc1.weight": (4 * E, E),
                b + "mlp.fc1.bias": (4 * E,),
                b + "mlp.fc2.weight": (E, 4 * E),
                b + "mlp.fc2.bias": (E,),
                b + "ls2.gamma": (E,),
            }
        )
    return keys


def test_base_state_dict_and_parameter_count():
    from ctbench.adapters.voxelfm import CARD

    with torch.device("meta"):
        model = VoxelFM(VoxelFMConfig.preset("base"))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_base_keys()
    assert sum(p.numel() for p in model.parameters()) == CARD.parameters
    assert CARD.embedding_dim == CARD.token_dim == 864
    assert VoxelFMConfig.preset("base").head_dim == 72
