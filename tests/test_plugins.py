"""The plugin contract (docs/plugins.md), checked for every registered model.

The parameters come from the registry, so a new plugin, built-in or installed
through the ``exportkit.models`` entry point, is tested here without anyone
writing a new test. Each runs at the plugin's smallest variant
(``ModelPlugin.test_overrides``).
"""

import numpy as np
import pytest

from exportkit.config import to_plain
from exportkit.registry import MODELS
from tests.helpers import compose_config, export_in_process, export_metadata, integer_versions, run_signatures

REGISTERED = MODELS.names()


def _composed(name: str) -> dict:
    return to_plain(compose_config(f"model={name}", *MODELS.get(name).test_overrides))


@pytest.mark.parametrize("name", REGISTERED)
def test_the_config_option_of_each_model_composes_and_fits_its_network(name):
    from exportkit.export import network_variable_shapes

    plugin = MODELS.get(name)
    config = to_plain(compose_config(f"model={name}"))
    assert config["model"]["name"] == name  # conf/model/<name>.yaml selects the plugin of that name
    plugin.validate(config["model"])  # its own defaults are valid
    # The preprocessing preset its YAML picks feeds the network a size it takes.
    params = {**config["model"], "data_format": "channels_last"}
    assert network_variable_shapes(params, config["preprocessing"]["image_size"])
    # The misfit hint's candidates are other variants, each named by a distinct override.
    alternatives = list(plugin.alternatives(params))
    assert len({override for override, _ in alternatives}) == len(alternatives)
    assert all(other != params for _, other in alternatives)


@pytest.mark.parametrize("name", REGISTERED)
def test_each_model_exports_end_to_end_and_loads_as_tf_serving_loads_it(name, tmp_path):
    """Composed and exported as run_export.py does (its command line is tests/test_end_to_end.py's)."""
    from exportkit.fresh_checkpoint import write_fresh_checkpoint
    from exportkit.verify import sample_jpegs

    plugin = MODELS.get(name)
    config = _composed(name)
    model_dir = tmp_path / "model_dir"
    write_fresh_checkpoint(model_dir, model_params={**config["model"], "data_format": "channels_last"},
                           image_size=config["preprocessing"]["image_size"],
                           preprocessing=config["preprocessing"])  # calibrated through the model's own preset
    exports = tmp_path / "exports" / name
    result, output = export_in_process(f"model={name}", *plugin.test_overrides, f"checkpoint.path={model_dir}",
                                       "head.k=3", f"export.root={exports.parent}")
    assert "✓ verify" in output and integer_versions(exports) == ["1"]
    assert result["version_path"] == str(exports / "1")

    images = sample_jpegs(config["preprocessing"]["image_size"])
    answers = run_signatures(exports / "1", {key: {"images": images} for key in ("predict_images", "serving_default")})
    for got in answers.values():
        assert got["classes"].shape == (3, 3) and got["probabilities"].shape == (3, 3)
        assert ((got["classes"] >= 0) & (got["classes"] < config["model"]["num_classes"])).all()
    np.testing.assert_array_equal(answers["predict_images"]["classes"], answers["serving_default"]["classes"])
    metadata = export_metadata(exports / "1")
    assert metadata["config"]["model"] == config["model"] and metadata["verification"]["passed"] is True
