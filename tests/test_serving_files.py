"""What TF Serving reads beside the SavedModel: warmup, labels, models.config, batching."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from exportkit import export, serving
from exportkit.errors import ExportError
from tests.helpers import (FAST, compose_config, export_in_process, export_metadata, export_resnet18, integer_versions,
                           run_cli)


def _export(resnet18_model_dir: Path, root: Path, *overrides: str) -> dict:
    return export_resnet18(resnet18_model_dir, root, *overrides)[0]


def _records(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Through tf.data's TFRecord reader, as a different reader from the one that verified it."""
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


@pytest.fixture(scope="module")
def default_export(resnet18_model_dir, tmp_path_factory):
    return _export(resnet18_model_dir, tmp_path_factory.mktemp("serving_root"))


def test_every_version_has_warmup_requests_for_its_signature_and_input(default_export):
    version = Path(default_export["version_path"])
    logs = _records(version / "assets.extra" / "tf_serving_warmup_requests")
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    sizes = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "resnet"
        assert request.model_spec.signature_name == "predict_images"
        assert list(request.inputs) == ["images"]
        images = tf.make_ndarray(request.inputs["images"])
        sizes.append(len(images))
        assert {Image.open(io.BytesIO(b)).format for b in images} == {"JPEG"}
        assert {Image.open(io.BytesIO(b)).size for b in images} == {(224, 224)}
    assert sizes == [1, 8]
    assert default_export["verification"]["warmup_requests"] == 2


