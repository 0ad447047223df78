"""The HTML board as a browser shows it: headless Chromium screenshot and rendered DOM."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctbench.leaderboards import write_board
from tests.test_leaderboard_fixtures import phantom_board, phantom_results  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def page(phantom_board, tmp_path_factory) -> Path:  # noqa: F811
    (path,) = write_board(phantom_board, "html", tmp_path_factory.mktemp("html-board"))
    return path


def _chromium(tmp_path: Path, *args: str, url: str) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_screenshot_is_not_blank(page, tmp_path):
    from PIL import Image

    shot = tmp_path / "board.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", url=page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (900, 1280, 3)
    ink = (img.astype(int).sum(axis=2) < 600).mean()  # share of clearly non-white pixels
    assert 0.02 < ink < 0.9
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # text, table rules and rank-shaded cells


def test_rendered_dom_has_the_tables(page, tmp_path):
    done = _chromium(tmp_path, "--dump-dom", url=page.as_uri())
    dom = done.stdout
    assert dom.count("<table") == 6, done.stderr[-2000:]  # overview, tasks, mean ranks per category + 3 boards
    assert dom.count('<span class="sub">95% CI, higher is better</span>') == 3  # auroc heads each board
    assert "phantom / nodule" in dom and "voxelfm (random)" in dom and 'class="badge contaminated"' in dom
    assert dom.count('data-order="') == 4 + 3 + 4 + 3 * 4  # the sorting script ran on every sortable row
