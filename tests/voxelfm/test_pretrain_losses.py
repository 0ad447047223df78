"""DINO / iBOT / KoLeo losses and centering against hand-computed values."""

import math

import pytest
import torch

from voxelfm.heads import DINOHead
from voxelfm.losses import Centering, cross_entropy_terms, dino_losses, ibot_loss, koleo_loss

LN2, LN43 = math.log(2.0), math.log(4.0 / 3.0)


def test_cross_entropy_terms():
    s = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # softmax [3/4, 1/4] and [1/2, 1/2]
    t = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    assert cross_entropy_terms(s, t, 1.0).tolist() == pytest.approx([LN43, LN2], abs=1e-6)
    # the student temperature divides the logits: s / 0.5 doubles them -> softmax [9/10, 1/10]
    assert cross_entropy_terms(s[:1], t[:1], 0.5).item() == pytest.approx(-math.log(0.9), abs=1e-6)


def test_dino_normalisation_two_globals_one_local():
    # B = 1, two global crops, one local crop: T = 2 + 2 * 1 = 4 terms
    sg = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # student global crop 0, crop 1
    sl = torch.tensor([[0.0, math.log(3.0)]])  # softmax [1/4, 3/4]
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher (already swapped): for crop 0, for crop 1
    local, glob = dino_losses(sg, sl, t, n_local=1, student_temp=1.0)
    # global: CE(sg0, t0) + CE(sg1, t1) = ln(4/3) + ln 2; local: CE(sl, t0) + CE(sl, t1) = ln 4 + ln(4/3)
    assert glob.item() == pytest.approx((LN43 + LN2) / 4, abs=1e-6)
    assert local.item() == pytest.approx((math.log(4.0) + LN43) / 4, abs=1e-6)


def test_dino_batch_mean_and_no_locals():
    sg = torch.zeros(4, 3)  # B = 2: CE = ln 3 for every row
    t = torch.softmax(torch.randn(4, 3), -1)
    local, glob = dino_losses(sg, None, t, n_local=0, student_temp=0.1)
    assert local.item() == 0.0
    assert glob.item() == pytest.approx(math.log(3.0), abs=1e-6)  # 2 terms of ln 3, over T = 2


def test_ibot_weights_and_image_count():
    # 2 global-crop images: image 0 has 2 masked patches, image 1 none
    s = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([0.5, 0.5])
    loss = ibot_loss(s, t, w, n_images=2, student_temp=1.0)
    assert loss.item() == pytest.approx((0.5 * LN43 + 0.5 * LN2) / 2, abs=1e-6)
    empty = ibot_loss(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), torch.zeros(0), 2)
    assert empty.item() == 0.0 and empty.requires_grad


def test_koleo_hand_computed():
    a = [math.radians(d) for d in (0.0, 90.0, 45.0)]
    x = torch.tensor([[math.cos(v), math.sin(v)] for v in a]) * torch.tensor([[2.0], [0.5], [3.0]])
    # after L2 normalisation each point's nearest neighbour is 45 degrees away
    d = 2 * math.sin(math.radians(22.5))
    assert koleo_loss(x).item() == pytest.approx(-math.log(d), abs=1e-6)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal pair: distance sqrt(2)
    assert koleo_loss(y).item() == pytest.approx(-0.5 * math.log(2.0), abs=1e-6)


def test_centering_first_update_then_ema():
    c = Centering(2, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert c.teacher_probs(logits, 1.0)[0].tolist() == pytest.approx(torch.softmax(logits[0], -1).tolist())
    c.accumulate(logits)
    c.apply()
    assert c.center.tolist() == [[2.0, 3.0]]  # centre all zeros -> momentum 0
    c.accumulate(torch.zeros(3, 2))
    c.accumulate(torch.ones(1, 2) * 4.0)  # statistics pile up over micro-batches: mean [1, 1]
    c.apply()
    assert c.center[0].tolist() == pytest.approx([0.9 * 2 + 0.1, 0.9 * 3 + 0.1])
    p = c.teacher_probs(torch.tensor([[1.9, 2.8]]), 0.5)  # centred logits equal -> uniform
    assert p[0].tolist() == pytest.approx([0.5, 0.5])
    c.apply()  # nothing gathered: unchanged
    assert c.center[0].tolist() == pytest.approx([1.9, 2.8])
    assert set(c.state_dict()) == {"center"}


def test_dino_head_layout_and_norm():
    h = DINOHead(12, 16, hidden_dim=20, bottleneck_dim=8, nlayers=3)
    keys = set(h.state_dict())
    assert keys == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
                    "last_layer.parametrizations.weight.original0",
                    "last_layer.parametrizations.weight.original1"}
    g = h.state_dict()["last_layer.parametrizations.weight.original0"]
    assert g.shape == (16, 1) and torch.all(g == 1)
    # weight norm with g = 1: every prototype row has unit norm, the input is L2-normalised,
    # so every logit is a cosine in [-1, 1]
    out = h(torch.randn(5, 12) * 100)
    assert out.shape == (5, 16) and out.abs().max() <= 1 + 1e-5
    assert torch.allclose(h.last_layer.weight.norm(dim=1), torch.ones(16), atol=1e-5)
