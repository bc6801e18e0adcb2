"""The signatures existing TF Serving clients call, from one assembly.

Each shipped plugin is exported once with every input kind (``signature=model_garden``
plus a passthrough key) and loaded as TF Serving loads it. Then each request shape a
client sends (TF Serving's example ResNet client, AI Platform with keys, Classify with
tf.Examples, a uint8 image tensor, tf.Example Predict) must answer as the bytes path
does for the same images.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from exportkit import signatures
from exportkit.config import ConfigError, to_plain, validate
from exportkit.errors import ExportError
from exportkit.labels import load_labels
from exportkit.registry import MODELS
from exportkit.serving import read_warmup
from exportkit.verify import input_size_jpegs, sample_jpegs
from tests.helpers import compose_config, export_in_process, run_signatures, signature_defs

EVERY_INPUT = ["signature=model_garden", "signature.passthrough=[key]", "head.k=3"]


@pytest.fixture(scope="module", params=MODELS.names())
def exported(request, tmp_path_factory):
    """(version directory, composed config) of a plugin exported with every signature kind."""
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    name = request.param
    overrides = [f"model={name}", *MODELS.get(name).test_overrides]
    config = to_plain(compose_config(*overrides))
    root = tmp_path_factory.mktemp(f"signatures_{name}")
    write_fresh_checkpoint(root / "model_dir", model_params={**config["model"], "data_format": "channels_last"},
                           image_size=config["preprocessing"]["image_size"],
                           preprocessing=config["preprocessing"])  # calibrated through the model's own preset
    result, _ = export_in_process(*overrides, *EVERY_INPUT, f"checkpoint.path={root / 'model_dir'}",
                                  f"export.root={root / 'exports'}")
    return result, to_plain(compose_config(*overrides, *EVERY_INPUT))


def _run_all(version: str, requests: dict[str, dict]) -> dict[str, dict]:
    return run_signatures(version, requests, signatures={"serving_default", "image_tensor", "tf_example",
                                                         "classification"})


def test_every_request_shape_answers_as_the_bytes_path(exported):
    result, config = exported
    size = config["preprocessing"]["image_size"]
    images = input_size_jpegs(size, 4, seed=3)  # one shape, so the pixels batch is one tensor
    keys = np.array([b"a", b"b", b"c", b"d"], dtype=object)
    examples = np.array(signatures.example_bytes(images, "image/encoded"), dtype=object)
    pixels = np.stack(signatures.decode_pixels(images))
    assert signature_defs(result["version_path"])["classification"].method_name == "tensorflow/serving/classify"
    answers = _run_all(result["version_path"], {
        # TF Serving's resnet_client_grpc.py: inputs['image_bytes'] to serving_default (keys as AI Platform sends)
        "serving_default": {"image_bytes": np.array(images, dtype=object), "key": keys},
        "image_tensor": {"inputs": pixels, "key": keys},
        "tf_example": {"inputs": examples, "key": keys},
        "classification": {"inputs": examples},
    })
    want = answers["serving_default"]
    assert want["classes"].shape == (4, 3)
    np.testing.assert_array_equal(want["key"], keys)  # each answer carries its key back
    for name in ("image_tensor", "tf_example"):
        np.testing.assert_array_equal(answers[name]["classes"], want["classes"], err_msg=name)
        np.testing.assert_allclose(answers[name]["probabilities"], want["probabilities"], atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(answers[name]["key"], keys)
    # The label names where the model has labels, else the class ids as strings.
    labels = load_labels(config["model"]["labels"]) if config["model"]["labels"] else None
    names = np.array([[(labels[c] if labels else str(c)).encode() for c in row] for row in want["classes"]], dtype=object)
    np.testing.assert_array_equal(answers["classification"]["classes"], names)
    np.testing.assert_allclose(answers["classification"]["scores"], want["probabilities"], atol=1e-5)


def test_pixels_of_any_size_are_preprocessed_as_their_jpeg(exported):
    result, config = exported
    [odd] = sample_jpegs(config["preprocessing"]["image_size"])[1:2]  # larger than the crop, odd aspect
    answers = _run_all(result["version_path"], {
        "serving_default": {"image_bytes": np.array([odd], dtype=object), "key": np.array([b"k"], dtype=object)},
        "image_tensor": {"inputs": np.stack(signatures.decode_pixels([odd])), "key": np.array([b"k"], dtype=object)},
    })
    np.testing.assert_array_equal(answers["image_tensor"]["classes"], answers["serving_default"]["classes"])
    np.testing.assert_allclose(answers["image_tensor"]["probabilities"], answers["serving_default"]["probabilities"],
                               atol=1e-5)


def test_a_key_count_that_does_not_match_the_images_is_refused(exported):
    result, config = exported
    images = input_size_jpegs(config["preprocessing"]["image_size"], 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="passthrough input key has 1 values for 2 images: send one per image"):
        _run_all(result["version_path"], {"serving_default": {"image_bytes": np.array(images, dtype=object),
                                                              "key": np.array([b"only-one"], dtype=object)}})


def test_an_example_without_the_image_feature_is_named_by_index(exported):
    result, config = exported
    images = input_size_jpegs(config["preprocessing"]["image_size"], 1)
    examples = signatures.example_bytes(images, "image/encoded") + signatures.example_bytes(images, "other")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images\[1\] is empty"):
        _run_all(result["version_path"], {"classification": {"inputs": np.array(examples, dtype=object)}})


def test_warmup_and_verification_cover_every_signature(exported):
    result, _ = exported
    logs = read_warmup(f"{result['version_path']}/assets.extra/tf_serving_warmup_requests")
    called = [(log.WhichOneof("log_type"), getattr(log, log.WhichOneof("log_type")).request.model_spec.signature_name)
              for log in logs]
    expected = [("predict_log", "serving_default"), ("predict_log", "image_tensor"), ("predict_log", "tf_example"),
                ("classify_log", "classification")]
    assert called == [each for each in expected for _ in (1, 8)]  # serving.warmup.batch_sizes=[1, 8]
    assert result["verification"]["signatures"] == ["serving_default", "image_tensor", "tf_example", "classification"]
    assert result["verification"]["warmup_requests"] == len(logs)


def test_verification_fails_when_one_signature_answers_differently(resnet18_model_dir, tmp_path, monkeypatch):
    """The pixel path preprocessed upside down: every other signature is right, the check must see it."""
    from exportkit import preprocessing

    original = preprocessing._standard_pixels
    monkeypatch.setattr(preprocessing, "_standard_pixels", lambda pixels, params: original(pixels[:, ::-1], params))
    with pytest.raises(ExportError, match="verification: 'image_tensor' output '(classes|probabilities)' differs"):
        export_in_process("model.size=18", f"checkpoint.path={resnet18_model_dir}", f"export.root={tmp_path}",
                          "signature.extra=[image_tensor]", "serving.warmup.enabled=false")


@pytest.mark.parametrize("overrides, message", [
    (["signature.passthrough=[images]"], "'images' is already signature.input_key"),
    (["signature.passthrough=[classes]"], "'classes' is already an output"),
    (["signature.passthrough=[key,key]"], "'key' is already signature.passthrough"),
    (["signature.input_key=image-bytes"], "signature input 'image-bytes' (signature.input_key, signature.passthrough)"),
    (["signature.extra=[classify]", "signature.names.classify=predict_images"],
     "signature.names.classify='predict_images' is already the key of signature.name"),
    (["signature.extra=[tf_example,tf_example]"], "signature.extra=['tf_example', 'tf_example'] names a kind twice"),
    (["signature=model_garden", "serving.warmup.batch_sizes=[" + ",".join(["1"] * 251) + "]"],
     "1 to 250 positive sizes (4 signatures with signature.extra)"),
])
def test_signature_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(*overrides))


def test_the_presets_speak_the_clients_conventions():
    tf_serving = to_plain(compose_config("signature=tf_serving_example"))["signature"]
    assert (tf_serving["name"], tf_serving["input_key"], tf_serving["passthrough"]) == ("serving_default", "image_bytes", [])
    ai_platform = to_plain(compose_config("signature=ai_platform"))["signature"]
    assert (ai_platform["input_key"], ai_platform["passthrough"]) == ("image_bytes", ["key"])
    assert signatures.Interface.from_params(to_plain(compose_config("signature=model_garden"))["signature"]).signatures() == {
        "serving_default": "bytes", "image_tensor": "image_tensor", "tf_example": "tf_example",
        "classification": "classify"}


def test_every_request_shape_through_the_stand_in_server(exported):
    """The same requests as clients send them over the wire: gRPC Predict as TF Serving's
    example client, REST with AI Platform keys, gRPC Classify, pixels and tf.Example Predict."""
    import base64
    import json
    from pathlib import Path

    import grpc
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

    from exportkit import serve

    result, config = exported
    root = Path(result["version_path"]).parents[1]
    name = result["model_name"]
    images = input_size_jpegs(config["preprocessing"]["image_size"], 3, seed=5)
    examples = signatures.example_bytes(images, "image/encoded")
    servables = serve.Servables(serve.read_models_config(root, note=lambda _: None), warmup=False)
    server, port = serve.start_grpc(servables)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(signature: str, inputs: dict) -> dict:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = name, signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            return {k: tf.make_ndarray(v) for k, v in stub.Predict(request, timeout=60).outputs.items()}

        keys = np.array([b"1", b"2", b"3"], dtype=object)
        want = predict("serving_default", {"image_bytes": np.array(images, dtype=object), "key": keys})
        for signature, inputs in (("image_tensor", {"inputs": np.stack(signatures.decode_pixels(images)), "key": keys}),
                                  ("tf_example", {"inputs": np.array(examples, dtype=object), "key": keys})):
            got = predict(signature, inputs)
            np.testing.assert_array_equal(got["classes"], want["classes"], err_msg=signature)
            np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5, err_msg=signature)
            np.testing.assert_array_equal(got["key"], keys)

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = name, "classification"
        for serialized in examples:
            request.input.example_list.examples.add().ParseFromString(serialized)
        classified = stub.Classify(request, timeout=60).result.classifications
        scores = np.array([[c.score for c in each.classes] for each in classified])
        np.testing.assert_allclose(scores, want["probabilities"], atol=1e-5)

        body = json.dumps({"signature_name": "serving_default", "instances": [
            {"image_bytes": {"b64": base64.b64encode(image).decode()}, "key": f"k{i}"} for i, image in enumerate(images)]})
        status, answer = serve.rest_call(servables, "POST", f"/v1/models/{name}:predict", body.encode())
        assert status == 200, answer
        assert [row["key"] for row in answer["predictions"]] == ["k0", "k1", "k2"]  # each answer carries its key
        assert [row["classes"] for row in answer["predictions"]] == want["classes"].tolist()
        np.testing.assert_allclose([row["probabilities"] for row in answer["predictions"]], want["probabilities"],
                                   atol=1e-5)
    finally:
        channel.close()
        server.stop(None)
        servables.close()
