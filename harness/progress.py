"""Progress of a run's stages on stderr: rich bars on a terminal, plain log lines otherwise.

The runner reports ``progress(stage, done, total)``: once with ``done == 0`` when a stage starts,
then after each unit (case, trial, seed, metric). A terminal gets one bar per stage from its
start; piped output (a log file, CI, ``nohup``) gets lines such as
``[ctbench] extract 12/120 (0:00:41)`` at each stage's start and end and at most every
:data:`LOG_INTERVAL_S` seconds in between, and, while one unit takes long (a refit seed, a
large volume), the running stage again every :data:`HEARTBEAT_S` seconds: a log never stays
silent while work goes on.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

StageCallback = Callable[[str, int, int], None]

#: display names of the runner's stages, in the order a run goes through them
STAGES = {
    "generate": "generating phantom",
    "model": "loading model",
    "read": "reading cases",
    "extract": "extracting features",
    "features": "loading features",
    "tune": "tuning probe",
    "refit": "refitting probe",
    "bootstrap": "bootstrap CIs",
    "evaluate": "evaluating",
    "write": "writing result",
}
LOG_INTERVAL_S = 10.0
HEARTBEAT_S = 60.0
LOG_PREFIX = "[ctbench]"


def bar_columns() -> tuple:
    """The columns of every ctbench progress bar."""
    return TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()


def elapsed(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    return str(timedelta(seconds=int(max(0.0, seconds))))


class StageLog:
    """Plain progress lines, ``[ctbench] <prefix><stage> done/total (elapsed)``: at a stage's
    first report (its start), when it completes, and otherwise at most every ``interval`` s;
    :meth:`beat` repeats the running stage's line when it wrote none for ``heartbeat`` s.
    Thread-safe (beats come from :func:`heartbeat`'s thread)."""

    def __init__(self, write: Callable[[str], None], interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, heartbeat: float = HEARTBEAT_S) -> None:
        self.write, self.interval, self.clock, self.heartbeat = write, interval, clock, heartbeat
        self.prefix = ""
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._logged: dict[str, float] = {}
        self._shown: dict[str, tuple[int, int]] = {}
        self._running: dict[str, tuple[int, int]] = {}  # unfinished stages, the last reported last

    def reset(self, prefix: str = "") -> None:
        """Forget every stage (a new run starts), and prefix the stage names of the next lines."""
        with self._lock:
            self.prefix = prefix
            self._started.clear()
            self._logged.clear()
            self._shown.clear()
            self._running.clear()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            now = self.clock()
            first = stage not in self._started
            if first:
                self._started[stage] = now
            finished = done >= total
            self._running.pop(stage, None)
            if not finished:
                self._running[stage] = (done, total)
            due = now - self._logged.get(stage, now) >= self.interval
            if (first or finished or due) and self._shown.get(stage) != (done, total):
                self._emit(stage, done, total, now)

    def beat(self) -> None:
        """Repeat the line of the unfinished stage reported last, if it wrote none for
        ``heartbeat`` seconds (one unit of it is taking long)."""
        with self._lock:
            if not self._running:
                return
            now = self.clock()
            stage, (done, total) = next(reversed(self._running.items()))
            if now - self._logged[stage] >= self.heartbeat:
                self._emit(stage, done, total, now)

    def _emit(self, stage: str, done: int, total: int, now: float) -> None:
        self._logged[stage], self._shown[stage] = now, (done, total)
        self.write(f"{LOG_PREFIX} {self.prefix}{stage} {done}/{total} ({elapsed(now - self._started[stage])})")

    def line(self, text: str) -> None:
        """One log line, prefixed ``[ctbench]``."""
        with self._lock:
            self.write(f"{LOG_PREFIX} {text}")


@contextmanager
def heartbeat(log: StageLog, check_every: float = 5.0) -> Iterator[None]:
    """Call ``log.beat()`` from a daemon thread every ``check_every`` seconds while inside."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(check_every):
            log.beat()

    thread = threading.Thread(target=loop, name="ctbench-progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class StageBars:
    """One rich bar per stage, added at the stage's first report."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self._ids: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._ids:
            self._ids[stage] = self.bar.add_task(STAGES.get(stage, stage), total=total)
        self.bar.update(self._ids[stage], completed=done, total=total)


def log_writer(console: Console) -> Callable[[str], None]:
    """Write whole lines to ``console``'s file at once, flushed (never wrapped, no markup)."""

    def write(line: str) -> None:
        console.file.write(line + "\n")
        console.file.flush()

    return write


@contextmanager
def stage_display(console: Console, enabled: bool = True) -> Iterator[StageCallback]:
    """A ``progress(stage, done, total)`` callback drawing on ``console``: bars when it is a
    terminal (:attr:`rich.console.Console.is_terminal`), plain log lines otherwise; nothing
    when not ``enabled`` (e.g. a torchrun rank other than the first)."""
    if not enabled:
        yield lambda stage, done, total: None
    elif console.is_terminal:
        with Progress(*bar_columns(), console=console, transient=False) as bar:
            yield StageBars(bar)
    else:
        log = StageLog(log_writer(console))
        with heartbeat(log):
            yield log
