"""DINO, iBOT and KoLeo losses with the reference normalisation, and EMA teacher centering.

With ``n_l`` local crops and 2 global crops there are ``T = 2 + 2 n_l`` DINO terms (each global
student crop against the other teacher global, each local crop against both teacher globals);
each term is the batch mean of ``-sum_k t_k log softmax(s / 0.1)_k`` and both DINO parts are
divided by ``T``, so ``dino_local + dino_global`` is the mean term. iBOT averages the
cross-entropy over the masked patches of each image, then over *all* global-crop images (an
unmasked image contributes 0). KoLeo is ``-mean log(nearest-neighbour distance)`` of the
L2-normalised student CLS, computed per global crop and summed, times its weight.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Centering",
    "cross_entropy_terms",
    "dino_losses",
    "ibot_loss",
    "koleo_loss",
    "N_GLOBAL",
]

N_GLOBAL = 2  # the reference's loss normalisation assumes exactly two global crops


class Centering(nn.Module):
    """EMA centre of the teacher logits (DINOv2 centering, not Sinkhorn-Knopp).

    Statistics gathered during an optimizer step (``accumulate``) are averaged over all ranks
    and folded in by ``apply`` at the end of the step: ``c <- m c + (1 - m) mean``, where the
    momentum is 0 while the centre is still all zeros (the first update takes the batch mean).
    """

    center: Tensor

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("center", torch.zeros(1, dim))
        self._sum: Tensor | None = None
        self._count = 0

    @torch.no_grad()
    def teacher_probs(self, logits: Tensor, temp: float) -> Tensor:
        """``softmax((logits - center) / temp)`` in fp32."""
        return F.softmax((logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def accumulate(self, rows: Tensor, count: int | None = None) -> None:
        """Add ``rows`` ``(n, K)`` (summed) to this step's statistics, counting ``count``
        (default ``n``) observations."""
        total = rows.float().sum(0)
        self._sum = total if self._sum is None else self._sum + total
        self._count += rows.shape[0] if count is None else count

    @torch.no_grad()
    def apply(self) -> None:
        """Reduce this step's statistics over ranks and update the centre."""
        total = self._sum if self._sum is not None else torch.zeros_like(self.center[0])
        stats = torch.cat((total, total.new_tensor([float(self._count)])))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        self._sum, self._count = None, 0
        if stats[-1] <= 0:
            return
        mean = (stats[:-1] / stats[-1]).unsqueeze(0)
        mom = self.momentum if bool(self.center.any()) else 0.0
        self.center.mul_(mom).add_(mean, alpha=1.0 - mom)


def cross_entropy_terms(student_logits: Tensor, teacher_probs: Tensor, student_temp: float) -> Tensor:
    """Per-row ``-sum_k t_k log softmax(s / T)_k`` (fp32)."""
    lsm = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs * lsm).sum(-1)


def dino_losses(
    student_global: Tensor,
    student_local: Tensor | None,
    teacher_probs: Tensor,
    n_local: int,
    student_temp: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """``(dino_local, dino_global)``, both divided by the ``2 + 2 n_l`` DINO terms.

    ``student_global`` ``(2B, K)`` and ``student_local`` ``(n_l B, K)`` are crop-major (crop 0 of
    every sample, then crop 1, ...); ``teacher_probs`` ``(2B, K)`` is already swapped so its row
    ``i`` comes from the *other* global crop of the sample of student row ``i``.
    """
    n_terms = (N_GLOBAL - 1) * N_GLOBAL + N_GLOBAL * n_local
    ce = cross_entropy_terms(student_global, teacher_probs, student_temp)
    dino_global = ce.mean() * N_GLOBAL / n_terms  # = sum of the two per-crop batch means / T
    dino_local = ce.new_zeros(())
    if n_local > 0 and student_local is not None:
        teachers = teacher_probs.chunk(N_GLOBAL)
        for s in student_local.chunk(n_local):
            for t in teachers:
                dino_local = dino_local + cross_entropy_terms(s, t, student_temp).mean()
        dino_local = dino_local / n_terms
    return dino_local, dino_global


def ibot_loss(
    student_masked: Tensor,
    teacher_masked_probs: Tensor,
    masks_weight: Tensor,
    n_images: int,
    student_temp: float = 0.1,
) -> Tensor:
    """``sum_i sum_{p masked in i} CE_p / n_masked(i)``, divided by the ``n_images`` global-crop
    images (masked or not). Rows are the masked patches; ``masks_weight`` is ``1/n_masked(i)``."""
    if student_masked.shape[0] == 0:
        return student_masked.sum() * 0.0
    ce = cross_entropy_terms(student_masked, teacher_masked_probs, student_temp)
    return (ce * masks_weight.float()).sum() / n_images


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Kozachenko-Leonenko entropy estimate: ``-mean_i log ||x_i - x_nn(i)||`` over the
    L2-normalised rows of ``x`` (fp32, nearest neighbour by cosine similarity)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            dots = x @ x.t()
            dots.fill_diagonal_(-1.0)
            nearest = dots.argmax(dim=1)
        distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
        return -torch.log(distances + eps).mean()
