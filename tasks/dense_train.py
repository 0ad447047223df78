"""Batched training of the dense heads (localisation, segmentation), the same loop for every model.

- Cases are grouped by token-grid shape (:func:`shape_groups`); a group's inputs and targets are
  stacked once per training set into ``(n, ...)`` tensors (:class:`CaseStack`, within a memory
  budget, otherwise stacked per batch) and a step is one batched forward and backward over up to
  ``batch_cases`` cases of one group: no per-case Python loop in the hot path.
- A task keeps its last training sets (:class:`FitCache`, keyed by the identity of the cases'
  features and targets): tuning trials share one, the refit's seeds share another. Weights are
  never reused: every fit starts from its seed.
- Batches (:func:`epoch_batches`): every epoch draws a seeded permutation of the cases; each
  group's cases are taken in that order, cut into batches, and the batches run in the order of
  their first case. With a single grid shape this is exactly "shuffle, then consecutive chunks".
- Schedule: AdamW with a cosine learning rate over the epoch budget the search space sets
  (``epochs``), as before.
- **Early stopping on the training loss.** The engine scores the validation split itself after
  ``fit_predict``, so a head may not look at it, and holding out part of a small training split
  would cost every model data. Training therefore stops early when the mean training loss of an
  epoch has not improved on the best epoch so far by more than ``PLATEAU_TOL`` (relative) for
  ``PLATEAU_EPOCHS`` epochs in a row (:class:`PlateauStop`); never before ``MIN_EPOCHS``. The rule
  and its constants are the same for every model and every head; the epochs run are returned.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

BATCH_CASES = 4  # cases of one grid shape per optimiser step
PLATEAU_EPOCHS = 3  # epochs without improvement before stopping
PLATEAU_TOL = 0.01  # an improvement is a relative drop of the epoch loss larger than this
MIN_EPOCHS = 5  # never stop before this many epochs
STACK_BUDGET_BYTES = 1 << 30  # stacked training tensors kept per training set up to this size
T = TypeVar("T")


def shape_groups(shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Indices of the cases of each distinct shape, groups in order of first appearance."""
    first: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(shapes):
        first.setdefault(tuple(int(n) for n in s), []).append(i)
    return [np.asarray(v, dtype=np.int64) for v in first.values()]


def epoch_batches(groups: Sequence[np.ndarray], n_cases: int, batch_cases: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches: case indices of one group each (see the module docstring)."""
    order = rng.permutation(n_cases)
    rank = np.empty(n_cases, dtype=np.int64)
    rank[order] = np.arange(n_cases)
    batches = []
    for g in groups:
        members = g[np.argsort(rank[g], kind="stable")]
        batches += [members[s : s + batch_cases] for s in range(0, len(members), batch_cases)]
    batches.sort(key=lambda b: int(rank[b[0]]))
    return batches


def steps_per_epoch(groups: Sequence[np.ndarray], batch_cases: int) -> int:
    return sum(-(-len(g) // batch_cases) for g in groups)


class PlateauStop:
    """``update(loss)`` is True once ``patience`` epochs in a row failed to improve the best
    epoch loss by more than ``tol`` of its magnitude (and ``min_epochs`` have run); defaults:
    the module's ``PLATEAU_EPOCHS``, ``PLATEAU_TOL`` and ``MIN_EPOCHS``."""

    def __init__(self, patience: int | None = None, tol: float | None = None, min_epochs: int | None = None) -> None:
        self.patience = PLATEAU_EPOCHS if patience is None else patience
        self.tol = PLATEAU_TOL if tol is None else tol
        self.min_epochs = MIN_EPOCHS if min_epochs is None else min_epochs
        self.best, self.stale, self.epochs = float("inf"), 0, 0

    def update(self, loss: float) -> bool:
        self.epochs += 1
        if loss < self.best - self.tol * abs(self.best) or not np.isfinite(self.best):
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
        return self.epochs >= self.min_epochs and self.stale >= self.patience


@dataclass
class Trained:
    """A trained head (in eval mode) and its per-epoch mean training losses."""

    model: torch.nn.Module
    losses: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.losses)


