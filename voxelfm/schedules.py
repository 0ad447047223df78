"""Per-iteration schedules of the reference pre-training (1 "epoch" = ``epoch_length`` iterations).

Each schedule is a linear warm-up from ``start`` to ``peak`` over ``warmup_epochs`` (endpoint
excluded), then a half cosine from ``peak`` down (or up) to ``end`` over the remaining
iterations (both endpoints included). Reference values: LR 0 -> 1e-3 (10 epochs) -> 1e-6;
weight decay 0.04 -> 0.2 (no warm-up); teacher EMA momentum constant 0.994; teacher temperature
0.04 -> 0.07 over 30 epochs then constant; the last head layer gets LR 0 during the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["warmup_cosine", "Schedule", "ScheduleConfig", "Schedules"]


def warmup_cosine(start: float, peak: float, end: float, warmup_iters: int, total_iters: int) -> np.ndarray:
    """``total_iters`` values: linear ``start -> peak`` (``warmup_iters`` values, ``peak``
    excluded) then a half cosine ``peak -> end`` (inclusive) over the rest."""
    warmup_iters = max(0, min(int(warmup_iters), int(total_iters)))
    linear = np.linspace(start, peak, warmup_iters, endpoint=False)
    cosine = (np.cos(np.linspace(0.0, np.pi, int(total_iters) - warmup_iters)) + 1.0) / 2.0
    return np.concatenate([linear, end + (peak - end) * cosine])


@dataclass(frozen=True)
class Schedule:
    start: float
    peak: float
    end: float
    warmup_epochs: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: float = 100
    epoch_length: int = 1000
    lr: Schedule = field(default_factory=lambda: Schedule(0.0, 1e-3, 1e-6, 10))
    weight_decay: Schedule = field(default_factory=lambda: Schedule(0.04, 0.04, 0.2, 0))
    momentum: Schedule = field(default_factory=lambda: Schedule(0.994, 0.994, 0.994, 0))
    teacher_temp: Schedule = field(default_factory=lambda: Schedule(0.04, 0.07, 0.07, 30))
    freeze_last_layer_epochs: float = 1.0

    @property
    def total_iters(self) -> int:
        return int(round(self.epochs * self.epoch_length))

    def iters(self, epochs: float) -> int:
        return int(round(epochs * self.epoch_length))


@dataclass
class Schedules:
    """Arrays of ``total_iters`` values: ``lr``, ``wd``, ``momentum``, ``teacher_temp``,
    ``last_layer_lr``."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    last_layer_lr: np.ndarray

    @classmethod
    def build(cls, cfg: ScheduleConfig) -> "Schedules":
        total = cfg.total_iters
        if total < 1:
            raise ValueError(f"the schedule has no iterations (epochs {cfg.epochs} x {cfg.epoch_length})")

        def make(s: Schedule) -> np.ndarray:
            return warmup_cosine(s.start, s.peak, s.end, cfg.iters(s.warmup_epochs), total)

        lr = make(cfg.lr)
        last = lr.copy()
        last[: cfg.iters(cfg.freeze_last_layer_epochs)] = 0.0
        return cls(lr=lr, wd=make(cfg.weight_decay), momentum=make(cfg.momentum),
                   teacher_temp=make(cfg.teacher_temp), last_layer_lr=last)

    def __len__(self) -> int:
        return len(self.lr)

    def at(self, iteration: int) -> dict[str, float]:
        """The values of every schedule at ``iteration`` (the last value beyond the end)."""
        i = min(int(iteration), len(self.lr) - 1)
        return {
            "lr": float(self.lr[i]),
            "wd": float(self.wd[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
            "last_layer_lr": float(self.last_layer_lr[i]),
        }
