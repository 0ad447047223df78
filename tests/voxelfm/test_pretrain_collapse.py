"""The collapse warning fires once, after warm-up, for uniform or single-prototype targets only."""

from voxelfm.collapse import CollapseWatch


def _feed(watch: CollapseWatch, ent: list[float], batch: float = 0.9) -> list[tuple[int, str]]:
    out = []
    for it, e in enumerate(ent):
        msg = watch.update({"iteration": it, "teacher_entropy": e, "teacher_batch_entropy": batch})
        if msg:
            out.append((it, msg))
    return out


def test_uniform_targets_warn_once_after_warm_up():
    # uniform from the start: no warning before iteration start - 1, then exactly one
    fired = _feed(CollapseWatch(window=10, start=30), [0.98] * 100)
    assert [it for it, _ in fired] == [29] and "uniform" in fired[0][1] and "0.98" in fired[0][1]
    # a healthy run that collapses at iteration 20: the mean of the last 10 passes 0.95 only when
    # all 10 are 0.99 (at 28 it is (0.5 + 9 x 0.99) / 10 = 0.941)
    fired = _feed(CollapseWatch(window=10, start=1), [0.5] * 20 + [0.99] * 20)
    assert [it for it, _ in fired] == [29]


def test_single_prototype_and_healthy_runs():
    fired = _feed(CollapseWatch(window=5, start=5), [0.01] * 20, batch=0.01)
    assert [it for it, _ in fired] == [4] and "one prototype" in fired[0][1]
    assert _feed(CollapseWatch(window=5, start=5), [0.3, 0.6, 0.9] * 30, batch=0.5) == []
    assert CollapseWatch().update({"iteration": 500, "total": 1.0}) is None  # no monitors logged
