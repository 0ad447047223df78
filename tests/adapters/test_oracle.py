"""The ``oracle`` (phantom ground truth) and ``chance`` (seeded noise) reference encoders: values
checked against the phantom's manifest and masks and hand-computed geometry; refusals of
anything that is not a phantom scan, through the command line a user types."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctbench.adapters.chance import ChanceEncoder
from ctbench.adapters.oracle import POOL, OracleEncoder
from ctbench.errors import CTBenchError
from ctbench.phantom import FINDINGS, generate_phantom
from ctbench.readers import read_volume
from tests.cli_helpers import run_cli


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("oracle") / "ph", n_patients=6, seed=4)


def _manifest(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "manifest.csv")


def test_oracle_embedding_is_the_manifest_truth(phantom: Path) -> None:
    enc = OracleEncoder()
    assert enc.weights_ref.is_none and not enc.weights_ref.is_random
    for _, row in _manifest(phantom).iterrows():
        f = enc.encode(read_volume(phantom / row["image"]))
        assert f.embedding.shape == (18,)
        assert f.embedding[:4].tolist() == [2.0 * row[c] - 1 for c in FINDINGS]
        assert f.embedding[4] == 2.0 * row["contrast"] - 1
        assert f.embedding[5] == pytest.approx(0.5 * (row["liver_volume_ml"] - 400) / 180, abs=1e-5)
        assert f.embedding[6] == pytest.approx(0.5 * (np.log1p(row["lesion_burden_ml"]) - 1), abs=1e-4)
        assert f.embedding[7] == pytest.approx(0.5 * (row["lesion_burden_ml"] / 10 - 1), abs=1e-4)


def test_oracle_tokens_are_mask_fractions_on_a_correct_grid(phantom: Path) -> None:
    row = _manifest(phantom).dropna(subset=["lesion_x"]).iloc[0]
    mask_img = nib.load(phantom / row["mask"])
    mask = np.asarray(mask_img.dataobj)
    f = OracleEncoder().encode(read_volume(phantom / row["image"]))
    assert f.tokens.shape[0] == 8 and f.tokens.shape[1:] == tuple(-(-n // POOL) for n in mask.shape)
    fractions = f.tokens[:7].astype(np.float64)
    assert np.allclose(fractions.sum(0), 1.0, atol=1e-3)
    # every structure's voxel count equals its fractions summed over blocks x POOL^3 voxels per block
    # (background also fills the blocks' padding beyond odd-sized edges)
    counts = np.bincount(mask.ravel(), minlength=7)
    summed = fractions.reshape(7, -1).sum(1) * POOL**3
    assert np.allclose(summed[1:], counts[1:], rtol=2e-3, atol=2) and summed[0] >= counts[0]
    # block (i, j, k) is centred at the mean world position of its POOL^3 voxels
    i, j, k, n = 3, 5, 7, range(POOL)
    voxels = np.array([[POOL * i + a, POOL * j + b, POOL * k + c, 1] for a in n for b in n for c in n])
    centre = (mask_img.affine @ voxels.T).T[:, :3].mean(0)
    assert np.allclose(f.token_affine @ [i, j, k, 1], [*centre, 1], atol=1e-6)
    # the last channel peaks at the largest lesion's centre (the localisation target)
    peak = np.unravel_index(np.argmax(f.tokens[7]), f.tokens.shape[1:])
    world = (f.token_affine @ [*peak, 1])[:3]
    spacing = np.linalg.norm(f.token_affine[:3, :3], axis=0).max()
    assert np.linalg.norm(world - row[["lesion_x", "lesion_y", "lesion_z"]].to_numpy(float)) <= spacing


def test_oracle_refuses_what_is_not_a_phantom_scan(phantom: Path, tmp_path: Path) -> None:
    enc = OracleEncoder()
    image = phantom / "images" / "P0000-s1.nii.gz"
    vol = read_volume(image)
    vol.meta.pop("filename_or_obj")
    with pytest.raises(CTBenchError, match="no source file"):
        enc.encode(vol)
    (tmp_path / "scans").mkdir()
    stray = shutil.copy(image, tmp_path / "scans" / "P0000-s1.nii.gz")
    with pytest.raises(CTBenchError, match=f"{stray}.*not an image of a ctbench phantom"):
        enc.encode(read_volume(stray))
    other = read_volume(phantom / "images" / "P0001-s1.nii.gz")
    other.meta["filename_or_obj"] = str(image)  # a volume posing as another case
    with pytest.raises(CTBenchError, match="does not match the grid"):
        enc.encode(other)
    with pytest.raises(CTBenchError, match="has no weights"):
        OracleEncoder(weights=str(image))


@pytest.mark.parametrize("edit, words", [
    (lambda t: t["cases"]["P0000-s1"].update(mask="../../../etc/passwd"), "masks/P0000-s1.nii.gz"),
    (lambda t: t["cases"].update({"../x": t["cases"]["P0000-s1"]}), "not a phantom case id"),
    (lambda t: t["cases"]["P0000-s1"].update(risk="nan"), "risk"),
    (lambda t: t.update(format=99), "format 99"),
])
def test_oracle_validates_the_truth_file(phantom: Path, tmp_path: Path, edit, words: str) -> None:
    copy = Path(shutil.copytree(phantom, tmp_path / "ph"))
    truth = json.loads((copy / "truth.json").read_text())
    edit(truth)
    (copy / "truth.json").write_text(json.dumps(truth))
    with pytest.raises(CTBenchError, match=f"truth.json.*{words}|{words}.*truth"):
        OracleEncoder().encode(read_volume(copy / "images" / "P0000-s1.nii.gz"))


def test_oracle_run_on_a_dataset_that_is_no_phantom_names_the_file(phantom: Path, tmp_path: Path,
                                                                    monkeypatch, capsys) -> None:
    copy = Path(shutil.copytree(phantom, tmp_path / "mine"))
    (copy / "truth.json").unlink()
    code, out, err = run_cli(monkeypatch, capsys, "run", "--model", "oracle", "--task", "regression",
                             "--dataset", str(copy), "--trials", "1", "--bootstrap", "10")
    assert code == 2 and "Traceback" not in err
    assert "not an image of a ctbench phantom" in err and "P00" in err


def test_chance_is_seeded_noise_per_scan(phantom: Path) -> None:
    enc = ChanceEncoder()
    assert enc.weights_ref.is_none
    a = read_volume(phantom / "images" / "P0000-s1.nii.gz")
    f1, f2 = enc.encode(a), enc.encode(read_volume(phantom / "images" / "P0000-s1.nii.gz"))
    assert np.array_equal(f1.embedding, f2.embedding) and np.array_equal(f1.tokens, f2.tokens)
    moved = a.clone()
    moved.meta["filename_or_obj"] = "elsewhere.nii.gz"  # the file name plays no part
    assert np.array_equal(enc.encode(moved).embedding, f1.embedding)
    g = enc.encode(read_volume(phantom / "images" / "P0001-s1.nii.gz"))
    assert not np.allclose(g.embedding, f1.embedding)
    assert abs(float(np.corrcoef(f1.embedding, g.embedding)[0, 1])) < 0.6
    # tokens: one per 4x4x4-voxel block, block b centred at voxel 4b + 1.5
    assert f1.tokens.shape[1:] == tuple(-(-n // 4) for n in a.shape[1:])
    expected = np.asarray(a.affine, dtype=np.float64) @ [4 * 2 + 1.5, 4 * 3 + 1.5, 4 * 1 + 1.5, 1]
    assert np.allclose(f1.token_affine @ [2, 3, 1, 1], expected)
    assert abs(float(f1.tokens.astype(np.float64).mean())) < 0.05 and 0.9 < float(f1.tokens.std()) < 1.1
