"""client/resnet_client.py against an export served by the test PredictionService (gRPC)
and a REST server that holds requests to TF Serving's documented JSON format."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from exportkit import client
from exportkit.labels import load_labels
from tests.helpers import FAST, export_resnet18, free_port, run_client, table_rows, write_photos
from tests.serving_stub import LoadedModels, decode_rest_request, start_grpc, start_rest

IMAGENET = load_labels("imagenet")


@pytest.fixture(scope="module")
def served(resnet18_model_dir, tmp_path_factory):
    """ResNet-18 exported twice (plain, and with class_names), behind gRPC and REST."""
    root = tmp_path_factory.mktemp("served")
    export_resnet18(resnet18_model_dir, root, *FAST)  # what is served is tested here
    export_resnet18(resnet18_model_dir, root, *FAST, "export.model_name=named", "head.class_names=true",
                    "signature.name=classify")
    models = LoadedModels({"resnet": root / "resnet", "named": root / "named"})
    grpc_server, grpc_port = start_grpc(models)
    rest_server, rest_port, received = start_rest(models)
    yield {"models": models, "grpc": f"127.0.0.1:{grpc_port}", "rest": f"127.0.0.1:{rest_port}",
           "received": received, "root": root}
    grpc_server.stop(None)
    rest_server.shutdown()
    models.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Eight files of mixed kinds and sizes: the client resizes each to 224x224 JPEG."""
    return write_photos(tmp_path_factory.mktemp("photos"), [
        ("RGB", "JPEG", (640, 480)), ("L", "JPEG", (300, 500)), ("RGBA", "PNG", (256, 256)), ("P", "PNG", (100, 80)),
        ("CMYK", "JPEG", (400, 400)), ("RGB", "BMP", (224, 224)), ("RGB", "JPEG", (1000, 200)), ("RGB", "PNG", (50, 50))],
        seed=3)


def _expected(served, name: str, signature: str, paths: list[Path]) -> dict[str, np.ndarray]:
    """What the served model answers for the images the client sends, run directly."""
    images = client.prepare_images([str(p) for p in paths], image_size=224, send_original=False, timeout=5)
    return served["models"].predict(name, signature, {"images": np.array(images, dtype=object)})[0]


def _check_table(table_text: str, expected: dict[str, np.ndarray], paths: list[Path]) -> None:
    rows = table_rows(table_text)
    assert len(rows) == len(paths) * 5  # k=5 per image
    for i, path in enumerate(paths):
        block = rows[i * 5:(i + 1) * 5]
        assert block[0][0] == str(path)
        for rank, row in enumerate(block):
            cls = int(expected["classes"][i][rank])
            assert row[1:4] == [str(rank + 1), str(cls), IMAGENET[cls]]
            assert float(row[4]) == pytest.approx(float(expected["probabilities"][i][rank]), abs=1e-4)


def test_grpc_single_image_prints_classes_with_names(served, photos):
    code, out, err = run_client(str(photos[0]), "--server", served["grpc"])
    assert code == 0, err
    _check_table(out, _expected(served, "resnet", "predict_images", photos[:1]), photos[:1])


def test_grpc_batch_of_eight_mixed_kinds_in_one_request(served, photos):
    """Eight images of mixed kinds and sizes (the script's own process: tests/test_client_inputs.py)."""
    code, out, err = run_client(*map(str, photos), "--server", served["grpc"])
    assert code == 0, err
    _check_table(out, _expected(served, "resnet", "predict_images", photos), photos)


def test_names_come_from_the_class_names_output_when_the_model_has_one(served, photos):
    code, out, err = run_client(*map(str, photos[:2]), "--server", served["grpc"], "--model-name", "named",
                          "--signature-name", "classify", "--labels", "none")
    assert code == 0, err
    expected = _expected(served, "named", "classify", photos[:2])
    names = [row[3] for row in table_rows(out)]
    assert names == [n.decode() for row in expected["class_names"] for n in row]


