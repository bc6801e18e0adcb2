"""exportkit.serve, the local stand-in for TF Serving, over small SavedModels built here:
gRPC and REST answers and errors as TF Serving gives them, version policies and labels,
and the command line."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from exportkit import serve
from exportkit.serving import write_warmup
from tests.helpers import REPO, b64, free_port, signature_defs

Code = grpc.StatusCode


# ------------------------------------------------------------------ models


def _save_model(path: Path, version: int) -> None:
    """Predict signatures over a string input (one of them with an output that fails when
    run), one with two float inputs, and Classify signatures over serialized tf.Examples."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        text = v1.placeholder(tf.string, [None], name="text")
        length = tf.cast(tf.strings.length(text), tf.float32) * 0.5 + version
        served = tf.fill(tf.shape(text), tf.constant(version, tf.int64))
        with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), ["the boom output ran"])]):
            boom = tf.identity(length)
        a, b = v1.placeholder(tf.float32, [None], name="a"), v1.placeholder(tf.float32, [None], name="b")
        serialized = v1.placeholder(tf.string, [None], name="examples")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
                                                    "word": tf.io.FixedLenFeature([], tf.string, default_value="")})
        scores = tf.stack([features["x"] * version, tf.cast(tf.strings.length(features["word"]), tf.float32)], axis=1)
        classes = tf.tile(tf.constant([["x", "word"]]), [tf.shape(serialized)[0], 1])
        predict = v1.saved_model.signature_def_utils.predict_signature_def
        classify = v1.saved_model.signature_def_utils.classification_signature_def
        signatures = {
            "serving_default": predict({"text": text}, {"length": length, "upper_bytes": tf.strings.upper(text),
                                                        "version": served}),
            "single": predict({"text": text}, {"length": length}),
            "with_boom": predict({"text": text}, {"length": length, "boom": boom}),
            "sum": predict({"a": a, "b": b}, {"total": a + b}),
            "classify": classify(serialized, classes, scores),
            "scores_only": classify(serialized, None, scores),
        }
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING], signature_def_map=signatures)
            builder.save()


def _config(**entries: dict) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, fields in entries.items():
        entry = config.model_config_list.config.add(name=name, model_platform="tensorflow",
                                                    base_path=fields.pop("base_path", f"/models/{name}"))
        text_format.Merge(fields.pop("text", ""), entry)
    return config


def _write_config(root: Path, config: model_server_config_pb2.ModelServerConfig) -> None:
    (root / "models.config").write_text(text_format.MessageToString(config))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[int, Path]:
    directory = tmp_path_factory.mktemp("saved")
    for version in (1, 2, 3):
        _save_model(directory / str(version), version)
    return {v: directory / str(v) for v in (1, 2, 3)}


@pytest.fixture(scope="module")
def root(saved, tmp_path_factory) -> Path:
    """words: versions 1-3, a 7 without saved_model.pb and a non-integer folder, latest 2,
    labelled; pinned: specific [1, 5] at a relative base path; everything: all versions."""
    root = tmp_path_factory.mktemp("root")
    for name, versions in {"words": (1, 2, 3), "pinned": (1, 2), "everything": (1, 2)}.items():
        for version in versions:
            shutil.copytree(saved[version], root / name / str(version))
    (root / "words" / "7").mkdir()
    shutil.copytree(saved[1], root / "words" / "tmp-8")
    _write_config(root, _config(
        words={"text": "model_version_policy { latest { num_versions: 2 } } "
                       'version_labels { key: "stable" value: 2 } version_labels { key: "canary" value: 3 }'},
        pinned={"base_path": "pinned", "text": "model_version_policy { specific { versions: [1, 5] } }"},
        everything={"text": "model_version_policy { all {} }"}))
    return root


