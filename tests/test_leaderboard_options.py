"""Results with other task options (``task.options_tag``, e.g. ``--beam 2``) trained another
probe: they get a table of their own, never rows ranked with default-options results."""

import pytest

from ctbench.leaderboards import build_board
from ctbench.leaderboards.export import rows_frame
from ctbench.leaderboards.format import caption, heading
from ctbench.leaderboards.render_md import markdown
from tests.test_leaderboard_fixtures import known_case, write_result_file

TAG = "opts1a2b3c4d"
BEAM2 = {"beam": 2, "llm": None}


@pytest.fixture(scope="module")
def options_board(tmp_path_factory):
    """nodule: best and noise with default options; best, twin-a and noise again with beam 2
    (swapped scores, so a mixed ranking would show). mass: twin-a with beam 2 only."""
    root = tmp_path_factory.mktemp("options")
    y, patients, scores = known_case()
    write_result_file(root, "best", y, scores["best"], patients)
    write_result_file(root, "noise", y, scores["noise"], patients)
    for model, p in (("best", scores["noise"]), ("twin-a", scores["twin-a"]), ("noise", scores["best"])):
        write_result_file(root, model, y, p, patients, options=BEAM2, options_tag=TAG)
    write_result_file(root, "twin-a", y, scores["twin-a"], patients, task="mass", targets=("mass",),
                      options=BEAM2, options_tag=TAG)
    return root, build_board(root, n_boot=40)


def test_other_options_get_their_own_table_and_the_default_one_is_ranked(options_board):
    root, board = options_board
    (weights,) = (root / "phantom" / "nodule" / "best").iterdir()
    assert sorted(p.name for p in weights.iterdir()) == ["seed0", f"seed0-{TAG}"]  # as the runner lays out
    tables = {(t.task, t.options_tag): t for t in board.tables}
    assert set(tables) == {("nodule", None), ("nodule", TAG), ("mass", TAG)}
    default, beam = tables[("nodule", None)], tables[("nodule", TAG)]
    assert [r.label for r in default.rows] == ["best", "noise"]
    assert [r.label for r in beam.rows] == ["noise", "twin-a", "best"]  # its own ranking, its own values
    assert default.rows[0].main.value == 1.0 and beam.rows[0].main.value == 1.0
    assert {r.label: r.rank for r in beam.rows} == {"noise": 1, "twin-a": 2, "best": 3}
    assert all(len(r.seeds) == 1 for t in board.tables for r in t.rows)  # same model and seed: no collision
    assert not any("several results" in n for t in board.tables for n in t.notes)
    # the default-options table is the main one even though the beam-2 table has more models
    assert default.primary and not beam.primary and tables[("mass", TAG)].primary
    assert beam.options == BEAM2 and default.options is None
    assert (default.slug, beam.slug.split("--v")[0], tables[("mass", TAG)].slug) == (
        "phantom--nodule", f"phantom--nodule--{TAG}", f"phantom--mass--{TAG}")
    assert beam.title == f"phantom / nodule [{TAG}]" and heading(beam).startswith(beam.title + " (task v1")
    assert f"task options {TAG};" in caption(beam) and "task options" not in caption(default)
    assert any(f"{default.title} table" in n and f"task options {TAG} here, default in the main table" in n
               and "are not comparable" in n for n in beam.notes)


def test_mean_ranks_and_exports_keep_the_options_apart(options_board):
    _, board = options_board
    ranks = {r["model"]: (r["overall"], r["tasks"]) for r in board.mean_ranks}
    # nodule counts with default options only; mass has beam-2 results only, so that table counts
    assert ranks == {"best": (1.0, 1), "noise": (2.0, 1), "twin-a": (1.0, 1)}
    frame = rows_frame(board)
    assert sorted(zip(frame["task"], frame["options_tag"].fillna(""), frame["model"])) == [
        ("mass", TAG, "twin-a"), ("nodule", "", "best"), ("nodule", "", "noise"),
        ("nodule", TAG, "best"), ("nodule", TAG, "noise"), ("nodule", TAG, "twin-a")]
    text = markdown(board, {})
    assert f"## phantom / nodule [{TAG}] (task v1" in text and "## phantom / nodule\n" in text


def test_encoder_settings_make_separate_rows_never_pooled_seeds(tmp_path):
    """A bf16 run and a run with an adapter option are rows of their own next to the default
    fp32 run of the same model and weights (same seed: pooled, one would silently replace the other)."""
    import json

    y, patients, scores = known_case()
    write_result_file(tmp_path, "best", y, scores["best"], patients)
    for folder, p, model_extra in (("bf16", scores["noise"], {"precision": "bf16"}),
                                   ("opt", scores["twin-a"], {"precision": "fp32", "options": {"tokens": "pre"}})):
        path = write_result_file(tmp_path, "best", y, p, patients, folder=tmp_path / "x" / folder / "seed0")
        data = json.loads(path.read_text())
        data["model"].update(model_extra)
        path.write_text(json.dumps(data))
    (table,) = build_board(tmp_path, n_boot=40).tables
    assert sorted(r.label for r in table.rows) == ["best", "best+bf16", "best+tokens=pre"]
    assert [r.label for r in table.rows if r.rank == 1] == ["best"]
