"""The published site as a person sees it: headless Chromium opens the index and a task page of
every category at 1400 px, sorts tables by clicking their headers (the pages' own script), checks
figures and saves full-page screenshots; a moved site renders the same; the markdown board stays
one table cell per value on GitHub, whatever the names hold."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from typer.testing import CliRunner

from ctbench.leaderboards import build_board, collect, write_board
from ctbench.leaderboards.cli import app
from ctbench.leaderboards.publish import publish
from tests import browser
from tests.category_results import CONSTANT, RUNS
from tests.test_leaderboard_fixtures import known_case, phantom_results, write_result_file  # noqa: F401


needs_chromium = pytest.mark.skipif(not browser.available(), reason="headless Chromium is not installed at "
                                    "/usr/bin/chromium (apt-get install -y chromium)")


def _ink(png: Path) -> float:
    """Share of clearly non-white pixels of an image."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return float((img.sum(axis=2) < 600).mean())


def _order(b: browser.Browser, table: str) -> list[str]:
    return b.js(f"Array.from(document.querySelectorAll('#{table} tbody tr:not([hidden]) td.model .name'))"
                f".map(e => e.textContent)")


@pytest.fixture(scope="module")
def built(category_results: Path, tmp_path_factory):
    """``ctbench leaderboard publish`` of the seven categories' results, and the board it published."""
    out = tmp_path_factory.mktemp("site")
    res = CliRunner().invoke(app, ["publish", "--out", str(out), "--results", str(category_results), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "results.json").read_text())["board"]


@pytest.fixture(scope="module")
def site(built) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nleaderboard screenshots (1400 px wide): {folder}")
    return folder


@needs_chromium
def test_index_sorts_and_filters_in_a_browser(built, shots, tmp_path):
    site, board = built
    winners = sorted((t["slug"], r["label"]) for t in board["tables"] for r in t["rows"] if r["rank"] == 1)
    oracle, dense, constant = "test-oracle (random)", f"{RUNS['segmentation'][1]} (random)", f"{CONSTANT} (random)"
    with browser.Browser(tmp_path / "profile") as b:
        b.open((site / "index.html").as_uri())
        assert b.js("document.querySelectorAll('table').length") == 3  # overview, tasks, mean ranks per category
        assert _order(b, "overview") == [oracle, dense, constant]  # mean rank, then tasks covered
        heads = b.js("Array.from(document.querySelectorAll('#overview thead th')).map(h => h.textContent)")
        assert len(heads) == 2 + len(RUNS) + 5 and heads[-5] == "params"  # then licence, supervision...
        marked = b.js("Array.from(document.querySelectorAll('#overview td.win.shade0')).map(td => "
                      "[td.closest('table').tHead.rows[0].cells[td.cellIndex].querySelector('a').getAttribute('href'),"
                      " td.parentNode.querySelector('td.model .name').textContent])")
        assert sorted((href[len("tasks/"):-len(".html")], label) for href, label in marked) == winners
        assert len(winners) >= len(RUNS)
        assert b.js("document.querySelectorAll('#overview td.shade0').length") == len(winners)
        b.click("#overview th[data-col='0']")  # model name: A to Z
        assert _order(b, "overview") == sorted([oracle, dense, constant])
        b.click("#overview th[data-col='0']")
        assert _order(b, "overview") == sorted([oracle, dense, constant], reverse=True)
        assert b.js("document.querySelector(\"#overview th[data-col='0']\").getAttribute('aria-sort')") == "descending"
        b.click("#overview th[data-col='1']")  # mean rank: best (lowest) first
        assert _order(b, "overview") == [oracle, dense, constant]
        b.click("input[data-hide-kind='random'][data-table='overview']")  # every row here is a random-init control
        assert _order(b, "overview") == []
        b.click("input[data-hide-kind='random'][data-table='overview']")
        links = b.js("Array.from(document.querySelectorAll('#tasks a')).map(a => a.getAttribute('href'))")
        assert len(links) == len(RUNS) and all(re.fullmatch(r"tasks/[\w.-]+\.html", h) for h in links)
        shot = b.screenshot(shots / "index.png")
    assert 0.02 < _ink(shot) < 0.9