def test_warmup_follows_the_config(cifar8_model_dir, tmp_path):
    cifar8 = ("model=cifar_resnet", "model.size=8", f"checkpoint.path={cifar8_model_dir}", f"export.root={tmp_path}")
    result, _ = export_in_process(*cifar8, "serving.warmup.batch_sizes=[2,3,32]", "signature.name=classify",
                                  "export.model_name=resnet18")
    logs = _records(Path(result["version_path"]) / "assets.extra" / "tf_serving_warmup_requests")
    assert [len(tf.make_ndarray(log.predict_log.request.inputs["images"])) for log in logs] == [2, 3, 32]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {"classify"}
    assert {log.predict_log.request.model_spec.name for log in logs} == {"resnet18"}

    off, _ = export_in_process(*cifar8, "serving.warmup.enabled=false")
    assert not (Path(off["version_path"]) / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert "warmup_requests" not in off["verification"]


@pytest.mark.parametrize("breakage, message", [
    ("signature", "warmup record 0 calls signature 'no_such_signature'"),
    ("image", "does not load or run: assertion failed: [images[0] is empty]"),
])
def test_verification_replays_the_warmup_so_a_bad_file_never_ships(breakage, message, resnet18_model_dir,
                                                                   tmp_path, monkeypatch):
    original = serving.warmup_requests

    def broken(**kwargs):
        logs = original(**kwargs)
        request = logs[0].predict_log.request
        if breakage == "signature":
            request.model_spec.signature_name = "no_such_signature"
        else:
            request.inputs["images"].CopyFrom(tf.make_tensor_proto([b""], dtype=tf.string))
        return logs

    monkeypatch.setattr(serving, "warmup_requests", broken)
    with pytest.raises(ExportError) as error:
        _export(resnet18_model_dir, tmp_path)
    assert message in str(error.value)
    assert integer_versions(tmp_path / "resnet") == []


def test_warmup_batch_sizes_are_checked_at_compose_time():
    from exportkit.config import ConfigError, validate

    for sizes in ("[]", "[0,8]", "[" + ",".join(["1"] * 1001) + "]"):
        with pytest.raises(ConfigError, match=r"serving.warmup.batch_sizes=.*1 to 1000 positive sizes"):
            validate(compose_config(f"serving.warmup.batch_sizes={sizes}"))

    # The size of each record is bounded too: [100000] was OOM-killed, [2000] took 400 s to verify.
    with pytest.raises(ConfigError) as error:
        validate(compose_config("serving.warmup.batch_sizes=[1,100000]"))
    assert str(error.value) == ("serving.warmup.batch_sizes=[1, 100000]: at most 996 images a request "
                                "(preprocessing.max_pixels=50,000,000 over 224x224 images)")
    with pytest.raises(ConfigError, match=r"batch_sizes=\[64\]: at most 32 images a request \(serving.batching.max_batch_size\)"):
        validate(compose_config("serving.warmup.batch_sizes=[64]", "serving.batching.enabled=true"))
    validate(compose_config("serving.warmup.batch_sizes=[1,8,996]"))


def test_labels_travel_with_the_export_and_can_be_an_output(resnet18_model_dir, tmp_path):
    result = _export(resnet18_model_dir, tmp_path, *FAST, "head.class_names=true", "head.k=3")
    labels = (Path(result["version_path"]) / "assets.extra" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1001
    assert labels[0] == "background" and labels[1] == "tench, Tinca tinca"
    assert labels[1000] == "toilet tissue, toilet paper, bathroom tissue"
    outputs = result["signature"]["outputs"]
    assert outputs["class_names"] == {"name": "class_names:0", "dtype": "string", "shape": [-1, 3]}

    from tests.serving_stub import LoadedModels
    from exportkit.verify import sample_jpegs

    models = LoadedModels({"resnet": tmp_path / "resnet"})
    try:
        answer, _ = models.predict("resnet", "predict_images", {"images": sample_jpegs(224)[:2]})
    finally:
        models.close()
    names = [[labels[c] for c in row] for row in answer["classes"]]
    assert [[n.decode() for n in row] for row in answer["class_names"]] == names


def test_label_problems_fail_before_tensorflow(tmp_path):
    from exportkit.config import ConfigError, validate

    ten = tmp_path / "ten.txt"
    ten.write_text("".join(f"class {i}\n" for i in range(10)))
    cases = {
        f"model.labels={ten}": f"model.labels={ten} has 10 names, model.num_classes=1001",
        f"model.labels={tmp_path}/missing.txt": "no such file, and not a built-in list (imagenet, imagenet_1000)",
        "head.class_names=true model.labels=null": "head.class_names=true needs model.labels",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(compose_config(*overrides.split()))
    validate(compose_config(f"model.labels={ten}", "model.num_classes=10"))


def _models_config(root: Path) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse((root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def test_models_config_for_a_two_model_sweep_lists_both(cifar8_model_dir, tmp_path):
    root = tmp_path / "serving"
    run = run_cli("-m", "model=cifar_resnet", "model.size=8", f"checkpoint.path={cifar8_model_dir}",
                  f"export.root={root}", "export.model_name=resnet_a,resnet_b", *FAST,
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    entries = _models_config(root).model_config_list.config
    assert [(e.name, e.base_path, e.model_platform) for e in entries] == [
        ("resnet_a", "/models/resnet_a", "tensorflow"), ("resnet_b", "/models/resnet_b", "tensorflow")]
    assert all(e.model_version_policy.WhichOneof("policy_choice") == "latest" for e in entries)
    assert integer_versions(root / "resnet_a") == ["1"] and integer_versions(root / "resnet_b") == ["1"]


def test_models_config_is_regenerated_from_disk_after_each_export(resnet18_model_dir, tmp_path):
    _export(resnet18_model_dir, tmp_path, "export.model_name=first", "serving.mount=null", *FAST)
    (tmp_path / "not_a_model").mkdir()  # no version: not listed
    for _ in range(2):
        _export(resnet18_model_dir, tmp_path, "export.model_name=second", "serving.mount=null",
                "serving.versions=all", *FAST)
    entries = _models_config(tmp_path).model_config_list.config
    assert [e.name for e in entries] == ["first", "second"]
    for entry in entries:  # absolute paths on this machine, each the model base path
        assert Path(entry.base_path) == (tmp_path / entry.name).resolve()
    # Each export rewrites its own model's entry; the others keep theirs.
    assert [e.model_version_policy.WhichOneof("policy_choice") for e in entries] == ["latest", "all"]
    assert integer_versions(tmp_path / "second") == ["1", "2"]
    assert not list(tmp_path.glob(".models.config.*"))  # no temporary left behind


def test_batching_parameters_when_enabled(resnet18_model_dir, tmp_path):
    result = _export(resnet18_model_dir, tmp_path, "serving.batching.enabled=true",
                     "serving.batching.allowed_batch_sizes=[4,16]", "serving.batching.max_batch_size=16", *FAST)
    path = tmp_path / "batching_parameters.txt"
    assert result["serving_files"]["batching_parameters"] == str(path)
    assert path.read_text() == (
        "max_batch_size { value: 16 }\n"
        "batch_timeout_micros { value: 5000 }\n"
        "max_enqueued_batches { value: 100 }\n"  # no num_batch_threads: the server's cores, not this machine's
        "allowed_batch_sizes: 4\n"
        "allowed_batch_sizes: 16\n"
    )
    assert (Path(result["version_path"]) / "batching_params.pbtxt").read_text() == path.read_text()
    # Without batching, none: test_the_summary_names_the_serving_files.


@pytest.mark.parametrize("overrides, message", [
    (["serving.batching.allowed_batch_sizes=[1,8]"], "must increase and end with serving.batching.max_batch_size=32"),
    (["serving.batching.allowed_batch_sizes=[8,4,32]"], "must increase and end with"),
    (["serving.batching.num_batch_threads=0"], "serving.batching.num_batch_threads=0 must be at least 1"),
    (["serving.mount=models"], "serving.mount=models must be an absolute path"),
    (["export.model_name=../up"], "export.model_name='../up'"),
    (["export.model_name=7"], "an all-digit name would look like a version"),
])
def test_serving_config_errors_name_the_key(overrides, message):
    from exportkit.config import ConfigError, validate

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate(compose_config("serving.batching.enabled=true", *overrides))


def test_the_summary_names_the_serving_files(default_export):
    assert set(default_export["serving_files"]) == {"models_config"}
    root = Path(default_export["version_path"]).parents[1]
    assert default_export["serving_files"]["models_config"] == str(root / "models.config")
    # serving.batching.enabled is false by default: no batching parameters, in the root or the version.
    assert not (root / "batching_parameters.txt").exists()
    assert not (Path(default_export["version_path"]) / "batching_params.pbtxt").exists()
    assert export.METADATA_FILE == "export_metadata.json"
    assert export_metadata(default_export["version_path"])["verification"]["warmup_requests"] == 2
