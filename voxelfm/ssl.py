"""Student/teacher self-distillation model: DINO (CLS) + iBOT (masked patches, shared head) +
KoLeo, with an EMA teacher and EMA-centred teacher targets.

``SSLModel.student`` and ``.teacher`` are ``ModuleDict(backbone=VoxelFM, dino_head=DINOHead)``,
so the teacher's state_dict keys are the official ``backbone.*`` / ``dino_head.*`` layout.
The student forward is one module call (``StudentForward(model.student)``, built by the trainer
and not registered here, so the state_dict holds each tensor once) so that it can be wrapped in
DDP.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from .heads import DINOHead
from .losses import N_GLOBAL, Centering, dino_losses, ibot_loss, koleo_loss
from .masking import MaskBatch
from .model import VoxelFM
from .pretrain_config import PretrainConfig

__all__ = ["SSLModel", "StudentForward"]


def _swap_globals(x: Tensor) -> Tensor:
    """Rows of crop 1 first, then crop 0: pairs each student global crop with the other one."""
    a, b = x.chunk(N_GLOBAL)
    return torch.cat((b, a))


class StudentForward(nn.Module):
    """Student backbone + head on the global (masked) and local crops, in one call."""

    def __init__(self, student: nn.ModuleDict) -> None:
        super().__init__()
        self.student = student

    def forward(self, global_crops: Tensor, local_crops: Tensor, masks: Tensor, mask_indices: Tensor) -> dict:
        backbone, head = self.student["backbone"], self.student["dino_head"]
        g = backbone.forward_features(global_crops, masks=masks)
        parts = [g["cls"]]
        n_loc = local_crops.shape[0] if local_crops.ndim == 4 else 0
        if n_loc:
            parts.append(backbone.forward_features(local_crops)["cls"])
        parts.append(g["patch_tokens"].flatten(0, 1).index_select(0, mask_indices))
        sizes = [p.shape[0] for p in parts]
        logits = head(torch.cat(parts)).split(sizes)
        return {
            "global_cls": g["cls"],
            "global_logits": logits[0],
            "local_logits": logits[1] if n_loc else None,
            "masked_logits": logits[-1],
        }


class SSLModel(nn.Module):
    """The pre-training model of ``cfg``; teacher initialised as a copy of the student."""

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.head
        self.student = nn.ModuleDict({
            "backbone": VoxelFM(cfg.student),
            "dino_head": DINOHead(cfg.student.embed_dim, h.n_prototypes, h.hidden_dim, h.bottleneck_dim, h.nlayers),
        })
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.dino_center = Centering(h.n_prototypes, cfg.loss.center_momentum)
        self.ibot_center = Centering(h.n_prototypes, cfg.loss.center_momentum)

    def train(self, mode: bool = True) -> "SSLModel":
        super().train(mode)
        self.teacher.eval()  # no drop-path in the teacher
        return self

    @torch.no_grad()
    def teacher_targets(self, global_crops: Tensor, masks: MaskBatch, teacher_temp: float) -> dict:
        """Centred, sharpened teacher distributions for DINO (swapped globals) and iBOT (masked
        patches); this step's raw logits are added to the centre statistics."""
        out = self.teacher["backbone"].forward_features(global_crops)
        cls = _swap_globals(out["cls"])
        patches = out["patch_tokens"].flatten(0, 1).index_select(0, masks.indices.to(cls.device))
        logits = self.teacher["dino_head"](torch.cat((cls, patches))).float()
        cls_logits, patch_logits = logits[: cls.shape[0]], logits[cls.shape[0] :]
        dino = self.dino_center.teacher_probs(cls_logits, teacher_temp)
        ibot = self.ibot_center.teacher_probs(patch_logits, teacher_temp)
        self.dino_center.accumulate(cls_logits)
        if patch_logits.shape[0]:
            self.ibot_center.accumulate(patch_logits.mean(0, keepdim=True), count=1)
        return {"dino": dino, "ibot": ibot, "cls": out["cls"].float()}

    def losses(self, student_out: dict, targets: dict, masks: MaskBatch, n_local: int) -> tuple[Tensor, dict]:
        """``(loss to optimise, detached terms for logging)`` with the reference weighting."""
        lo = self.cfg.loss
        d_local, d_global = dino_losses(student_out["global_logits"], student_out["local_logits"],
                                        targets["dino"], n_local, lo.student_temp)
        n_images = student_out["global_logits"].shape[0]
        ibot = ibot_loss(student_out["masked_logits"], targets["ibot"], masks.weights.to(targets["ibot"].device),
                         n_images, lo.student_temp)
        koleo = d_global.new_zeros(())
        if lo.koleo_weight:
            for c in student_out["global_cls"].chunk(N_GLOBAL):
                koleo = koleo + lo.koleo_weight * koleo_loss(c)
        total = lo.dino_weight * (d_local + d_global) + lo.ibot_weight * ibot + koleo
        terms = {
            "dino_local": d_local.detach(),
            "dino_global": d_global.detach(),
            "ibot": ibot.detach(),
            "koleo": (koleo / N_GLOBAL).detach(),  # logged per crop, as the reference does
            "total": total.detach(),
        }
        return total, terms

    @torch.no_grad()
    def monitors(self, targets: dict) -> dict[str, Tensor]:
        """Collapse monitors: mean per-sample entropy of the teacher DINO targets, entropy of
        their batch mean (-> 0 when one prototype wins), both over log K, and the std across
        the batch of the teacher's normalised CLS (-> 0 when all outputs coincide)."""
        p = targets["dino"]
        log_k = math.log(p.shape[-1])
        ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / log_k
        mean = p.mean(0)
        batch_ent = -(mean * mean.clamp_min(1e-12).log()).sum() / log_k
        cls = nn.functional.normalize(targets["cls"], dim=-1)
        return {"teacher_entropy": ent, "teacher_batch_entropy": batch_ent, "teacher_cls_std": cls.std(0).mean()}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- m teacher + (1 - m) student`` for every parameter."""
        t = list(self.teacher.parameters())
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)

    @torch.no_grad()
    def sync_teacher(self) -> None:
        """Teacher := student (start of training)."""
        self.teacher.load_state_dict(self.student.state_dict())
