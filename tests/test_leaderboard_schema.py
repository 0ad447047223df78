"""Result-file schema: validation messages, migration of older files, and load_results."""

import json

import numpy as np
import pytest

from ctbench.errors import CTBenchError
from ctbench.result_schema import MIGRATIONS, read_result
from ctbench.load import COLUMNS, load_results
from ctbench.results import SCHEMA_VERSION
from tests.test_leaderboard_fixtures import SPLIT, known_case, write_result_file


@pytest.fixture
def one_result(tmp_path):
    y, patients, scores = known_case()
    return write_result_file(tmp_path / "results", "best", y, scores["best"], patients)


def _rewrite(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_current_runner_output_validates(one_result):
    r = read_result(one_result)
    assert r.schema_version == SCHEMA_VERSION == 1 and r.migrated_from_schema is None
    assert r.task.main_metric == "auroc" and r.config.train_fraction == 1.0
    assert r.metrics["auroc"].value == 1.0 and r.model.card.name == "best"
    assert r.model.card.licence == "CC0-1.0" and r.model.card.input is not None  # the full card is kept


def _schema0(data):
    """What a pre-release ctbench wrote: no schema_version/protocol/direction/random_init, flat split hash."""
    del data["schema_version"], data["protocol_version"], data["task"]["direction"]
    del data["model"]["weights"]["random_init"], data["predictions_file"]
    data["split_hash"] = data.pop("split")["hash"]


def test_schema_0_file_is_migrated_with_defaults(one_result):
    _rewrite(one_result, _schema0)
    r = read_result(one_result)
    assert r.schema_version == 1 and r.migrated_from_schema == 0
    assert r.split.hash == SPLIT and r.protocol_version == "0"
    assert r.task.direction == "maximize" and r.model.weights.random_init is False
    assert r.predictions_file == "predictions.csv"
    assert set(MIGRATIONS) == set(range(SCHEMA_VERSION))  # a step from every older version


def test_schema_0_direction_comes_from_the_category(tmp_path):
    y = np.linspace(0, 1, 10)
    path = write_result_file(tmp_path, "m", y, y, np.arange(10), task="volume", targets=("volume",),
                             category="regression", main_metric="mae", direction="minimize", metrics={"mae": 0.0})
    _rewrite(path, _schema0)
    assert read_result(path).task.direction == "minimize"


def test_schema_0_random_weights_keep_their_flag(tmp_path):
    y, patients, scores = known_case()
    path = write_result_file(tmp_path, "ctrl", y, scores["noise"], patients, random_init=True)
    _rewrite(path, _schema0)
    assert read_result(path).model.weights.random_init is True


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["metrics"]["auroc"].update(value="high"), "field 'metrics.auroc.value'"),
        (lambda d: d["task"].pop("main_metric"), "field 'task.main_metric'"),
        (lambda d: d["split"].update(hash=""), "field 'split.hash'"),
        (lambda d: d["config"].update(train_fraction=1.5), "field 'config.train_fraction'"),
        (lambda d: d.update(schema_version=99), "newer ctbench"),
        (lambda d: d.update(schema_version="1"), "'schema_version' must be a non-negative integer"),
        (lambda d: [d.pop(k) for k in list(d)] and d.update(model="gpt", scores={"mmlu": 0.7}), "not a ctbench result file"),
    ],
)
def test_malformed_or_foreign_files_are_rejected_naming_file_and_field(one_result, change, expected):
    _rewrite(one_result, change)
    with pytest.raises(CTBenchError) as info:
        read_result(one_result)
    assert expected in str(info.value) and str(one_result) in str(info.value)


def test_invalid_json_names_the_file(one_result):
    one_result.write_text("{not json")
    with pytest.raises(CTBenchError, match="not valid JSON"):
        read_result(one_result)


def test_load_results_long_format(tmp_path):
    y, patients, scores = known_case()
    root = tmp_path / "results"
    write_result_file(root, "best", y, scores["best"], patients)
    old = write_result_file(root, "ctrl", y, scores["noise"], patients, random_init=True, seed=1)
    _rewrite(old, _schema0)  # older files keep loading
    frame = load_results(root)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 8  # 2 results x 4 classification metrics
    main = frame[frame.is_main].set_index("model")
    assert main.loc["best", "value"] == 1.0 and main.loc["best", "metric"] == "auroc"
    assert main.loc["ctrl", "weights"] == "random" and main.loc["ctrl", "random_init"]
    assert main.loc["ctrl", "protocol_version"] == "0" and main.loc["ctrl", "seed"] == 1
    assert (frame.train_fraction == 1.0).all()
    wide = frame.pivot_table(index="model", columns="metric", values="value")
    assert wide.loc["best", "auroc"] == 1.0 and np.isfinite(wide.loc["ctrl", "f1"])


def test_load_results_on_a_folder_without_results(tmp_path):
    with pytest.raises(CTBenchError, match="no result.json found"):
        load_results(tmp_path)
    with pytest.raises(CTBenchError, match="does not exist"):
        load_results(tmp_path / "missing")
