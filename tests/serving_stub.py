"""Stand-ins for tensorflow_model_server, which cannot be installed here.

Both load the exported version with TF's own SavedModel loader (the serve tag,
a fresh graph and session, as TF Serving's SavedModelBundle does) and run the
real signature. They answer as TF Serving does where the client can tell:

* gRPC: the PredictionService servicer generated in ``tensorflow-serving-api``;
  NOT_FOUND "Servable not found for request: Latest(<name>)" for an unknown
  model, FAILED_PRECONDITION 'Serving signature key "<key>" not found.' for an
  unknown signature, and the graph's own error code and message when a run
  fails (INVALID_ARGUMENT for a bad image).
* REST: ``POST /v1/models/<name>[/versions/<v>]:predict`` with the documented
  request format, row ("instances") or columnar ("inputs"), binary values as
  {"b64": ...}; answers {"predictions": [...]} or {"outputs": {...}}, and
  {"error": "..."} with TF Serving's HTTP status on failure. The request is
  checked strictly against the format, so a client that deviates fails here.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from exportkit.errors import first_line
from exportkit.verify import run_signature


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_HTTP_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
                grpc.StatusCode.FAILED_PRECONDITION: 400}


class LoadedModels:
    """name -> (session, signature defs) for the latest version under each base path."""

    def __init__(self, base_paths: Mapping[str, Path]):
        self._models = {}
        self._lock = threading.Lock()  # one run at a time, like a single session thread pool
        for name, base in base_paths.items():
            version = max(int(p.name) for p in Path(base).iterdir() if p.name.isdigit())
            graph = tf.Graph()
            with graph.as_default():
                sess = tf.compat.v1.Session(graph=graph)
                meta = tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING], str(Path(base) / str(version)))
            self._models[name] = (sess, meta.signature_def, version)
        self.delay_seconds = 0.0

    def signature(self, name: str, signature_name: str) -> Any:
        if name not in self._models:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        key = signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        signatures = self._models[name][1]
        if key not in signatures:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        return signatures[key]

    def predict(self, name: str, signature_name: str, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        time.sleep(self.delay_seconds)
        signature = self.signature(name, signature_name)
        sess, _, version = self._models[name]
        if set(inputs) != set(signature.inputs):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input keys {sorted(inputs)} do not match the signature's {sorted(signature.inputs)}")
        try:
            with self._lock:
                return run_signature(sess, signature, inputs), version
        except tf.errors.OpError as e:
            code = next(c for c in grpc.StatusCode if c.value[0] == e.error_code)
            raise ServingError(code, _op_message(e)) from None

    def close(self) -> None:
        for sess, _, _ in self._models.values():
            sess.close()


def _op_message(error: tf.errors.OpError) -> str:
    """The C++ status message TF Serving would return (without Python's wrapper line)."""
    lines = error.message.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == first_line(error))
    return "\n".join(lines[start:]).strip()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: LoadedModels):
        self.models = models

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        try:
            outputs, version = self.models.predict(request.model_spec.name, request.model_spec.signature_name, inputs)
        except ServingError as e:
            context.abort(e.code, e.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_grpc(models: LoadedModels) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(models), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


# ------------------------------------------------------------------- REST


class RestFormatError(ValueError):
    """The request body does not follow TF Serving's documented Predict format."""


def decode_rest_request(body: Any, input_names: list[str], input_dtypes: Mapping[str, str]) -> tuple[str, dict[str, np.ndarray], bool]:
    """(signature_name, inputs, columnar) from a documented REST Predict body.

    https://www.tensorflow.org/tfx/serving/api_rest#predict_api: exactly one of
    "instances" (row format: a list; with one named input, each item is an
    object keyed by it or the bare value) and "inputs" (columnar: an object
    keyed by input name, or the bare value for a single input). DT_STRING
    inputs carry binary data as {"b64": "<base64>"}.
    """
    if not isinstance(body, dict):
        raise RestFormatError("the body must be a JSON object")
    extra = set(body) - {"signature_name", "instances", "inputs"}
    if extra:
        raise RestFormatError(f"unknown keys {sorted(extra)}")
    if ("instances" in body) == ("inputs" in body):
        raise RestFormatError('exactly one of "instances" and "inputs" is required')
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise RestFormatError('"signature_name" must be a string')

    def value(item: Any, name: str) -> Any:
        if input_dtypes[name] == "string":
            if not (isinstance(item, dict) and set(item) == {"b64"}):
                raise RestFormatError(f'binary input {name!r} values must be {{"b64": ...}}, got {item!r:.60}')
            return base64.b64decode(item["b64"], validate=True)
        return item

    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise RestFormatError('"instances" must be a list')
        columns: dict[str, list] = {name: [] for name in input_names}
        for instance in instances:
            named = instance if isinstance(instance, dict) and set(instance) == set(input_names) else None
            if named is None and len(input_names) == 1 and not (isinstance(instance, dict) and "b64" not in instance):
                named = {input_names[0]: instance}
            if named is None:
                raise RestFormatError(f"instance {instance!r:.60} is not keyed by the inputs {input_names}")
            for name in input_names:
                columns[name].append(value(named[name], name))
        return signature_name, {k: np.array(v, dtype=object) for k, v in columns.items()}, False
    inputs = body["inputs"]
    if not (isinstance(inputs, dict) and set(inputs) == set(input_names)):
        inputs = {input_names[0]: inputs} if len(input_names) == 1 else inputs
    if not isinstance(inputs, dict) or set(inputs) != set(input_names):
        raise RestFormatError(f'"inputs" must be keyed by {input_names}')
    return signature_name, {k: np.array([value(i, k) for i in v], dtype=object) for k, v in inputs.items()}, True


def encode_rest_response(outputs: Mapping[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    def plain(array: np.ndarray) -> Any:
        if array.dtype == object:
            return [[x.decode("utf-8") for x in row] for row in array] if array.ndim == 2 else [x.decode("utf-8") for x in array]
        return array.tolist()

    if columnar:
        return {"outputs": {key: plain(value) for key, value in outputs.items()}}
    batch = len(next(iter(outputs.values())))
    return {"predictions": [{key: plain(value[i:i + 1])[0] for key, value in outputs.items()} for i in range(batch)]}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is what the timeout test wants, not a traceback."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def start_rest(models: LoadedModels) -> tuple[ThreadingHTTPServer, int, list]:
    """The server, its port, and the list of request bodies it received (for assertions)."""
    received: list = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path
            if not (path.startswith("/v1/models/") and path.endswith(":predict")):
                return self._send(404, {"error": f"Malformed request: POST {path}"})
            name = path[len("/v1/models/"):-len(":predict")].split("/versions/")[0]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            try:
                signature = models.signature(name, body.get("signature_name", "") if isinstance(body, dict) else "")
                dtypes = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in signature.inputs.items()}
                signature_name, inputs, columnar = decode_rest_request(body, list(signature.inputs), dtypes)
                outputs, _ = models.predict(name, signature_name, inputs)
            except RestFormatError as e:
                return self._send(400, {"error": f"JSON Value not formatted as expected: {e}"})
            except ServingError as e:
                return self._send(_HTTP_STATUS.get(e.code, 500), {"error": e.message})
            self._send(200, encode_rest_response(outputs, columnar))

        def _send(self, status: int, payload: Mapping[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = _QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1], received
