"""model.data_format in all five spellings (issue: data_format speaks both languages)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from exportkit.console import export_summary

from tests.conftest import export_in_process, integer_versions, run_cli
from tests.test_parity import _jpegs, load_and_run

EXPLICIT = ["channels_first", "channels_last", "NCHW", "NHWC"]


@pytest.fixture(scope="module")
def exports_by_format(resnet18_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("formats")
    results = {}
    for spelling, device in [(s, "cpu") for s in EXPLICIT] + [("auto", "cpu"), ("auto", "gpu")]:
        result, output = export_in_process(
            "model.size=18", f"checkpoint.path={resnet18_model_dir}", f"model.data_format={spelling}",
            f"serving.device={device}", f"export.root={base}",
            # The answers are compared below, on the loaded versions: no need to verify each export.
            "export.verify=false", "serving.warmup.enabled=false",
        )
        results[(spelling, device)] = (result, output)
    return results


def test_explicit_spellings_give_identical_answers(exports_by_format):
    images = _jpegs()
    answers = {key: load_and_run(result["version_path"], "predict_images", images)
               for key, (result, _) in exports_by_format.items()}
    reference = answers[("channels_last", "cpu")]
    for key, got in answers.items():
        np.testing.assert_array_equal(got["classes"], reference["classes"], err_msg=str(key))
        np.testing.assert_allclose(got["probabilities"], reference["probabilities"], atol=1e-5, rtol=0, err_msg=str(key))


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
    result, output = exports_by_format[key]
    metadata = json.loads((Path(result["version_path"]) / "assets.extra" / "export_metadata.json").read_text())
    assert metadata["data_format"] == {"value": value, "source": source}
    assert metadata["config"]["model"]["data_format"] == (value if key[0] != "auto" else "auto")
    table = Console(file=io.StringIO(), width=200)
    table.print(export_summary(result))
    row = next(line for line in table.file.getvalue().splitlines() if "data_format" in line)
    assert f"{value} ({source})" in row
    assert f", {value}, " in output  # the graph stage names the layout it built


def test_bad_spelling_fails_before_tensorflow_and_writes_nothing(resnet18_model_dir, tmp_path):
    run = run_cli("model.size=18", f"checkpoint.path={resnet18_model_dir}", "model.data_format=NCWH",
                  f"export.root={tmp_path / 'exports'}", cwd=tmp_path)
    assert run.returncode == 1
    assert "Invalid value 'NCWH', expected one of [auto, channels_first, channels_last, NCHW, NHWC]" in run.stderr
    assert "full_key: model.data_format" in run.stderr
    assert "Traceback" not in run.stderr
    assert integer_versions(tmp_path / "exports" / "resnet") == []