def train_head(
    model: torch.nn.Module, groups: Sequence[np.ndarray], batch_loss: Callable[[np.ndarray], torch.Tensor], *,
    lr: float, weight_decay: float, epochs: int, seed: int, batch_cases: int = BATCH_CASES,
    stop: PlateauStop | None = None,
) -> Trained:
    """Train ``model`` with AdamW and a cosine schedule over ``epochs`` epochs of batches of one
    shape group each; ``batch_loss(case_indices)`` is the mean loss of those cases. Stops early
    on a training-loss plateau (``stop``, default :class:`PlateauStop`). Raises
    ``FloatingPointError`` on a non-finite loss (the engine fails the trial)."""
    n_cases = int(sum(len(g) for g in groups))
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch(groups, batch_cases)))
    stop = PlateauStop() if stop is None else stop
    out = Trained(model)
    model.train()
    for _ in range(epochs):
        total = torch.zeros(())
        for batch in epoch_batches(groups, n_cases, batch_cases, rng):
            opt.zero_grad(set_to_none=True)
            loss = batch_loss(batch)
            loss.backward()
            opt.step()
            sched.step()
            total = total + loss.detach().cpu() * len(batch)
        mean = float(total) / max(1, n_cases)
        if not np.isfinite(mean):
            raise FloatingPointError(f"the training loss became {mean} after {len(out.losses) + 1} epoch(s)")
        out.losses.append(mean)
        if stop.update(mean):
            break
    model.eval()
    return out


class CaseStack:
    """Tensors of the cases ``members`` (one shape group) stacked along a first axis on ``device``.

    ``make(i)`` gives case ``i``'s tensors (a tuple, same shapes for every member). They are
    stacked once when ``keep`` (the caller's memory budget allows it); otherwise each call of
    :meth:`rows` stacks the requested cases afresh.
    """

    def __init__(self, members: np.ndarray, make: Callable[[int], tuple[torch.Tensor, ...]], keep: bool,
                 device: torch.device) -> None:
        self.members, self.make, self.device = members, make, device
        self.tensors: tuple[torch.Tensor, ...] | None = None
        if keep:
            self.tensors = self._stack(members)

    def _stack(self, cases: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack(p).to(self.device) for p in zip(*(self.make(int(i)) for i in cases)))

    def rows(self, positions: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The stacked tensors of the members at ``positions`` (indices into ``members``)."""
        if self.tensors is None:
            return self._stack(self.members[positions])
        index = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        return tuple(t.index_select(0, index) for t in self.tensors)


class GroupedCases:
    """The shape groups of a set of cases with one :class:`CaseStack` per group and, per case,
    its group and position: ``batch(indices)`` returns the stacked tensors of cases that share
    a group (as :func:`epoch_batches` makes them)."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], make: Callable[[int], tuple[torch.Tensor, ...]],
                 bytes_per_case: Sequence[int], device: torch.device = torch.device("cpu"),
                 budget_bytes: int = STACK_BUDGET_BYTES) -> None:
        self.groups = shape_groups(shapes)
        keep = int(sum(bytes_per_case)) <= budget_bytes
        self.stacks = [CaseStack(g, make, keep, device) for g in self.groups]
        n = len(shapes)
        self.group_of = np.empty(n, dtype=np.int64)
        self.position = np.empty(n, dtype=np.int64)
        for k, g in enumerate(self.groups):
            self.group_of[g] = k
            self.position[g] = np.arange(len(g))

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        k = int(self.group_of[indices[0]])
        if np.any(self.group_of[indices] != k):
            raise ValueError("a batch mixes grid shapes")
        return self.stacks[k].rows(self.position[indices])


def _identity(values: np.ndarray) -> tuple:
    """A key for what a training set was built from: object arrays (features, mask targets) by
    the identity of their elements, numeric arrays by their bytes."""
    values = np.asarray(values)
    if values.dtype == object:
        return tuple(id(v) for v in values)
    return (values.shape, str(values.dtype), values.tobytes())


class FitCache:
    """The last ``size`` training sets a task built, keyed by ``key`` and the cases they were
    built from (their features' and targets' identity), so trials and refit seeds on the same
    cases reuse them. Entries hold their cases, so the identities stay valid while cached."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, object]] = OrderedDict()

    def get(self, key: tuple, X: np.ndarray, y: np.ndarray, build: Callable[[], T]) -> T:
        full = (key, _identity(X), _identity(y))
        if full in self.entries:
            self.entries.move_to_end(full)
        else:
            self.entries[full] = (X, y, build())
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return self.entries[full][2]  # type: ignore[return-value]
