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
