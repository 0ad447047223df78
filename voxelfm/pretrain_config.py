"""``PretrainConfig``: every setting of a pre-training run, read from and written to a YAML with
the reference's key names (``student``, ``dino``, ``ibot``, ``train``, ``optim``,
``schedules``, ``crops``, ``datasets``, ``checkpointing``, ``compute_precision``), so that
``voxelfm.checkpoint`` reads the architecture from the ``config.yaml`` saved beside an exported
teacher. Settings the reference hard-codes live under an extra ``ctbench`` section.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .config import VoxelFMConfig
from .crops import CropConfig
from .schedules import Schedule, ScheduleConfig

__all__ = ["HeadConfig", "LossConfig", "OptimConfig", "TrainConfig", "DataConfig", "PretrainConfig",
           "PRETRAIN_PRESETS", "merge", "apply_overrides"]


@dataclass(frozen=True)
class HeadConfig:
    n_prototypes: int = 65536
    bottleneck_dim: int = 256
    hidden_dim: int = 2048
    nlayers: int = 3


@dataclass(frozen=True)
class LossConfig:
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    student_temp: float = 0.1
    center_momentum: float = 0.9
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)


@dataclass(frozen=True)
class OptimConfig:
    clip_grad: float = 3.0
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    adamw_beta1: float = 0.9
    adamw_beta2: float = 0.999


@dataclass(frozen=True)
class TrainConfig:
    batch_size_per_device: int = 16
    grad_accum_steps: int = 16
    seed: int = 0
    num_workers: int = 0
    checkpoint_period: int = 100
    export_period: int = 0  # 0: export the teacher only at the end
    compute_precision: str = "bf16"  # bf16 autocast on CUDA; CPU always runs fp32


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "phantom"
    splits: tuple[str, ...] = ("train", "val")  # test images stay unseen by default
    crop_background: bool = True
    min_spacing: float = 0.75
    cache_volumes: int = 0  # volumes kept in memory per process/worker; >= dataset size to cache all


@dataclass(frozen=True)
class PretrainConfig:
    student: VoxelFMConfig = field(default_factory=lambda: VoxelFMConfig(drop_path_rate=0.1))
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def multicrop(self) -> CropConfig:
        """The crop settings with the backbone's intensity constants."""
        s = self.student
        return dataclasses.replace(self.crops, hu_min=s.hu_min, hu_max=s.hu_max,
                                   norm_mean=s.norm_mean, norm_std=s.norm_std)

    def to_reference(self) -> dict[str, Any]:
        """The config as a reference-style YAML document (plain types only)."""
        s, h, lo, c, sc, o, t, d = (self.student, self.head, self.loss, self.crops,
                                    self.schedules, self.optim, self.train, self.data)
        head = {"head_n_prototypes": h.n_prototypes, "head_bottleneck_dim": h.bottleneck_dim,
                "head_nlayers": h.nlayers, "head_hidden_dim": h.hidden_dim}

        def sched(x: Schedule) -> dict:
            return {"start": x.start, "peak": x.peak, "end": x.end, "warmup_epochs": x.warmup_epochs}

        return {
            "compute_precision": t.compute_precision,
            "dino": {"loss_weight": lo.dino_weight, **head, "koleo_loss_weight": lo.koleo_weight},
            "ibot": {"loss_weight": lo.ibot_weight, "mask_sample_probability": lo.mask_probability,
                     "mask_ratio_min_max": list(lo.mask_ratio), "separate_head": False, **head},
            "train": {"grad_accum_steps": t.grad_accum_steps, "batch_size_per_gpu": t.batch_size_per_device,
                      "seed": t.seed, "num_workers": t.num_workers,
                      "official_epoch_length": sc.epoch_length},
            "student": {"embed_dim": s.embed_dim, "depth": s.depth, "num_heads": s.num_heads,
                        "patch_size": s.patch_size, "mlp_ratio": s.mlp_ratio,
                        "drop_path_rate": s.drop_path_rate, "layerscale": s.layerscale,
                        "rope_base": s.rope_base, "drop_path_uniform": s.drop_path_uniform,
                        "ffn_layer": "mlp", "qkv_bias": True, "proj_bias": True, "ffn_bias": True,
                        "num_register_tokens": s.num_register_tokens},
            "optim": {"epochs": sc.epochs, "clip_grad": o.clip_grad,
                      "patch_embed_lr_mult": o.patch_embed_lr_mult, "layerwise_decay": o.layerwise_decay,
                      "adamw_beta1": o.adamw_beta1, "adamw_beta2": o.adamw_beta2},
            "checkpointing": {"period": t.checkpoint_period},
            "schedules": {"lr": {**sched(sc.lr), "freeze_last_layer_epochs": sc.freeze_last_layer_epochs},
                          "weight_decay": sched(sc.weight_decay), "momentum": sched(sc.momentum),
                          "teacher_temp": sched(sc.teacher_temp)},
            "crops": {"global_crops_scale": list(c.global_scale), "local_crops_number": c.n_local,
                      "local_crops_scale": list(c.local_scale), "global_crops_size": list(c.global_size),
                      "local_crops_size": list(c.local_size)},
            "datasets": [{"name": d.dataset, "modality": "ct",
                          "pixel_range": {"lower": s.hu_min, "upper": s.hu_max},
                          "norm": {"mean": s.norm_mean, "std": s.norm_std}}],
            "ctbench": {"student_temp": lo.student_temp, "center_momentum": lo.center_momentum,
                        "flip_p": c.flip_p, "window_p": c.window_p, "splits": list(d.splits),
                        "crop_background": d.crop_background, "min_spacing": d.min_spacing,
                        "cache_volumes": d.cache_volumes, "export_period": t.export_period},
        }

    @classmethod
    def from_reference(cls, doc: dict[str, Any]) -> "PretrainConfig":
        """Inverse of ``to_reference``; keys that are absent keep the reference defaults.
        Unsupported variants (separate iBOT head, SwiGLU, bias-free layers) raise ValueError."""
        full = merge(cls().to_reference(), doc)
        dn, ib, tr, st, op = full["dino"], full["ibot"], full["train"], full["student"], full["optim"]
        sc, cr, ds, ex = full["schedules"], full["crops"], full["datasets"][0], full["ctbench"]
        if ib.get("separate_head"):
            raise ValueError("ibot.separate_head: true is not supported (iBOT shares the DINO head)")
        if st.get("ffn_layer", "mlp") != "mlp":
            raise ValueError(f"student.ffn_layer {st['ffn_layer']!r} is not supported (only 'mlp')")
        for key in ("qkv_bias", "proj_bias", "ffn_bias"):
            if st.get(key, True) is not True:
                raise ValueError(f"student.{key}: only true is supported")
        ls = st.get("layerscale")
        student = VoxelFMConfig(
            embed_dim=int(st["embed_dim"]), depth=int(st["depth"]), num_heads=int(st["num_heads"]),
            patch_size=int(st["patch_size"]), num_register_tokens=int(st["num_register_tokens"]),
            mlp_ratio=float(st["mlp_ratio"]), layerscale=float(ls) if ls else None,
            rope_base=float(st["rope_base"]), drop_path_rate=float(st["drop_path_rate"]),
            drop_path_uniform=bool(st["drop_path_uniform"]),
            hu_min=float(ds["pixel_range"]["lower"]), hu_max=float(ds["pixel_range"]["upper"]),
            norm_mean=float(ds["norm"]["mean"]), norm_std=float(ds["norm"]["std"]),
        )

        def sched(x: dict) -> Schedule:
            return Schedule(float(x["start"]), float(x["peak"]), float(x["end"]), float(x["warmup_epochs"]))

        def size3(v) -> tuple[int, int, int]:
            v = [v] * 3 if isinstance(v, int) else list(v)
            if len(v) != 3:
                raise ValueError(f"crop size must be one int or three, got {v}")
            return tuple(int(n) for n in v)  # type: ignore[return-value]

        return cls(
            student=student,
            head=HeadConfig(int(dn["head_n_prototypes"]), int(dn["head_bottleneck_dim"]),
                            int(dn["head_hidden_dim"]), int(dn["head_nlayers"])),
            loss=LossConfig(float(dn["loss_weight"]), float(ib["loss_weight"]), float(dn["koleo_loss_weight"]),
                            float(ex["student_temp"]), float(ex["center_momentum"]),
                            float(ib["mask_sample_probability"]),
                            tuple(float(r) for r in ib["mask_ratio_min_max"])),  # type: ignore[arg-type]
            crops=CropConfig(global_size=size3(cr["global_crops_size"]), local_size=size3(cr["local_crops_size"]),
                             n_local=int(cr["local_crops_number"]),
                             global_scale=tuple(float(x) for x in cr["global_crops_scale"]),  # type: ignore[arg-type]
                             local_scale=tuple(float(x) for x in cr["local_crops_scale"]),  # type: ignore[arg-type]
                             flip_p=float(ex["flip_p"]), window_p=float(ex["window_p"])),
            schedules=ScheduleConfig(epochs=float(op["epochs"]), epoch_length=int(tr["official_epoch_length"]),
                                     lr=sched(sc["lr"]), weight_decay=sched(sc["weight_decay"]),
                                     momentum=sched(sc["momentum"]), teacher_temp=sched(sc["teacher_temp"]),
                                     freeze_last_layer_epochs=float(sc["lr"]["freeze_last_layer_epochs"])),
            optim=OptimConfig(float(op["clip_grad"] or 0.0), float(op["layerwise_decay"]),
                              float(op["patch_embed_lr_mult"]), float(op["adamw_beta1"]), float(op["adamw_beta2"])),
            train=TrainConfig(int(tr["batch_size_per_gpu"]), int(tr["grad_accum_steps"]), int(tr["seed"]),
                              int(tr["num_workers"]), int(full["checkpointing"]["period"]),
                              int(ex["export_period"]), str(full["compute_precision"])),
            data=DataConfig(str(ds["name"]), tuple(str(x) for x in ex["splits"]), bool(ex["crop_background"]),
                            float(ex["min_spacing"]), int(ex["cache_volumes"])),
        )


