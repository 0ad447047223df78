"""3D RoPE: angles, [z|y|x] blocks of interleaved pairs, special tokens untouched, raster order."""

import math

import torch

from voxelfm.config import VoxelFMConfig
from voxelfm.model import VoxelFM
from voxelfm.rope import RopeEmbed3D, apply_rope, rope_coords, rotate_patch_tokens

GRID = (2, 3, 2)
HEAD_DIM = 12  # 3 axes x 2 x F, F = 2
BASE = 100.0


def hand_coord(k, n):
    return ((k + 0.5) / n) * 2 - 1


def hand_tokens():
    d, h, w = GRID
    return [(a, b, c) for a in range(d) for b in range(h) for c in range(w)]  # raster (d, h, w)


def hand_angle(token, axis, j):
    period = BASE ** (2 * j / (HEAD_DIM // 3))
    coord = hand_coord(token[axis], GRID[axis])
    return (2 * math.pi * coord / period) % (2 * math.pi)


def test_periods_buffer():
    rope = RopeEmbed3D(HEAD_DIM, BASE)
    assert "periods" in dict(rope.named_buffers())
    assert torch.allclose(rope.periods, torch.tensor([1.0, 10.0]))
    base = RopeEmbed3D(72, 100.0)
    expected = torch.tensor([100.0 ** (2 * j / 24) for j in range(12)])
    assert base.periods.shape == (12,) and torch.allclose(base.periods, expected)


def test_coords_raster_order():
    coords = rope_coords(GRID)
    assert coords.shape == (12, 3)
    for n, tok in enumerate(hand_tokens()):
        want = [hand_coord(tok[ax], GRID[ax]) for ax in range(3)]
        assert torch.allclose(coords[n], torch.tensor(want)), (n, tok)


def test_angles_against_hand_values():
    sin, cos = RopeEmbed3D(HEAD_DIM, BASE)(GRID)
    assert sin.shape == cos.shape == (12, 3, 2) and sin.dtype == torch.float32
    for n, tok in enumerate(hand_tokens()):
        for ax in range(3):
            for j in range(2):
                theta = hand_angle(tok, ax, j)
                assert abs(sin[n, ax, j].item() - math.sin(theta)) < 1e-6
                assert abs(cos[n, ax, j].item() - math.cos(theta)) < 1e-6


def test_interleaved_pairs_in_zyx_blocks():
    sin, cos = RopeEmbed3D(HEAD_DIM, BASE)(GRID)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, HEAD_DIM, generator=g)
    out = apply_rope(x, sin, cos)
    for n, tok in enumerate(hand_tokens()):
        for ax in range(3):  # block ax holds channels [4 ax, 4 ax + 4)
            for j in range(2):
                e, o = 4 * ax + 2 * j, 4 * ax + 2 * j + 1
                t = hand_angle(tok, ax, j)
                want_e = x[n, e] * math.cos(t) - x[n, o] * math.sin(t)
                want_o = x[n, e] * math.sin(t) + x[n, o] * math.cos(t)
                assert abs(out[n, e] - want_e) < 1e-5 and abs(out[n, o] - want_o) < 1e-5


def test_special_tokens_not_rotated():
    sin, cos = RopeEmbed3D(HEAD_DIM, BASE)(GRID)
    x = torch.randn(2, 3, 5 + 12, HEAD_DIM)
    out = rotate_patch_tokens(x, sin, cos, num_special=5)
    assert torch.equal(out[:, :, :5], x[:, :, :5])
    assert torch.allclose(out[:, :, 5:], apply_rope(x[:, :, 5:], sin, cos))
    assert not torch.allclose(out[:, :, 5:], x[:, :, 5:])


def test_model_rope_buffer_is_in_state_dict():
    model = VoxelFM(VoxelFMConfig.preset("tiny"))
    sd = model.state_dict()
    assert "rope_embed.periods" in sd and sd["rope_embed.periods"].shape == (4,)


def test_patch_tokens_in_raster_order():
    model = VoxelFM(VoxelFMConfig.preset("tiny"))
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.patch_embed.proj.weight[0, 0, 0, 0, 0] = 1.0  # channel 0 reads the corner voxel
    x = torch.zeros(1, 28, 42, 56)
    for a in range(2):
        for b in range(3):
            for c in range(4):
                x[0, 14 * a, 14 * b, 14 * c] = 100 * a + 10 * b + c
    tokens, grid = model.prepare_tokens(x)
    assert grid == (2, 3, 4) and tokens.shape == (1, 5 + 24, 48)
    patches = tokens[0, 5:, 0]
    n = 0
    for a in range(2):
        for b in range(3):
            for c in range(4):
                assert patches[n].item() == 100 * a + 10 * b + c
                n += 1
