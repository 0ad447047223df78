"""The contract for metrics the bootstrap can score on all resamples at once.

A patient-level resample that draws some patients several times is the test set with integer
case weights (how often each case's patient was drawn). A :class:`ResampledMetric` scores a
whole ``(n_boot, n_cases)`` matrix of such counts in one vectorised call, instead of one Python
call per resample; it is still a plain ``metric(y, pred) -> float`` for every other caller.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

#: most cells of one count-matrix chunk (bounds the memory of the vectorised kernels)
CHUNK_CELLS = 1 << 22

Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class ResampledMetric(ABC):
    """A metric with a plain call and a batched call over weighted resamples."""

    @abstractmethod
    def __call__(self, y: np.ndarray, pred: np.ndarray) -> float:
        """The metric on ``(y, pred)`` as given (the point value)."""

    @abstractmethod
    def batch(self, y: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The metric on every row of ``counts`` ``(n_boot, n_cases)``: ``(n_boot,)`` values.

        Row ``b`` must equal ``self(y[idx], pred[idx])`` for rows ``idx`` repeating case ``i``
        ``counts[b, i]`` times, NaN where that is undefined. Raise ``ValueError`` for inputs the
        kernel cannot reproduce exactly: the bootstrap then falls back to one call per resample.
        """


@dataclass(frozen=True)
class Batched(ResampledMetric):
    """A plain metric ``fn`` paired with its vectorised ``kernel(y, pred, counts)``."""

    fn: Callable[[np.ndarray, np.ndarray], float]
    kernel: Kernel

    def __call__(self, y: np.ndarray, pred: np.ndarray) -> float:
        return self.fn(y, pred)

    def batch(self, y: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.kernel(y, pred, counts)


def chunk_rows(n_cols: int) -> int:
    """Rows per chunk so that a chunk holds at most :data:`CHUNK_CELLS` cells (at least one row)."""
    return max(1, CHUNK_CELLS // max(1, n_cols))


def counts_from_samples(samples: Sequence[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Chunks of the count matrix of row-index resamples ``samples`` over ``n`` cases."""
    step = chunk_rows(n)
    for start in range(0, len(samples), step):
        part = samples[start:start + step]
        offsets = np.repeat(np.arange(len(part)) * n, [len(s) for s in part])
        flat = np.concatenate(part).astype(np.int64) + offsets if len(part) else np.zeros(0, np.int64)
        yield np.bincount(flat, minlength=len(part) * n).reshape(len(part), n).astype(np.float64)


def batch_values(metric: ResampledMetric, y: np.ndarray, pred: np.ndarray,
                 chunks: Iterator[np.ndarray] | Sequence[np.ndarray]) -> np.ndarray | None:
    """``metric.batch`` over all count chunks, concatenated; None when the kernel declines."""
    out = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            for counts in chunks:
                out.append(np.asarray(metric.batch(y, pred, counts), dtype=np.float64))
        except ValueError:
            return None
    return np.concatenate(out) if out else np.zeros(0)