def merge(base: dict, update: dict) -> dict:
    """Deep merge of two YAML documents (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key == "datasets" and isinstance(value, list) and value and isinstance(out.get(key), list):
            out[key] = [merge(out[key][0], value[0]) if isinstance(value[0], dict) else value[0]]
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a reference document;
    ``datasets.0.name=...`` addresses the first dataset."""
    import yaml

    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node: Any = doc
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        last = keys[-1]
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return doc


# The tiny CPU preset. Besides the smaller backbone, head, crops and schedule, two settings
# differ from the reference, because with them the 48-d, 2-block backbone does not train on
# phantom volumes (teacher targets go uniform): LayerScale starts at 0.1, not 1e-5 (with 1e-5
# every crop gets the same CLS at init, cosine 0.996, so the centred teacher targets are uniform
# from the first step), and the teacher temperature is a constant 0.02 (not 0.04 -> 0.07).
_TINY_DOC = {
    "compute_precision": "bf16",
    "dino": {"head_n_prototypes": 256, "head_bottleneck_dim": 64, "head_hidden_dim": 256},
    "ibot": {"head_n_prototypes": 256, "head_bottleneck_dim": 64, "head_hidden_dim": 256},
    "train": {"grad_accum_steps": 1, "batch_size_per_gpu": 32, "official_epoch_length": 50},
    "student": {"embed_dim": 48, "depth": 2, "num_heads": 2, "layerscale": 0.1},
    "optim": {"epochs": 30},
    "checkpointing": {"period": 100},
    "schedules": {"lr": {"peak": 2e-4, "warmup_epochs": 2, "freeze_last_layer_epochs": 1},
                  "teacher_temp": {"start": 0.02, "peak": 0.02, "end": 0.02, "warmup_epochs": 0}},
    "crops": {"global_crops_size": [56, 56, 56], "local_crops_size": [28, 28, 28], "local_crops_number": 4},
    "ctbench": {"cache_volumes": 512},
}

PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    # the reference ssl_default_config.yaml (ViT-B/14, 864-d, batch 16 x 16 accumulation per GPU)
    "base": PretrainConfig(),
    # the tiny backbone (48-d, 2 blocks) on small crops: minutes on a CPU on phantom volumes
    "tiny": PretrainConfig.from_reference(_TINY_DOC),
}
