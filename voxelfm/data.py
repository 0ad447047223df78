"""Pre-training data: volumes of any ctbench dataset, preprocessed like inference, cut into
multi-crops in a deterministic, resumable order.

Each volume is read with ``ctbench.readers.read_volume`` and passed through
``voxelfm.preprocess`` (axis order, HU clip, optional foreground crop, isotropic resampling to
``max(min spacing, 0.75 mm)``) with the intensity normalisation left out, so the crops
(``voxelfm.crops``) see Hounsfield units and normalise last.

Order: the sample stream is a sequence of positions ``0, 1, 2, ...``; position ``q`` is volume
``perm_e[q mod n]`` of the seeded permutation of "pass" ``e = q // n``, and its crops are drawn
from a generator seeded by ``(seed, q)``. Micro-batch ``m`` of optimizer step ``s`` on rank
``r`` takes positions ``((s * accum + m) * world + r) * B + [0, B)``. Everything is a pure
function of the step, so a resumed run sees exactly the data of an uninterrupted one, for any
number of loader workers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ctbench.errors import CTBenchError

from .crops import MultiCrop
from .preprocess import PreprocessConfig, preprocess

__all__ = ["VolumeSource", "CropStream", "MicroBatchSampler", "collate_crops", "positions"]

log = logging.getLogger("voxelfm")


class VolumeSource:
    """Image paths of a ctbench dataset (``splits`` only) and an LRU cache of their
    preprocessed HU volumes ``(D, H, W)``."""

    def __init__(self, paths: Sequence[Path], case_ids: Sequence[str], prep: PreprocessConfig,
                 cache_volumes: int = 64) -> None:
        if not paths:
            raise CTBenchError("no images to pre-train on: the dataset has no cases in the chosen splits")
        self.paths, self.case_ids = list(paths), list(case_ids)
        self.prep = prep
        self.cache_volumes = max(0, int(cache_volumes))
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        self.failed: dict[str, str] = {}

    @classmethod
    def from_dataset(cls, name_or_path: str, splits: Sequence[str] | None, *, min_spacing: float = 0.75,
                     crop_background: bool = True, hu_range: tuple[float, float] = (-1000.0, 1900.0),
                     patch_size: int = 14, cache_volumes: int = 64) -> "VolumeSource":
        """Open a built-in dataset (``phantom``) or a dataset folder; keep the rows of ``splits``
        (all rows when ``None`` or empty)."""
        from ctbench.datasets import open_dataset

        ds = open_dataset(name_or_path)
        rows = ds.manifest
        if splits:
            rows = rows[rows["split"].astype(str).isin(list(splits))]
        prep = PreprocessConfig(hu_min=hu_range[0], hu_max=hu_range[1], norm_mean=0.0, norm_std=1.0,
                                min_spacing=min_spacing, crop_background=crop_background,
                                max_tokens=None, patch_size=patch_size)
        paths = [ds.resolve(p) for p in rows["image"]]
        return cls(paths, rows["case_id"].astype(str).tolist(), prep, cache_volumes)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> Tensor:
        from ctbench.readers import read_volume

        x, _ = preprocess(read_volume(self.paths[i]), self.prep)
        return x.contiguous()

    def load(self, i: int) -> Tensor:
        """Volume ``i`` in HU; an unreadable case is recorded and replaced by the next one."""
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self._cache:
                self._cache.move_to_end(j)
                return self._cache[j]
            if self.case_ids[j] in self.failed:
                continue
            try:
                x = self._read(j)
            except CTBenchError as e:
                self.failed[self.case_ids[j]] = str(e)
                log.warning("skipping case %s: %s", self.case_ids[j], e)
                continue
            if self.cache_volumes:
                self._cache[j] = x
                while len(self._cache) > self.cache_volumes:
                    self._cache.popitem(last=False)
            return x
        raise CTBenchError("no image of the dataset could be read; first error: "
                           + next(iter(self.failed.values()), "none"))


def crop_seed(seed: int, position: int) -> int:
    """The 63-bit seed of the crop generator of stream position ``position``."""
    a, b = np.random.SeedSequence([seed, 7, position]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


class CropStream(Dataset):
    """``stream[q]`` -> ``(globals (2, *G), locals (n_local, *L))`` for stream position ``q``."""

    def __init__(self, source: VolumeSource, multicrop: MultiCrop, seed: int) -> None:
        self.source, self.multicrop, self.seed = source, multicrop, int(seed)
        self._orders: dict[int, np.ndarray] = {}

    def volume_index(self, position: int) -> int:
        n = len(self.source)
        epoch, offset = divmod(int(position), n)
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, 5, epoch]).permutation(n)
            self._orders = {epoch: order}
        return int(order[offset])

    def __len__(self) -> int:  # an endless stream; the sampler decides what is read
        return 2**62

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        vol = self.source.load(self.volume_index(position))
        gen = torch.Generator().manual_seed(crop_seed(self.seed, position))
        globals_, locals_ = self.multicrop(vol, gen)
        local = torch.stack(locals_) if locals_ else torch.empty(0)
        return torch.stack(globals_), local


def positions(step: int, micro: int, rank: int, *, accum: int, world: int, batch: int) -> list[int]:
    """Stream positions of micro-batch ``micro`` of optimizer step ``step`` on ``rank``."""
    base = ((step * accum + micro) * world + rank) * batch
    return list(range(base, base + batch))


class MicroBatchSampler(Sampler[list[int]]):
    """The positions of every micro-batch of steps ``start .. stop - 1`` on one rank."""

    def __init__(self, start: int, stop: int, *, accum: int, world: int, rank: int, batch: int) -> None:
        self.start, self.stop = int(start), int(stop)
        self.kw = {"accum": accum, "world": world, "batch": batch}
        self.rank, self.accum = rank, accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            for m in range(self.accum):
                yield positions(step, m, self.rank, **self.kw)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum


def collate_crops(samples: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Crop-major batches: ``(2B, *G)`` (crop 0 of every sample, then crop 1) and
    ``(n_local B, *L)``."""
    globals_ = torch.cat([torch.stack([s[0][i] for s in samples]) for i in range(samples[0][0].shape[0])])
    n_local = samples[0][1].shape[0] if samples[0][1].ndim > 1 else 0
    if n_local == 0:
        return globals_, torch.empty(0)
    locals_ = torch.cat([torch.stack([s[1][i] for s in samples]) for i in range(n_local)])
    return globals_, locals_
