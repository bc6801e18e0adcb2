"""client/resnet_client.py against the signatures an export can have (docs/signatures.md),
through exportkit.serve over gRPC and REST: the signature and its inputs discovered with
GetModelMetadata, AI Platform keys, the Classify API, versions and labels, the fallback
where the server gives no metadata, and the one-line errors. One serving root for the
module: four quick exports (no verification, no warmup) behind one server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from exportkit import client, serve
from exportkit.labels import load_labels
from exportkit.serving import write_models_config
from tests.helpers import FAST, b64, export_resnet18, run_client, table_rows, write_photos

IMAGENET = load_labels("imagenet")
PROTOCOLS = ["grpc", "rest"]


@pytest.fixture(scope="module")
def served(resnet18_model_dir, tmp_path_factory):
    """One root: ``example`` (TF Serving's example clients: image_bytes to serving_default),
    ``garden`` (every kind of signature, with keys), and ``resnet`` in two versions, 1 the
    default interface (predict_images, images) and 2 AI Platform's (image_bytes and key),
    labelled stable=1 and canary=2; all versions served."""
    root = tmp_path_factory.mktemp("signatures")

    def export(*overrides: str) -> int:
        return export_resnet18(resnet18_model_dir, root, *FAST, *overrides)[0]["version"]

    export("export.model_name=example", "signature=tf_serving_example")
    export("export.model_name=garden", "signature=model_garden", "signature.passthrough=[key]")
    first = export()
    second = export("signature=ai_platform")
    path = write_models_config(root, mount=None, versions="all")
    config = text_format.Parse(path.read_text(), serve.model_server_config_pb2.ModelServerConfig())
    [resnet] = [entry for entry in config.model_config_list.config if entry.name == "resnet"]
    resnet.version_labels["stable"] = first
    resnet.version_labels["canary"] = second
    path.write_text(text_format.MessageToString(config))
    servables = serve.Servables(serve.read_models_config(root), warmup=False)
    received: list = []
    grpc_server, grpc_port = serve.start_grpc(servables)
    rest_server, rest_port = serve.start_rest(servables, observe=received.append)
    yield {"servables": servables, "grpc": f"127.0.0.1:{grpc_port}", "rest": f"127.0.0.1:{rest_port}",
           "received": received, "versions": (first, second), "root": root}
    grpc_server.stop(None)
    rest_server.shutdown()
    rest_server.server_close()
    servables.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("photos"), [
        ("RGB", "JPEG", (320, 240)), ("RGB", "PNG", (200, 300)), ("RGB", "JPEG", (128, 128))], seed=7)


def _call(served, protocol: str, *argv: str) -> tuple[int, str, str]:
    return run_client(*argv, "--server", served[protocol], *(["--rest"] if protocol == "rest" else []), "--timeout", "30",
                      width=250)


def _header(table_text: str) -> list[str]:
    [line] = [line for line in table_text.splitlines() if line.startswith("┃")]
    return [cell.strip() for cell in line.split("┃")[1:-1]]


def _images(paths: list[Path]) -> list[bytes]:
    return client.prepare_images([str(p) for p in paths], image_size=224, send_original=False, timeout=5)


def _expected(served, model: str, signature: str, inputs: dict, *, version: int | None = None) -> dict:
    """The served version's own answer, run directly."""
    arrays = {k: np.array(v, dtype=object) for k, v in inputs.items()}
    return served["servables"].predict(model, signature, arrays, version=version)[0]


def _check_predictions(table_text: str, expected: dict, paths: list[Path], *, keys: list[str] | None = None) -> None:
    rows = table_rows(table_text)
    header = _header(table_text)
    assert header == ["image", *(["key"] if keys is not None else []), "rank", "class", "name", "probability"]
    offset = 1 if keys is not None else 0
    assert len(rows) == 5 * len(paths)
    for i, path in enumerate(paths):
        block = rows[i * 5:(i + 1) * 5]
        assert block[0][0] == str(path)
        if keys is not None:
            assert block[0][1] == keys[i]
        for rank, row in enumerate(block):
            cls = int(expected["classes"][i][rank])
            assert row[1 + offset:4 + offset] == [str(rank + 1), str(cls), IMAGENET[cls]]
            assert float(row[4 + offset]) == pytest.approx(float(expected["probabilities"][i][rank]), abs=1e-4)


def _last_body(served) -> dict:
    """The last REST request body the server received (GETs have none)."""
    import json

    return json.loads([body for body in served["received"] if body][-1])


# ------------------------------------------------------------------ discovery


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tf_serving_example_input_is_discovered(served, photos, protocol):
    """signature=tf_serving_example has no predict_images and no images input: the old
    client's request would be refused; the client asks and sends image_bytes to serving_default."""
    code, out, err = _call(served, protocol, *map(str, photos[:2]), "--model-name", "example")
    assert code == 0, err
    assert err == ""  # no fallback notice
    images = _images(photos[:2])
    _check_predictions(out, _expected(served, "example", "serving_default", {"image_bytes": images}), photos[:2])
    assert "model example, version 1, signature serving_default (Predict)" in out
    if protocol == "rest":
        assert _last_body(served) == {"signature_name": "serving_default",
                                      "instances": [{"image_bytes": b64(image)} for image in images]}


@pytest.mark.parametrize(("protocol", "layout"), [("grpc", []), ("rest", []), ("rest", ["--columnar"])])
def test_ai_platform_keys_are_sent_and_echoed(served, photos, protocol, layout):
    keys = ["a", "b", "c"]
    code, out, err = _call(served, protocol, *map(str, photos), "--key", "a,b", "--key", "c", *layout)
    assert code == 0, err
    images = _images(photos)
    expected = _expected(served, "resnet", "serving_default",
                         {"image_bytes": images, "key": [k.encode() for k in keys]})
    _check_predictions(out, expected, photos, keys=keys)
    if protocol == "rest":
        body = _last_body(served)
        if layout:
            assert body["inputs"] == {"image_bytes": [b64(image) for image in images], "key": keys}
        else:
            assert body["instances"] == [{"image_bytes": b64(image), "key": key} for image, key in zip(images, keys)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keys_default_to_the_image_arguments(served, photos, protocol):
    """A signature with a key input and no --key: each image's argument is its key."""
    code, out, err = _call(served, protocol, *map(str, photos[:2]))
    assert code == 0, err
    sources = [str(p) for p in photos[:2]]
    expected = _expected(served, "resnet", "serving_default",
                         {"image_bytes": _images(photos[:2]), "key": [s.encode() for s in sources]})
    _check_predictions(out, expected, photos[:2], keys=sources)


def test_the_echoed_key_is_printed_not_the_sent_one(served, photos, monkeypatch):
    """The key column shows what the server answered."""
    real = client.predict_grpc

    def swapped(*args, **kwargs):
        outputs = real(*args, **kwargs)
        return {**outputs, "key": outputs["key"][::-1]}

    monkeypatch.setattr(client, "predict_grpc", swapped)
    code, out, err = _call(served, "grpc", *map(str, photos[:2]), "--key", "first,second")
    assert code == 0, err
    assert [row[1] for row in table_rows(out)[::5]] == ["second", "first"]


# ------------------------------------------------------------------ Classify


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classify_gives_the_names_and_scores_of_predict(served, photos, protocol):
    code, out, err = _call(served, protocol, *map(str, photos), "--model-name", "garden", "--classify")
    assert code == 0, err
    assert _header(out) == ["image", "rank", "class", "score"]
    assert "model garden, version 1, signature classification (Classify)" in out
    images = _images(photos)
    if protocol == "rest":
        assert _last_body(served) == {"signature_name": "classification",
                                      "examples": [{"image/encoded": b64(image)} for image in images]}
    code, predicted, err = _call(served, protocol, *map(str, photos), "--model-name", "garden", "--key", "1,2,3")
    assert code == 0, err
    classified = table_rows(out)
    assert [row[2] for row in classified] == [row[4] for row in table_rows(predicted)]  # names
    assert [row[0] for row in classified] == [row[0] for row in table_rows(predicted)]
    # Scores to float precision, through the library calls the command line makes.
    target = client.Target(server=served[protocol], model_name="garden", signature_name="classification", timeout=30)
    classify = client.classify_rest if protocol == "rest" else client.classify_grpc
    predict = client.predict_rest if protocol == "rest" else client.predict_grpc
    answer = classify(target, images)
    outputs = predict(client.Target(**{**target.__dict__, "signature_name": "serving_default"}), images,
                      input_key="image_bytes", passthrough={"key": ["1", "2", "3"]})
    assert answer["classes"].tolist() == [[IMAGENET[c] for c in row] for row in outputs["classes"]]
    np.testing.assert_allclose(answer["scores"], outputs["probabilities"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_example_feature_names_the_feature(served, photos, protocol):
    """The export reads image/encoded: the image under another feature is an empty image."""
    code, out, err = _call(served, protocol, str(photos[0]), "--model-name", "garden", "--classify",
                           "--example-feature", "image/jpeg")
    assert code == 1 and out == ""
    assert err.startswith("error: the server rejected the request: ") and "images[0] is empty" in err, err
    if protocol == "rest":
        assert list(_last_body(served)["examples"][0]) == ["image/jpeg"]


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_version_and_version_label_pick_the_version(served, photos, protocol):
    """Version 1 takes images (no key), version 2 image_bytes and key: each is discovered from
    the version asked for, and answers as that version does."""
    first, second = served["versions"]
    images = _images(photos[:2])
    sources = [str(p) for p in photos[:2]]
    old = _expected(served, "resnet", "serving_default", {"images": images}, version=first)
    new = _expected(served, "resnet", "serving_default", {"image_bytes": images, "key": [s.encode() for s in sources]},
                    version=second)
    for option, version in [([], second), (["--version", str(first)], first), (["--version", str(second)], second),
                            (["--version-label", "stable"], first), (["--version-label", "canary"], second)]:
        code, out, err = _call(served, protocol, *sources, *option)
        assert code == 0, (option, err)
        assert f"model resnet, version {version}, signature serving_default (Predict)" in out, (option, out)
        if version == first:
            _check_predictions(out, old, photos[:2])
        else:
            _check_predictions(out, new, photos[:2], keys=sources)
        if protocol == "rest":
            sent = set(_last_body(served)["instances"][0])
            assert sent == ({"images"} if version == first else {"image_bytes", "key"})


def test_rest_paths_name_the_version_or_label():
    target = client.Target(server="h:8501", model_name="my model", signature_name="s", timeout=1)
    assert client.rest_url(target) == "http://h:8501/v1/models/my%20model:predict"
    assert client.rest_url(client.Target(**{**target.__dict__, "version": 3}), "classify") == \
        "http://h:8501/v1/models/my%20model/versions/3:classify"
    assert client.rest_metadata_url(client.Target(**{**target.__dict__, "version_label": "a/b"})) == \
        "http://h:8501/v1/models/my%20model/labels/a%2Fb/metadata"


# ------------------------------------------------------------------ without metadata


@pytest.fixture
def metadata_calls(served, monkeypatch):
    """Counts GetModelMetadata calls (gRPC and REST both come through handle_metadata)."""
    calls = []
    real = served["servables"].handle_metadata

    def counted(request):
        calls.append(request)
        return real(request)

    monkeypatch.setattr(served["servables"], "handle_metadata", counted)
    return calls


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_metadata_assumes_the_old_interface(served, photos, protocol, metadata_calls):
    first, _ = served["versions"]
    images = _images(photos[:1])
    code, out, err = _call(served, protocol, str(photos[0]), "--version", str(first), "--no-metadata")
    assert code == 0 and err == "", err
    _check_predictions(out, _expected(served, "resnet", "predict_images", {"images": images}, version=first),
                       photos[:1])
    assert "signature predict_images (Predict)" in out
    # Where the old assumptions do not hold, the server says so...
    code, out, err = _call(served, protocol, str(photos[0]), "--model-name", "example", "--no-metadata",
                           "--signature-name", "serving_default")
    refusal = ("Failed to process element: 0 key: images of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
               "does not have named input: images" if protocol == "rest" else
               "Signature input alias: image_bytes(feed name: image_bytes:0) not found in request")
    assert code == 1 and err.startswith(f"error: the server rejected the request: {refusal}"), err
    # ... and the options say what to send.
    code, out, err = _call(served, protocol, str(photos[0]), "--model-name", "example", "--no-metadata",
                           "--signature-name", "serving_default", "--input-key", "image_bytes")
    assert code == 0, err
    _check_predictions(out, _expected(served, "example", "serving_default", {"image_bytes": images}), photos[:1])
    # Keys go in --key-name's input as given.
    code, out, err = _call(served, protocol, str(photos[0]), "--no-metadata", "--signature-name", "serving_default",
                           "--input-key", "image_bytes", "--key", "k1")
    assert code == 0, err
    _check_predictions(out, _expected(served, "resnet", "serving_default", {"image_bytes": images, "key": [b"k1"]}),
                       photos[:1], keys=["k1"])
    assert "model resnet, latest version, signature serving_default (Predict)" in out
    assert metadata_calls == []
    _call(served, protocol, str(photos[0]), "--model-name", "example")
    assert len(metadata_calls) == 1  # the counter counts


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_without_metadata_gets_the_old_assumptions_and_a_notice(served, photos, protocol, monkeypatch):
    def unimplemented(request):
        raise serve.ServingError(serve.Code.UNIMPLEMENTED, "GetModelMetadata is not implemented here")

    monkeypatch.setattr(served["servables"], "handle_metadata", unimplemented)
    first, _ = served["versions"]
    code, out, err = _call(served, protocol, str(photos[0]), "--version", str(first))
    assert code == 0, err
    where = (f"GET /v1/models/resnet/versions/{first}/metadata: HTTP 501" if protocol == "rest"
             else "GetModelMetadata: UNIMPLEMENTED")
    assert err == (f"note: no signature metadata from the server ({where}: GetModelMetadata is not implemented here); "
                   "assuming signature 'predict_images' with input 'images' (--no-metadata skips asking)\n")
    _check_predictions(out, _expected(served, "resnet", "predict_images", {"images": _images(photos[:1])},
                                      version=first), photos[:1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_missing_model_is_an_error_not_a_fallback(served, photos, protocol, monkeypatch):
    """NOT_FOUND over gRPC, and a 404 naming the servable over REST, are the model's absence;
    a bare REST 404 (a proxy, a server without the route) is only the metadata's."""
    def not_found(message):
        def handle(request):
            raise serve.ServingError(serve.Code.NOT_FOUND, message)
        return handle

    first, _ = served["versions"]
    monkeypatch.setattr(served["servables"], "handle_metadata", not_found("Servable not found for request: Latest(x)"))
    code, out, err = _call(served, protocol, str(photos[0]))
    assert (code, out) == (1, "")
    assert err == "error: the server has no model 'resnet' (--model-name): Servable not found for request: Latest(x)\n"
    monkeypatch.setattr(served["servables"], "handle_metadata", not_found("Not Found"))
    code, out, err = _call(served, protocol, str(photos[0]), "--version", str(first))
    if protocol == "rest":
        assert code == 0 and err.startswith("note: no signature metadata from the server (GET "), err
    else:
        assert (code, err) == (1, "error: the server has no model 'resnet' (--model-name): Not Found\n")


# ------------------------------------------------------------------ errors


ERRORS = {
    "pixels signature": (
        ["--model-name", "garden", "--signature-name", "image_tensor"],
        "signature 'image_tensor' takes no encoded images (inputs: inputs uint8 [-1,-1,-1,3], key string [-1]); "
        "use --signature-name serving_default, or --classify"),
    "a key per image": (["--key", "only-one"], "1 --key value for 2 images: give one per image"),
    "classify on a Predict signature": (
        ["--model-name", "garden", "--classify", "--signature-name", "serving_default"],
        "the server rejected the request: Expected one input Tensor. (signature 'serving_default' is a Predict "
        "signature; --classify needs a Classify one: classification)"),
    "classify, the server's proto dump cut": (
        ["--model-name", "example", "--classify", "--signature-name", "serving_default"],
        "the server rejected the request: No classification inputs found in SignatureDef (signature "
        "'serving_default' is a Predict signature; --classify needs a Classify one: this model has none)"),
    "a Classify signature without --classify": (
        ["--model-name", "garden", "--signature-name", "classification"],
        "signature 'classification' is for TF Serving's Classify API (tensorflow/serving/classify), not Predict: "
        "add --classify"),
    "no Classify signature": (
        ["--model-name", "example", "--classify"],
        "model 'example' has no signature 'classification' (--signature-name); its signatures: serving_default"),
    "unknown input": (
        ["--model-name", "garden", "--input-key", "pixels"],
        "signature 'serving_default' has no input 'pixels' (--input-key); its inputs: image_bytes string [-1], "
        "key string [-1]"),
    "an input that is not bytes": (
        ["--model-name", "garden", "--signature-name", "image_tensor", "--input-key", "inputs"],
        "input 'inputs' of signature 'image_tensor' is uint8 [-1,-1,-1,3], not encoded images (string [-1]) "
        "(--input-key)"),
    "--key without a key input": (
        ["--model-name", "example", "--key", "a,b"],
        "signature 'serving_default' has no 'key' input for --key (inputs: image_bytes string [-1]); --key-name "
        "names the passthrough input"),
    "unknown version": (
        ["--version", "7"],
        "the server has no version 7 of model 'resnet' (--version): Servable not found for request: "
        "Specific(resnet, 7)"),
    "unknown label": (
        ["--version-label", "nope"],
        "the server has no version label 'nope' for model 'resnet' (--version-label): Unrecognized servable version "
        "label: nope"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line(served, photos, protocol, case):
    argv, message = ERRORS[case]
    code, out, err = _call(served, protocol, *map(str, photos[:2]), *argv)
    assert code == 1, (case, out, err)
    assert err == f"error: {message}\n", case
    assert out == ""


# ------------------------------------------------------------------ the rules, without a server


def _signature(key: str, inputs: dict[str, str], method: str = client.PREDICT_METHOD,
               outputs: tuple[str, ...] = ("classes", "probabilities")) -> client.Signature:
    def spec(text: str) -> client.TensorSpec:
        dtype, _, dims = text.partition(" ")
        return client.TensorSpec(dtype, None if dims == "?" else tuple(int(d) for d in dims.split(",")))

    return client.Signature(key, method, {a: spec(t) for a, t in inputs.items()},
                            {o: client.TensorSpec("float", (-1, 5)) for o in outputs})


def _plan(signatures: list[client.Signature], **options) -> client.Plan:
    defaults = {"model_name": "m", "sources": ["a.jpg", "b.jpg"], "signature_name": None, "input_key": None,
                "key_name": "key", "keys": None, "classify": False}
    metadata = client.Metadata({s.key: s for s in signatures}, version=4)
    return client.plan_request(metadata, **{**defaults, **options})


def test_the_default_signature_is_serving_default_then_predict_images_then_the_only_one():
    a = _signature("serving_default", {"image_bytes": "string -1"})
    b = _signature("predict_images", {"images": "string -1"})
    c = _signature("mine", {"jpegs": "string ?"})
    assert _plan([b, a]).signature_name == "serving_default"
    assert (_plan([b, c]).signature_name, _plan([b, c]).input_key) == ("predict_images", "images")
    assert (_plan([c]).signature_name, _plan([c]).input_key) == ("mine", "jpegs")  # unknown rank is fine
    with pytest.raises(client.ClientError, match=r"model 'm' has no signature 'serving_default' \(--signature-name\); "
                                                 r"its signatures: mine, other$"):
        _plan([c, _signature("other", {"x": "string -1"})])


def test_several_string_inputs_need_input_key_or_key_name():
    signature = _signature("serving_default", {"image_bytes": "string -1", "id": "string -1"})
    with pytest.raises(client.ClientError, match=r"^signature 'serving_default' has several string inputs "
                                                 r"\(id, image_bytes\); name the images' one with --input-key"):
        _plan([signature])
    plan = _plan([signature], key_name="id", keys=["1", "2"])
    assert (plan.input_key, plan.key_name, plan.keys) == ("image_bytes", "id", ["1", "2"])
    plan = _plan([signature], input_key="image_bytes")
    assert (plan.input_key, plan.keys) == ("image_bytes", None)  # "id" is not the passthrough key: not filled


def test_a_passthrough_key_input_is_filled_with_the_sources():
    plan = _plan([_signature("serving_default", {"image_bytes": "string -1", "key": "string -1"})])
    assert (plan.input_key, plan.key_name, plan.keys, plan.version) == ("image_bytes", "key", ["a.jpg", "b.jpg"], 4)


def test_a_signature_without_the_top_k_outputs_is_refused_before_sending():
    signature = _signature("serving_default", {"image_bytes": "string -1"}, outputs=("logits",))
    with pytest.raises(client.ClientError, match=r"^signature 'serving_default' returns \['logits'\], not the classes"):
        _plan([signature])


def test_classify_defaults_to_classification_else_the_only_classify_signature():
    predict = _signature("serving_default", {"image_bytes": "string -1"})
    named = _signature("classification", {"inputs": "string -1"}, method=client.CLASSIFY_METHOD)
    other = _signature("by_example", {"inputs": "string -1"}, method=client.CLASSIFY_METHOD)
    assert _plan([predict, named, other], classify=True).signature_name == "classification"
    assert _plan([predict, other], classify=True).signature_name == "by_example"
    assert _plan([predict, named], classify=True, signature_name="serving_default").signature_name == "serving_default"


def test_without_metadata_the_options_or_the_old_defaults_are_sent():
    plan = client.plan_request(None, model_name="m", sources=["a"], signature_name=None, input_key=None,
                               key_name="key", keys=None, classify=False)
    assert (plan.signature_name, plan.input_key, plan.keys) == ("predict_images", "images", None)
    plan = client.plan_request(None, model_name="m", sources=["a"], signature_name="s", input_key="i",
                               key_name="k", keys=["x"], classify=False)
    assert (plan.signature_name, plan.input_key, plan.key_name, plan.keys) == ("s", "i", "k", ["x"])
    plan = client.plan_request(None, model_name="m", sources=["a"], signature_name=None, input_key=None,
                               key_name="key", keys=None, classify=True)
    assert plan.signature_name == "classification"


def test_rest_metadata_is_read_as_tf_serving_writes_it(served):
    """The JSON of GET .../metadata, as the stand-in writes it from TF Serving's protos,
    gives what the gRPC answer gives."""
    status, body = serve.rest_call(served["servables"], "GET", "/v1/models/garden/metadata")
    assert status == 200
    from_json = client.metadata_from_json(body)
    target = client.Target(server=served["grpc"], model_name="garden", signature_name="", timeout=30)
    assert from_json == client.metadata_grpc(target)
    assert from_json.version == 1
    assert str(from_json.signatures["image_tensor"].inputs["inputs"]) == "uint8 [-1,-1,-1,3]"
    assert from_json.signatures["classification"].method == client.CLASSIFY_METHOD
    with pytest.raises(client.MetadataUnavailable):
        client.metadata_from_json({"model_spec": {"name": "garden"}})
