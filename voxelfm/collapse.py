"""Warn when self-distillation collapses, from the monitors every iteration logs.

DINO can collapse two ways: every input gets the same near-uniform teacher target (the centred
teacher outputs no longer differ between inputs: the per-sample entropy ``teacher_entropy`` goes
to 1, in units of log K), or one prototype wins for every input (the entropy of the batch-mean
target ``teacher_batch_entropy`` goes to 0). Either way the CLS branch stops learning while the
loss can still fall through iBOT, so a falling total loss alone does not show it.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CollapseWatch"]


class CollapseWatch:
    """Running means of the two collapse monitors over the last ``window`` iterations, checked
    after ``start`` iterations (warm-up); ``update`` returns a warning once, then ``None``."""

    def __init__(self, window: int = 50, start: int = 200, uniform: float = 0.95, single: float = 0.05) -> None:
        self.window, self.start, self.uniform, self.single = window, start, uniform, single
        self._ent: deque[float] = deque(maxlen=window)
        self._batch: deque[float] = deque(maxlen=window)
        self.warned = False

    def update(self, rec: dict) -> str | None:
        """Feed one iteration's log record; the warning text the first time collapse is seen."""
        if "teacher_entropy" not in rec:
            return None
        self._ent.append(float(rec["teacher_entropy"]))
        self._batch.append(float(rec["teacher_batch_entropy"]))
        if self.warned or rec["iteration"] + 1 < self.start or len(self._ent) < self.window:
            return None
        ent, batch = sum(self._ent) / len(self._ent), sum(self._batch) / len(self._batch)
        if ent > self.uniform:
            self.warned = True
            return (f"DINO targets are uniform (teacher entropy {ent:.2f} of log K over the last "
                    f"{self.window} iterations at iteration {rec['iteration']}): the CLS branch is not "
                    "learning (iBOT may still be). Typical of short runs on small or homogeneous "
                    "data, where two crops of one volume share too little the network can match")
        if batch < self.single:
            self.warned = True
            return (f"DINO collapsed to one prototype (batch-mean target entropy {batch:.2f} of log K at "
                    f"iteration {rec['iteration']}); raise the teacher temperature or the centre momentum")
        return None
