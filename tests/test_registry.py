import subprocess
import sys

import pytest

from ctbench.errors import CTBenchError
from ctbench.registry import MODELS, Registry


def test_listing_imports_no_model_code():
    code = (
        "import sys; from ctbench.registry import MODELS; names = MODELS.names();"
        "assert 'voxelfm' in names, names;"
        "assert 'ctbench.adapters.voxelfm' not in sys.modules;"
        "card = MODELS.get('voxelfm').card; assert card.embedding_dim == 864;"
        "assert 'voxelfm.model' not in sys.modules, 'reading a card must not build the network';"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_decorator_duplicate_and_lazy_resolution():
    reg: Registry = Registry("thing")
    reg.add_lazy("json-dumps", "json:dumps")
    import json

    assert reg.get("json-dumps") is json.dumps
    # the decorator may re-register the same object behind a lazy reference ...
    reg.add_lazy("loads", "json:loads")
    reg.register("loads")(json.loads)
    assert reg.get("loads") is json.loads
    # ... but a different object under a taken name raises
    with pytest.raises(CTBenchError, match="registered twice"):
        reg.register("loads")(json.load)
    with pytest.raises(CTBenchError, match="registered twice"):
        reg.add_lazy("json-dumps", "json:load")


def test_unknown_name_suggests_closest():
    with pytest.raises(CTBenchError) as e:
        MODELS.get("voxelfn")
    assert "Did you mean 'voxelfm'" in str(e.value)


def test_broken_reference_is_a_clear_error():
    reg: Registry = Registry("model")
    reg.add_lazy("ghost", "not_a_module_xyz:Thing")
    with pytest.raises(CTBenchError, match="ghost.*could not be loaded from not_a_module_xyz:Thing"):
        reg.get("ghost")


# ------------------------------------------------------------------ isolated third-party plugins

GOOD_CARD = '''
from ctbench.card import InputSpec, ModelCard

def card(name, dim=2):
    return ModelCard(name=name, title="t", citation="-", licence="MIT", architecture="-", parameters=0,
                     embedding_dim=dim, supervision="none",
                     input=InputSpec(orientation="native", spacing_mm="native", intensity="HU",
                                     spatial_size="native", axis_order="(X, Y, Z)"))
'''

PLUGINS = {
    "plug_good.py": GOOD_CARD + "\nclass Enc:\n    card = card('plug-good')\n",
    "plug_import.py": "raise RuntimeError('needs a GPU driver at import')\n",
    "plug_badcard.py": GOOD_CARD + "\nclass Enc:\n    card = card('plug-badcard', dim='not a number')\n",
    "plug_renamed.py": GOOD_CARD + "\nclass Enc:\n    card = card('something-else')\n",
    "plug_nocard.py": "class Enc:\n    card = {'name': 'plug-nocard'}\n",
}
ENTRY_POINTS = {"plug-good": "plug_good:Enc", "plug-import": "plug_import:Enc", "plug-badcard": "plug_badcard:Enc",
                "plug-renamed": "plug_renamed:Enc", "plug-nocard": "plug_nocard:Enc", "voxelfm": "plug_good:Enc"}


def plugin_site(tmp_path, monkeypatch, group: str = "ctbench.adapters") -> None:
    """Fake installed package ``ctbench-plugs`` (a hand-written dist-info) with :data:`PLUGINS`."""
    site = tmp_path / "site"
    info = site / "ctbench_plugs-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ctbench-plugs\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items()))
    for name, text in PLUGINS.items():
        (site / name).write_text(text)
    monkeypatch.syspath_prepend(str(site))


def fresh_models() -> Registry:
    """A registry like ``MODELS`` (built-ins, card check) that has not scanned entry points yet."""
    from ctbench.adapters import BUILTIN_MODELS
    from ctbench.registry import check_model_card

    reg: Registry = Registry("model", "ctbench.adapters", validate=check_model_card)
    for name, ref in BUILTIN_MODELS.items():
        reg.add_lazy(name, ref)
    return reg


def test_a_broken_plugin_breaks_only_itself(tmp_path, monkeypatch):
    plugin_site(tmp_path, monkeypatch)
    reg = fresh_models()
    assert {"plug-good", "plug-import", "plug-badcard", "plug-renamed", "plug-nocard", "voxelfm"} <= set(reg.names())
    assert reg.get("plug-good").card.name == "plug-good"
    assert reg.get("voxelfm").card.name == "voxelfm"  # the built-in keeps its name ...
    (clash,) = reg.problems  # ... and the clashing entry point is reported, not used
    assert "'voxelfm = plug_good:Enc'" in clash and "ctbench-plugs" in clash and "rename it" in clash
    expected = {
        "plug-import": "RuntimeError: needs a GPU driver at import",
        "plug-badcard": "ValidationError",
        "plug-renamed": "its card is named 'something-else' but its entry point 'plug-renamed'",
        "plug-nocard": "its `card` is dict, not a ctbench.card.ModelCard",
    }
    for name, problem in expected.items():
        for _ in range(2):  # the same message every time it is asked for
            with pytest.raises(CTBenchError) as e:
                reg.get(name)
            msg = str(e.value)
            assert f"model {name!r} from entry point '{name} = {ENTRY_POINTS[name]}' (package ctbench-plugs 0.3)" in msg
            assert problem in msg and "pip uninstall ctbench-plugs" in msg


def test_models_lists_the_others_and_run_refuses_the_broken_one(tmp_path, monkeypatch, capsys, small_phantom):
    import json

    import ctbench.registry
    import ctbench.runner
    from tests.cli_helpers import run_cli

    plugin_site(tmp_path, monkeypatch)
    reg = fresh_models()
    monkeypatch.setattr(ctbench.registry, "MODELS", reg)
    monkeypatch.setattr(ctbench.runner, "MODELS", reg)
    code, out, err = run_cli(monkeypatch, capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["plug-good"]["embedding_dim"] == 2 and rows["voxelfm"]["embedding_dim"] == 864
    assert "needs a GPU driver" in rows["plug-import"]["error"] and "clashes" in err
    code, out, err = run_cli(monkeypatch, capsys, "models")
    flat = " ".join(err.split())
    assert code == 0 and "broken" in out and "plug-renamed: model 'plug-renamed' from entry point" in flat
    code, _, err = run_cli(monkeypatch, capsys, "run", "--model", "plug-renamed", "--task", "classification",
                           "--dataset", str(small_phantom))
    assert code == 2 and "'plug-renamed = plug_renamed:Enc'" in " ".join(err.split()) and "Traceback" not in err


def test_a_broken_task_plugin_is_listed_as_broken(tmp_path, monkeypatch, capsys):
    import json

    import ctbench.registry
    from ctbench.tasks import BUILTIN_TASKS
    from tests.cli_helpers import run_cli

    plugin_site(tmp_path, monkeypatch, group="ctbench.tasks")
    reg: Registry = Registry("task category", "ctbench.tasks", validate=ctbench.registry.check_task_class)
    for name, ref in BUILTIN_TASKS.items():
        reg.add_lazy(name, ref)
    monkeypatch.setattr(ctbench.registry, "TASKS", reg)
    code, out, _ = run_cli(monkeypatch, capsys, "tasks", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and "classification" in rows and "needs a GPU driver" in rows["plug-import"]["error"]
    # an adapter class registered as a task category is refused by the task contract
    assert "not a subclass of ctbench.task.ProbeTask or EvalTask" in rows["plug-good"]["error"]
