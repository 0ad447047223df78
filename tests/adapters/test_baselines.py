"""The weightless baselines ``hu-histogram`` and ``thumbnail``: features against hand-computed
values on synthetic volumes, token geometry on an oblique non-RAS grid, resolution invariance,
honest weights, check-adapter, and a run through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters.hu_histogram import BIN_EDGES, HUHistogramEncoder
from ctbench.adapters.thumbnail import GRID, ThumbnailEncoder
from ctbench.check_adapter import run_checks
from ctbench.errors import CTBenchError
from ctbench.registry import MODELS
from tests.cli_helpers import run_cli


def volume(hu: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(hu[None].astype(np.float32)), affine=torch.as_tensor(affine))


def stored_as_psl(ras: np.ndarray, ras_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same scan stored with index axes running towards P, S, L: array and affine."""
    stored = np.flip(np.flip(ras.transpose(1, 2, 0), axis=0), axis=2)  # (A->P, S, R->L)
    n = ras.shape

    def ras_index(s: tuple[int, int, int]) -> np.ndarray:  # stored index -> RAS-order index
        return np.array([n[0] - 1 - s[2], n[1] - 1 - s[0], s[1], 1.0])

    origin = ras_affine @ ras_index((0, 0, 0))
    cols = [ras_affine @ ras_index(e) - origin for e in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    affine = np.eye(4)
    affine[:, :3] = np.stack(cols, axis=1)
    affine[:, 3] = origin
    return np.ascontiguousarray(stored), affine


# -------------------------------------------------------------------------------- hu-histogram

SPACING = (2.0, 1.5, 3.0)  # mm per RAS-order axis: voxel volume 9 mm^3


def torso(scale: int = 1) -> np.ndarray:
    """A box torso in air (RAS index order, 40 x 30 x 20 voxels at ``scale`` 1): soft tissue 40 HU,
    a lung -800 HU enclosed in every axial slice but open at the top and bottom, bone 700 HU, an
    enclosed air pocket -1000 HU, and a separate 100 HU speck (not the largest component)."""
    hu = np.full((40, 30, 20), -1000.0)
    hu[4:36, 4:26, :] = 40.0  # tissue box spanning every axial slice
    hu[8:20, 8:22, :] = -800.0  # lung: a hole in each axial slice, touching the volume's ends
    hu[24:30, 10:14, 2:18] = 700.0  # bone
    hu[26:28, 18:20, 6:8] = -1000.0  # enclosed air pocket
    hu[0:2, 0:2, 0:2] = 100.0  # speck in a corner
    return np.kron(hu, np.ones((scale,) * 3)) if scale > 1 else hu


def test_hu_histogram_equals_hand_computed_bins_and_measurements() -> None:
    ras_affine = np.diag([*SPACING, 1.0])
    hu, affine = stored_as_psl(torso(), ras_affine)
    emb = HUHistogramEncoder().encode(volume(hu, affine)).embedding
    n_box = 32 * 22 * 20  # tissue box = the body (lung and pocket enclosed)
    n_lung, n_bone, n_air = 12 * 14 * 20, 6 * 4 * 16, 2 * 2 * 2
    n_soft = n_box - n_lung - n_bone - n_air
    hist = np.zeros(len(BIN_EDGES) - 1)
    hist[(40 + 1000) // 25] = n_soft  # bin [25, 50)
    hist[(-800 + 1000) // 25] = n_lung  # [-800, -775)
    hist[(700 + 1000) // 25] = n_bone  # [700, 725)
    hist[0] = n_air  # [-1000, -975)
    measures = [n_box * 9.0 / 1e6, n_lung / n_box, n_bone / n_box, (40.0 * n_soft + 700.0 * n_bone) / (n_soft + n_bone)]
    np.testing.assert_allclose(emb, np.r_[hist / n_box, measures].astype(np.float32), rtol=1e-6, atol=1e-7)


def test_hu_histogram_does_not_depend_on_voxel_size_or_orientation() -> None:
    enc = HUHistogramEncoder()
    coarse = enc.encode(volume(torso(), np.diag([*SPACING, 1.0]))).embedding
    fine_hu, fine_affine = stored_as_psl(torso(scale=2), np.diag([*(s / 2 for s in SPACING), 1.0]))
    fine = enc.encode(volume(fine_hu, fine_affine)).embedding
    np.testing.assert_allclose(fine, coarse, rtol=1e-5)
    assert coarse[-4] == pytest.approx(32 * 22 * 20 * 9.0 / 1e6)  # litres, from the affine


def test_hu_histogram_refuses_a_scan_without_body() -> None:
    with pytest.raises(CTBenchError, match="no voxel above -500 HU"):
        HUHistogramEncoder().encode(volume(np.full((8, 8, 8), -1000.0), np.eye(4)))


# ----------------------------------------------------------------------------------- thumbnail

def oblique_affine() -> np.ndarray:
    """Anisotropic (1.5, 2, 2.5 mm), not RAS (axes towards L, S, A roughly), rotated 20 degrees."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    axes = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # index axes -> L, S, A
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = [70.0, -100.0, -60.0]
    return affine


def test_thumbnail_tokens_sample_the_world_point_token_affine_names() -> None:
    """A linear HU ramp in world mm survives smoothing and linear resampling unchanged away from
    the edges, so each token channel must hold the ramp's value at its cell's world point: cell
    ``(a, b, c)`` of token ``t`` (channel ``4a + 2b + c``) at ``token_affine @ (t + ((a, b, c) - 0.5) / 2)``."""
    affine, shape = oblique_affine(), (120, 80, 90)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    slope, offset = np.array([2.0, 1.0, -1.5]), -200.0
    hu = (world @ slope + offset).reshape(shape)
    assert -1000 < hu.min() and hu.max() < 1000  # inside the clip window
    f = ThumbnailEncoder().encode(volume(hu, affine))
    tok, n = f.token_affine, GRID // 2
    assert f.tokens.shape == (8, n, n, n)
    np.testing.assert_allclose(np.linalg.norm(tok[:3, :3], axis=0), 16.0, rtol=1e-6)  # 16 mm tokens
    centre = affine @ np.r_[(np.array(shape) - 1) / 2, 1.0]
    assert np.abs(np.linalg.solve(tok, centre)[:3] - (n - 1) / 2).max() <= 0.5  # grid centred on the scan
    t = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    margin = 30.0 / np.array([1.5, 2.0, 2.5])  # beyond smoothing and interpolation edges, in voxels
    for channel, cell in enumerate(np.ndindex(2, 2, 2)):
        points = (t + (np.array(cell) - 0.5) / 2) @ tok[:3, :3].T + tok[:3, 3]
        inside = np.linalg.solve(affine, np.c_[points, np.ones(len(points))].T).T[:, :3]
        keep = np.all((inside > margin) & (inside < np.array(shape) - 1 - margin), axis=1)
        assert keep.sum() > 60
        expected = ((points @ slope + offset) + 1000.0) / 2000.0  # clip to [-1000, 1000], scale to [0, 1]
        got = f.tokens[channel].astype(np.float64).reshape(-1)
        np.testing.assert_allclose(got[keep], expected[keep], atol=2e-3)  # float16 tokens
    centres = t @ tok[:3, :3].T + tok[:3, 3]  # the block mean is the ramp at the token centre
    inside = np.linalg.solve(affine, np.c_[centres, np.ones(len(centres))].T).T[:, :3]
    keep = np.all((inside > margin) & (inside < np.array(shape) - 1 - margin), axis=1)
    np.testing.assert_allclose(f.embedding[keep], ((centres @ slope + offset + 1000.0) / 2000.0)[keep], atol=2e-3)


def test_thumbnail_is_deterministic_and_pads_with_air() -> None:
    enc = ThumbnailEncoder()
    v = volume(np.full((20, 20, 10), 1000.0), np.diag([2.0, 2.0, 4.0, 1.0]))  # 40 x 40 x 40 mm of bone
    a, b = enc.encode(v), enc.encode(v)
    assert np.array_equal(a.embedding, b.embedding) and np.array_equal(a.tokens, b.tokens)
    grid = a.tokens.astype(np.float32).reshape(2, 2, 2, 16, 16, 16).transpose(3, 0, 4, 1, 5, 2).reshape(32, 32, 32)
    assert grid[15, 15, 15] == 1.0 and grid[0, 0, 0] == 0.0  # bone at the centre, air padding
    assert 4 <= int((grid[:, 15, 15] > 0.5).sum()) <= 6  # 40 mm = 5 cells of 8 mm


# ------------------------------------------------------------------------ weights, checks, CLI

@pytest.mark.parametrize("cls", [HUHistogramEncoder, ThumbnailEncoder])
def test_baselines_have_no_weights_and_say_so(cls, tmp_path) -> None:
    for choice in ("auto", "random"):
        ref = cls(weights=choice).weights_ref
        assert (ref.sha256, ref.path, ref.is_random, ref.tag) == ("none", None, False, "none")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(CTBenchError, match=f"'{cls.card.name}' has no weights"):
        cls(weights=str(tmp_path / "w.pt"))
    card = cls.card
    assert (card.parameters, card.supervision, card.pretraining_datasets, card.licence) == (0, "none", (), "Apache-2.0")
    assert card.weights.format == "none" and card.weights.hub_repo is None


@pytest.mark.parametrize("name", ["hu-histogram", "thumbnail"])
def test_baselines_pass_check_adapter(name: str) -> None:
    checks = run_checks(name)
    assert [c.name for c in checks if not c.ok] == []
    names = {c.name for c in checks}
    assert {"deterministic", "no weights"} <= names
    assert ("geometry: blob token" in names) == (name == "thumbnail")


def test_models_lists_the_baselines(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["hu-histogram"]["embedding_dim"] == 84 and rows["hu-histogram"]["token_dim"] is None
    assert rows["thumbnail"]["embedding_dim"] == 4096 and rows["thumbnail"]["token_dim"] == 8
    assert MODELS.get("thumbnail") is ThumbnailEncoder


def test_run_records_no_weights_not_random_init(monkeypatch, capsys, small_phantom, tmp_path) -> None:
    out = tmp_path / "res"
    code, stdout, err = run_cli(monkeypatch, capsys, "run", "--model", "hu-histogram", "--task", "survival",
                                "--dataset", str(small_phantom), "--trials", "2", "--bootstrap", "20",
                                "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    weights = result["model"]["weights"]
    assert (weights["sha256"], weights["random_init"], weights["path"]) == ("none", False, None)
    assert 0.0 <= result["metrics"]["c_index"]["value"] <= 1.0