@pytest.fixture(scope="module")
def served(root):
    notes: list[str] = []
    servables = serve.Servables(serve.read_models_config(root, note=notes.append), note=notes.append)
    grpc_server, grpc_port = serve.start_grpc(servables)
    rest_server, rest_port = serve.start_rest(servables, max_body_bytes=1 << 20)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {"servables": servables, "notes": notes, "rest": rest_port, "root": root,
           "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "models": model_service_pb2_grpc.ModelServiceStub(channel)}
    channel.close()
    grpc_server.stop(None)
    rest_server.shutdown()
    rest_server.server_close()
    servables.close()


# ------------------------------------------------------------------ helpers


def _predict_request(model: str = "words", signature: str = "", texts=(b"ab", b"cde"), **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    if texts is not None:
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
    return request


def _grpc_error(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value.code(), error.value.details()


def _example(**features) -> tf.train.Example:
    example = tf.train.Example()
    for name, value in features.items():
        feature = example.features.feature[name]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return example


def _classify_request(signature: str = "classify", examples=(), context=None) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "words"
    request.model_spec.signature_name = signature
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    elif examples:
        request.input.example_list.examples.extend(examples)
    return request


def _rest(served, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", served["rest"], timeout=30)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    connection.request(method, path, body=data, headers=headers or {})
    response = connection.getresponse()
    status, text = response.status, response.read()
    connection.close()
    return status, json.loads(text)


# ------------------------------------------------------------------ models.config


def test_models_config_policies_labels_and_the_mount_note(served):
    servables = served["servables"]
    assert servables.versions() == {"words": [3, 2], "pinned": [1], "everything": [2, 1]}
    assert servables.labels("words") == {"stable": 2, "canary": 3}
    mount_notes = [n for n in served["notes"] if "not on this machine" in n]
    assert mount_notes == [f"note: /models/words, /models/everything not on this machine (where a docker server "
                           f"mounts the root); serving {served['root']}/<name> instead"]
    assert f"note: pinned: version 5 (model_version_policy specific) is not under {served['root']}/pinned" in served["notes"]
    loaded = {(v.name, v.version): v.path for v in servables.loaded_versions()}
    assert loaded[("words", 3)] == served["root"] / "words" / "3"


def test_version_folders_need_an_integer_name_and_a_saved_model_pb(root):
    assert sorted(serve.version_dirs(root / "words")) == [1, 2, 3]  # not 7 (empty) nor tmp-8
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    assert serve.select_versions(policy, [1, 3, 2]) == [3]  # no policy: latest 1
    policy.latest.num_versions = 0
    assert serve.select_versions(policy, [1, 3, 2]) == [3]  # 0 reads as 1, as in TF Serving
    policy.all.SetInParent()
    assert serve.select_versions(policy, [1, 3, 2]) == [3, 2, 1]
    policy.specific.versions.extend([2, 9])
    assert serve.select_versions(policy, [1, 3, 2]) == [2]


def test_start_errors_are_one_line(tmp_path, capsys, saved):
    assert serve.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: no models.config in {tmp_path}: export first "
                   f"(python run_export.py export.root={tmp_path} ...)\n")
    shutil.copytree(saved[1], tmp_path / "m" / "1")
    cases = {
        'version_labels { key: "next" value: 2 }':
            "Request to assign label to version 2 of model m, which is not currently available for inference",
        'model_platform: "pytorch"': "PlatformConfigMap has no entry for platform pytorch",
    }
    for text, message in cases.items():
        config = _config(m={"base_path": str(tmp_path / "m"), "text": text})
        _write_config(tmp_path, config)
        assert serve.main([str(tmp_path), "--grpc-port", "0", "--rest-port", "0"]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    _write_config(tmp_path, _config(m={"base_path": str(tmp_path / "m")}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flag, api in (("--grpc-port", "gRPC"), ("--rest-port", "REST")):
            assert serve.main([str(tmp_path), "--grpc-port", "0", "--rest-port", "0", flag, port]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} for {api}") and err.count("\n") == 1, err
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'x' } }")
    assert serve.main([str(tmp_path)]) == 1
    assert "models.config is not a ModelServerConfig text proto" in capsys.readouterr().err


def test_warmup_records_are_replayed_and_one_that_fails_stops_the_start(tmp_path, saved):
    version = tmp_path / "m" / "1"
    shutil.copytree(saved[1], version)
    (version / "assets.extra").mkdir()
    config = list(_config(m={"base_path": str(tmp_path / "m")}).model_config_list.config)
    good = [_predict_log("single"), _classify_log("classify")]
    write_warmup(version / "assets.extra" / "tf_serving_warmup_requests", good)
    serve.Servables(config).close()
    for bad, message in ((_predict_log("nope"), 'Serving signature key "nope" not found.'),
                         (_classify_log("single"), "No classification inputs found in SignatureDef: inputs {")):
        write_warmup(version / "assets.extra" / "tf_serving_warmup_requests", [*good, bad])
        with pytest.raises(serve.ServeError) as error:
            serve.Servables(config)
        assert str(error.value).startswith(f"m version 1: warmup record 2 of {version}/assets.extra/"
                                           f"tf_serving_warmup_requests fails: {message}")
    serve.Servables(config, warmup=False).close()  # --no-model-warmup


def _predict_log(signature: str) -> prediction_log_pb2.PredictionLog:
    request = _predict_request("m", signature)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def _classify_log(signature: str) -> prediction_log_pb2.PredictionLog:
    request = _classify_request(signature, examples=[_example(x=1.0)])
    return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))


# ------------------------------------------------------------------ gRPC


def test_grpc_predict_answers_from_the_version_the_spec_names(served):
    stub = served["predict"]
    response = stub.Predict(_predict_request(), timeout=30)
    assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) == (
        "words", "serving_default", 3)
    assert tf.make_ndarray(response.outputs["length"]).tolist() == [4.0, 4.5]
    assert tf.make_ndarray(response.outputs["upper_bytes"]).tolist() == [b"AB", b"CDE"]
    # Typed fields, as TF Serving's default AsProtoField writes them, not tensor_content.
    assert list(response.outputs["version"].int64_val) == [3, 3] and not response.outputs["version"].tensor_content
    assert list(response.outputs["length"].float_val) == [4.0, 4.5]
    for spec, version in (({"version": 2}, 2), ({"label": "stable"}, 2), ({"label": "canary"}, 3)):
        response = stub.Predict(_predict_request(**spec), timeout=30)
        assert response.model_spec.version.value == version
        assert list(response.outputs["version"].int64_val) == [version, version]
    assert stub.Predict(_predict_request("everything", version=1), timeout=30).model_spec.version.value == 1


def _two_floats(**inputs) -> predict_pb2.PredictRequest:
    request = _predict_request(signature="sum", texts=None)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


GRPC_PREDICT_ERRORS = {
    "unknown model": (_predict_request("nope"), Code.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    "unloaded version": (_predict_request(version=1), Code.NOT_FOUND, "Servable not found for request: Specific(words, 1)"),
    "unknown label": (_predict_request(label="beta"), Code.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    "no model name": (_predict_request(""), Code.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    "no model spec": (predict_pb2.PredictRequest(), Code.INVALID_ARGUMENT, "Missing ModelSpec"),
    "unknown signature": (_predict_request(signature="nope"), Code.FAILED_PRECONDITION,
                          'Serving signature key "nope" not found.'),
    "missing input": (_two_floats(a=np.float32([1])), Code.INVALID_ARGUMENT,
                      "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. "
                      "Missing but required: {b}."),
    "extra input": (_two_floats(a=np.float32([1]), b=np.float32([2]), c=np.float32([3])), Code.INVALID_ARGUMENT,
                    "input size does not match signature: 3!=2 len({a,b,c}) != len({a,b}). Sent extra: {c}. "
                    "Missing but required: {}."),
    "misnamed input": (_two_floats(a=np.float32([1]), c=np.float32([2])), Code.INVALID_ARGUMENT,
                       "Signature input alias: b(feed name: b:0) not found in request and no default value provided. "
                       "Inputs expected to be in the request {a,c}, or default input alias set: "),
    "wrong dtype": (_two_floats(a=np.float32([1]), b=np.int32([2])), Code.INVALID_ARGUMENT,
                    "Expects arg[1] to be float but int32 is provided"),
    # Stricter than TF Serving, which hands the tensor to the graph: Python's feed checks the shape.
    "wrong shape": (_two_floats(a=np.float32([[1]]), b=np.float32([2])), Code.INVALID_ARGUMENT,
                    "Cannot feed value of shape (1, 1)"),
}


@pytest.mark.parametrize("case", sorted(GRPC_PREDICT_ERRORS))
def test_grpc_predict_errors_are_tf_servings(served, case):
    request, expected_code, message = GRPC_PREDICT_ERRORS[case]
    code, details = _grpc_error(served["predict"].Predict, request)
    assert code == expected_code and message in details, details


def test_a_declared_shape_larger_than_the_limit_is_a_parse_error_not_an_allocation(served):
    request = _predict_request(texts=None)
    bomb = request.inputs["text"]
    bomb.dtype = tf.string.as_datatype_enum
    bomb.tensor_shape.dim.add(size=10**12)
    bomb.string_val.append(b"x")
    assert _grpc_error(served["predict"].Predict, request) == (Code.INVALID_ARGUMENT, "tensor parsing error: text")


def test_output_filter_runs_only_the_requested_outputs(served):
    stub = served["predict"]
    request = _predict_request(signature="with_boom")
    code, details = _grpc_error(stub.Predict, request)
    assert code == Code.INVALID_ARGUMENT and "the boom output ran" in details
    request.output_filter.append("length")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["length"]
    request.output_filter.append("length")
    assert _grpc_error(stub.Predict, request) == (Code.INVALID_ARGUMENT, "duplicate output tensor alias: length")
    del request.output_filter[:]
    request.output_filter.append("nope")
    assert _grpc_error(stub.Predict, request) == (
        Code.INVALID_ARGUMENT, "output tensor alias not found in signature: nope Outputs expected to be in the set "
                               "{boom,length}.")


def test_grpc_classify_builds_the_response_as_classifier_cc(served):
    stub = served["predict"]
    response = stub.Classify(_classify_request(examples=[_example(x=2.0, word=b"four"), _example(x=1.0)]), timeout=30)
    assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) == (
        "words", "classify", 3)
    assert [[(c.label, c.score) for c in item.classes] for item in response.result.classifications] == [
        [("x", 6.0), ("word", 4.0)], [("x", 3.0), ("word", 0.0)]]
    # A context is shared by every example; an example's own feature wins over it.
    response = stub.Classify(_classify_request(examples=[_example(x=1.0), _example(x=2.0, word=b"ab")],
                                               context=_example(word=b"abc")), timeout=30)
    assert [[c.score for c in item.classes] for item in response.result.classifications] == [[3.0, 3.0], [6.0, 2.0]]
    response = stub.Classify(_classify_request("scores_only", examples=[_example(x=1.0)]), timeout=30)
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [("", 3.0), ("", 0.0)]


def test_grpc_classify_errors_are_tf_servings(served):
    stub = served["predict"]
    assert _grpc_error(stub.Classify, _classify_request("nope", examples=[_example(x=1.0)])) == (
        Code.INVALID_ARGUMENT, "No signature was found with the name: nope")
    assert _grpc_error(stub.Classify, _classify_request()) == (Code.INVALID_ARGUMENT, "Input is empty.")
    # A Predict signature through Classify: its shape is checked, not its method name (by default).
    code, details = _grpc_error(stub.Classify, _classify_request("single", examples=[_example(x=1.0)]))
    assert code == Code.INVALID_ARGUMENT
    assert details.startswith('No classification inputs found in SignatureDef: inputs {\n  key: "text"\n  value {\n')
    assert details.endswith('method_name: "tensorflow/serving/predict"\n')
    assert _grpc_error(stub.Classify, _classify_request("serving_default", examples=[_example(x=1.0)])) == (
        Code.INVALID_ARGUMENT, "Expected one or two output Tensors, found 3")
    assert _grpc_error(stub.Classify, _classify_request("sum", examples=[_example(x=1.0)])) == (
        Code.INVALID_ARGUMENT, "Expected one input Tensor.")


def test_method_name_check_is_tf_servings_flag(root):
    config = [c for c in serve.read_models_config(root, note=lambda _: None) if c.name == "pinned"]
    servables = serve.Servables(config, method_name_check=True)
    try:
        request = _classify_request("serving_default", examples=[_example(x=1.0)])
        request.model_spec.name = "pinned"
        with pytest.raises(serve.ServingError) as error:
            servables.handle_classify(request)
        assert error.value.message == ("Expected classification signature method_name to be tensorflow/serving/classify. "
                                       "Was: tensorflow/serving/predict")
        # Predict accepts a classify signature's method, as predict_util.cc does.
        outputs, _ = servables.predict("pinned", "scores_only", {"inputs": [_example(x=1.0).SerializeToString()]})
        assert outputs["scores"].tolist() == [[1.0, 0.0]]
    finally:
        servables.close()


def test_grpc_metadata_packs_the_signature_def_map(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "words"
    request.model_spec.version_label = "stable"
    response = served["predict"].GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("words", 2)
    assert response.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    packed = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(packed)
    assert dict(packed.signature_def) == signature_defs(served["root"] / "words" / "2")
    del request.metadata_field[:]
    assert _grpc_error(served["predict"].GetModelMetadata, request) == (
        Code.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("graph")
    assert _grpc_error(served["predict"].GetModelMetadata, request) == (
        Code.INVALID_ARGUMENT, "Metadata field graph is not supported")


def test_grpc_model_status(served):
    stub = served["models"]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "everything"
    response = stub.GetModelStatus(request, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0), (1, available, 0)]
    request.model_spec.version.value = 1
    assert [s.version for s in stub.GetModelStatus(request, timeout=30).model_version_status] == [1]
    request.model_spec.version.value = 3
    assert _grpc_error(stub.GetModelStatus, request) == (Code.NOT_FOUND, "Could not find version 3 of model everything")
    request.model_spec.name = "nope"
    request.model_spec.ClearField("version")
    assert _grpc_error(stub.GetModelStatus, request) == (Code.NOT_FOUND, "Could not find any versions of model nope")


# ------------------------------------------------------------------ REST


def test_rest_predict_row_and_columnar_formats(served):
    status, answer = _rest(served, "POST", "/v1/models/words:predict", {"instances": ["ab", b64(b"c\xffd")]})
    assert status == 200
    # Several outputs: one object per instance; "_bytes" outputs as base64.
    assert answer == {"predictions": [{"length": 4.0, "upper_bytes": b64(b"AB"), "version": 3},
                                      {"length": 4.5, "upper_bytes": b64(b"C\xffD"), "version": 3}]}
    status, answer = _rest(served, "POST", "/v1/models/words/versions/2:predict",
                           {"signature_name": "single", "inputs": {"text": ["a", "abc"]}})
    assert (status, answer) == (200, {"outputs": [2.5, 3.5]})  # a single output goes without its name
    status, answer = _rest(served, "POST", "/v1/models/words/labels/stable:predict",
                           {"signature_name": "single", "instances": [{"text": "abcd"}]})
    assert (status, answer) == (200, {"predictions": [4.0]})
    status, answer = _rest(served, "POST", "/v1/models/words:predict",
                           {"signature_name": "sum", "instances": [{"a": 1.5, "b": 2}, {"a": 0.1, "b": 0.2}]})
    assert (status, answer) == (200, {"predictions": [3.5, 0.3]})  # float32 written without double's noise digits
    status, answer = _rest(served, "POST", "/v1/models/words:predict",
                           {"signature_name": "sum", "inputs": {"a": [1.0, 2.0], "b": [3.0, 4.0]}})
    assert (status, answer) == (200, {"outputs": [4.0, 6.0]})


def test_rest_classify(served):
    body = {"signature_name": "classify", "context": {"word": "abc"}, "examples": [{"x": 2.0}, {"x": [1.5]}]}
    status, answer = _rest(served, "POST", "/v1/models/words:classify", body)
    assert (status, answer) == (200, {"results": [[["x", 6.0], ["word", 3.0]], [["x", 4.5], ["word", 3.0]]]})
    body = {"signature_name": "scores_only", "examples": [{"word": b64(b"ab"), "x": 1.0}]}
    assert _rest(served, "POST", "/v1/models/words/versions/2:classify", body) == (
        200, {"results": [[["", 2.0], ["", 2.0]]]})
    # Whole numbers are int64 features: the graph's float feature refuses them, as in TF Serving.
    status, answer = _rest(served, "POST", "/v1/models/words:classify",
                           {"signature_name": "classify", "examples": [{"x": 2}]})
    assert status == 400
    assert answer["error"].startswith("Name: <unknown>, Key: x, Index: 0.  Data types don't match. Data type: int64 "
                                      "but expected type: float")


def test_rest_metadata_and_status_are_tf_servings_json(served):
    status, answer = _rest(served, "GET", "/v1/models/words/versions/2/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "words", "signature_name": "", "version": "2"}
    single = answer["metadata"]["signature_def"]["signature_def"]["single"]
    assert single == {
        "inputs": {"text": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1", "name": ""}],
                                                                    "unknown_rank": False}, "name": "text:0"}},
        "outputs": {"length": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}],
                                                                      "unknown_rank": False}, "name": "add:0"}},
        "method_name": "tensorflow/serving/predict", "defaults": {}}
    assert sorted(answer["metadata"]["signature_def"]["signature_def"]) == [
        "classify", "scores_only", "serving_default", "single", "sum", "with_boom"]
    ok = {"error_code": "OK", "error_message": ""}
    assert _rest(served, "GET", "/v1/models/words") == (200, {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": ok}, {"version": "2", "state": "AVAILABLE", "status": ok}]})
    assert _rest(served, "GET", "/v1/models/words/versions/2") == (200, {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok}]})


