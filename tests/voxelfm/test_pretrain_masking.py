"""3D block masking: exact counts, stratified ratios, blocks, weights and determinism."""

import numpy as np
import pytest
import torch

from voxelfm.masking import block_mask, sample_masks


def test_block_mask_exact_count_and_blocks():
    rng = np.random.default_rng(0)
    m = block_mask((8, 8, 8), 100, rng)
    assert m.shape == (8, 8, 8) and m.dtype == bool and int(m.sum()) == 100
    # cuboid blocks, not scattered patches: most masked patches have a masked face neighbour
    padded = np.pad(m, 1)
    neighbours = sum(np.roll(padded, s, axis=a) for a in range(3) for s in (-1, 1))[1:-1, 1:-1, 1:-1]
    assert (neighbours[m] > 0).mean() > 0.9
    assert int(block_mask((8, 8, 8), 0, rng).sum()) == 0
    assert int(block_mask((2, 2, 2), 5, rng).sum()) == 5  # no block fits: random top-up
    assert int(block_mask((3, 3, 3), 1000, rng).sum()) == 27


def test_block_mask_is_deterministic():
    a = block_mask((6, 7, 5), 60, np.random.default_rng(3))
    b = block_mask((6, 7, 5), 60, np.random.default_rng(3))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("n_images", [8, 32])
def test_sample_masks_ratios_and_weights(n_images):
    grid = (6, 6, 6)
    N = 216
    batch = sample_masks(n_images, grid, np.random.default_rng(1), ratio=(0.1, 0.5), probability=0.5)
    assert batch.masks.shape == (n_images, N) and batch.masks.dtype == torch.bool
    counts = batch.masks.sum(1)
    masked = counts[counts > 0]
    assert len(masked) == n_images // 2  # half of the global crops are masked
    # stratified ratios: the k-th smallest count lies in [N * r_k, N * r_{k+1}]
    bounds = np.linspace(0.1, 0.5, n_images // 2 + 1)
    for k, c in enumerate(sorted(masked.tolist())):
        assert int(N * bounds[k]) <= c <= int(N * bounds[k + 1])
    assert batch.n_masked == int(counts.sum())
    assert torch.equal(batch.indices, batch.masks.reshape(-1).nonzero().reshape(-1))
    # weights are 1 / (masked patches of the image): they sum to 1 per masked image
    image_of = batch.indices // N
    per_image = torch.zeros(n_images).index_add_(0, image_of, batch.weights)
    assert torch.allclose(per_image[counts > 0], torch.ones(len(masked)))
    # the masked images are shuffled, not always the first ones
    positions = [sample_masks(8, grid, np.random.default_rng(s)).masks.sum(1).gt(0).nonzero().reshape(-1).tolist()
                 for s in range(6)]
    assert len({tuple(p) for p in positions}) > 1


def test_sample_masks_probability_zero_and_one():
    none = sample_masks(4, (3, 3, 3), np.random.default_rng(0), probability=0.0)
    assert none.n_masked == 0 and none.weights.numel() == 0
    every = sample_masks(4, (3, 3, 3), np.random.default_rng(0), probability=1.0)
    assert bool((every.masks.sum(1) > 0).all())
