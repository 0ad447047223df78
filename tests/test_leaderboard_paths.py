"""Names read from files never become paths outside their folder: result folders
(``result_dir``/``write_result``), board files (slugs), predictions files a result points at,
and markdown that shows those names; unreadable result files are one clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ctbench.errors import CTBenchError
from ctbench.leaderboards import build_board, write_board
from ctbench.leaderboards.collect import collect
from ctbench.leaderboards.files import target, write_text
from ctbench.leaderboards.publish import publish
from ctbench.leaderboards.render_md import md_text
from ctbench.leaderboards.schema import read_result
from ctbench.leaderboards.slugs import slug_part, unique
from ctbench.results import result_dir, write_result
from tests.test_leaderboard_fixtures import known_case, write_result_file

HOSTILE = ["../../evil", "/etc/evil", "a/b", "..", ".", "", "a\\b"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# 1. result folders -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("field", ["dataset", "task", "model"])
def test_result_dir_refuses_names_that_are_not_one_folder(tmp_path, field, bad):
    parts = {"dataset": "phantom", "task": "nodule", "model": "m1"} | {field: bad}
    with pytest.raises(CTBenchError, match=rf"{field} name .*cannot name a results folder.*rename it"):
        result_dir(tmp_path / "results", parts["dataset"], parts["task"], parts["model"], "random", 0)


def test_result_dir_keeps_plain_names_and_its_layout(tmp_path):
    got = result_dir(tmp_path, "phantom-n24", "report-generation", "voxelfm-tiny", "random", 1, 0.5, "opts1a2b3c4d")
    layout = ("phantom-n24", "report-generation", "voxelfm-tiny", "random", "seed1-frac0.5-opts1a2b3c4d")
    assert got == tmp_path.joinpath(*layout)


def test_result_dir_refuses_a_symlink_leading_out_of_the_results(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "phantom").symlink_to(outside)
    with pytest.raises(CTBenchError, match="leads outside"):
        result_dir(tmp_path / "results", "phantom", "nodule", "m1", "random", 0)


@pytest.mark.parametrize("planted", ["predictions.csv", "result.json"])
def test_write_result_refuses_files_that_resolve_outside_the_folder(tmp_path, planted):
    folder, victim = tmp_path / "r" / "seed0", tmp_path / "victim.txt"
    folder.mkdir(parents=True)
    victim.write_text("keep")
    (folder / planted).symlink_to(victim)
    with pytest.raises(CTBenchError, match="leads outside"):
        write_result(folder, {"x": 1}, pd.DataFrame({"case_id": ["a"]}))
    assert victim.read_text() == "keep" and (folder / planted).is_symlink()


# 2. board slugs and writes ------------------------------------------------------------------------


def _hostile_results(root: Path, dataset: str, model: str = "best", **kw) -> Path:
    y, patients, scores = known_case(n_patients=30)
    folder = root / slug_part(dataset) / slug_part(model)
    return write_result_file(root, model, y, scores["best"], patients, dataset=dataset, folder=folder, **kw)


def test_slug_parts_are_path_safe_and_keep_names_apart():
    for raw in [*HOSTILE, "Lung", "lung--x", "x\ny", "<script>"]:
        part = slug_part(raw)
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", part) and ".." not in part and "--" not in part
    assert slug_part("phantom") == "phantom" and slug_part("opts1a2b3c4d") == "opts1a2b3c4d"
    assert len({slug_part(n) for n in ["Lung", "lung", "a/b", "a-b", "a\\b"]}) == 5
    assert unique(["a", "a", "a-2"]) == ["a", "a-3", "a-2"]


def test_board_files_stay_inside_out_whatever_the_names(tmp_path):
    results = tmp_path / "deep" / "results"
    _hostile_results(results, "../../../evil", "best")
    _hostile_results(results, "../../../evil", "../../../../m", task="nodule")
    _hostile_results(results, "evil", "best")  # a plain name its slug could collide with
    before = _files(tmp_path)
    board = build_board(results, n_boot=20)
    slugs = [t.slug for t in board.tables]
    assert len(set(slugs)) == 2 and "evil--nodule" in slugs and all("/" not in s and ".." not in s for s in slugs)
    out, site = tmp_path / "deep" / "board", tmp_path / "deep" / "site"
    for fmt in ("md", "html", "csv", "json"):
        write_board(board, fmt, out)
    publish(board, collect(results), site)
    new = _files(tmp_path) - before
    assert new and all(p.is_relative_to(out) or p.is_relative_to(site) for p in new), sorted(new)
    assert len(list((site / "tasks").glob("*.html"))) == 2 and len(list((out / "plots").glob("bars_*.png"))) == 2


@pytest.mark.parametrize("name", ["../x.md", "/tmp/x.md", "plots/../../x.png", "", "a//b"])
def test_board_writes_refuse_names_leading_out(tmp_path, name):
    with pytest.raises(CTBenchError, match="refusing to write"):
        write_text(tmp_path / "out", name, "x")
    assert not _files(tmp_path)


def test_board_writes_refuse_a_symlinked_subfolder_leading_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "plots").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CTBenchError, match="leads outside"):
        target(tmp_path / "out", "plots/bars_x.png")


# 3. predictions_file ------------------------------------------------------------------------------


def _set(path: Path, **fields) -> Path:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.csv", "sub/predictions.csv", "..", "", "a\\b.csv"])
def test_schema_refuses_a_predictions_file_that_is_a_path(tmp_path, bad):
    path = _set(_hostile_results(tmp_path, "phantom"), predictions_file=bad)
    with pytest.raises(CTBenchError) as err:
        read_result(path)
    assert str(path) in str(err.value) and "'predictions_file'" in str(err.value)
    assert "plain name of a file beside the result file" in str(err.value)


def test_predictions_are_never_opened_outside_the_result_folder(tmp_path):
    path = _hostile_results(tmp_path / "results", "phantom")
    (entry,) = collect(tmp_path / "results")
    object.__setattr__(entry, "result", entry.result.model_copy(update={"predictions_file": "../../x.csv"}))
    with pytest.raises(CTBenchError, match=r"field 'predictions_file' .*fix that field or re-run"):
        entry.predictions
    secret = tmp_path / "secret.csv"
    secret.write_text("case_id,patient_id\nsecret,1\n")
    (path.parent / "predictions.csv").unlink()
    (path.parent / "predictions.csv").symlink_to(secret)
    (entry,) = collect(tmp_path / "results")
    with pytest.raises(CTBenchError, match=re.escape(str(path))):
        entry.predictions


# 4. markdown -------------------------------------------------------------------------------------


def test_md_text_makes_names_inert():
    assert md_text("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md_text("a|b`c`\nd & e") == "a\\|b\\`c\\` d &amp; e"
    assert md_text("![x](http://t/p.png) [y](javascript:z)") == "!\\[x\\](http://t/p.png) [y\\](javascript:z)"
    assert md_text("0.812 [0.750, 0.871]") == "0.812 [0.750, 0.871]" and md_text("a\\|") == "a\\\\\\|"


def test_markdown_escapes_names_from_result_files(tmp_path):
    evil = "<script>alert(1)</script>|`x`\n# heading"
    _hostile_results(tmp_path / "results", evil, evil)
    _hostile_results(tmp_path / "results", evil, "plain")
    write_board(build_board(tmp_path / "results", n_boot=20), "md", tmp_path / "out")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "<script" not in md and "&lt;script&gt;" in md and "\n# heading" not in md
    width = None
    for line in md.splitlines():  # every row of a table has as many cells as its header
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        width = cells if width is None else width
        assert cells == width, line


# 5. unreadable result files -----------------------------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe\x00{\x80\x81 not utf-8", "not UTF-8"),
    (b"", "empty"),
    (b"   \n", "empty"),
    (b'{"schema_version": 1, "ctbench_version": "0.1', "not valid JSON"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_unreadable_result_files_are_one_error_naming_file_and_fix(tmp_path, content, expected):
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(CTBenchError) as err:
        read_result(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and expected in msg and "re-run this result or remove the file" in msg


def test_a_bom_does_not_make_a_result_unreadable(tmp_path):
    path = _hostile_results(tmp_path, "phantom")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_result(path).task.dataset == "phantom"


# 6. no local path in anything published ------------------------------------------------------------

ABSOLUTE = re.compile(r"(?<![\w.~:/$-])/[A-Za-z0-9_.-]+/")  # "/x/": a path from the root of a disk


def _with_local_paths(path: Path, where: Path) -> Path:
    """A result file as ctbench wrote it before paths were recorded portably: absolute paths of
    the machine that ran it in config, weights, storages, task options and failure reasons."""
    data = json.loads(path.read_text())
    local = str(where)
    data["config"].update(dataset=f"{local}/data/lidc", out=str(path.parent), weights=f"{local}/w/model.safetensors",
                          storage=f"sqlite:///{local}/studies/optuna.db")
    data["model"]["weights"].update(choice=f"{local}/w/model.safetensors", path=f"{local}/w/model.safetensors")
    data["probe"]["storage"] = f"sqlite:///{local}/studies/optuna.db"
    data["task"].update(options={"llm": f"{local}/lm", "beam": 2}, options_tag="opts1a2b3c4d")
    data["failures"] = [{"case_id": "case9", "reason": f"cannot read {local}/data/lidc/case9.nii.gz: truncated"}]
    path.write_text(json.dumps(data))
    return path


def test_published_files_hold_no_local_path_and_survive_moving_the_results(tmp_path):
    machine = tmp_path / "machine-a"
    results = machine / "results"
    y, patients, scores = known_case(n_patients=30)
    written = [write_result_file(results, m, y, scores[m], patients) for m in ("best", "noise")]
    written.append(write_result_file(results, "best", y, scores["best"], patients, created="2026-02-01T00:00:00+00:00",
                                     folder=results / "rerun" / "best"))  # same seed twice: a note names the newest
    for p in written:
        _with_local_paths(p, machine)
    pd.DataFrame({"time": [0, 1, 2], "survival": [1.0, 0.8, 0.5]}).to_csv(written[2].parent / "km.csv", index=False)
    board = build_board(results, n_boot=20)
    (table,) = board.tables
    table.km = [(table.rows[0].label, str(written[2].parent / "km.csv"))]  # as a survival table records it
    site, out = machine / "site", machine / "board"
    publish(board, collect(results), site)
    write_board(board, "csv", out)
    write_board(board, "json", out)
    moved = tmp_path / "machine-b"
    machine.rename(moved)

    files = [p for p in moved.rglob("*") if p.is_file() and p.suffix in (".json", ".csv")
             and (p.is_relative_to(moved / "site") or p.is_relative_to(moved / "board"))]
    assert {p.name for p in files} >= {"results.json", "leaderboard.csv", "mean_ranks.csv", "leaderboard.json"}
    for p in files:
        text = p.read_text()
        assert str(tmp_path) not in text and "machine-a" not in text, p
        assert not ABSOLUTE.search(text), (p, ABSOLUTE.search(text))

    payload = json.loads((moved / "site" / "results.json").read_text())
    paths = sorted(r["path"] for r in payload["results"])
    assert paths == sorted(p.relative_to(results).as_posix() for p in written)
    assert all((moved / "results" / p).is_file() for p in paths)  # relative to the results folder, wherever it is
    first = next(r for r in payload["results"] if r["path"] == written[0].relative_to(results).as_posix())
    assert first["model"]["weights"]["path"] == "model.safetensors" and first["model"]["weights"]["sha256"]
    assert first["config"]["dataset"] == "lidc" and first["config"]["storage"] == "sqlite:///optuna.db"
    assert first["task"]["options"] == {"llm": "lm", "beam": 2}
    assert first["failures"][0]["reason"] == "cannot read case9.nii.gz: truncated"
    (row,) = [r for r in payload["board"]["tables"][0]["rows"] if r["label"] == "best"]
    assert row["provenance"]["results"] == [written[2].relative_to(results).as_posix()]
    assert payload["board"]["tables"][0]["km"] == [["best", "rerun/best/km.csv"]]
    assert any("the newest (rerun/best/result.json) is used" in n for n in payload["board"]["tables"][0]["notes"])
    frame = pd.read_csv(moved / "site" / "leaderboard.csv")
    assert set(frame["results"]) == {"rerun/best/result.json", written[1].relative_to(results).as_posix()}
