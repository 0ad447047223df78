"""``RunConfig``: everything that defines one ``ctbench run``; written into its result file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunConfig:
    """Everything that defines a run; written into the result file."""

    model: str
    task: str
    dataset: str = "phantom"
    weights: str = "auto"
    trials: int = 20
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    strict: bool = False
    variant: str | None = None
    storage: str | None = None
    n_boot: int = 1000
    train_fraction: float = 1.0
    task_options: dict[str, Any] = field(default_factory=dict)  # given options only, e.g. {"beam": 2}
    precision: str | None = None  # fp32 | bf16; None: the model's default (its official code's precision)
    model_options: dict[str, Any] = field(default_factory=dict)  # given adapter options, e.g. {"hu_window": "dicom"}
    # probe family (linear | knn | mlp | attentive | all) and feature view (cls | mean | cls+mean | tokens |
    # all); None: the category's default, linear on cls (ctbench.probe_choice). One run fits one pair.
    probe: str | None = None
    view: str | None = None
