"""World-space geometry of the dense tasks, checked against independent computations:
grids, labels onto a token grid, predictions back to voxels, Dice counts, memory-mapped tokens."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctbench.errors import CTBenchError
from ctbench.tasks import dense, dense_train
from ctbench.types import Features


def _rotation(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _affine(linear: np.ndarray, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = origin
    return a


# an anisotropic, flipped and permuted voxel grid (like an LPS/PSR phantom scan)
VOXEL_AFFINE = _affine(np.array([[0.0, -3.0, 0.0], [0.0, 0.0, 2.5], [-4.0, 0.0, 0.0]]), [10.0, -20.0, 30.0])


def test_grid_world_matches_the_affine():
    a = _affine(_rotation(20) @ np.diag([2.0, 3.0, 5.0]), [1.0, 2.0, 3.0])
    world = dense.grid_world(a, (2, 3, 4))
    i, j, k = 1, 2, 3
    np.testing.assert_allclose(world[(i * 3 + j) * 4 + k], a[:3, :3] @ [i, j, k] + a[:3, 3])
    pos = dense.normalised_positions(world)
    assert pos.min() == pytest.approx(-1) and pos.max() == pytest.approx(1)


def test_refine_affine_is_the_geometry_of_2x_upsampling():
    """A linear field of world coordinates upsampled x2 (align_corners=False, as a stride-2
    transposed conv places its outputs) lands on the refined grid's centres (interior cells)."""
    a = _affine(_rotation(30) @ np.diag([4.0, 6.0, 5.0]), [-7.0, 3.0, 11.0])
    shape = (4, 5, 6)
    coarse = torch.from_numpy(dense.grid_world(a, shape).T.reshape(3, *shape))[None]
    up = torch.nn.functional.interpolate(coarse, scale_factor=2, mode="trilinear", align_corners=False)[0]
    fine = dense.grid_world(dense.refine_affine(a, 2), tuple(2 * n for n in shape)).T.reshape(3, 8, 10, 12)
    np.testing.assert_allclose(up[:, 1:-1, 1:-1, 1:-1].numpy(), fine[:, 1:-1, 1:-1, 1:-1], atol=1e-9)
    np.testing.assert_allclose(dense.spacing(dense.refine_affine(a, 4)), [1.0, 1.5, 1.25])


def _brute_force_fractions(labels, vox_aff, grid_aff, grid_shape, L):
    counts = np.zeros((*grid_shape, L))
    inv = np.linalg.inv(grid_aff)
    for v in np.ndindex(labels.shape):
        t = np.floor(inv[:3, :3] @ (vox_aff[:3, :3] @ v + vox_aff[:3, 3]) + inv[:3, 3] + 0.5).astype(int)
        if np.all(t >= 0) and np.all(t < grid_shape):
            counts[tuple(t)][labels[v]] += 1
    return counts


@pytest.mark.parametrize("chunk", [1 << 23, 7])
def test_labels_to_grid_matches_brute_force_on_a_rotated_coarser_grid(monkeypatch, chunk):
    monkeypatch.setattr(dense, "CHUNK_VALUES", chunk)  # several slabs give the same answer
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(7, 6, 5))
    grid_aff = _affine(_rotation(25) @ np.diag([5.0, 6.0, 7.0]), [-6.0, -24.0, 4.0])
    shape = (4, 3, 5)
    dist, valid = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, shape)
    counts = _brute_force_fractions(labels, VOXEL_AFFINE, grid_aff, shape, 4)
    has = counts.sum(-1) > 0
    assert has.sum() > 10
    expect = counts[has] / counts[has].sum(-1, keepdims=True)
    np.testing.assert_allclose(np.moveaxis(dist, 0, -1)[has], expect, atol=1e-6)
    assert np.all(valid[has])
    majority, valid_hard = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, shape, soft=False)
    np.testing.assert_array_equal(valid_hard, valid)
    top = counts[has].max(-1)
    assert np.all(counts[has][np.arange(has.sum()), majority[has]] == top)  # a most frequent label