@needs_chromium
def test_task_page_of_every_category(site, shots, tmp_path):
    pages = {}
    for page in sorted((site / "tasks").glob("*.html")):
        category = re.search(r"category ([\w-]+);", page.read_text()).group(1)
        pages[category] = page
    assert set(pages) == set(RUNS)
    with browser.Browser(tmp_path / "profile") as b:
        for category, page in sorted(pages.items()):
            better = f"{RUNS[category][1]} (random)"
            worse = f"{CONSTANT} (random)"
            b.open(page.as_uri())
            table = b.js("document.querySelector('table.board').id")
            assert _order(b, table) == [better, worse], category
            b.click(f"#{table} th[data-col='2']")  # main metric: best first (already), then worst first
            b.click(f"#{table} th[data-col='2']")
            assert _order(b, table) == [worse, better], category
            b.click(f"#{table} th[data-col='0']")  # rank: best first
            assert _order(b, table) == [better, worse], category
            badges = b.js(f"Array.from(document.querySelectorAll('#{table} .badge.random')).length")
            assert badges == 2, category  # random-init controls carry a badge, not grey text
            prov = b.js(f"document.querySelector('#{table} td.prov').textContent")
            assert "protocol" in prov and "split hash" in prov and "weights sha256" in prov and "random" in prov
            images = b.js("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth,"
                          " i.closest('figure').querySelector('figcaption').textContent])")
            assert images and all(w > 300 for _, w, _ in images), (category, images)
            for src, _, _ in images:
                assert src.startswith("../plots/") and _ink(page.parent / src) > 0.01, (category, src)
            chance = b.js("document.querySelector('p.chance').textContent")
            if category == "survival":  # one Kaplan-Meier figure per model, each captioned with it
                captions = [c for _, _, c in images if "Kaplan-Meier" in c]
                assert sorted(c.rsplit(": ", 1)[1] for c in captions) == sorted([better, worse])
                assert "chance level of c_index: 0.500" in chance
            if category == "classification":
                assert "chance level of auroc: 0.500" in chance
            shot = b.screenshot(shots / f"task-{category}.png")
            assert 0.02 < _ink(shot) < 0.9, category


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.suffix in {".html", ".json", ".csv", ".css", ".js", ""})


@needs_chromium
def test_moved_site_renders_identically(phantom_results, tmp_path):  # noqa: F811
    from PIL import Image

    entries = collect(phantom_results)
    first = tmp_path / "a" / "site"
    publish(build_board(entries, n_boot=20), entries, first)
    moved = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(first, moved)
    shutil.rmtree(first)  # nothing may still point at the first place
    text = _all_text(moved)
    for local in (str(tmp_path), str(phantom_results), "file:"):
        assert local not in text
    assert not re.search(r'(?:src|href)="(?:/|[a-z]+:)', text)
    shots = []
    with browser.Browser(tmp_path / "profile") as b:
        for where in (moved, moved.parent.parent / "second"):
            if where != moved:
                shutil.copytree(moved, where)
            for page in ("index.html", "tasks/phantom--grade.html"):
                b.open((where / page).as_uri())
                assert b.js("Array.from(document.images).every(i => i.naturalWidth > 0)")
                assert b.js("getComputedStyle(document.querySelector('th')).fontWeight") == "600"  # stylesheet found
                shots.append(np.asarray(Image.open(b.screenshot(tmp_path / f"{len(shots)}.png"))))
    assert np.array_equal(shots[0], shots[2]) and np.array_equal(shots[1], shots[3])


