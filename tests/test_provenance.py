"""Every result names the code behind its model (``model.adapter``: module, distribution,
version, commit), and records no absolute path of the machine that wrote it."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

from ctbench.adapters import BUILTIN_MODELS
from ctbench.portable import portable_path, portable_result, portable_text, portable_url
from ctbench.provenance import adapter_info, ctbench_version, git_sha
from ctbench.registry import MODELS
from tests.cli_helpers import run_cli
from tests.test_entry_points import MODULE

COMMIT = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233a"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def fake_distribution(site: Path, name: str = "ctbench-mini-adapter", version: str = "0.3.1",
                      direct_url: dict | None = None) -> Path:
    """An installed distribution as pip leaves it (``*.dist-info`` with METADATA, entry points
    and, for direct installs, PEP 610 ``direct_url.json``) providing model ``mini``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[ctbench.adapters]\nmini = mini_adapter:MiniEncoder\n")
    (info / "top_level.txt").write_text("mini_adapter\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    (site / "mini_adapter.py").write_text(textwrap.dedent(MODULE))
    return info


def _entry_point(info: Path):
    (ep,) = [e for e in PathDistribution(info).entry_points if e.group == "ctbench.adapters"]
    return ep


def _git_checkout(folder: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "mini_adapter.py").write_text("# the plugin's source\n")
    subprocess.run([*GIT, "init", "-q", str(folder)], check=True)
    subprocess.run([*GIT, "-C", str(folder), "add", "mini_adapter.py"], check=True)
    subprocess.run([*GIT, "-C", str(folder), "commit", "-q", "-m", "first"], check=True)
    log = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%H"], capture_output=True, text=True)
    return log.stdout.strip()


# the distribution and its commit ----------------------------------------------------------------


def test_a_plugin_installed_from_git_records_its_commit(tmp_path):
    url = {"url": "https://github.com/someone/mini-adapter.git",
           "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "v0.3.1"}}
    info = fake_distribution(tmp_path / "site", direct_url=url)
    assert adapter_info(object(), _entry_point(info)) == {
        "module": "mini_adapter", "package": "ctbench-mini-adapter", "version": "0.3.1", "commit": COMMIT}


@needs_git
def test_an_editable_plugin_records_its_checkout_and_whether_it_was_modified(tmp_path):
    src = tmp_path / "mini-src"
    head = _git_checkout(src)
    url = {"url": src.as_uri(), "dir_info": {"editable": True}}
    ep = _entry_point(fake_distribution(tmp_path / "site", direct_url=url))
    assert re.fullmatch(r"[0-9a-f]{40}", head) and adapter_info(object(), ep)["commit"] == head
    (src / "mini_adapter.py").write_text("# edited, not committed\n")
    assert adapter_info(object(), ep)["commit"] == head + "-dirty"


@needs_git
@pytest.mark.parametrize("direct_url", [
    None,  # a wheel from an index
    "copy",  # `pip install DIR` (not editable): a copy of what DIR held then
    {"url": "https://example.org/mini-0.3.1.tar.gz", "archive_info": {}},
    {"url": "https://example.org/mini.hg", "vcs_info": {"vcs": "hg", "commit_id": "abc"}},
    "not json",
])
def test_no_commit_where_none_is_known(tmp_path, direct_url):
    if direct_url == "copy":
        _git_checkout(tmp_path / "src")
        direct_url = {"url": (tmp_path / "src").as_uri(), "dir_info": {}}
    info = fake_distribution(tmp_path / "site", direct_url=None if direct_url == "not json" else direct_url)
    if direct_url == "not json":
        (info / "direct_url.json").write_text("{not json")
    got = adapter_info(object(), _entry_point(info))
    assert got["package"] == "ctbench-mini-adapter" and got["version"] == "0.3.1" and got["commit"] is None


def test_built_in_adapters_are_ctbench_itself():
    module = BUILTIN_MODELS["hu-histogram"].split(":")[0]
    got = adapter_info(MODELS.get("hu-histogram"), MODELS.entry_point("hu-histogram"))
    assert MODELS.entry_point("hu-histogram") is None and module.startswith("ctbench.adapters.")
    assert got == {"module": module, "package": "ctbench", "version": ctbench_version(), "commit": git_sha()}


def test_a_model_registered_in_code_outside_any_package_records_its_module_only():
    class Local:
        pass

    Local.__module__ = "my_lab_script"
    assert adapter_info(Local) == {"module": "my_lab_script", "package": None, "version": None, "commit": None}


# through `ctbench run` ----------------------------------------------------------------------------


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The fake distribution on ``sys.path`` and the model registry rescanned in this process;
    the registry, ``sys.path`` and the imported plugin module are restored afterwards."""
    site = tmp_path / "site"
    url = {"url": "https://github.com/someone/mini-adapter.git", "vcs_info": {"vcs": "git", "commit_id": COMMIT}}
    fake_distribution(site, direct_url=url)
    monkeypatch.syspath_prepend(str(site))
    for attr in ("_refs", "_objs", "_plugins", "_broken"):
        monkeypatch.setattr(MODELS, attr, dict(getattr(MODELS, attr)))
    monkeypatch.setattr(MODELS, "problems", list(MODELS.problems))
    monkeypatch.setattr(MODELS, "_scanned", False)
    yield site
    sys.modules.pop("mini_adapter", None)


def test_a_run_of_a_plugin_records_it_and_no_local_path(tmp_path, small_phantom, installed_plugin, monkeypatch,
                                                       capsys, ctbench_home):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--model", "mini", "--task", "classification", "--dataset",
                           str(small_phantom), "--trials", "2", "--bootstrap", "20", "--out", str(tmp_path / "res"))
    assert code == 0, err[-2000:]
    text = (tmp_path / "res" / "result.json").read_text()
    result = json.loads(text)
    assert result["model"]["adapter"] == {"module": "mini_adapter", "package": "ctbench-mini-adapter",
                                          "version": "0.3.1", "commit": COMMIT}
    # a result folder gets shared: no path of this machine in it
    assert str(tmp_path) not in text and str(small_phantom.parent) not in text and str(ctbench_home) not in text
    assert result["config"]["dataset"] == small_phantom.name and result["config"]["out"] == "res"
    assert result["config"]["storage"] is None
    assert result["probe"]["storage"] == "sqlite:///$CTBENCH_HOME/studies/optuna.db"
    assert (ctbench_home / "studies" / "optuna.db").is_file()


# the rule ---------------------------------------------------------------------------------------


def test_paths_are_recorded_under_the_home_mark_or_as_bare_names(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "home" / "weights" / "m" / "w.safetensors") == "$CTBENCH_HOME/weights/m/w.safetensors"
    assert portable_path("/data/lidc/w.pt") == "w.pt" and portable_path("data/lidc/") == "lidc"
    assert portable_path("home/studies") == "$CTBENCH_HOME/studies"  # relative to the working folder
    for name in ("phantom", "auto", "random", "$CTBENCH_HOME/weights/w.pt", None):
        assert portable_path(name) == name
    assert portable_url(f"sqlite:///{tmp_path}/home/studies/optuna.db") == "sqlite:///$CTBENCH_HOME/studies/optuna.db"
    assert portable_url("postgresql://user:secret@db.example.org:5432/optuna") == \
        "postgresql://***@db.example.org:5432/optuna"
    assert portable_text("cannot read /srv/ct/c1/x.nii.gz (see docs/a/b, ../x, https://x.org/a/b)") == \
        "cannot read x.nii.gz (see docs/a/b, ../x, https://x.org/a/b)"
    old = {"config": {"dataset": "/srv/ct/lidc", "weights": "/srv/w.pt", "out": None, "storage": None,
                      "task_options": {"llm": "/srv/lm", "beam": 2}},
           "model": {"weights": {"choice": "/srv/w.pt", "path": "/srv/w.pt", "sha256": "ab"}},
           "probe": {"storage": "sqlite:////srv/s.db"}, "task": {"options": {"llm": "/srv/lm"}},
           "failures": [{"case_id": "c", "reason": "/srv/ct/c.nii.gz: bad"}], "warnings": []}
    new = portable_result(old)
    assert new["config"] == {"dataset": "lidc", "weights": "w.pt", "out": None, "storage": None,
                             "task_options": {"llm": "lm", "beam": 2}}
    assert new["model"]["weights"] == {"choice": "w.pt", "path": "w.pt", "sha256": "ab"}
    assert new["probe"]["storage"] == "sqlite:///s.db" and new["task"]["options"] == {"llm": "lm"}
    assert new["failures"] == [{"case_id": "c", "reason": "c.nii.gz: bad"}] and portable_result(new) == new