def test_cells_finer_than_voxels_take_the_nearest_voxel():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(5, 4, 6))
    grid_aff = _affine(_rotation(-40) @ np.diag([1.0, 1.0, 1.0]), [0.0, -10.0, 20.0])
    shape = (12, 12, 12)
    dist, valid = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, shape)
    world = dense.grid_world(grid_aff, shape)
    inv = np.linalg.inv(VOXEL_AFFINE)
    idx = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((idx > -0.5) & (idx < np.array(labels.shape) - 0.5), 1)
    flat_valid = valid.ravel()
    assert np.array_equal(flat_valid, inside)
    nearest = labels[tuple(np.rint(idx[inside]).astype(int).T)]
    np.testing.assert_array_equal(dist.reshape(3, -1)[:, inside].argmax(0), nearest)
    np.testing.assert_allclose(dist.reshape(3, -1)[:, inside].max(0), 1.0)
    hard, _ = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, shape, soft=False)
    np.testing.assert_array_equal(hard.ravel()[inside], nearest)


def test_predictions_on_a_reoriented_copy_of_the_voxel_grid_come_back_exactly():
    """One-hot probabilities stored with axes permuted and flipped, described by their own
    affine, map back onto the original voxels label for label."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, size=(6, 7, 8))
    onehot = np.eye(5, dtype=np.float32)[labels]  # (6, 7, 8, 5)
    stored = onehot.transpose(3, 2, 0, 1)[:, ::-1, :, ::-1].copy()  # (5, 8, 6, 7): k flipped, j flipped
    perm = np.zeros((4, 4))
    perm[3, 3] = 1
    # stored index (a, b, c) = (7 - k, i, 6 - j)  ->  voxel (i, j, k) = (b, 6 - c, 7 - a)
    perm[0, 1], perm[1, 2], perm[1, 3], perm[2, 0], perm[2, 3] = 1, -1, 6, -1, 7
    grid_aff = VOXEL_AFFINE @ perm
    out = dense.predict_labels(torch.from_numpy(stored), grid_aff, VOXEL_AFFINE, labels.shape)
    np.testing.assert_array_equal(out, labels)
    counts = dense.confusion_counts(torch.from_numpy(stored), grid_aff, labels, VOXEL_AFFINE)
    np.testing.assert_array_equal(counts[0], counts[2])  # every voxel right
    np.testing.assert_array_equal(counts[1], np.bincount(labels.ravel(), minlength=5))


def test_trilinear_interpolation_matches_scipy_and_outside_is_background(monkeypatch):
    """Class-1 probability = a smooth field on a rotated coarse grid; voxel labels must be
    (field interpolated at the voxel centre > 0.5), computed here with scipy instead of torch."""
    monkeypatch.setattr(dense, "CHUNK_VALUES", 50)
    grid_aff = _affine(_rotation(35) @ np.diag([7.0, 8.0, 9.0]), [-20.0, -30.0, 0.0])
    gshape = (6, 5, 4)
    w = dense.grid_world(grid_aff, gshape)
    p1 = (0.5 + 0.5 * np.sin(w[:, 0] / 9.0) * np.cos(w[:, 1] / 11.0)).reshape(gshape)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    vshape = (20, 18, 16)
    labels = dense.predict_labels(torch.from_numpy(probs), grid_aff, VOXEL_AFFINE, vshape)
    vw = dense.grid_world(VOXEL_AFFINE, vshape)
    inv = np.linalg.inv(grid_aff)
    g = (vw @ inv[:3, :3].T + inv[:3, 3]).T
    q1 = ndimage.map_coordinates(probs[1], g, order=1, mode="grid-constant", cval=0.0)
    q0 = ndimage.map_coordinates(probs[0], g, order=1, mode="grid-constant", cval=0.0)
    expect = (q1 > q0).astype(np.uint8).reshape(vshape)
    clear = (np.abs(q1 - q0) > 1e-4).reshape(vshape)
    inside = np.all((g >= 0) & (g <= np.array(gshape)[:, None] - 1), axis=0).reshape(vshape)
    assert inside.sum() > 200 and clear[inside].mean() > 0.95
    np.testing.assert_array_equal(labels[clear], expect[clear])
    assert labels[clear & inside].min() == 0 and labels[clear & inside].max() == 1
    far = np.any((g <= -1.0) | (g >= np.array(gshape)[:, None]), axis=0).reshape(vshape)
    assert far.any() and np.all(labels[far] == 0)  # beyond the grid: background


def test_confusion_counts_give_monai_dice():
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=(9, 8, 7))
    truth[truth == 3] = 0  # label 3 absent from the truth: Dice undefined (ignored)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, size=truth.shape))
    probs = torch.from_numpy(np.eye(4, dtype=np.float32)[pred].transpose(3, 0, 1, 2).copy())
    inter, p, t = dense.confusion_counts(probs, VOXEL_AFFINE, truth, VOXEL_AFFINE)
    ours = np.where(t > 0, 2 * inter / np.maximum(p + t, 1), np.nan)
    onehot = lambda x: torch.from_numpy(np.eye(4, dtype=np.float32)[x].transpose(3, 0, 1, 2)[None].copy())
    ref = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(onehot(pred), onehot(truth))
    np.testing.assert_allclose(ours, ref[0].numpy(), equal_nan=True, rtol=1e-6)


def test_feature_cache_serves_tokens_memory_mapped(tmp_path):
    from ctbench.cache import FeatureCache

    cache = FeatureCache("m", "random", "prep", root=tmp_path)
    tokens = np.random.default_rng(4).standard_normal((3, 4, 5, 6)).astype(np.float16)
    path = cache.put("cd" * 32, Features(np.ones(2), tokens, np.eye(4)))
    got = cache.get("cd" * 32)
    np.testing.assert_array_equal(got.tokens, tokens)
    assert got.tokens.dtype == np.float16 and not got.tokens.flags.writeable
    assert not got.tokens.flags.owndata  # a view, not a copy
    with open("/proc/self/maps") as fh:  # backed by the cached file itself
        assert str(path) in fh.read()
    with pytest.raises(ValueError):
        got.tokens[0, 0, 0, 0] = 1
    assert cache.get("cd" * 32, tokens=False).tokens is None


def test_token_scaler_standardises_with_training_statistics():
    rng = np.random.default_rng(5)
    feats = [Features(np.ones(1), rng.normal(3.0, 2.0, (2, 3, 4, n)), np.eye(4)) for n in (2, 5)]
    scaler = dense.TokenScaler(feats)
    flat = np.concatenate([f.tokens.astype(np.float64).reshape(2, -1) for f in feats], 1)
    np.testing.assert_allclose(scaler.mean, flat.mean(1))
    np.testing.assert_allclose(scaler.std, flat.std(1) + 1e-6)
    z = torch.cat([scaler(f).reshape(2, -1) for f in feats], 1)
    np.testing.assert_allclose(z.mean(1).numpy(), 0, atol=1e-5)


def test_train_head_is_seeded():
    def run(seed):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        xs = torch.tensor([[float(i), 1.0] for i in range(5)])
        loss = lambda rows: ((model(xs[rows]) - 2.0 * xs[rows, :1]) ** 2).mean()
        stop = dense_train.PlateauStop(patience=10**6)
        dense_train.train_head(model, [np.arange(5)], loss, lr=0.1, weight_decay=0.0, epochs=150, seed=seed,
                               batch_cases=2, stop=stop)
        return model.weight.detach().numpy().copy()

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    assert run(1)[0, 0] == pytest.approx(2.0, abs=0.3)  # it learns y = 2x


def test_training_stops_when_the_training_loss_plateaus():
    """A loss that stops improving ends training after PLATEAU_EPOCHS more epochs (never before
    MIN_EPOCHS); one that keeps improving runs the whole epoch budget."""
    stop = dense_train.PlateauStop()
    losses = [1.0, 0.5, 0.3, 0.299, 0.2985, 0.2984, 0.2983]
    done = [stop.update(v) for v in losses]
    assert done == [False, False, False, False, False, True, True][: len(done)]
    early = dense_train.PlateauStop(patience=1)
    assert [early.update(1.0) for _ in range(dense_train.MIN_EPOCHS)][-1] and not dense_train.PlateauStop(
        patience=1).update(1.0)

    model = torch.nn.Linear(1, 1)
    flat = dense_train.train_head(model, [np.arange(4)], lambda rows: model.weight.sum() * 0 + 1.0, lr=0.1,
                                  weight_decay=0.0, epochs=50, seed=0)
    assert flat.epochs == dense_train.MIN_EPOCHS
    xs = torch.arange(4.0)[:, None]
    steady = dense_train.train_head(model, [np.arange(4)], lambda rows: ((model(xs[rows]) - 3 * xs[rows]) ** 2).mean(),
                                    lr=0.05, weight_decay=0.0, epochs=12, seed=0)
    assert steady.epochs == 12 and steady.losses == sorted(steady.losses, reverse=True)
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        dense_train.train_head(model, [np.arange(4)], lambda rows: model.weight.sum() * float("nan"), lr=0.1,
                               weight_decay=0.0, epochs=3, seed=0)


def test_epoch_batches_keep_one_grid_shape_per_batch():
    """With one shape: the epoch's permutation cut into consecutive chunks (the earlier
    case-by-case order); with several: every case once per epoch, each batch from one group."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    one = dense_train.epoch_batches([np.arange(10)], 10, 4, rng_a)
    order = rng_b.permutation(10)
    assert [b.tolist() for b in one] == [order[s : s + 4].tolist() for s in range(0, 10, 4)]
    shapes = [(2, 2, 2), (3, 2, 2), (2, 2, 2), (3, 2, 2), (3, 2, 2), (2, 2, 2), (4, 4, 4)]
    groups = dense_train.shape_groups(shapes)
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 3, 4], [6]]
    batches = dense_train.epoch_batches(groups, len(shapes), 2, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert dense_train.steps_per_epoch(groups, 2) == len(batches) == 5


@pytest.mark.parametrize("budget", [1 << 30, 0])
def test_grouped_cases_stack_each_shape_and_serve_batches(budget):
    """Cases are stacked per shape once (within the budget) or per batch (over it); a batch
    returns the same tensors either way, and mixing shapes in a batch is refused."""
    shapes = [(2, 2, 2), (3, 2, 2), (2, 2, 2)]
    made = []

    def make(i):
        made.append(i)
        return torch.full(shapes[i], float(i)), torch.tensor(i)

    data = dense_train.GroupedCases(shapes, make, [8] * 3, budget_bytes=budget)
    x, i = data.batch(np.array([2, 0]))
    assert x.shape == (2, 2, 2, 2) and i.tolist() == [2, 0] and x[0].unique().item() == 2.0
    data.batch(np.array([2, 0]))
    assert (sorted(made) == [0, 1, 2]) if budget else (made.count(2) == 2)
    with pytest.raises(ValueError, match="mixes grid shapes"):
        data.batch(np.array([0, 1]))


def test_fit_cache_reuses_a_training_set_built_from_the_same_cases():
    cache = dense_train.FitCache(size=2)
    feats = np.empty(3, dtype=object)
    feats[:] = [Features(np.ones(1)) for _ in range(3)]
    y = np.arange(3.0)
    built = []
    build = lambda tag: lambda: built.append(tag) or tag
    assert cache.get(("k",), feats, y, build("a")) == "a"
    assert cache.get(("k",), feats.copy(), y.copy(), build("b")) == "a"  # same cases, new arrays
    assert cache.get(("k",), feats[:2], y[:2], build("c")) == "c"  # other cases
    assert cache.get(("k",), feats, y + 1, build("d")) == "d"  # other targets
    assert cache.get(("k",), feats, y, build("e")) == "e"  # evicted (size 2)
    assert built == ["a", "c", "d", "e"]


def test_label_counts_agree_in_dense_and_sparse_form(monkeypatch):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 5, size=(9, 8, 7))
    grid_aff = _affine(_rotation(10) @ np.diag([3.0, 2.0, 4.0]), [-5.0, -20.0, 10.0])
    dense_out = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, (5, 6, 4))
    monkeypatch.setattr(dense, "DENSE_COUNTS", 0)
    sparse_out = dense.labels_to_grid(labels, VOXEL_AFFINE, grid_aff, (5, 6, 4))
    for a, b in zip(dense_out, sparse_out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(4))
