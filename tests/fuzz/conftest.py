"""The hostile-input suite: damaged copies of a 24-patient phantom, fed to the ``ctbench``
command line in a subprocess as a user would run it. Every case asserts the exit code, one
message naming the file/case/column and the fix, no traceback, and that nothing was written
outside the folders the command was given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ_PATIENTS = 24

# `ctbench` with the tests' encoders registered (the console script's own entry point after that)
_LAUNCH = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from ctbench.registry import MODELS
    from tests.fakes import ConstantEncoder, HistogramEncoder
    MODELS.register("test-histogram")(HistogramEncoder)
    MODELS.register("test-constant")(ConstantEncoder)
    from ctbench.cli import main
    sys.argv = ["ctbench", *sys.argv[1:]]
    main()
    """
)


@pytest.fixture(scope="session")
def phantom24(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-patient phantom, generated once per session (read-only: copy it to damage it)."""
    from ctbench.phantom import generate_phantom

    return generate_phantom(tmp_path_factory.mktemp("fuzz") / "phantom24", n_patients=FUZZ_PATIENTS, seed=0)


@dataclass
class Sandbox:
    """A folder holding everything a fuzz case may touch: ``home`` ($CTBENCH_HOME), ``data``
    (a damaged dataset copy), ``out`` (results); anything else appearing under ``root`` (or
    beside it) was written where it should not be."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def copy_dataset(self, src: Path) -> Path:
        """A writable copy of ``src`` at :attr:`data` (images are copied too: they may be damaged)."""
        shutil.copytree(src, self.data)
        return self.data

    def snapshot(self) -> set[Path]:
        """Every file below the sandbox's parent, outside ``home``, ``out`` and ``data``."""
        allowed = (self.home, self.out, self.data)
        return {p for p in self.root.parent.rglob("*")
                if p.is_file() and not any(p.is_relative_to(a) for a in allowed)}

    def ctbench(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
                console_script: bool = False) -> subprocess.CompletedProcess:
        """Run ``ctbench *args`` in a subprocess with ``home`` as $CTBENCH_HOME. By default the
        tests' encoders are registered first (``test-histogram``, ``test-constant``);
        ``console_script`` runs the installed ``ctbench`` executable itself."""
        full_env = {k: v for k, v in os.environ.items() if k not in ("CTBENCH_DEBUG", "PYTEST_XDIST_WORKER")}
        full_env.update({"CTBENCH_HOME": str(self.home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        full_env.update(env or {})
        if console_script:
            cmd = [str(Path(sys.executable).with_name("ctbench")), *args]
        else:
            cmd = [sys.executable, "-c", _LAUNCH.format(repo=str(REPO)), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout,
                              cwd=self.root)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    root = tmp_path / "sandbox"
    root.mkdir()
    return Sandbox(root)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """The command failed (non-zero exit, ``code`` when given) with one readable message that
    contains every needle (whitespace-insensitive) and no Python traceback; returns the text."""
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0 for a failed command:\n{text[-2000:]}"
    if code is not None:
        assert proc.returncode == code, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    flat = " ".join(text.split())
    for needle in needles:
        assert " ".join(needle.split()) in flat, f"{needle!r} not in:\n{text[-2000:]}"
    return text
