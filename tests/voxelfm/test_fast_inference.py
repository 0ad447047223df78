"""Fast inference: the benchmark's FLOP count, the benchmark running without MONAI/ctbench,
batching of equal shapes, the torch.compile option and (on CUDA) bf16 accuracy."""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters.voxelfm import VoxelFMEncoder

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "encode_voxelfm.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(BENCH))  # module globals, without running main()


def test_flop_formula(bench):
    flops = bench["forward_flops"]
    # MODELS.md: 12 (24 N E^2 + 4 N^2 E) + 2 N 14^3 E = 31 TFLOP at N = 24,986 (434 x 434 x 364)
    assert flops(24_986) / 1e12 == pytest.approx(31.4, abs=0.05)
    assert round(flops(24_986) / 1e12) == 31
    # by hand: N 1, E 6, depth 1, patch 2 -> 24*36 + 4*6 + 2*8*6
    assert flops(1, embed_dim=6, depth=1, patch=2) == 864 + 24 + 96
    assert flops(4096) / 1e12 == pytest.approx(1.596, abs=0.001)  # 224^3


def test_benchmark_runs_without_monai_or_ctbench():
    # monai, ctbench and pydantic made unimportable: the script needs torch alone. Then, in the
    # same interpreter, the installed voxelfm.model / config / rope import without MONAI.
    blocked = ("monai", "ctbench", "pydantic", "voxelfm")
    code = (
        "import sys, runpy; "
        f"[sys.modules.__setitem__(m, None) for m in {blocked!r}]; "
        "sys.argv = ['x', '--preset', 'tiny', '--case', '28x28x28:2', '--case', '42x28x14:1', "
        "'--time-cap', '0.5', '--repeats', '2', '--device', 'cpu', '--threads', '1']; "
        f"runpy.run_path({str(BENCH)!r}, run_name='__main__'); "
        f"[sys.modules.pop(m) for m in {blocked!r}]; "
        "import voxelfm.model, voxelfm.config, voxelfm.rope; "
        "assert 'monai' not in sys.modules, 'voxelfm.model imported monai'"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| model | input | batch | tokens |") and "TFLOP/s" in lines[0]
    rows = [ln.split("|")[1:-1] for ln in lines[2:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip(), r[3].strip()) for r in rows] == [
        ("tiny", "28x28x28", "2", "8"), ("tiny", "42x28x14", "1", "6")]
    assert all(float(r[5]) > 0 and float(r[8]) > 0 for r in rows)  # vol/s, TFLOP/s


def volume(shape=(40, 36, 30), seed=0):
    g = torch.Generator().manual_seed(seed)
    vol = torch.full(shape, -1000.0)
    vol[4:-4, 4:-4, 4:-4] = 40.0 + 200 * torch.rand(shape[0] - 8, shape[1] - 8, shape[2] - 8, generator=g)
    return MetaTensor(vol[None], affine=torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)))


def test_equal_shapes_share_one_forward():
    enc = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False)
    calls = []
    run = enc._run
    enc._run = lambda x: calls.append(tuple(x.shape)) or run(x)
    vols = [volume(seed=0), volume((45, 45, 45), seed=1), volume(seed=2), volume(seed=3)]
    feats = enc.encode_batch(vols)
    assert sorted(calls) == [(1, 42, 42, 42), (3, 28, 28, 28)]  # one forward per input shape
    single = enc.encode(vols[2])
    np.testing.assert_allclose(feats[2].embedding, single.embedding, rtol=1e-5, atol=1e-5)


def test_compile_option_same_features():
    vol = volume()
    plain = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False).encode(vol)
    compiled = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False, compile="eager")
    assert compiled._run is not compiled.model
    np.testing.assert_allclose(compiled.encode(vol).embedding, plain.embedding, rtol=1e-5, atol=1e-6)
    assert compiled.preprocessing_id == VoxelFMEncoder(weights="random", variant="tiny",
                                                       crop_background=False).preprocessing_id


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_cls_close_to_fp32_on_cuda(bench):
    model, _ = bench["build"]("base", torch.device("cuda"))
    x = torch.randn(1, 112, 112, 112, device="cuda")
    assert bench["cls_relative_error"](model, x) < 1e-2
    assert bench["cls_relative_error"](model, x, layerscale=0.1) < 1e-2