REST_ERRORS = {
    "unknown model": ("POST", "/v1/models/nope:predict", {"instances": ["a"]}, 404,
                      "Servable not found for request: Latest(nope)"),
    "unloaded version": ("POST", "/v1/models/words/versions/1:predict", {"instances": ["a"]}, 404,
                         "Servable not found for request: Specific(words, 1)"),
    "unknown label": ("POST", "/v1/models/words/labels/beta:predict", {"instances": ["a"]}, 400,
                      "Unrecognized servable version label: beta"),
    "unknown signature": ("POST", "/v1/models/words:predict", {"signature_name": "nope", "instances": ["a"]}, 400,
                          'Serving signature name: "nope" not found in signature def'),
    "empty body": ("POST", "/v1/models/words:predict", b"", 400, "JSON Parse error: The document is empty"),
    "not JSON": ("POST", "/v1/models/words:predict", b"instances = [1]", 400, "JSON Parse error: Expecting value"),
    "not an object": ("POST", "/v1/models/words:predict", [1], 400, "JSON Value: [1] Is not object"),
    "signature not a string": ("POST", "/v1/models/words:predict", {"signature_name": 1}, 400,
                               "'signature_name' key must be a string value."),
    "misspelt key": ("POST", "/v1/models/words:predict", {"signature": "single", "instances": ["a"]}, 400,
                     "unknown key(s) 'signature' in the request body"),
    "both formats": ("POST", "/v1/models/words:predict", {"instances": ["a"], "inputs": ["a"]}, 400,
                     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    "no inputs": ("POST", "/v1/models/words:predict", {"signature_name": "single"}, 400,
                  "Missing 'inputs' or 'instances' key"),
    "empty instances": ("POST", "/v1/models/words:predict", {"instances": []}, 400, "No values in 'instances' array"),
    "wrong type": ("POST", "/v1/models/words:predict", {"signature_name": "sum", "instances": [{"a": "x", "b": 1}]},
                   400, "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
                        'JSON Value: "x" Type: String is not of expected type: float'),
    "missing instance key": ("POST", "/v1/models/words:predict", {"signature_name": "sum", "instances": [{"a": 1}]},
                             400, "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} "
                                  "keys must be equal to: a,b"),
    "ragged tensor": ("POST", "/v1/models/words:predict", {"signature_name": "sum", "inputs": {"a": [[1], 2], "b": [1]}},
                         400, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    "plain list for two inputs": ("POST", "/v1/models/words:predict", {"signature_name": "sum", "instances": [1.0]},
                                  400, "instances is a plain list, but expecting list of objects"),
    "extra columnar name": ("POST", "/v1/models/words:predict",
                            {"signature_name": "sum", "inputs": {"a": [1.0], "b": [1.0], "c": [1.0]}}, 400,
                            "'inputs' names 'c', which the signature does not have"),
    "bad base64": ("POST", "/v1/models/words:predict", {"instances": [{"b64": "%%%"}]}, 400, "Unable to base64 decode"),
    "classify without examples": ("POST", "/v1/models/words:classify", {"context": {"x": 1.0}}, 400,
                                  "When method is classify, key 'examples' is expected and was not found"),
    "mixed feature kinds": ("POST", "/v1/models/words:classify", {"examples": [{"x": [1.0, "a"]}]}, 400,
                            "Unexpected element type in feature: x expecting type: float"),
    "context repeated in an example": ("POST", "/v1/models/words:classify",
                                       {"signature_name": "classify", "context": {"x": 1.0}, "examples": [{"x": 2.0}]},
                                       400, "examples[0] repeats context feature(s) 'x'"),
    "malformed path": ("POST", "/v1/models/words/version/2:predict", {}, 400,
                       "Malformed request: POST /v1/models/words/version/2:predict"),
    "status without a name": ("GET", "/v1/models", None, 400, "Missing model name in request."),
    "predict with GET": ("GET", "/v1/models/words:predict", None, 400, "Malformed request: GET /v1/models/words:predict"),
    "status of an unknown version": ("GET", "/v1/models/words/versions/9", None, 404,
                                     "Could not find version 9 of model words"),
    "regress": ("POST", "/v1/models/words:regress", {"examples": [{"x": 1.0}]}, 501, "Regress is not served"),
    "outside the API": ("GET", "/index.html", None, 404, "Not Found: GET /index.html"),
}


@pytest.mark.parametrize("case", sorted(REST_ERRORS))
def test_rest_errors_are_tf_servings(served, case):
    method, path, body, code, message = REST_ERRORS[case]
    status, answer = _rest(served, method, path, body)
    assert status == code, answer
    assert list(answer) == ["error"] and message in answer["error"], answer


def test_rest_refuses_a_body_over_the_limit_before_reading_it(served):
    connection = http.client.HTTPConnection("127.0.0.1", served["rest"], timeout=30)
    connection.putrequest("POST", "/v1/models/words:predict")
    connection.putheader("Content-Length", str(2 << 20))  # the fixture's limit is 1 MiB; nothing is sent
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {
        "error": f"request body of {2 << 20} bytes is over this stand-in's limit of {1 << 20} bytes (--max-request-mb)"}
    connection.close()
    status, _ = _rest(served, "POST", "/v1/models/words:predict", {"instances": ["a" * 1000]})
    assert status == 200  # the server still answers


def test_rest_refuses_requests_beyond_the_concurrency_limit(served):
    server, port = serve.start_rest(served["servables"], max_concurrent=1)
    try:
        hanging = socket.create_connection(("127.0.0.1", port))  # holds the only slot: its request never ends
        hanging.sendall(b"POST /v1/models/words:predict HTTP/1.0\r\nContent-Length: 10\r\n\r\n")
        refused = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        refused.request("GET", "/v1/models/words")
        response = refused.getresponse()
        assert response.status == 429
        assert "more than 1 requests at once" in json.loads(response.read())["error"]
        hanging.close()
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ the stub and the command line


def test_the_tests_stub_is_this_implementation(root):
    from tests.serving_stub import LoadedModels, decode_rest_request

    models = LoadedModels({"words": root / "words"})
    try:
        assert isinstance(models, serve.Servables)
        outputs, version = models.predict("words", "single", {"text": [b"ab"]})
        assert (outputs["length"].tolist(), version) == ([4.0], 3)  # the latest of 1, 2, 3
    finally:
        models.close()
    with pytest.raises(serve.ServingError) as error:  # a request that outlives the server
        models.predict("words", "single", {"text": [b"ab"]})
    assert (error.value.code, error.value.message) == (Code.UNAVAILABLE, "words version 3 was unloaded")
    with pytest.raises(serve.ServingError, match="Missing named input: images in 'inputs' object."):
        decode_rest_request({"inputs": {"image": ["x"]}}, ["images"], {"images": "string"})


def test_command_line_serves_the_root_and_stops_on_sigterm(root):
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "exportkit.serve", str(root), "--grpc-port", str(grpc_port),
                                "--rest-port", str(rest_port)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        lines = []
        while not lines or not lines[-1].startswith("gRPC on"):
            line = process.stdout.readline()
            assert line, process.stderr.read()
            lines.append(line.rstrip("\n"))
        assert lines[-1] == (f"gRPC on 127.0.0.1:{grpc_port}, REST on http://127.0.0.1:{rest_port}: a stand-in for "
                             "trying clients, not a production server; Ctrl-C or SIGTERM stops it")
        versions = [line.split(" from ")[0] for line in lines if not line.startswith(("note:", "gRPC on"))]
        assert versions == ["everything version 2", "everything version 1", "pinned version 1",
                            "words version 3 (labels: canary)", "words version 2 (labels: stable)"]
        status, answer = _rest({"rest": rest_port}, "POST", "/v1/models/words:predict",
                               {"signature_name": "single", "instances": ["abc"]})
        assert (status, answer) == (200, {"predictions": [4.5]})
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_predict_request(), timeout=30)
        assert response.model_spec.version.value == 3
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-1] == "stopped"


def test_help_says_it_is_not_a_production_server():
    help_text = " ".join(serve.build_parser().format_help().split())
    assert "NOT a production server" in help_text
    assert "NOT A PRODUCTION SERVER" in serve.__doc__
