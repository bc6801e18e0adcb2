"""Rollouts with TF Serving: version policies and labels in models.config, moving a label
without exporting (a rollback), the stand-in server picking the change up, per-model
batching parameters with matching warmup, and the monitoring config."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from exportkit import serve, serving
from exportkit.config import ConfigError, validate
from exportkit.errors import ExportError
from tests.helpers import CIFAR8, FAST, compose_config, encode_image, export_in_process, integer_versions, run_client

# What is rolled out is the smallest registered network, served under the name resnet:
# nothing here depends on the network.


def _export(model_dir: Path, root: Path, *overrides: str, name: str = "resnet") -> tuple[dict, str]:
    return export_in_process(*CIFAR8, *FAST, f"export.model_name={name}", f"checkpoint.path={model_dir}",
                             f"export.root={root}", *overrides)


def _config(root: Path) -> model_server_config_pb2.ModelServerConfig:
    """models.config as TF Serving parses it (a ParseError fails the test)."""
    return text_format.Parse((root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def _entry(root: Path, name: str) -> model_server_config_pb2.ModelConfig:
    [entry] = [e for e in _config(root).model_config_list.config if e.name == name]
    return entry


@pytest.fixture(scope="module")
def rollout(cifar8_model_dir, tmp_path_factory):
    """``other`` (all versions, labelled pinned=1), then three exports of ``resnet`` with
    serving.versions=all: stable on version 1, canary on version 3; models.config after each."""
    root = tmp_path_factory.mktemp("rollout")
    _export(cifar8_model_dir, root, "serving.versions=all", "+serving.version_labels.pinned=1", name="other")
    other = _entry(root, "other")
    steps, outputs = [], []
    for labels in (["+serving.version_labels.stable=1"], [], ["+serving.version_labels.canary=3"]):
        result, output = _export(cifar8_model_dir, root, "serving.versions=all", *labels)
        steps.append((result["version"], _config(root)))
        outputs.append(output)
    return {"root": root, "other": other, "steps": steps, "outputs": outputs}


def test_three_exports_label_stable_and_canary_and_keep_other_models_entries(rollout):
    root, other = rollout["root"], rollout["other"]
    assert other.model_version_policy.WhichOneof("policy_choice") == "all"
    assert dict(other.version_labels) == {"pinned": 1}
    expected_labels = [{"stable": 1}, {"stable": 1}, {"stable": 1, "canary": 3}]
    for (version, config), labels, number in zip(rollout["steps"], expected_labels, (1, 2, 3)):
        assert version == number
        entries = {e.name: e for e in config.model_config_list.config}
        assert entries["other"] == other  # kept as it was, whatever resnet's exports say
        assert dict(entries["resnet"].version_labels) == labels
        assert entries["resnet"].model_version_policy.WhichOneof("policy_choice") == "all"
        assert entries["resnet"].base_path == "/models/resnet"
    # A label on the version being published needs the server flag, and the run says so.
    assert "--allow_version_labels_for_unavailable_models=true" in rollout["outputs"][0]
    # The text as written: TF Serving's own map syntax.
    assert 'version_labels {\n      key: "canary"\n      value: 3\n    }' in (root / "models.config").read_text()
    # Regenerating (as after an interrupted export) keeps every entry as it is.
    before = (root / "models.config").read_text()
    assert serving.main([str(root)]) == 0
    assert (root / "models.config").read_text() == before


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    path.write_bytes(encode_image(np.full((48, 64, 3), (200, 30, 90), np.uint8)))
    return path


def _answered_by(port: int, photo: Path, label: str) -> str:
    code, out, err = run_client(str(photo), "--server", f"127.0.0.1:{port}", "--version-label", label,
                                 "--labels", "none")
    assert code == 0, err
    return " ".join(out.split())


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not pick up models.config"
        time.sleep(0.05)


def test_client_reaches_each_label_and_a_rollback_is_served_after_the_reload(rollout, photo, capsys):
    root = rollout["root"]
    servables = serve.Servables(serve.read_models_config(root, note=lambda _: None), warmup=False)
    grpc_server, port = serve.start_grpc(servables, root=root)
    poller = serve.ConfigPoller(root, servables, seconds=0.1, note=lambda _: None).start()
    try:
        assert servables.versions()["resnet"] == [3, 2, 1]
        assert "model resnet, version 1," in _answered_by(port, photo, "stable")
        assert "model resnet, version 3," in _answered_by(port, photo, "canary")

        # Roll back: stable to version 2, no export, one line saying what changed.
        capsys.readouterr()
        assert serving.main(["label", str(root), "resnet", "stable=2"]) == 0
        assert capsys.readouterr().out == f"{root / 'models.config'}: resnet stable 1 -> 2\n"
        assert dict(_entry(root, "resnet").version_labels) == {"stable": 2, "canary": 3}
        assert _entry(root, "other") == rollout["other"]
        _wait_for(lambda: servables.labels("resnet").get("stable") == 2)
        assert "model resnet, version 2," in _answered_by(port, photo, "stable")
        assert "model resnet, version 3," in _answered_by(port, photo, "canary")

        # Promote the canary and drop its label in one write.
        assert serving.main(["label", str(root), "resnet", "stable=3", "--remove", "canary"]) == 0
        assert capsys.readouterr().out == (f"{root / 'models.config'}: resnet stable 2 -> 3, "
                                           "canary removed (was 3)\n")
        _wait_for(lambda: servables.labels("resnet") == {"stable": 3})
        assert "model resnet, version 3," in _answered_by(port, photo, "stable")
        code, _, err = run_client(str(photo), "--server", f"127.0.0.1:{port}", "--version-label", "canary")
        assert code == 1 and "no version label 'canary'" in err

        # ModelService.HandleReloadConfigRequest: the same transition without the file.
        poller.stop()
        request = model_management_pb2.ReloadConfigRequest(config=_config(root))
        [entry] = [e for e in request.config.model_config_list.config if e.name == "resnet"]
        entry.version_labels["stable"] = 1
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
            assert "model resnet, version 1," in _answered_by(port, photo, "stable")
            entry.model_version_policy.specific.versions[:] = [1, 3]  # unloads version 2
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
            assert servables.versions()["resnet"] == [3, 1]
            # Moving stable onto version 2, not loaded now: TF Serving refuses, even with
            # --allow_version_labels_for_unavailable_models, and keeps the previous config.
            entry.model_version_policy.all.SetInParent()
            entry.version_labels["stable"] = 2
            with pytest.raises(grpc.RpcError) as refused:
                model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "assign label to version 2 of model resnet, which is not currently available" in refused.value.details()
        assert servables.versions()["resnet"] == [3, 1] and servables.labels("resnet") == {"stable": 1}
    finally:
        poller.stop()
        grpc_server.stop(None)
        servables.close()
        serving.main(["label", str(root), "resnet", "stable=1", "canary=3"])  # as the fixture left it
        capsys.readouterr()


def test_the_poller_unloads_what_a_new_policy_drops(rollout):
    root = rollout["root"]
    servables = serve.Servables(serve.read_models_config(root, note=lambda _: None), warmup=False)
    poller = serve.ConfigPoller(root, servables, seconds=3600, note=lambda _: None)
    before = (root / "models.config").read_text()
    try:
        assert poller.poll() == []  # the config it started with: nothing to do
        assert serving.main([str(root), "--model", "resnet", "--versions", "specific",
                             "--specific-versions", "1,3"]) == 0
        assert _entry(root, "resnet").model_version_policy.specific.versions == [1, 3]
        assert dict(_entry(root, "resnet").version_labels) == {"stable": 1, "canary": 3}
        assert poller.poll() == ["resnet: unloaded version 2"]
        assert servables.versions()["resnet"] == [3, 1]
    finally:
        servables.close()
        (root / "models.config").write_text(before)


@pytest.mark.parametrize("argv, message", [
    (["resnet", "stable=7"], "stable=7: resnet has no version 7 under {root}/resnet (versions with a saved_model.pb: "
                             "1, 2, 3)"),
    (["nope", "stable=1"], "{root}/models.config has no model 'nope' (models: other, resnet)"),
    (["resnet", "--remove", "beta"], "resnet has no label 'beta' to remove (labels: canary, stable)"),
    (["resnet", "stable=1", "--remove", "stable"], "label stable is both set and removed"),
])
def test_label_command_errors_are_one_line_and_change_nothing(rollout, capsys, argv, message):
    root = rollout["root"]
    before = (root / "models.config").read_text()
    assert serving.main(["label", str(root), *argv]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {message.format(root=root)}\n"
    assert (root / "models.config").read_text() == before


def test_a_label_only_moves_to_a_version_the_policy_loads(rollout, capsys):
    root = rollout["root"]
    before = (root / "models.config").read_text()
    try:
        assert serving.main([str(root), "--model", "resnet", "--versions", "specific", "--specific-versions", "1,3"]) == 0
        capsys.readouterr()
        assert serving.main(["label", str(root), "resnet", "stable=2"]) == 1
        assert capsys.readouterr().err == (
            "error: stable=2: the version policy specific [1, 3] does not load version 2 of resnet (it loads 1, 3), "
            "and TF Serving labels only a version it loads\n")
        # Nor may a policy change leave a label on a version it stops loading.
        assert serving.main([str(root), "--model", "resnet", "--versions", "specific", "--specific-versions", "1"]) == 1
        assert "label canary=3: the version policy specific [1] does not load version 3" in capsys.readouterr().err
    finally:
        (root / "models.config").write_text(before)


def test_exports_refuse_labels_the_server_would_refuse_before_any_work(rollout, cifar8_model_dir):
    root = rollout["root"]
    before = (root / "models.config").read_text()
    cases = {
        "+serving.version_labels.beta=9": "serving.version_labels.beta=9: resnet has no version 9 under",
        # stable is on 1; moving it onto the version this export publishes (4) is what TF Serving refuses.
        "+serving.version_labels.stable=4": "would move label stable from version 1 to the version this export "
                                           "publishes",
    }
    for override, message in cases.items():
        with pytest.raises(ExportError) as error:
            _export(cifar8_model_dir, root, "serving.versions=all", override)
        assert message in str(error.value)
        assert integer_versions(root / "resnet") == ["1", "2", "3"]
        assert (root / "models.config").read_text() == before
    # With latest, the kept labels on versions 1 and 3 would point at versions no longer loaded.
    with pytest.raises(ExportError) as error:
        _export(cifar8_model_dir, root)
    assert "models.config labels canary on version 3 of resnet" in str(error.value)
    assert "the version policy latest does not load version 3" in str(error.value)
    assert integer_versions(root / "resnet") == ["1", "2", "3"]


@pytest.mark.parametrize("overrides, message", [
    (["serving.versions=specific"], "serving.specific_versions=[]: serving.versions=specific needs one or more"),
    (["serving.versions=specific", "serving.specific_versions=[1,0]"], "each at least 1"),
    (["serving.specific_versions=[1]"], "serving.specific_versions=[1] is read only with serving.versions=specific"),
    (["serving.versions=specific", "serving.specific_versions=[1,3]", "+serving.version_labels.stable=2"],
     "serving.version_labels.stable=2: version 2 is not in serving.specific_versions=[1, 3]"),
    (["+serving.version_labels.stable=0"], "serving.version_labels.stable=0 must be a version number"),
    (["+serving.version_labels._canary=1"], "serving.version_labels: label '_canary': use letters"),
    (["serving.batching.enabled=true", "serving.batching.max_batch_size=2048",
      "serving.batching.allowed_batch_sizes=[1,2048]"],
     # warmup.batch_sizes pass (8 <= 2048), but a record of 2048 images is over the pixel bound (996)
     "serving.batching.allowed_batch_sizes=[1, 2048]: with warmup on, each allowed size gets a record, which may "
     "hold at most 996 images"),
])
def test_rollout_settings_are_checked_at_compose_time(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value)


def test_specific_versions_and_labels_compose():
    cfg = compose_config("serving.versions=specific", "serving.specific_versions=[1,3]",
                         "+serving.version_labels.stable=1", "+serving.version_labels.canary=3")
    validate(cfg)
    assert dict(cfg.serving.version_labels) == {"stable": 1, "canary": 3}


def _monitoring_config_class():
    """TF Serving's MonitoringConfig (config/monitoring_config.proto), which
    tensorflow-serving-api does not ship, built from its two messages."""
    file = descriptor_pb2.FileDescriptorProto(name="exportkit_test_monitoring.proto",
                                              package="tensorflow.serving", syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig",
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def test_batching_writes_per_model_parameters_and_warms_every_allowed_size(cifar8_model_dir, tmp_path):
    result, _ = export_in_process(*CIFAR8, "export.verify=false", f"checkpoint.path={cifar8_model_dir}",
                                  f"export.root={tmp_path}", "serving.batching.enabled=true",
                                  "signature.extra=[image_tensor]", "serving.monitoring.enabled=true")
    version = Path(result["version_path"])
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests"))]
    sizes: dict[str, list[int]] = {}
    for log in logs:
        request = log.predict_log.request
        [tensor] = request.inputs.values()
        sizes.setdefault(request.model_spec.signature_name, []).append(tensor.tensor_shape.dim[0].size)
    # The main signature: every allowed batch size; the other signature: serving.warmup.batch_sizes.
    assert sizes == {"predict_images": [1, 2, 4, 8, 16, 32], "image_tensor": [1, 8]}

    per_model = (version / "batching_params.pbtxt").read_text()
    assert per_model.splitlines() == [
        "max_batch_size { value: 32 }", "batch_timeout_micros { value: 5000 }",
        "max_enqueued_batches { value: 100 }", *[f"allowed_batch_sizes: {n}" for n in (1, 2, 4, 8, 16, 32)]]
    shared = (tmp_path / "batching_parameters.txt").read_text()
    assert "num_batch_threads" not in shared  # null: the server's own core count, not this machine's
    assert shared.startswith(per_model.split("allowed_batch_sizes")[0])

    monitoring = text_format.Parse((tmp_path / "monitoring.config").read_text(), _monitoring_config_class()())
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert result["serving_files"]["monitoring_config"] == str(tmp_path / "monitoring.config")

    # The stand-in replays the warmup at load, as TF Serving does: every record runs.
    servables = serve.Servables(serve.read_models_config(tmp_path, note=lambda _: None))
    servables.close()


def test_num_batch_threads_is_written_when_set():
    options = {"max_batch_size": 8, "batch_timeout_micros": 0, "max_enqueued_batches": 4, "num_batch_threads": 3,
               "allowed_batch_sizes": [8]}
    assert "num_batch_threads { value: 3 }" in serving.batching_parameters(options)
    assert "num_batch_threads" not in serving.batching_parameters(options, threads=False)
