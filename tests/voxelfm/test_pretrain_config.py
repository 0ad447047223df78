"""Pre-training config: reference defaults, YAML round trip, overrides, and the config.yaml
that ``voxelfm.checkpoint`` reads beside an exported teacher."""

import pytest
import yaml

from ctbench.errors import CTBenchError
from ctbench.pretrain_cli import build_config
from voxelfm.checkpoint import config_beside
from voxelfm.config import VoxelFMConfig
from voxelfm.pretrain_config import PRETRAIN_PRESETS, PretrainConfig, apply_overrides


def test_base_preset_is_the_reference():
    c = PRETRAIN_PRESETS["base"]
    s = c.student
    assert (s.embed_dim, s.depth, s.num_heads, s.patch_size, s.num_register_tokens) == (864, 12, 12, 14, 4)
    assert s.drop_path_rate == 0.1 and s.layerscale == 1e-5
    assert (c.head.n_prototypes, c.head.hidden_dim, c.head.bottleneck_dim, c.head.nlayers) == (65536, 2048, 256, 3)
    assert (c.loss.dino_weight, c.loss.ibot_weight, c.loss.koleo_weight) == (1.0, 1.0, 0.1)
    assert c.loss.mask_ratio == (0.1, 0.5) and c.loss.mask_probability == 0.5
    assert c.crops.global_size == (112, 112, 112) and c.crops.local_size == (56, 56, 56)
    assert c.crops.n_local == 8 and c.crops.global_scale == (0.32, 1.0) and c.crops.local_scale == (0.05, 0.32)
    assert c.train.batch_size_per_device * c.train.grad_accum_steps * 8 == 2048
    assert (c.optim.clip_grad, c.optim.layerwise_decay, c.optim.patch_embed_lr_mult) == (3.0, 0.9, 0.2)
    assert c.schedules.total_iters == 100_000


def test_round_trip_and_overrides(tmp_path):
    for preset in PRETRAIN_PRESETS.values():
        doc = yaml.safe_load(yaml.safe_dump(preset.to_reference()))
        assert PretrainConfig.from_reference(doc) == preset
    doc = apply_overrides(PRETRAIN_PRESETS["tiny"].to_reference(),
                          ["crops.local_crops_number=2", "student.embed_dim=36", "datasets.0.name=/data/x",
                           "ibot.mask_ratio_min_max=[0.2, 0.4]"])
    cfg = PretrainConfig.from_reference(doc)
    assert cfg.crops.n_local == 2 and cfg.student.embed_dim == 36 and cfg.data.dataset == "/data/x"
    assert cfg.loss.mask_ratio == (0.2, 0.4)
    with pytest.raises(ValueError):
        PretrainConfig.from_reference({"ibot": {"separate_head": True}})
    yml = tmp_path / "c.yaml"
    yml.write_text("optim:\n  epochs: 3\ntrain:\n  batch_size_per_gpu: 4\n")
    cfg = build_config("tiny", yml, ["train.seed=5"])
    assert cfg.schedules.epochs == 3 and cfg.train.batch_size_per_device == 4 and cfg.train.seed == 5
    assert cfg.student.embed_dim == 48  # the rest stays the preset's
    with pytest.raises(CTBenchError, match="preset"):
        build_config("huge", None, [])
    with pytest.raises(CTBenchError, match="invalid"):
        build_config("tiny", None, ["crops.global_crops_size=[1, 2]"])


def test_config_yaml_gives_the_architecture(tmp_path):
    cfg = PretrainConfig.from_reference(apply_overrides(
        PRETRAIN_PRESETS["tiny"].to_reference(), ["student.embed_dim=36", "student.num_register_tokens=2"]))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_reference()))
    read = VoxelFMConfig.from_yaml(tmp_path / "config.yaml")
    assert read == cfg.student
    beside = config_beside(tmp_path / "teacher_checkpoint.pth", default=VoxelFMConfig.preset("tiny"))
    assert beside.embed_dim == 36 and beside.num_register_tokens == 2