def test_voxel_labels_equal_interpolating_every_voxel(seed, monkeypatch):
    """The shortcut (voxels inside a cube of cells that agree take their label) gives exactly
    the argmax of trilinear interpolation at every voxel, ties to the first class, on a
    rotated grid with label regions, noisy borders and voxels beyond the grid."""
    monkeypatch.setattr(dense, "CHUNK_VALUES", 4000)
    rng = np.random.default_rng(seed)
    K, gshape = 4, (6, 5, 7)
    blocks = torch.from_numpy(rng.standard_normal((K, 3, 3, 4))).float()
    logits = torch.nn.functional.interpolate(blocks[None], size=gshape, mode="nearest")[0] * 4
    probs = torch.softmax(logits + 0.5 * torch.randn(K, *gshape, generator=torch.Generator().manual_seed(seed)), 0)
    probs[:, 0, 0, 0] = torch.tensor([0.4, 0.4, 0.1, 0.1])  # a tie: the first class wins
    vshape = (22, 15, 17)
    linear = _rotation(20 + 30 * seed) @ np.diag([4.0, 5.0, 3.0])
    centre = VOXEL_AFFINE[:3, :3] @ ((np.array(vshape) - 1) / 2) + VOXEL_AFFINE[:3, 3]
    grid_aff = _affine(linear, centre - linear @ ((np.array(gshape) - 1) / 2))  # in the middle of the scan
    got = dense.predict_labels(probs, grid_aff, VOXEL_AFFINE, vshape)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in vshape], indexing="ij"), 0).reshape(3, -1).astype(np.float64)
    m = np.linalg.inv(grid_aff) @ VOXEL_AFFINE
    g = m[:3, :3] @ idx + m[:3, 3:]
    norm = (2 * g + 1) / np.array(gshape)[:, None] - 1
    grid = torch.from_numpy(norm[::-1].T.astype(np.float32)).reshape(1, 1, 1, -1, 3)
    ref = torch.nn.functional.grid_sample(probs[None], grid, align_corners=False)[0, :, 0, 0].argmax(0)
    np.testing.assert_array_equal(got.ravel(), ref.numpy())
    assert len(np.unique(got)) > 2 and (got != 0).sum() > 300  # label regions inside the grid, background beyond


def test_bad_masks_raise_clear_errors(tmp_path):
    import nibabel as nib

    with pytest.raises(CTBenchError, match="mask not found"):
        dense.read_labels(tmp_path / "nope.nii.gz")
    path = tmp_path / "neg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), -1, np.int16), np.eye(4)), str(path))
    with pytest.raises(CTBenchError, match="neg.nii.gz.*negative labels"):
        dense.read_labels(path)
    with pytest.raises(CTBenchError, match="needs token grids"):
        dense.dense_features([Features(np.ones(2))], "segmentation")
