"""Pre-training end to end on phantom volumes: losses logged, exact resume, teacher export that
the ``voxelfm`` adapter loads, and the ``ctbench pretrain`` command."""

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from ctbench.adapters.voxelfm import VoxelFMEncoder
from ctbench.errors import CTBenchError
from ctbench.pretrain_cli import build_config, pretrain
from ctbench.readers import read_volume
from voxelfm.checkpointing import load_checkpoint
from voxelfm.pretrain_config import apply_overrides, PretrainConfig
from voxelfm.train import train

from tests.voxelfm.pretrain_fixtures import TINY_OVERRIDES, tiny_args

LOSSES = ("dino_local", "dino_global", "ibot", "koleo", "total")


def log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(small_phantom, tmp_path_factory):
    """Run A: 3 iterations through the CLI, then resumed for a 4th; run B: 4 straight."""
    root = tmp_path_factory.mktemp("pretrain")
    app = typer.Typer()
    app.command()(pretrain)
    res = CliRunner().invoke(app, [*tiny_args(small_phantom), "--out", str(root / "a"), "--stop-after", "3",
                                   "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    cfg = build_config("tiny", None, [*TINY_OVERRIDES, f"datasets.0.name={small_phantom}"])
    resumed = train(cfg, root / "a", device="cpu", stop_after=4)
    straight = train(cfg, root / "b", device="cpu", stop_after=4)
    return cfg, root / "a", root / "b", resumed, straight


def test_losses_are_logged(runs):
    _, a, _, resumed, _ = runs
    recs = log(a)
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    for r in recs:
        for k in LOSSES + ("lr", "wd", "momentum", "teacher_temp", "grad_norm", "teacher_entropy",
                           "teacher_cls_std"):
            assert np.isfinite(r[k]), k
        assert r["ibot"] > 0 and r["dino_global"] > 0 and r["dino_local"] > 0
        # total = dino + ibot + 2 x koleo (KoLeo is logged per global crop, summed in the loss)
        assert r["total"] == pytest.approx(r["dino_local"] + r["dino_global"] + r["ibot"] + 2 * r["koleo"],
                                           rel=1e-5)
    assert recs[0]["lr"] == 0.0 and recs[1]["lr"] == pytest.approx(1e-3 / 4)  # warm-up over 4 iterations
    assert recs[0]["last_layer_lr"] == recs[1]["last_layer_lr"] == 0.0 and recs[2]["last_layer_lr"] > 0
    assert recs[0]["teacher_temp"] == pytest.approx(0.04) and recs[2]["teacher_temp"] == pytest.approx(0.055)
    assert recs[-1]["samples"] == 4 * 2 * 2  # iterations x accumulation x batch
    assert resumed["start"] == 3 and resumed["iterations"] == 4


def test_resume_reproduces_the_uninterrupted_run(runs):
    _, a, b, _, _ = runs
    ra, rb = log(a), log(b)
    for x, y in zip(ra, rb):
        for k in LOSSES + ("grad_norm",):
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-6), (x["iteration"], k)
    ta = torch.load(a / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    tb = torch.load(b / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    assert ta.keys() == tb.keys()
    assert max(float((ta[k] - tb[k]).abs().max()) for k in ta) < 1e-6
    ca, cb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert ca["iteration"] == cb["iteration"] == 4
    for k in ("dino_center.center", "ibot_center.center"):
        assert torch.allclose(ca["model"][k], cb["model"][k], atol=1e-6)
        assert float(ca["model"][k].abs().sum()) > 0  # the centres moved


def test_resume_with_another_config_is_refused(runs, tmp_path):
    cfg, a, _, _, _ = runs
    other = PretrainConfig.from_reference(apply_overrides(cfg.to_reference(), ["dino.koleo_loss_weight=0.2"]))
    with pytest.raises(CTBenchError, match="different config"):
        train(other, a, device="cpu", stop_after=5)


def test_teacher_export_layout_and_adapter(runs, small_phantom):
    cfg, a, _, _, _ = runs
    path = a / "teacher_checkpoint.pth"
    sd = torch.load(path, weights_only=True)
    assert list(sd) == ["teacher"]
    keys = list(sd["teacher"])
    assert all(k.startswith(("backbone.", "dino_head.")) for k in keys)
    assert "backbone.rope_embed.periods" in keys and "dino_head.last_layer.parametrizations.weight.original0" in keys
    assert (a / "config.yaml").is_file()
    # variant tiny (48-d) + --weights PATH: the architecture comes from the config.yaml beside it
    enc = VoxelFMEncoder(weights=str(path), variant="tiny")
    assert enc.config.embed_dim == 36 and enc.embedding_dim == 36
    loaded = enc.model.state_dict()
    assert all(torch.equal(loaded[k[len("backbone."):]], v) for k, v in sd["teacher"].items()
               if k.startswith("backbone."))
    vol = read_volume(next((small_phantom / "images").glob("*.nii.gz")))
    feats = enc.encode(vol)
    assert feats.embedding.shape == (36,) and np.all(np.isfinite(feats.embedding))


def test_validation_errors(small_phantom, tmp_path):
    bad = build_config("tiny", None, [*TINY_OVERRIDES, "crops.global_crops_size=[30, 30, 30]"])
    with pytest.raises(CTBenchError, match="multiple of the patch size"):
        train(bad, tmp_path / "x", device="cpu")
    one = build_config("tiny", None, [*TINY_OVERRIDES, "train.batch_size_per_gpu=1"])
    with pytest.raises(CTBenchError, match="KoLeo"):
        train(one, tmp_path / "x", device="cpu")


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_after_a_torn_last_log_line(runs, tmp_path, capsys):
    """Power loss mid-append: the half line is dropped with a warning and the log rewritten."""
    cfg, a, _, _, _ = runs
    run = _copy_run(a, tmp_path / "torn")
    whole = (run / "log.jsonl").read_text()
    (run / "log.jsonl").write_text(whole + '{"iteration": 4, "dino_local": 3.1')
    summary = train(cfg, run, device="cpu", stop_after=4)  # checkpoint at 4: nothing left to train
    assert summary["start"] == 4
    assert (run / "log.jsonl").read_text() == whole  # the complete records, byte for byte
    err = capsys.readouterr().err
    assert str(run / "log.jsonl") in err and "line 5" in err and "incomplete" in err


def test_a_corrupt_line_inside_the_log_is_refused_by_name(runs, tmp_path):
    cfg, a, _, _, _ = runs
    run = _copy_run(a, tmp_path / "corrupt")
    lines = (run / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CTBenchError, match=r"log\.jsonl: line 2 is not a valid log record.*--no-resume"):
        train(cfg, run, device="cpu", stop_after=4)
    assert (run / "log.jsonl").read_text() == "\n".join(lines) + "\n"  # left as found
