import sys

import pytest
import torch

from edgecompress.errors import ConfigError, ModelError
from edgecompress.zoo import FAMILIES, build_model, count_parameters, parse_spec


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_every_family_fits_both_datasets(family, shape):
    model = build_model(family, shape, 10)
    assert model.eval()(torch.zeros(3, *shape)).shape == (3, 10)
    assert count_parameters(model) > 0


def test_spec_forms():
    assert parse_spec("cnn") == {"family": "cnn", "kwargs": {}}
    assert parse_spec("pkg.mod:make") == {"factory": "pkg.mod:make", "kwargs": {}}
    assert parse_spec('{"family": "mlp", "kwargs": {"hidden": [32]}}')["kwargs"] == {"hidden": [32]}
    with pytest.raises(ConfigError, match="unknown model family"):
        parse_spec("resnet9000")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_spec("{nope")


def test_user_factory_with_weights(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(hidden=16):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model({"factory": "mymodels:tiny", "kwargs": {"hidden": 8}}, (1, 8, 8), 10)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = build_model(
        {"factory": "mymodels:tiny", "kwargs": {"hidden": 8}, "weights": str(tmp_path / "w.pt")},
        (1, 8, 8),
        10,
    )
    assert torch.equal(again[1].weight, model[1].weight)
    with pytest.raises(ModelError, match="outputs shape"):
        build_model({"factory": "mymodels:tiny"}, (1, 8, 8), 3)
    with pytest.raises(ModelError, match="does not accept inputs"):
        build_model({"factory": "mymodels:tiny"}, (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="cannot import"):
        build_model({"factory": "no_such_module_xyz:f"}, (1, 8, 8), 10)
    sys.modules.pop("mymodels", None)
