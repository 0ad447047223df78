"""AdamW parameter groups of the reference: layer-wise LR decay, weight-decay exemptions and the
last-layer flag, and the per-iteration application of the schedules.

Backbone parameter ``name`` gets the LR multiplier ``decay ** (L + 1 - layer)`` with ``L``
blocks: layer 0 for the patch embedding, CLS/register/mask tokens; ``i + 1`` for
``blocks.i.*``; ``L + 1`` (multiplier 1) for the rest (final norm). The patch embedding gets a
further x0.2. Head parameters have multiplier 1. Biases and parameters whose name contains
``norm`` or ``gamma`` (LayerNorms, LayerScale) get no weight decay; ``last_layer`` parameters
follow the last-layer LR schedule (0 while frozen).
"""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer

__all__ = ["lr_multiplier", "param_groups", "apply_schedule"]

_LAYER0 = ("pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens")


def lr_multiplier(name: str, n_blocks: int, decay: float) -> float:
    """Layer-wise LR decay multiplier of backbone parameter ``name`` (no prefix)."""
    if any(key in name for key in _LAYER0):
        layer = 0
    elif name.startswith("blocks.") or ".blocks." in name:
        layer = int(name[name.index("blocks.") :].split(".")[1]) + 1
    else:
        layer = n_blocks + 1
    return decay ** (n_blocks + 1 - layer)


def param_groups(
    backbone: nn.Module,
    head: nn.Module | None = None,
    layerwise_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
) -> list[dict]:
    """Fused AdamW groups (one per distinct ``lr_multiplier``/``wd_multiplier``/
    ``is_last_layer``) over the trainable parameters of ``backbone`` and ``head``."""
    n_blocks = len(getattr(backbone, "blocks", ()))
    groups: dict[tuple, dict] = {}
    named = [(n, p, True) for n, p in backbone.named_parameters()]
    if head is not None:
        named += [(n, p, False) for n, p in head.named_parameters()]
    for name, param, in_backbone in named:
        if not param.requires_grad:
            continue
        mult = lr_multiplier(name, n_blocks, layerwise_decay) if in_backbone else 1.0
        if in_backbone and "patch_embed" in name:
            mult *= patch_embed_lr_mult
        wd = 0.0 if (name.endswith(".bias") or "norm" in name or "gamma" in name) else 1.0
        last = "last_layer" in name
        key = (mult, wd, last)
        group = groups.setdefault(
            key, {"params": [], "lr_multiplier": mult, "wd_multiplier": wd, "is_last_layer": last}
        )
        group["params"].append(param)
    return list(groups.values())


def apply_schedule(optimizer: Optimizer, lr: float, wd: float, last_layer_lr: float) -> None:
    """Set every group's LR (``last_layer_lr`` for the last head layer) and weight decay."""
    for g in optimizer.param_groups:
        g["lr"] = (last_layer_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        g["weight_decay"] = wd * g["wd_multiplier"]
