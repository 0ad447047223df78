"""The shared side of the global categories' probes: a task that offers probe families on
feature views (:mod:`ctbench.probe_choice`) and is told which one a run fits.

A category subclasses :class:`FamilyProbeTask`, lists its ``families`` (and why it leaves any
out, ``unsupported_families``) and draws one family's parameters in :meth:`suggest_family`.
The runner calls :meth:`use_probe` before tuning; a task built without it fits the default,
``linear`` on ``cls``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from .errors import CTBenchError
from .probes import DEFAULT_FAMILY, FAMILIES, FAMILY
from .task import ProbeTask
from .types import Features
from .views import VIEWS, view_inputs


class FamilyProbeTask(ProbeTask):
    """A probed task whose probe is one family on one feature view, chosen per run."""

    families: ClassVar[tuple[str, ...]] = FAMILIES
    #: family -> why this category does not offer it (shown when a user asks for it)
    unsupported_families: ClassVar[dict[str, str]] = {}
    family: str = DEFAULT_FAMILY
    view: str = "cls"
    probe_device: str = "cpu"  # where torch heads (the attentive probe) train

    def use_probe(self, family: str, view: str, device: str = "cpu") -> None:
        """Fit ``family`` on ``view`` (validated against what the category offers), training
        torch heads on ``device``."""
        if family not in self.families:
            raise CTBenchError(f"{self.category} tasks offer the probes {', '.join(self.families)}, not {family!r}")
        if view not in VIEWS or view not in FAMILY[family].views:
            raise CTBenchError(f"the {family!r} probe reads the {' / '.join(FAMILY[family].views)} view, not {view!r}")
        self.family, self.view, self.probe_device = family, view, device

    def inputs(self, feats: list[Features]) -> np.ndarray:
        """The run's feature view of ``feats`` (:func:`ctbench.views.view_inputs`)."""
        return view_inputs(feats, self.view)

    def suggest(self, trial: Any, seed: int) -> dict:
        """One configuration of the run's family only: families are tuned apart."""
        return self.suggest_family(trial, self.family)

    @abstractmethod
    def suggest_family(self, trial: Any, family: str) -> dict:
        """Draw ``family``'s parameters from its shared, dimension-free search space."""
