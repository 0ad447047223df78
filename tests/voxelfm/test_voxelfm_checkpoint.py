"""Strict loading of the reference checkpoint layouts, errors naming keys, config.yaml beside."""

import pytest
import torch

from ctbench.errors import CTBenchError
from voxelfm.checkpoint import config_beside, extract_backbone_state, load_backbone_state, load_model
from voxelfm.config import VoxelFMConfig
from voxelfm.model import VoxelFM

TINY = VoxelFMConfig.preset("tiny")


def make(seed):
    torch.manual_seed(seed)
    model = VoxelFM(TINY).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.ls1.gamma.normal_()
            blk.ls2.gamma.normal_()
    return model


def heads(prefix):
    return {
        f"{prefix}dino_head.mlp.0.weight": torch.randn(16, 48),
        f"{prefix}dino_head.mlp.0.bias": torch.randn(16),
        f"{prefix}dino_head.last_layer.parametrizations.weight.original0": torch.ones(32, 1),
        f"{prefix}dino_head.last_layer.parametrizations.weight.original1": torch.randn(32, 8),
        f"{prefix}ibot_head.mlp.0.weight": torch.randn(16, 48),
    }


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out["cls"], out["patch_tokens"]


X = torch.randn(1, 28, 28, 42)


def assert_same(a, b):
    for u, v in zip(outputs(a, X), outputs(b, X)):
        assert torch.equal(u, v)


def test_teacher_export_with_module_backbone_prefixes(tmp_path):
    src = make(1)
    sd = {f"module.backbone.{k}": v for k, v in src.state_dict().items()}
    sd.update(heads("module."))
    path = tmp_path / "99999.pth"
    torch.save({"teacher": sd}, path)
    dst = make(2)
    assert not torch.equal(outputs(src, X)[0], outputs(dst, X)[0])
    load_backbone_state(dst, path)
    assert_same(src, dst)


def test_plain_state_dict_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = make(3)
    torch.save(src.state_dict(), tmp_path / "plain.pth")
    dst = make(4)
    load_backbone_state(dst, tmp_path / "plain.pth")
    assert_same(src, dst)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    dst = make(5)
    load_backbone_state(dst, tmp_path / "w.safetensors")
    assert_same(src, dst)


def test_training_checkpoint_uses_teacher(tmp_path):
    teacher, student = make(6), make(7)
    sd = {f"teacher.backbone.{k}": v for k, v in teacher.state_dict().items()}
    sd.update({f"student.backbone.module.{k}": v for k, v in student.state_dict().items()})
    sd.update(heads("teacher."))
    torch.save({"iteration": 100, "model": sd}, tmp_path / "checkpoint.pth")
    dst = make(8)
    load_backbone_state(dst, tmp_path / "checkpoint.pth")
    assert_same(teacher, dst)


def test_extract_accepts_state_dict_wrapper():
    sd = {"backbone.norm.weight": torch.ones(3), "dino_head.x": torch.ones(1)}
    assert list(extract_backbone_state({"state_dict": sd})) == ["norm.weight"]


def broken(tmp_path, edit):
    sd = {f"backbone.{k}": v for k, v in make(9).state_dict().items()}
    edit(sd)
    path = tmp_path / "bad.pth"
    torch.save({"teacher": sd}, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = broken(tmp_path, lambda sd: sd.pop("backbone.blocks.1.ls2.gamma"))
    with pytest.raises(CTBenchError, match=r"missing keys: 1 \(blocks\.1\.ls2\.gamma\)"):
        load_backbone_state(make(0), path)


def test_unexpected_key_is_named(tmp_path):
    path = broken(tmp_path, lambda sd: sd.update({"backbone.pos_embed": torch.zeros(1, 8, 48)}))
    with pytest.raises(CTBenchError, match=r"unexpected keys: 1 \(pos_embed\)"):
        load_backbone_state(make(0), path)


def test_wrong_shape_is_named(tmp_path):
    path = broken(tmp_path, lambda sd: sd.update({"backbone.cls_token": torch.zeros(1, 1, 47)}))
    with pytest.raises(CTBenchError, match=r"wrongly shaped keys: 1 \(cls_token \(1, 1, 47\) vs model \(1, 1, 48\)\)"):
        load_backbone_state(make(0), path)


def test_many_problems_are_counted(tmp_path):
    path = broken(tmp_path, lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("backbone.blocks.")])
    with pytest.raises(CTBenchError, match=r"missing keys: 28 \(blocks\.0\.attn\.proj\.bias, .*, \.\.\.\)"):
        load_backbone_state(make(0), path)


def test_base_checkpoint_into_tiny_model_fails_clearly(tmp_path):
    with torch.device("meta"):
        base = VoxelFM(VoxelFMConfig())
    sd = {k: torch.zeros(v.shape) for k, v in base.state_dict().items() if "blocks.0." in k}
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(CTBenchError, match="wrongly shaped keys"):
        load_backbone_state(make(0), tmp_path / "x.pth")


REFERENCE_YAML = """\
compute_precision: fp32
student:
  embed_dim: 48
  depth: 2
  num_heads: 2
  patch_size: 14
  mlp_ratio: 4
  drop_path_rate: 0.1
  layerscale: 1.0e-05
  rope_base: 100.0
  rope_rescale_coords: null
  drop_path_uniform: true
  ffn_layer: mlp
  qkv_bias: true
  proj_bias: true
  ffn_bias: true
  num_register_tokens: 4
datasets:
  - name: radiomics_datasets
    pixel_range:
      lower: -1000.0
      upper: 1900.0
    norm:
      mean: -573.8
      std: 461.3
"""


def test_config_yaml_beside_hub_layout(tmp_path):
    run = tmp_path / "vitb_3d"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(REFERENCE_YAML)
    src = make(10)
    path = run / "checkpoints" / "99999.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, path)
    cfg = config_beside(path)
    assert cfg is not None and (cfg.embed_dim, cfg.depth, cfg.num_heads) == (48, 2, 2)
    assert (cfg.norm_mean, cfg.norm_std, cfg.hu_min, cfg.hu_max) == (-573.8, 461.3, -1000.0, 1900.0)
    assert cfg.layerscale == 1e-5 and cfg.num_register_tokens == 4
    model = load_model(path)  # architecture from the yaml, not the base default
    assert_same(src, model)


def test_config_yaml_ignored_when_not_a_reference_config(tmp_path):
    (tmp_path / "config.yaml").write_text("something: else\n")
    assert config_beside(tmp_path / "w.pth") is None
    assert config_beside(tmp_path / "w.pth", default=TINY) is TINY


def test_unsupported_yaml_variant(tmp_path):
    (tmp_path / "config.yaml").write_text(REFERENCE_YAML.replace("ffn_layer: mlp", "ffn_layer: swiglu"))
    with pytest.raises(CTBenchError, match="swiglu"):
        config_beside(tmp_path / "w.pth")


def test_load_into_meta_model_assigns_float32(tmp_path):
    src = make(11)
    torch.save({k: v.double() for k, v in src.state_dict().items()}, tmp_path / "f64.pth")
    with torch.device("meta"):
        dst = VoxelFM(TINY)
    load_backbone_state(dst, tmp_path / "f64.pth")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in dst.state_dict().values())
    assert_same(src, dst.eval())
