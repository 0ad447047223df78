"""The student/teacher model: global-crop swap, target centring, loss assembly, EMA update."""

import numpy as np
import pytest
import torch

from voxelfm.losses import cross_entropy_terms, koleo_loss
from voxelfm.masking import sample_masks
from voxelfm.pretrain_config import PRETRAIN_PRESETS, PretrainConfig, apply_overrides
from voxelfm.ssl import SSLModel, StudentForward


@pytest.fixture(scope="module")
def setup():
    cfg = PretrainConfig.from_reference(apply_overrides(PRETRAIN_PRESETS["tiny"].to_reference(), [
        "dino.head_n_prototypes=32", "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16",
        "crops.global_crops_size=[28, 28, 28]", "crops.local_crops_size=[14, 14, 14]",
        "crops.local_crops_number=2", "student.drop_path_rate=0.0", "student.layerscale=0.1"]))
    torch.manual_seed(0)
    model = SSLModel(cfg).train()
    g = torch.randn(4, 28, 28, 28)  # B = 2: rows [s0 crop0, s1 crop0, s0 crop1, s1 crop1]
    loc = torch.randn(4, 14, 14, 14)
    masks = sample_masks(4, (2, 2, 2), np.random.default_rng(0), probability=1.0)
    return cfg, model, g, loc, masks


def test_teacher_targets_swap_the_global_crops(setup):
    cfg, model, g, _, masks = setup
    t = model.teacher_targets(g, masks, teacher_temp=0.05)
    with torch.no_grad():
        logits = model.teacher["dino_head"](model.teacher["backbone"](g)["cls"])
    expected = torch.softmax(logits[[2, 3, 0, 1]] / 0.05, -1)  # centre still 0
    assert torch.allclose(t["dino"], expected, atol=1e-6)
    assert t["ibot"].shape == (masks.n_masked, 32)
    model.dino_center.apply()  # first update: the mean of the teacher logits
    assert torch.allclose(model.dino_center.center[0], logits.mean(0), atol=1e-6)
    model.ibot_center.apply()


def test_loss_assembly(setup):
    cfg, model, g, loc, masks = setup
    model.zero_grad()
    t = model.teacher_targets(g, masks, teacher_temp=0.05)
    out = StudentForward(model.student)(g, loc, masks.masks, masks.indices)
    assert out["global_logits"].shape == (4, 32) and out["local_logits"].shape == (4, 32)
    loss, terms = model.losses(out, t, masks, n_local=2)
    ce = lambda s, tt: cross_entropy_terms(s, tt, 0.1).mean()  # noqa: E731
    sg, sl, td = out["global_logits"], out["local_logits"], t["dino"]
    glob = (ce(sg[:2], td[:2]) + ce(sg[2:], td[2:])) / 6  # 2 + 2 x 2 terms
    local = sum(ce(sl[2 * i : 2 * i + 2], td[2 * j : 2 * j + 2]) for i in range(2) for j in range(2)) / 6
    assert terms["dino_global"].item() == pytest.approx(glob.item(), rel=1e-5)
    assert terms["dino_local"].item() == pytest.approx(local.item(), rel=1e-5)
    koleo = 0.1 * (koleo_loss(out["global_cls"][:2]) + koleo_loss(out["global_cls"][2:]))
    assert terms["koleo"].item() == pytest.approx(koleo.item() / 2, rel=1e-5)
    assert loss.item() == pytest.approx((glob + local + terms["ibot"] + koleo).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    mon = model.monitors(t)
    assert 0 <= mon["teacher_entropy"] <= 1 and 0 <= mon["teacher_batch_entropy"] <= 1
    assert mon["teacher_batch_entropy"] >= mon["teacher_entropy"] - 1e-6  # entropy is concave


def test_ema_update(setup):
    _, model, _, _, _ = setup
    s = model.student["backbone"].cls_token
    t = model.teacher["backbone"].cls_token
    with torch.no_grad():
        s.fill_(1.0)
        t.fill_(3.0)
    model.update_teacher(0.75)
    assert torch.allclose(t, torch.full_like(t, 0.75 * 3 + 0.25 * 1))


def test_dino_learns_when_two_views_share_the_volume():
    """Control for the collapse seen on phantom crops: with two views that share their content
    (a volume and its flip), DINO must learn confident, volume-specific targets."""
    from voxelfm.optim import apply_schedule, param_groups
    from voxelfm.schedules import Schedules

    cfg = PretrainConfig.from_reference(apply_overrides(PRETRAIN_PRESETS["tiny"].to_reference(), [
        "crops.global_crops_size=[28, 28, 28]", "crops.local_crops_number=0", "student.drop_path_rate=0.0",
        "dino.head_n_prototypes=64", "optim.epochs=4", "train.official_epoch_length=25",
        "schedules.lr.warmup_epochs=0.4", "schedules.lr.peak=0.001"]))
    torch.manual_seed(0)
    ssl = SSLModel(cfg).train()
    fwd = StudentForward(ssl.student)
    opt = torch.optim.AdamW(param_groups(ssl.student["backbone"], ssl.student["dino_head"]), lr=0.0)
    sched = Schedules.build(cfg.schedules)
    vols = torch.nn.functional.avg_pool3d(torch.randn(16, 1, 32, 32, 32), 5, 1)[:, 0]  # smooth, 28^3
    gen = torch.Generator().manual_seed(0)
    first = last = None
    for it in range(len(sched)):
        vals = sched.at(it)
        apply_schedule(opt, vals["lr"], vals["wd"], vals["last_layer_lr"])
        opt.zero_grad()
        idx = torch.randperm(16, generator=gen)[:8]
        g = torch.cat([vols[idx], vols[idx].flip(1)])  # view 2 of each volume: flipped
        masks = sample_masks(16, (2, 2, 2), np.random.default_rng(it), probability=0.0)
        targets = ssl.teacher_targets(g, masks, vals["teacher_temp"])
        loss, terms = ssl.losses(fwd(g, torch.zeros(0), masks.masks, masks.indices), targets, masks, 0)
        loss.backward()
        opt.step()
        ssl.update_teacher(vals["momentum"])
        ssl.dino_center.apply()
        record = {k: float(v) for k, v in {**terms, **ssl.monitors(targets)}.items()}
        if it == 5:  # the first iterations run before the centre exists: skip them
            first = record
        last = record
    assert last["dino_global"] < 0.2 * first["dino_global"]  # measured: 3.72 -> 0.18
    assert last["teacher_entropy"] < 0.1 < first["teacher_entropy"]  # confident targets ...
    assert last["teacher_batch_entropy"] > 0.3  # ... spread over prototypes, not one for all