class _Cells(html.parser.HTMLParser):
    """Rows of the tables of rendered markdown, as text per cell, and the other tags seen."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_markdown_and_html_keep_names_as_text(tmp_path):
    """Names holding ``|``, markup, emphasis marks and link syntax stay text: each markdown table
    row renders (GitHub-flavoured tables, markdown-it) with its header's number of cells, and no
    page gains an element from a name."""
    from markdown_it import MarkdownIt

    y, patients, scores = known_case(n_patients=40)
    nasty_model, nasty_task = "a|b<i>x</i>*y*", "t|1 [l](http://e.x) __u__"
    for name, key in ((nasty_model, "best"), ("plain", "noise")):
        path = write_result_file(tmp_path / "results", key, y, scores[key], patients)
        data = json.loads(path.read_text())  # the runner only writes plain names; a foreign file need not
        data["task"]["name"], data["model"]["name"] = nasty_task, name
        path.write_text(json.dumps(data))
    board = build_board(tmp_path / "results", n_boot=20)
    write_board(board, "md", tmp_path / "md")
    rendered = MarkdownIt("commonmark").enable("table").render((tmp_path / "md" / "leaderboard.md").read_text())
    parsed = _Cells()
    parsed.feed(rendered)
    assert "i" not in parsed.tags and "strong" in parsed.tags  # bold: the winners only
    assert not [t for t in parsed.tags if t == "a"]
    tables, width = [], None
    for row in parsed.rows:
        if width is None or (row and row[0] in ("model", "task", "rank")):
            width = len(row)
            tables.append(row)
        assert len(row) == width, row
    cells = [c for row in parsed.rows for c in row]
    assert nasty_model in cells and any(c.startswith(nasty_model + " ") for c in cells)
    assert any(nasty_task in c for c in cells)
    (page,) = write_board(board, "html", tmp_path / "html")
    tags = _Cells()
    tags.feed(page.read_text())
    assert tags.tags.count("i") == 0 and tags.tags.count("script") == 1 and tags.tags.count("a") == 2  # 2 task links
    assert "&#34;" not in page.read_text().split("<script>")[1]  # the inline script is not HTML-escaped


def test_label_efficiency_on_the_task_page(tmp_path):
    y, patients, scores = known_case()
    for frac, name in ((1.0, "best"), (0.5, "twin-a"), (0.1, "noise")):
        write_result_file(tmp_path / "r", "m", y, scores[name], patients, train_fraction=frac)
    entries = collect(tmp_path / "r")
    publish(build_board(entries, n_boot=20), entries, tmp_path / "site")
    page = (tmp_path / "site" / "tasks" / "phantom--nodule.html").read_text()
    assert 'src="../plots/curve_phantom--nodule.png"' in page and "Label efficiency" in page
    assert (tmp_path / "site" / "plots" / "curve_phantom--nodule.png").stat().st_size > 1000


@needs_chromium
def test_task_page_with_two_probe_families(tmp_path, shots):
    """A task whose models used two probe families: one ranked table per family plus the summary
    (each model's probe chosen on validation), every table sorting on its own, and the
    tuning-curve figure loaded, inked and described; the index's cell names the chosen probe."""
    from tests.test_leaderboard_families import two_family_results

    entries = collect(two_family_results(tmp_path / "results", n_patients=40))
    publish(build_board(entries, n_boot=20), entries, tmp_path / "site")
    page = tmp_path / "site" / "tasks" / "phantom--nodule.html"
    with browser.Browser(tmp_path / "profile") as b:
        b.open(page.as_uri())
        ids = b.js("Array.from(document.querySelectorAll('table.board')).map(t => t.id)")
        assert ids == ["rows-phantom--nodule", "rows-phantom--nodule--linear--cls", "rows-phantom--nodule--knn--cls"]
        heads = b.js("Array.from(document.querySelectorAll('.probe-heading')).map(h => h.textContent)")
        assert heads == ["best probe per model (chosen on validation)", "linear probe on cls", "knn probe on cls"]
        summary, linear, knn = ids
        chosen = b.js(f"Array.from(document.querySelectorAll('#{summary} td.probe')).map(td => td.textContent)")
        assert sorted(zip(_order(b, summary), chosen)) == [("a", "linear on cls"), ("b", "knn on cls")]
        b.click(f"#{summary} th[data-col='4']")  # probe: A to Z
        assert _order(b, summary) == ["b", "a"]
        b.click(f"#{summary} th[data-col='5']")  # validation value: best first
        assert _order(b, summary) == ["a", "b"]
        assert _order(b, linear) == ["a", "b"] and _order(b, knn) == ["a", "b"]
        b.click(f"#{linear} th[data-col='2']")  # main metric: best first (already), then worst first
        b.click(f"#{linear} th[data-col='2']")
        assert _order(b, linear) == ["b", "a"] and _order(b, knn) == ["a", "b"]  # the other tables stay
        b.click(f"#{knn} th[data-col='4']")  # fit seconds per trial: fastest first
        fit = b.js(f"Array.from(document.querySelectorAll('#{knn} tbody tr')).map(r => r.cells[4].textContent)")
        assert fit == ["0.5 s", "0.6 s"]
        img = b.js("(() => { const i = document.querySelector('img[src*=\"tuning_\"]'); "
                   "return [i.getAttribute('src'), i.naturalWidth, i.complete, i.alt]; })()")
        assert img[1] > 300 and img[2] and "one panel per model (a, b)" in img[3] and "knn on cls" in img[3]
        assert _ink(page.parent / img[0]) > 0.01
        b.screenshot(shots / "task-two-families.png")
        b.open((tmp_path / "site" / "index.html").as_uri())
        tips = b.js("Array.from(document.querySelectorAll('#overview td.num[title*=\"probe\"]')).map(td => td.title)")
        assert sorted(t.split("; ")[-1] for t in tips) == ["probe knn on cls, chosen on validation",
                                                           "probe linear on cls, chosen on validation"]
