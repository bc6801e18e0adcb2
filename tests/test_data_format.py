"""model.data_format in all five spellings (issue: data_format speaks both languages).

NCHW and NHWC compose to the very config of channels_first and channels_last (checked
here), so the exports are one per distinct config: the two layouts given, and auto for
each serving device. A misspelling is refused at compose time (tests/test_config.py).
"""

import io

import numpy as np
import pytest
from rich.console import Console

from exportkit.config import to_plain
from exportkit.console import export_summary
from tests.helpers import FAST, answers, compose_config, export_metadata, export_resnet18, parity_jpegs

EXPORTED = [("channels_first", "cpu"), ("channels_last", "cpu"), ("auto", "cpu"), ("auto", "gpu")]
ALIASES = {"NCHW": "channels_first", "NHWC": "channels_last"}


@pytest.fixture(scope="module")
def exports_by_format(resnet18_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("formats")
    # The answers are compared below, on the loaded versions: no need to verify each export.
    return {(spelling, device): export_resnet18(resnet18_model_dir, base, f"model.data_format={spelling}",
                                                f"serving.device={device}", *FAST)
            for spelling, device in EXPORTED}


def test_explicit_spellings_give_identical_answers(exports_by_format):
    images = parity_jpegs()
    first, last = (answers(exports_by_format[(layout, "cpu")][0]["version_path"], images)
                   for layout in ("channels_first", "channels_last"))
    np.testing.assert_array_equal(first["classes"], last["classes"])
    np.testing.assert_allclose(first["probabilities"], last["probabilities"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "key, value, source",
    [
        (("NCHW", "cpu"), "channels_first", "given"),
        (("channels_first", "cpu"), "channels_first", "given"),
        (("NHWC", "cpu"), "channels_last", "given"),
        (("channels_last", "cpu"), "channels_last", "given"),
        (("auto", "cpu"), "channels_last", "auto, from serving.device=cpu"),
        (("auto", "gpu"), "channels_first", "auto, from serving.device=gpu"),
    ],
)
def test_resolved_value_is_recorded_once_in_one_spelling(exports_by_format, key, value, source):
    spelling, device = key
    if spelling in ALIASES:  # the same config as its alias's, so the same export
        alias = ALIASES[spelling]
        assert to_plain(compose_config(f"model.data_format={spelling}", f"serving.device={device}")) == \
            to_plain(compose_config(f"model.data_format={alias}", f"serving.device={device}"))
        key = (alias, device)
    result, output = exports_by_format[key]
    metadata = export_metadata(result["version_path"])
    assert metadata["data_format"] == {"value": value, "source": source}
    assert metadata["config"]["model"]["data_format"] == (value if key[0] != "auto" else "auto")
    table = Console(file=io.StringIO(), width=200)
    table.print(export_summary(result))
    row = next(line for line in table.file.getvalue().splitlines() if "data_format" in line)
    assert f"{value} ({source})" in row
    assert f", {value}, " in output  # the graph stage names the layout it built