def test_rest_request_matches_the_documented_format(photos):
    images = client.prepare_images([str(p) for p in photos[:2]], image_size=224, send_original=False, timeout=5)
    row = client.rest_request_body("predict_images", images)
    assert row == {"signature_name": "predict_images",
                   "instances": [{"images": {"b64": base64.b64encode(b).decode()}} for b in images]}
    columnar = client.rest_request_body("predict_images", images, columnar=True)
    assert columnar == {"signature_name": "predict_images",
                        "inputs": {"images": [{"b64": base64.b64encode(b).decode()} for b in images]}}
    for body in (row, columnar):  # through JSON, as the server parses it
        _, inputs, _ = decode_rest_request(json.loads(json.dumps(body)), ["images"], {"images": "string"})
        assert list(inputs["images"]) == images
    target = client.Target(server="host:8501", model_name="resnet", signature_name="s", timeout=1)
    assert client.rest_url(target) == "http://host:8501/v1/models/resnet:predict"


@pytest.mark.parametrize("layout", [[], ["--columnar"]])
def test_rest_end_to_end(served, photos, layout):
    code, out, err = run_client(*map(str, photos[:3]), "--rest", "--server", served["rest"], *layout)
    assert code == 0, err
    _check_table(out, _expected(served, "resnet", "predict_images", photos[:3]), photos[:3])
    assert ("inputs" if layout else "instances") in served["received"][-1]


def test_original_bytes_are_sent_with_send_original(served, photos):
    code, out, err = run_client(str(photos[0]), "--server", served["grpc"], "--send-original")
    assert code == 0, err
    original = photos[0].read_bytes()
    expected = served["models"].predict("resnet", "predict_images", {"images": np.array([original], dtype=object)})[0]
    _check_table(out, expected, photos[:1])


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_error_paths_give_one_clear_line(served, photos, protocol, tmp_path):
    server = served[protocol]
    rest = ["--rest"] if protocol == "rest" else []
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cases = {
        "connection refused": ([str(photos[0]), "--server", f"127.0.0.1:{free_port()}"],
                               "cannot reach TF Serving at 127.0.0.1:"),
        "unknown model": ([str(photos[0]), "--server", server, "--model-name", "resnet9"],
                          "the server has no model 'resnet9' (--model-name): Servable not found for request: Latest(resnet9)"),
        "unknown signature": ([str(photos[0]), "--server", server, "--signature-name", "nope"],
                              "error: model 'resnet' has no signature 'nope' (--signature-name); its signatures: "
                              "predict_images, serving_default\n"),
        "unknown signature, the server's word": (
            [str(photos[0]), "--server", server, "--signature-name", "nope", "--no-metadata"],
            "model 'resnet' has no signature 'nope' (--signature-name): " + (
                'Serving signature name: "nope" not found in signature def' if protocol == "rest"
                else 'Serving signature key "nope" not found.')),
        "server rejects the image": ([str(photos[0]), str(text), "--server", server, "--send-original"],
                                     "the server rejected the request: assertion failed: [images[1] is not a JPEG (12 bytes)]"),
        "unreadable file": ([str(tmp_path / "missing.jpg"), "--server", server], "cannot read"),
        "not an image locally": ([str(text), "--server", server],
                                 f"{text}: not an image PIL can read (unknown format; 12 bytes starting b'not an i')"),
    }
    for case, (argv, message) in cases.items():
        code, out, err = run_client(*argv, *rest, "--timeout", "20")
        assert code == 1, case
        assert message in err, (case, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (case, err)
        assert out == ""


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_slow_server_times_out_with_a_clear_message(served, photos, protocol):
    served["models"].delay_seconds = 2.0
    try:
        code, _, err = run_client(str(photos[0]), "--server", served[protocol], "--timeout", "0.5",
                            *(["--rest"] if protocol == "rest" else []))
    finally:
        served["models"].delay_seconds = 0.0
    assert code == 1
    assert f"no answer from {served[protocol]} within 0.5s (--timeout)" in err


def test_images_can_be_urls(served, photos):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(photos[0].parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, out, err = run_client(f"{base}/{photos[0].name}", "--server", served["grpc"])
        assert code == 0, err
        rows = table_rows(out)
        assert rows[0][0] == f"{base}/{photos[0].name}"
        assert [r[2] for r in rows] == [str(c) for c in _expected(served, "resnet", "predict_images", photos[:1])["classes"][0]]
        code, _, err = run_client(f"{base}/missing.jpg", "--server", served["grpc"])
        assert code == 1 and f"cannot download {base}/missing.jpg: " in err and "Traceback" not in err
    finally:
        server.shutdown()
