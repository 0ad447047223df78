"""Schedules at chosen iterations, layer-wise LR decay groups and their application."""

import math

import pytest
import torch

from voxelfm.config import VoxelFMConfig
from voxelfm.heads import DINOHead
from voxelfm.model import VoxelFM
from voxelfm.optim import apply_schedule, lr_multiplier, param_groups
from voxelfm.schedules import Schedule, ScheduleConfig, Schedules, warmup_cosine


def test_warmup_cosine_small_by_hand():
    v = warmup_cosine(0.0, 1.0, 0.0, warmup_iters=5, total_iters=10)
    c = (math.cos(math.pi / 4) + 1) / 2  # 0.853553...
    assert v.tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, c, 0.5, 1 - c, 0.0])
    assert warmup_cosine(2.0, 2.0, 2.0, 0, 3).tolist() == [2.0, 2.0, 2.0]
    assert len(warmup_cosine(0.0, 1.0, 0.0, warmup_iters=50, total_iters=10)) == 10  # warm-up cut short


def test_reference_schedules_at_chosen_iterations():
    s = Schedules.build(ScheduleConfig())  # 100 epochs x 1000 iterations
    assert len(s) == 100_000
    # LR: linear 0 -> 1e-3 over 10 epochs, then cosine to 1e-6
    assert s.lr[0] == 0.0
    assert s.lr[5000] == pytest.approx(5e-4)
    assert s.lr[10_000] == pytest.approx(1e-3)
    assert s.lr[-1] == pytest.approx(1e-6)
    mid = 10_000 + 45_000  # angle pi * 45000 / 89999, just past a quarter turn
    expected = 1e-6 + (1e-3 - 1e-6) * (math.cos(math.pi * 45_000 / 89_999) + 1) / 2
    assert s.lr[mid] == pytest.approx(expected, rel=1e-9)
    # weight decay: cosine 0.04 -> 0.2 from the first iteration
    assert s.wd[0] == pytest.approx(0.04) and s.wd[-1] == pytest.approx(0.2)
    assert s.wd[50_000] == pytest.approx(0.12, abs=1e-5)
    # teacher temperature: 0.04 -> 0.07 over 30 epochs, then constant
    assert s.teacher_temp[0] == pytest.approx(0.04)
    assert s.teacher_temp[15_000] == pytest.approx(0.055)
    assert s.teacher_temp[30_000] == pytest.approx(0.07) and s.teacher_temp[-1] == pytest.approx(0.07)
    # EMA momentum: constant 0.994
    assert s.momentum.min() == pytest.approx(0.994) and s.momentum.max() == pytest.approx(0.994)
    # the last layer is frozen during the first epoch, then follows the LR
    assert s.last_layer_lr[:1000].max() == 0.0
    assert s.last_layer_lr[1000] == s.lr[1000] > 0
    at = s.at(10**9)  # beyond the end: the last values
    assert at["lr"] == pytest.approx(1e-6) and at["teacher_temp"] == pytest.approx(0.07)


def test_short_schedule():
    cfg = ScheduleConfig(epochs=2, epoch_length=5, lr=Schedule(0.0, 1.0, 0.0, 1), freeze_last_layer_epochs=0.4)
    s = Schedules.build(cfg)
    assert s.lr.tolist()[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert s.last_layer_lr.tolist()[:3] == pytest.approx([0.0, 0.0, 0.4])


def test_layerwise_decay_groups():
    cfg = VoxelFMConfig(embed_dim=12, depth=2, num_heads=2)
    backbone, head = VoxelFM(cfg), DINOHead(12, 8, hidden_dim=16, bottleneck_dim=4)
    assert lr_multiplier("cls_token", 2, 0.9) == pytest.approx(0.9**3)
    assert lr_multiplier("blocks.0.attn.qkv.weight", 2, 0.9) == pytest.approx(0.9**2)
    assert lr_multiplier("blocks.1.mlp.fc1.bias", 2, 0.9) == pytest.approx(0.9)
    assert lr_multiplier("norm.weight", 2, 0.9) == 1.0
    groups = param_groups(backbone, head, layerwise_decay=0.9, patch_embed_lr_mult=0.2)
    where = {id(p): g for g in groups for p in g["params"]}
    named = dict(backbone.named_parameters())
    hn = dict(head.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(named) + len(hn)

    def group(p):
        g = where[id(p)]
        return g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]

    assert group(named["patch_embed.proj.weight"]) == (pytest.approx(0.729 * 0.2), 1.0, False)
    assert group(named["cls_token"]) == (pytest.approx(0.729), 1.0, False)
    assert group(named["register_tokens"])[0] == pytest.approx(0.729)
    assert group(named["blocks.0.attn.qkv.weight"]) == (pytest.approx(0.81), 1.0, False)
    assert group(named["blocks.0.attn.qkv.bias"]) == (pytest.approx(0.81), 0.0, False)
    assert group(named["blocks.1.ls2.gamma"]) == (pytest.approx(0.9), 0.0, False)
    assert group(named["blocks.1.norm1.weight"])[1] == 0.0
    assert group(named["norm.weight"]) == (1.0, 0.0, False)
    assert group(hn["mlp.0.weight"]) == (1.0, 1.0, False)
    assert group(hn["mlp.4.bias"]) == (1.0, 0.0, False)
    assert group(hn["last_layer.parametrizations.weight.original1"]) == (1.0, 1.0, True)

    opt = torch.optim.AdamW(groups, lr=0.0)
    apply_schedule(opt, lr=1e-3, wd=0.1, last_layer_lr=0.0)
    g = where[id(named["blocks.0.attn.qkv.weight"])]
    assert g["lr"] == pytest.approx(0.81e-3) and g["weight_decay"] == pytest.approx(0.1)
    last = where[id(hn["last_layer.parametrizations.weight.original1"])]
    assert last["lr"] == 0.0
    assert where[id(named["norm.bias"])]["weight_decay"] == 0.0
