"""A local stand-in for TF Serving's model server, to try clients and tests without one.

NOT A PRODUCTION SERVER. It runs one request at a time per model, has no
batching, no TLS, no authentication and no monitoring. It re-reads models.config
every --poll-seconds (2; 0: never), and ModelService.HandleReloadConfigRequest
takes a new config, loading, unloading and relabelling versions without a
restart. Use tensorflow/serving (docs/serving.md: "Serving the export with TF Serving")
for anything but trying clients.

    python -m exportkit.serve exports/ [--grpc-port 8500] [--rest-port 8501] [--host 127.0.0.1] [--poll-seconds 2]

It serves the models that ``exports/models.config`` lists, each version loaded
with TF's own SavedModel loader (the serve tag, a fresh graph and session per
version, as TF Serving's SavedModelBundle does), and answers the APIs clients
use as TF Serving answers them: the same checks, the same status codes and, where
the client can see them, the same messages (read from TF Serving's sources:
predict_util.cc, classifier.cc, util.cc, get_model_metadata_impl.cc,
get_model_status_impl.cc, server_core.cc, http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc, util/json_tensor.cc):

* gRPC: PredictionService.Predict, .Classify and .GetModelMetadata, and
  ModelService.GetModelStatus and .HandleReloadConfigRequest;
* REST: ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify)``
  and ``GET /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]``.

Deliberately stricter than TF Serving, so that a client that deviates from the
documented REST format fails here instead of being guessed at: unknown top-level
keys in a REST body, names in a columnar "inputs" object that the signature does
not have, and a feature in both "context" and an example are refused (TF Serving
ignores the first two and lets the example win the third).

Bounded: a REST body or gRPC message larger than --max-request-mb (64 MiB; TF
Serving takes up to 2 GiB over gRPC) is refused, as are more than
--max-concurrent-requests requests at once (RESOURCE_EXHAUSTED, HTTP 429), and a
request tensor whose declared shape holds more than --max-request-mb of values.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import signal
import socket
import sys
import threading
import traceback
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import numpy as np

from .console import import_tensorflow_quietly
from .errors import ExportkitError, first_line

import_tensorflow_quietly()

import grpc  # noqa: E402  (after TF's start-up lines are silenced)
import tensorflow as tf  # noqa: E402
from google.protobuf import json_format, text_format  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from .serving import MODELS_CONFIG_FILE, WARMUP_FILE, read_warmup, select_versions, version_dirs  # noqa: E402

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MAX_REQUEST_MB = 64
DEFAULT_MAX_CONCURRENT = 8
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF = "signature_def"  # GetModelMetadataImpl::kSignatureDef
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
MiB = 1 << 20

Code = grpc.StatusCode
ModelConfig = model_server_config_pb2.ModelConfig

# http_server.cc ToHTTPStatusCode
_HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409, Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request TF Serving would refuse: its status code and its message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)


class ServeError(ExportkitError):
    """The server cannot start (no models.config, a version that does not load): one line."""


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def _dtype_name(dtype: int) -> str:
    """TF's DataTypeString: DT_FLOAT -> "float"."""
    return types_pb2.DataType.Name(dtype)[3:].lower()


# ---------------------------------------------------------------- models.config


def read_models_config(root: Path, *, note: Callable[[str], None] = print) -> list[ModelConfig]:
    """The entries of ``root/models.config``, their base paths as found on this machine.

    models.config names where a docker server mounts the root (``/models/<name>``
    with ``serving.mount=/models``); a base path that does not exist here becomes
    ``root/<name>``, with one note for all of them. A relative base path is
    relative to the config's folder, as TF Serving reads it (server_core.cc).
    """
    path = root / MODELS_CONFIG_FILE
    if not path.is_file():
        raise ServeError(f"no {MODELS_CONFIG_FILE} in {root}: export first (python run_export.py export.root={root} ...)")
    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except OSError as e:
        raise ServeError(f"cannot read {path}: {e.strerror or e}") from None
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise ServeError(f"{path} is not a ModelServerConfig text proto: {first_line(e)}") from None
    entries = list(config.model_config_list.config)
    if not entries:
        raise ServeError(f"{path} lists no model in model_config_list: export first (python run_export.py ...)")
    return resolve_entries(entries, root, path, note=note)


def resolve_entries(entries: Sequence[ModelConfig], root: Path, path: Path, *,
                    note: Callable[[str], None] = print) -> list[ModelConfig]:
    """Checked entries, with base paths as found on this machine (see read_models_config)."""
    _check_entries(entries, path)
    resolved, moved = [], []
    for entry in entries:
        local, found = _local_base_path(entry, root)
        if not found:
            moved.append(entry.base_path)
        copy = ModelConfig()
        copy.CopyFrom(entry)
        copy.base_path = str(local)
        resolved.append(copy)
    if moved:
        note(f"note: {', '.join(moved)} not on this machine (where a docker server mounts the root); "
             f"serving {root}/<name> instead")
    return resolved


def _check_entries(entries: Sequence[ModelConfig], path: Path) -> None:
    """The config errors TF Serving refuses to start with (server_core.cc), in its words."""
    names = set()
    for entry in entries:
        if entry.name in names:
            raise ServeError(f"{path}: Illegal to list model {entry.name} multiple times in config list")
        names.add(entry.name)
        platform = entry.model_platform or ("tensorflow" if entry.model_type == model_server_config_pb2.TENSORFLOW else "")
        if not platform:
            raise ServeError(f"{path}: Illegal setting neither ModelServerConfig::model_type (deprecated) "
                             f"nor ModelServerConfig::model_platform, model name is {entry.name}")
        if platform != "tensorflow":
            raise ServeError(f"{path}: PlatformConfigMap has no entry for platform {platform} "
                             f"(model {entry.name}; this stand-in serves tensorflow SavedModels)")


def _local_base_path(entry: ModelConfig, root: Path) -> tuple[Path, bool]:
    """(the folder to serve, whether it is the one models.config names)."""
    given = Path(entry.base_path) if Path(entry.base_path).is_absolute() else root / entry.base_path
    return (given, True) if given.is_dir() else (root / entry.name, False)


# ---------------------------------------------------------------- loaded versions


class LoadedVersion:
    """One version as TF Serving's SavedModelBundle holds it: the serve tag loaded into
    a graph and session of its own."""

    def __init__(self, name: str, version: int, path: Path, lock: threading.Lock):
        self.name, self.version, self.path = name, version, path
        self._lock = lock  # shared by the model's versions: one run at a time per model
        self._closed = False
        graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default():
                meta = tf.compat.v1.saved_model.loader.load(self.session, [tf.saved_model.SERVING], str(path))
        except Exception as e:
            self.session.close()
            raise ServeError(f"{name} version {version} ({path}) does not load: {first_line(e)}") from None
        self.signatures = dict(meta.signature_def)

    def run(self, feeds: Mapping[str, Any], fetches: Sequence[str]) -> list[np.ndarray]:
        """Run by tensor names; the graph's error code and message as TF Serving passes them on."""
        try:
            with self._lock:
                if self._closed:  # a request that outlived the server's stop
                    raise ServingError(Code.UNAVAILABLE, f"{self.name} version {self.version} was unloaded")
                return self.session.run(list(fetches), feed_dict=dict(feeds))
        except tf.errors.OpError as e:
            code = next((c for c in Code if c.value[0] == e.error_code), Code.UNKNOWN)
            raise ServingError(code, _op_message(e)) from None
        except (ValueError, TypeError) as e:  # Python's feed check: a shape the placeholder cannot take
            raise _invalid(str(e)) from None

    def close(self) -> None:
        """After the run in progress, if any."""
        with self._lock:
            self._closed = True
            self.session.close()


def _op_message(error: tf.errors.OpError) -> str:
    """The C++ status message TF Serving would return (without Python's wrapper lines)."""
    lines = error.message.splitlines()
    head = first_line(error)
    start = next((i for i, line in enumerate(lines) if line.strip() == head), 0)
    return "\n".join(lines[start:]).strip()


class Servables:
    """The loaded versions of the configured models, answering as TF Serving's
    ServerCore and its request handlers do.

    ``handle_predict``/``handle_classify``/``handle_metadata``/``handle_status`` take
    and return the tensorflow_serving protos; ``predict`` is the same Predict with
    numpy arrays, for tests and the REST server. In-process, as tests use it:

        servables = Servables(read_models_config(root), warmup=False)
        grpc_server, grpc_port = start_grpc(servables)     # port=0: a free port
        rest_server, rest_port = start_rest(servables)
        ...
        grpc_server.stop(None); rest_server.shutdown(); servables.close()
    """

    def __init__(self, configs: Sequence[ModelConfig], *, warmup: bool = True, method_name_check: bool = False,
                 max_tensor_bytes: int = DEFAULT_MAX_REQUEST_MB * MiB, note: Callable[[str], None] = lambda _: None):
        self.method_name_check = method_name_check  # TF Serving's --enable_signature_method_name_check
        self.max_tensor_bytes = max_tensor_bytes
        self._warmup = warmup
        self._reloading = threading.Lock()  # one reload at a time (the poller, HandleReloadConfigRequest)
        # Replaced whole on a reload, never changed in place, so a request sees one config or the other.
        self._versions: dict[str, dict[int, LoadedVersion]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        try:
            for config in configs:
                self._load(config, note)
            if warmup:
                for loaded in self.loaded_versions():
                    self._warm_up(loaded)
        except BaseException:
            self.close()
            raise

    def _load(self, config: ModelConfig, note: Callable[[str], None]) -> None:
        base = Path(config.base_path)
        available = version_dirs(base)
        chosen = select_versions(config.model_version_policy, available)
        if config.model_version_policy.WhichOneof("policy_choice") == "specific":
            for missing in sorted(set(config.model_version_policy.specific.versions) - set(chosen)):
                note(f"note: {config.name}: version {missing} (model_version_policy specific) is not under {base}")
        if not chosen:
            note(f"note: {config.name}: no version with a saved_model.pb under {base}; requests for it are NOT_FOUND")
        versions = self._versions[config.name] = {}
        lock = threading.Lock()
        for version in chosen:
            versions[version] = LoadedVersion(config.name, version, available[version], lock)
        for label, version in config.version_labels.items():
            if version not in versions:  # server_core.cc refuses the config
                raise ServeError(f"Request to assign label to version {version} of model {config.name}, "
                                 "which is not currently available for inference")
        self._labels[config.name] = dict(config.version_labels)

    def reload(self, configs: Sequence[ModelConfig], *, note: Callable[[str], None] = lambda _: None) -> list[str]:
        """Serve ``configs`` instead, as TF Serving's ServerCore::ReloadConfig does with
        --allow_version_labels_for_unavailable_models=true (what this stand-in does at start):
        labels are checked against the versions loaded now (a label may be new on a version that
        is not loaded yet, but an existing label moves only onto a loaded version), then versions
        the policies add are loaded (and warmed up), the rest unloaded, and the labels swapped.
        All or nothing: on an error nothing changes and the previous config keeps serving.
        Returns one line per change."""
        with self._reloading:
            current_versions, current_labels = self._versions, self._labels
            for config in configs:
                loaded = current_versions.get(config.name, {})
                before = current_labels.get(config.name, {})
                for label, version in config.version_labels.items():
                    if version not in loaded and label in before and before[label] != version:
                        raise ServeError(f"Request to assign label to version {version} of model {config.name}, "
                                         "which is not currently available for inference")
            versions: dict[str, dict[int, LoadedVersion]] = {}
            new: list[LoadedVersion] = []
            changes: list[str] = []
            try:
                for config in configs:
                    available = version_dirs(Path(config.base_path))
                    chosen = select_versions(config.model_version_policy, available)
                    kept = current_versions.get(config.name, {})
                    lock = next(iter(kept.values()))._lock if kept else threading.Lock()
                    versions[config.name] = {}
                    for version in chosen:
                        if version in kept and kept[version].path == available[version]:
                            versions[config.name][version] = kept[version]
                            continue
                        loaded = LoadedVersion(config.name, version, available[version], lock)
                        new.append(loaded)
                        if self._warmup:
                            self._warm_up(loaded)
                        versions[config.name][version] = loaded
                        changes.append(f"{config.name}: loaded version {version}")
                    if not chosen:
                        note(f"note: {config.name}: no version with a saved_model.pb under {config.base_path} "
                             "for its policy; requests for it are NOT_FOUND")
            except BaseException:
                for loaded in new:
                    loaded.close()
                raise
            labels = {config.name: dict(config.version_labels) for config in configs}
            for name in sorted(set(labels) | set(current_labels)):
                before, after = current_labels.get(name, {}), labels.get(name, {})
                for label in sorted(set(before) | set(after)):
                    if before.get(label) != after.get(label):
                        was = f"{before[label]} -> " if label in before else ""
                        changes.append(f"{name}: label {label} {was}{after.get(label, 'removed')}")
            self._versions, self._labels = versions, labels
            for name, old in current_versions.items():
                for version, loaded in sorted(old.items()):
                    if versions.get(name, {}).get(version) is not loaded:
                        changes.append(f"{name}: unloaded version {version}")
                        loaded.close()
            return changes

    def _warm_up(self, loaded: LoadedVersion) -> None:
        """Replay assets.extra/tf_serving_warmup_requests before the version answers, as TF
        Serving does (saved_model_warmup.cc): a record that fails fails the load."""
        path = loaded.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return
        for i, log in enumerate(read_warmup(path)):
            kind = log.WhichOneof("log_type")
            try:
                if kind == "predict_log":
                    request = log.predict_log.request
                    self._predict_on(loaded, request.model_spec.signature_name, request.inputs, request.output_filter)
                elif kind == "classify_log":
                    self._classify_on(loaded, log.classify_log.request, classification_pb2.ClassificationResponse())
                else:
                    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
            except ServingError as e:
                raise ServeError(f"{loaded.name} version {loaded.version}: warmup record {i} of {path} fails: "
                                 f"{e.message.splitlines()[0]}") from None

    def close(self) -> None:
        for versions in self._versions.values():
            for loaded in versions.values():
                loaded.close()

    def loaded_versions(self) -> list[LoadedVersion]:
        """Every loaded version, by model name, newest first."""
        return [v for name in sorted(self._versions) for _, v in sorted(self._versions[name].items(), reverse=True)]

    def versions(self) -> dict[str, list[int]]:
        return {name: sorted(versions, reverse=True) for name, versions in self._versions.items()}

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    # ------------------------------------------------------------ model specs

    def resolve(self, name: str, *, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """ServerCore::ServableRequestFromModelSpec, then the manager's lookup."""
        if not name:
            raise _invalid("ModelSpec has no name specified.")
        if label is not None:
            if label not in self._labels.get(name, {}):
                raise _invalid(f"Unrecognized servable version label: {label}")
            version = self._labels[name][label]
        versions = self._versions.get(name, {})
        if version is None:
            if not versions:
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        if version not in versions:
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def resolve_spec(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        choice = spec.WhichOneof("version_choice")
        return self.resolve(spec.name, version=spec.version.value if choice == "version" else None,
                            label=spec.version_label if choice == "version_label" else None)

    # ------------------------------------------------------------ Predict

    def predict(self, name: str, signature_name: str, inputs: Mapping[str, Any], *, version: int | None = None,
                label: str | None = None, output_filter: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], int]:
        """(outputs, version) for ``inputs`` (numpy arrays, or TensorProtos as a gRPC request
        holds them); raises ServingError with TF Serving's code and message."""
        loaded = self.resolve(name, version=version, label=label)
        return self._predict_on(loaded, signature_name, inputs, output_filter), loaded.version

    def handle_predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        outputs, version = self.predict(spec.name, spec.signature_name, request.inputs,
                                        version=spec.version.value if choice == "version" else None,
                                        label=spec.version_label if choice == "version_label" else None,
                                        output_filter=request.output_filter)
        response = predict_pb2.PredictResponse()
        _make_model_spec(response.model_spec, spec.name, spec.signature_name, version)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tensor_proto_fields(value))
        return response

    def _predict_on(self, loaded: LoadedVersion, signature_name: str, inputs: Mapping[str, Any],
                    output_filter: Sequence[str]) -> dict[str, np.ndarray]:
        """predict_util.cc RunPredict: the signature, the request's inputs checked against it,
        then only the requested outputs are run."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in loaded.signatures:
            raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        signature = loaded.signatures[key]
        self._verify_predict_method(signature)
        _verify_input_count(signature, inputs)
        values = self._input_values(signature, inputs)
        aliases = _output_aliases(signature, output_filter)
        _check_input_dtypes(signature, values)
        fetched = loaded.run({signature.inputs[a].name: array for a, (array, _) in values.items()},
                             [signature.outputs[a].name for a in aliases])
        return dict(zip(aliases, fetched))

    def _verify_predict_method(self, signature: Any) -> None:
        if self.method_name_check and signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(Code.INTERNAL, "Expected prediction signature method_name to be one of "
                               f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {signature.method_name}")

    def _input_values(self, signature: Any, inputs: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, int]]:
        """saved_model::GetInputValues: every signature input from the request or its default,
        and no request input the signature does not name."""
        values = {}
        for alias in sorted(signature.inputs):
            if alias in inputs:
                values[alias] = self._to_array(alias, inputs[alias])
            elif alias in signature.defaults:
                values[alias] = self._to_array(alias, signature.defaults[alias])
            else:
                raise _invalid(f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not found "
                               f"in request and no default value provided. Inputs expected to be in the request "
                               f"{{{','.join(sorted(inputs))}}}, or default input alias set: "
                               f"{','.join(sorted(signature.defaults))}")
        used = set(inputs) & set(signature.inputs)
        if inputs and len(used) != len(inputs):
            raise _invalid(f"Inputs contains invalid name. Used request inputs: {','.join(sorted(used))}, "
                           f"request input: {','.join(sorted(inputs))}")
        return values

    def _to_array(self, alias: str, value: Any) -> tuple[np.ndarray, int]:
        """(array, DataType): a TensorProto parsed as Tensor::FromProto would (bounded: a
        declared shape can ask for far more values than the message carries), or an array."""
        if isinstance(value, tensor_pb2.TensorProto):
            dims = [d.size for d in value.tensor_shape.dim]
            itemsize = 8 if value.dtype == types_pb2.DT_STRING else _itemsize(value.dtype)
            if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) * itemsize > self.max_tensor_bytes:
                raise _invalid(f"tensor parsing error: {alias}")
            try:
                return tf.make_ndarray(value), value.dtype
            except Exception:
                raise _invalid(f"tensor parsing error: {alias}") from None
        array = value if isinstance(value, np.ndarray) else _as_array(value)
        return array, tf.as_dtype(array.dtype).as_datatype_enum

    # ------------------------------------------------------------ Classify

    def handle_classify(self, request: classification_pb2.ClassificationRequest
                        ) -> classification_pb2.ClassificationResponse:
        """classification_service.cc and classifier.cc RunClassify."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        loaded = self.resolve_spec(request.model_spec)
        response = classification_pb2.ClassificationResponse()
        self._classify_on(loaded, request, response)
        return response

    def _classify_on(self, loaded: LoadedVersion, request: Any, response: Any) -> None:
        signature = self._classification_signature(loaded, request.model_spec.signature_name)
        _make_model_spec(response.model_spec, request.model_spec.name, request.model_spec.signature_name,
                         loaded.version)
        input_name, output_names = self._classification_tensors(signature)
        examples = serialized_examples(request.input)
        input_dtype = signature.inputs["inputs"].dtype
        if input_dtype != types_pb2.DT_STRING:
            raise _invalid(f"Expects arg[0] to be {_dtype_name(input_dtype)} but string is provided")
        outputs = loaded.run({input_name: np.array(examples, dtype=object)}, output_names)
        _classification_result(signature, len(examples), output_names, outputs, response.result)

    def _classification_signature(self, loaded: LoadedVersion, signature_name: str) -> Any:
        """GetClassificationSignatureDef: an unknown name is INVALID_ARGUMENT here (not
        Predict's FAILED_PRECONDITION)."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in loaded.signatures:
            raise _invalid(f"No signature was found with the name: {key}")
        return loaded.signatures[key]

    def _classification_tensors(self, signature: Any) -> tuple[str, list[str]]:
        """PreProcessClassification: one "inputs" input of serialized tf.Examples, and a
        "classes" and/or "scores" output. The method name is only checked with
        --enable-signature-method-name-check, as in TF Serving (off by default)."""
        if self.method_name_check and signature.method_name != CLASSIFY_METHOD:
            raise _invalid(f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                           f"Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if len(signature.outputs) not in (1, 2):
            raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        if "inputs" not in signature.inputs:
            raise _invalid(f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}")
        names = [signature.outputs[key].name for key in ("classes", "scores") if key in signature.outputs]
        if not names:
            raise _invalid('Expected classification signature outputs to contain at least one of "classes" or '
                           f'"scores". Signature was: {text_format.MessageToString(signature)}')
        return signature.inputs["inputs"].name, names

    # ------------------------------------------------------------ metadata and status

    def handle_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                        ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """get_model_metadata_impl.cc: the signature defs as a SignatureDefMap packed in an Any."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise _invalid(f"Metadata field {field} is not supported")
        loaded = self.resolve_spec(request.model_spec)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in loaded.signatures.items():
            signature_defs.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata[SIGNATURE_DEF].Pack(signature_defs)
        return response

    def handle_status(self, request: get_model_status_pb2.GetModelStatusRequest
                      ) -> get_model_status_pb2.GetModelStatusResponse:
        """get_model_status_impl.cc: every loaded version (newest first), or the one asked for;
        a version label is ignored there, so here too."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        name = request.model_spec.name
        versions = self._versions.get(name, {})
        if request.model_spec.HasField("version"):
            wanted = request.model_spec.version.value
            if wanted not in versions:
                raise ServingError(Code.NOT_FOUND, f"Could not find version {wanted} of model {name}")
            chosen = [wanted]
        elif not versions:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        else:
            chosen = sorted(versions, reverse=True)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in chosen:
            status = response.model_version_status.add(version=version,
                                                       state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
            status.status.SetInParent()  # error_code OK, error_message "", printed as TF Serving prints them
        return response

    # ------------------------------------------------------------ REST helpers

    def input_types(self, name: str, signature_name: str, *, version: int | None = None,
                    label: str | None = None) -> dict[str, int]:
        """HttpRestApiHandler::GetInfoMap: alias -> DataType of the signature's inputs."""
        loaded = self.resolve(name, version=version, label=label)
        key = signature_name or DEFAULT_SIGNATURE
        if key not in loaded.signatures:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        types = {alias: info.dtype for alias, info in loaded.signatures[key].inputs.items()}
        if not types:
            raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        return types


def _itemsize(dtype: int) -> int:
    try:
        return max(tf.dtypes.as_dtype(dtype).size, 1)
    except (TypeError, ValueError):
        return 1


def _as_array(value: Any) -> np.ndarray:
    """A list of bytes as an object array: numpy's own bytes type would drop trailing NULs."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, str)):
        array = np.empty(len(value), dtype=object)
        array[:] = list(value)
        return array
    return np.asarray(value)


def _verify_input_count(signature: Any, inputs: Mapping[str, Any]) -> None:
    """VerifyRequestInputsSize: more inputs than the signature has, or fewer without defaults."""
    sent, declared = len(inputs), len(signature.inputs)
    if sent > declared or (sent < declared and not signature.defaults):
        request, expected = set(inputs), set(signature.inputs)
        raise _invalid(f"input size does not match signature: {sent}!={declared} len({{{','.join(sorted(request))}}}) "
                       f"!= len({{{','.join(sorted(expected))}}}). Sent extra: {{{','.join(sorted(request - expected))}}}. "
                       f"Missing but required: {{{','.join(sorted(expected - request))}}}.")


def _output_aliases(signature: Any, output_filter: Sequence[str]) -> list[str]:
    """PreProcessPrediction: the filtered outputs (each known, none twice), else all of them."""
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise _invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                           f"{{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise _invalid(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


def _check_input_dtypes(signature: Any, values: Mapping[str, tuple[np.ndarray, int]]) -> None:
    """The session's own check (FunctionCallFrame::SetArgs); Python's feed would convert instead."""
    for i, (alias, (_, dtype)) in enumerate(values.items()):
        expected = signature.inputs[alias].dtype
        if dtype != expected:
            raise _invalid(f"Expects arg[{i}] to be {_dtype_name(expected)} but {_dtype_name(dtype)} is provided")


def _make_model_spec(spec: model_pb2.ModelSpec, name: str, signature_name: str, version: int) -> None:
    """util.cc MakeModelSpec."""
    spec.Clear()
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


_PROTO_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val", types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val",
}


def tensor_proto_fields(array: np.ndarray) -> tensor_pb2.TensorProto:
    """The output as TF Serving sends it by default (Tensor::AsProtoField): values in the
    typed repeated field (float_val, string_val, ...), not tensor_content, so a client
    that reads ``outputs[k].float_val`` works here as it does there."""
    dtype = tf.as_dtype(array.dtype).as_datatype_enum
    if dtype not in _PROTO_FIELDS:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    getattr(proto, _PROTO_FIELDS[dtype]).extend(array.ravel().tolist())
    return proto


def serialized_examples(data: input_pb2.Input) -> list[bytes]:
    """InputToSerializedExampleTensor: each tf.Example serialized; with a context, the
    context's bytes before each example's, so protobuf's merge gives the example the last word."""
    kind = data.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in data.example_list.examples]
    elif kind == "example_list_with_context":
        context = data.example_list_with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in data.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise _invalid("Input is empty.")
    return examples


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _check_classification_output(what: str, array: np.ndarray, dtype: int, num_examples: int) -> None:
    if array.ndim != 2:
        raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(array.shape)}")
    actual = tf.as_dtype(array.dtype).as_datatype_enum
    if actual != dtype:
        raise _invalid(f"Expected {what} Tensor of {types_pb2.DataType.Name(dtype)}. "
                       f"Got: {types_pb2.DataType.Name(actual)}")
    if array.shape[0] != num_examples:
        raise _invalid(f"Expected {what} output batch size of {num_examples}. Got: {array.shape[0]}")


def _classification_result(signature: Any, num_examples: int, names: Sequence[str], outputs: Sequence[np.ndarray],
                           result: classification_pb2.ClassificationResult) -> None:
    """PostProcessClassificationResult: [N, k] string classes and/or float scores; with only
    scores each label is "", with only classes each score is 0."""
    by_name = dict(zip(names, outputs))
    classes = by_name.get(signature.outputs["classes"].name) if "classes" in signature.outputs else None
    scores = by_name.get(signature.outputs["scores"].name) if "scores" in signature.outputs else None
    if classes is not None:
        _check_classification_output("classes", classes, types_pb2.DT_STRING, num_examples)
    if scores is not None:
        _check_classification_output("scores", scores, types_pb2.DT_FLOAT, num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                cls.label = classes[i, c].decode("utf-8", "replace")
            if scores is not None:
                cls.score = float(scores[i, c])


# ---------------------------------------------------------------- gRPC


def _answer(context: grpc.ServicerContext, handle: Callable[[Any], Any], request: Any) -> Any:
    try:
        return handle(request)
    except ServingError as e:
        context.abort(e.code, e.message)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, servables: Servables):
        self.servables = servables

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the service's names)
        return _answer(context, self.servables.handle_predict, request)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, self.servables.handle_classify, request)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, self.servables.handle_metadata, request)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.abort(Code.UNIMPLEMENTED, "Regress is not served by this stand-in (exportkit.serve)")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.abort(Code.UNIMPLEMENTED, "MultiInference is not served by this stand-in (exportkit.serve)")


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, servables: Servables, root: Path | None = None):
        self.servables = servables
        self.root = root

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, self.servables.handle_status, request)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """model_service_impl.cc: ServerCore::ReloadConfig with the request's config (base paths
        resolved as in models.config); its error is the call's status."""
        if self.root is None:
            context.abort(Code.UNIMPLEMENTED, "this stand-in was started without a serving root to resolve paths in")
        if request.config.WhichOneof("config") != "model_config_list":
            context.abort(Code.FAILED_PRECONDITION, "Cannot transition to requested config. It is only legal to "
                                                    "transition from one ModelConfigList to another.")
        try:
            entries = resolve_entries(list(request.config.model_config_list.config), self.root,
                                      Path("HandleReloadConfigRequest"), note=lambda _: None)
            self.servables.reload(entries)
        except ServeError as e:
            context.abort(Code.FAILED_PRECONDITION, str(e))
        return model_management_pb2.ReloadConfigResponse()


class ConfigPoller:
    """Re-reads ``root/models.config`` every ``seconds`` and reloads what changed, as TF Serving
    does with --model_config_file_poll_wait_seconds. A config that cannot be read or served
    is said once, and the previous one keeps serving."""

    def __init__(self, root: Path, servables: Servables, *, seconds: float, note: Callable[[str], None] = print):
        self.root, self.servables, self.seconds, self.note = root, servables, seconds, note
        self._last: str | None = None  # the first poll reloads: a change made while starting is not missed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="models-config-poller", daemon=True)

    def start(self) -> "ConfigPoller":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def poll(self) -> list[str]:
        """One poll: the changes made (none if the file is as last read)."""
        path = self.root / MODELS_CONFIG_FILE
        try:
            text = path.read_text()
        except OSError as e:
            text = f"unreadable: {e}"
        if text == self._last:
            return []
        self._last = text
        try:
            changes = self.servables.reload(read_models_config(self.root, note=lambda _: None), note=self.note)
        except ServeError as e:
            self.note(f"error: reloading {path}: {e}; still serving the previous config")
            return []
        for change in changes:
            self.note(f"{path}: {change}")
        return changes

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.poll()
            except Exception as e:  # a version that fails to load, a full disk: say it, keep serving
                self.note(f"error: reloading {self.root / MODELS_CONFIG_FILE}: {first_line(e)}; "
                          "still serving the previous config")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_grpc(servables: Servables, *, host: str = "127.0.0.1", port: int = 0,
               max_message_bytes: int = DEFAULT_MAX_REQUEST_MB * MiB,
               max_concurrent: int = DEFAULT_MAX_CONCURRENT, root: Path | None = None) -> tuple[grpc.Server, int]:
    """PredictionService and ModelService on host:port (0: a free port); returns the
    started server and its port. Stop it with ``server.stop(grace)``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="serve-grpc"),
                         maximum_concurrent_rpcs=max_concurrent,
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)])  # a port in use is an error, not shared
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(servables), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(servables, root), server)
    try:
        bound = server.add_insecure_port(_address(host, port))
    except RuntimeError:
        bound = 0
    if not bound:
        raise ServeError(f"cannot listen on {_address(host, port)} for gRPC (--grpc-port, --host)")
    server.start()
    return server, bound


# ---------------------------------------------------------------- REST: JSON <-> tensors (util/json_tensor.cc)

_INT_RANGES = {  # rapidjson's IsInt / IsInt64 / IsUint / IsUint64, per DataType (AddValueToTensor)
    types_pb2.DT_INT32: (-2**31, 2**31 - 1), types_pb2.DT_INT16: (-2**31, 2**31 - 1),
    types_pb2.DT_INT8: (-2**31, 2**31 - 1), types_pb2.DT_UINT8: (-2**31, 2**31 - 1),
    types_pb2.DT_INT64: (-2**63, 2**63 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_JSON_OUTPUT_TYPES = {np.dtype(t) for t in ("float32", "float64", "int32", "int16", "int8", "uint8", "int64",
                                            "bool", "uint32", "uint64")}
_DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes


def _json_type(value: Any) -> str:
    """JsonTypeString."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _debug(value: Any) -> str:
    """JsonValueToDebugString: rapidjson's pretty form (arrays on one line), cut near 256 bytes."""
    parts: list[str] = []
    size = [0]

    def put(text: str) -> None:
        if size[0] < _DEBUG_LIMIT:
            parts.append(text)
            size[0] += len(text)

    def walk(item: Any, depth: int) -> None:
        if size[0] >= _DEBUG_LIMIT:
            return
        if isinstance(item, list):
            put("[")
            for i, element in enumerate(item):
                put(", " if i else "")
                walk(element, depth)
            put("]")
        elif isinstance(item, dict) and item:
            put("{")
            for i, (key, element) in enumerate(item.items()):
                put(("," if i else "") + "\n" + "    " * (depth + 1) + json.dumps(key) + ": ")
                walk(element, depth + 1)
            put("\n" + "    " * depth + "}")
        else:
            put(json.dumps(item))

    walk(value, 0)
    return "".join(parts)


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: {_dtype_name(dtype)}")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64_decode(value: Any) -> bytes:
    """JsonDecodeBase64Object: {"b64": "<standard base64, padding optional>"}."""
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    text = value["b64"].strip()
    if "=" not in text:
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _json_scalar(value: Any, dtype: int) -> Any:
    """AddValueToTensor: a JSON value of the kind the DataType takes."""
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return _b64_decode(value)
        raise _type_error(value, dtype)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        ok = number
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif dtype == types_pb2.DT_STRING:
        ok = isinstance(value, str)
        value = value.encode("utf-8", "surrogatepass") if ok else value
    elif dtype == types_pb2.DT_BOOL:
        ok = isinstance(value, bool)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {_debug(value)} to type: {_dtype_name(dtype)}")
    if not ok:
        raise _type_error(value, dtype)
    return value


def _dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: the sizes of the first list at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: Sequence[int], dtype: int, out: list) -> None:
    """FillTensorProto: every list of a level has that level's size; values sit at the last level."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                           f"Expected at level: {rank}")
        out.append(_json_scalar(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                       f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _array(values: list, shape: Sequence[int], dtype: int) -> np.ndarray:
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    numpy_type = tf.dtypes.as_dtype(dtype).as_numpy_dtype
    if dtype in _INT_RANGES:  # C++ narrows int_val into int8/uint8 as a cast does
        wide = np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64
        return np.array(values, dtype=wide).astype(numpy_type).reshape(shape)
    return np.array(values, dtype=numpy_type).reshape(shape)


def json_tensor(value: Any, dtype: int) -> np.ndarray:
    """One tensor in its natural nested JSON form, as TF Serving parses it."""
    shape = _dense_shape(value)
    values: list = []
    _fill(value, 0, shape, dtype, values)
    return _array(values, shape, dtype)


def _status_text(error: ServingError) -> str:
    return f"{error.code.name}: {error.message}"  # absl::Status::ToString


def _rest_rows(instances: list, types: Mapping[str, int]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: a list of values (one input) or of objects keyed by
    every input; all items of one input share a shape, batched along a new first axis."""
    if not isinstance(instances[0], dict) and len(types) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input tensors required "
                       "as per tensorinfo_map")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    columns: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    for i, item in enumerate(instances):
        is_object = isinstance(item, dict) and not _is_b64(item)
        if objects and not is_object:
            raise _invalid(f"Expecting object but got list at item {i} of input list")
        if not objects and is_object:
            raise _invalid(f"Expecting value/list but got object at item {i} of input list")
        named = item if objects else {next(iter(sorted(types))): item}
        for name, value in named.items():
            try:
                _add_instance_item(value, name, types, columns, shapes)
            except ServingError as e:
                where = f" key: {name}" if objects else ""
                raise _invalid(f"Failed to process element: {i}{where} of 'instances' list. "
                               f"Error: {_status_text(e)}") from None
        if objects and set(item) != set(types):
            raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: {_debug(item)} keys must "
                           f"be equal to: {','.join(sorted(types))}")
    return {name: _array(values, [len(instances), *shapes[name]], types[name]) for name, values in columns.items()}


def _add_instance_item(value: Any, name: str, types: Mapping[str, int], columns: dict[str, list],
                       shapes: dict[str, list[int]]) -> None:
    """AddInstanceItem: one input of one instance, the same size and shape as the first's."""
    if name not in types:
        raise _invalid(f"JSON object: does not have named input: {name}")
    shape = _dense_shape(value)
    values: list = []
    _fill(value, 0, shape, types[name], values)
    if name not in shapes:
        shapes[name], columns[name] = shape, []
    elif len(values) != int(np.prod(shapes[name], dtype=np.int64)):
        raise _invalid(f"Expecting tensor size: {int(np.prod(shapes[name], dtype=np.int64))} but got: {len(values)}")
    elif shape != shapes[name]:
        raise _invalid(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}")
    columns[name].extend(values)


def _rest_columns(inputs: Any, types: Mapping[str, int], *, strict: bool) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: the value of the single input, or an object keyed by input."""
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(types) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required "
                           "as per tensorinfo_map")
        name = next(iter(types))
        return {name: json_tensor(inputs, types[name])}
    tensors = {}
    for name in sorted(types):
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(inputs[name], types[name])
    extra = sorted(set(inputs) - set(types))
    if strict and extra:
        raise _invalid(f"'inputs' names {', '.join(map(repr, extra))}, which the signature does not have (its inputs: "
                       f"{', '.join(sorted(types))}); TF Serving would ignore them, this stand-in refuses them")
    return tensors


def rest_predict_inputs(body: Mapping[str, Any], types: Mapping[str, int], *,
                        strict: bool = True) -> tuple[dict[str, np.ndarray], bool]:
    """(inputs, columnar) from a documented REST Predict body (FillPredictRequestFromJson):
    exactly one of "instances" (row format) and "inputs" (columnar); ``types`` maps each
    input alias to its DataType. DT_STRING values are JSON strings or {"b64": ...}."""
    if "instances" in body and "inputs" in body:
        raise _invalid(f"JSON Value: {_debug(body)} Not formatted correctly expecting only one of 'inputs' or "
                       "'instances' keys to exist ")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {_debug(body)} Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {_debug(body)} No values in 'instances' array")
        return _rest_rows(instances, types), False
    if "inputs" in body:
        return _rest_columns(body["inputs"], types, strict=strict), True
    raise _invalid("Missing 'inputs' or 'instances' key")


def _is_bytes_output(alias: str, array: np.ndarray) -> bool:
    """IsNamedTensorBytes: a string output whose alias ends in _bytes goes out as {"b64": ...}."""
    return array.dtype == object and alias.endswith("_bytes")


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (TF Serving's WriteDecimal
    writes float32s without double's noise digits: 0.1, not 0.10000000149011612)."""
    return float(str(np.float32(value)))


def _json_values(array: np.ndarray, *, as_bytes: bool) -> Any:
    """The tensor as nested JSON lists (AddTensorValues)."""
    if array.dtype == object:
        flat = [{"b64": base64.b64encode(x).decode("ascii")} if as_bytes else x.decode("utf-8", "replace")
                for x in array.ravel()]
    elif array.dtype == np.float32:
        flat = [_float32(x) for x in array.ravel()]
    elif array.dtype in _JSON_OUTPUT_TYPES:
        flat = array.ravel().tolist()
    else:
        raise _invalid(f"Failed to write JSON value for tensor type: {tf.as_dtype(array.dtype).name}")
    if array.ndim == 0:
        return flat[0]
    nested = np.empty(len(flat), dtype=object)
    nested[:] = flat
    return nested.reshape(array.shape).tolist()


def rest_predict_response(outputs: Mapping[str, np.ndarray], *, columnar: bool) -> dict[str, Any]:
    """MakeJsonFromTensors: {"predictions": [...]} for a row request, {"outputs": ...} for a
    columnar one; a single output goes without its name, several as objects keyed by alias."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    if not columnar:
        batch = None
        for alias, array in outputs.items():
            if array.ndim == 0:
                raise _invalid(f"Tensor name: {alias} has no shape information ")
            if batch is not None and array.shape[0] != batch:
                raise _invalid(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
            batch = array.shape[0]
    values = {alias: _json_values(array, as_bytes=_is_bytes_output(alias, array)) for alias, array in outputs.items()}
    key = "outputs" if columnar else "predictions"
    if len(values) == 1:
        return {key: next(iter(values.values()))}
    if columnar:
        return {key: values}
    return {key: [{alias: rows[i] for alias, rows in values.items()} for i in range(batch or 0)]}


_FEATURE_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _feature_value(value: Any, name: str, feature: Any) -> None:
    """AddValueToFeature: bools and whole numbers are int64, decimals float, strings and
    {"b64": ...} bytes; one kind per feature."""
    def kind(wanted: str) -> Any:
        current = feature.WhichOneof("kind")
        if current not in (None, wanted):
            raise _invalid(f"Unexpected element type in feature: {name} expecting type: {_FEATURE_KINDS[current]}")
        return getattr(feature, wanted).value

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise _invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if isinstance(value, bool):
        kind("int64_list").append(int(value))
    elif isinstance(value, dict):
        kind("bytes_list").append(_b64_decode(value))
    elif isinstance(value, str):
        kind("bytes_list").append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float) or not -2**63 <= value < 2**64:  # rapidjson reads a huge integer as a double
        kind("float_list").append(float(value) if isinstance(value, float) or abs(value) < 2**1000 else float("inf"))
    else:
        values = kind("int64_list")
        if value >= 2**63:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        values.append(value)


def _json_example(value: Any, example: Any) -> None:
    """MakeExampleFromJsonObject: {feature: value or list of values}."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _feature_value(item, name, feature)


def rest_classify_input(body: Mapping[str, Any], target: input_pb2.Input, *, strict: bool = True) -> None:
    """FillClassifyRegressRequestFromJson: "examples" (a non-empty list of objects) and an
    optional "context" shared by all of them, into ``target``."""
    context = body.get("context")
    if "context" in body:
        _json_example(context, target.example_list_with_context.context)
    if "examples" not in body:
        raise _invalid(f"JSON Value: {_debug(body)} When method is classify, key 'examples' is expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {_debug(body)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {_debug(body)} 'examples' value is an empty array")
    listed = target.example_list_with_context.examples if "context" in body else target.example_list.examples
    for i, value in enumerate(examples):
        _json_example(value, listed.add())
        shared = sorted(set(value) & set(context)) if strict and isinstance(context, dict) else []
        if shared:
            raise _invalid(f"examples[{i}] repeats context feature(s) {', '.join(map(repr, shared))}: the documented "
                           "format says a context feature MUST NOT appear in an example (TF Serving would let the "
                           "example's value win)")


def rest_classify_response(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """MakeJsonFromClassificationResult: {"results": [[[label, score], ...], ...]} (the docs
    say "result"; the server writes "results")."""
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[c.label, _float32(c.score)] for c in item.classes] for item in result.classifications]}


# ---------------------------------------------------------------- REST: requests (http_rest_api_handler.cc)

_PREDICTION_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                              r":(?P<verb>classify|regress|predict)", re.IGNORECASE | re.ASCII)
_STATUS_PATH = re.compile(r"/v1/models(?:/(?P<name>[^/:]+))?(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                          r"(?:/(?P<sub>metadata))?", re.IGNORECASE | re.ASCII)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_KEYS = ("signature_name", "instances", "inputs")
_CLASSIFY_KEYS = ("signature_name", "context", "examples")


def _parse_json(body: bytes) -> dict[str, Any]:
    """ParseJson: a JSON object, or TF Serving's parse error."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _invalid(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    except json.JSONDecodeError as e:
        raise _invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:
        raise _invalid("JSON Parse error: nested too deeply") from None
    if not isinstance(document, dict):
        raise _invalid(f"JSON Value: {_debug(document)} Is not object")
    return document


def _json_signature_name(document: Mapping[str, Any]) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(f"JSON Value: {_debug(document)} not formatted correctly. 'signature_name' key must be a "
                       "string value.")
    return name


def _refuse_unknown_keys(document: Mapping[str, Any], known: Sequence[str]) -> None:
    """Stricter than TF Serving, which ignores them: a misspelt "signature_name" would
    otherwise run serving_default without a word."""
    unknown = [key for key in document if key not in known]
    if unknown:
        raise _invalid(f"unknown key(s) {', '.join(map(repr, unknown))} in the request body: the documented keys are "
                       f"{', '.join(known)} (TF Serving would ignore them; this stand-in refuses them)")


def _model_info(match: re.Match) -> tuple[str, int | None, str | None]:
    """ParseModelInfo: the URL-decoded name, the version as int64, the decoded label."""
    name = unquote(match["name"] or "")
    version = match["version"]
    if version is not None and int(version) > 2**63 - 1:
        raise _invalid(f"Failed to convert version: {version} to numeric.")
    label = unquote(match["label"]) if match["label"] is not None else None
    return name, int(version) if version is not None else None, label


def _model_spec(name: str, version: int | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


def _rest_predict(servables: Servables, name: str, version: int | None, label: str | None,
                  body: bytes, strict: bool) -> dict[str, Any]:
    document = _parse_json(body)
    signature_name = _json_signature_name(document)
    if strict:
        _refuse_unknown_keys(document, _PREDICT_KEYS)
    types = servables.input_types(name, signature_name, version=version, label=label)
    inputs, columnar = rest_predict_inputs(document, types, strict=strict)
    outputs, _ = servables.predict(name, signature_name, inputs, version=version, label=label)
    return rest_predict_response(outputs, columnar=columnar)


def _rest_classify(servables: Servables, name: str, version: int | None, label: str | None,
                   body: bytes, strict: bool) -> dict[str, Any]:
    document = _parse_json(body)
    request = classification_pb2.ClassificationRequest(model_spec=_model_spec(name, version, label))
    request.model_spec.signature_name = _json_signature_name(document)
    if strict:
        _refuse_unknown_keys(document, _CLASSIFY_KEYS)
    rest_classify_input(document, request.input, strict=strict)
    return rest_classify_response(servables.handle_classify(request).result)


def _rest_metadata(servables: Servables, spec: model_pb2.ModelSpec) -> dict[str, Any]:
    """ToJsonString(GetModelMetadataResponse): proto field names, fields without presence
    printed too, the SignatureDefMap unpacked from its Any."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=[SIGNATURE_DEF])
    response = servables.handle_metadata(request)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF].Unpack(signature_defs)
    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    return {"model_spec": json_format.MessageToDict(response.model_spec, **options),
            "metadata": {SIGNATURE_DEF: json_format.MessageToDict(signature_defs, **options)}}


def _rest_status(servables: Servables, spec: model_pb2.ModelSpec) -> dict[str, Any]:
    response = servables.handle_status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
    return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def _rest_dispatch(servables: Servables, method: str, path: str, body: bytes, strict: bool) -> dict[str, Any]:
    """HttpRestApiHandler::ProcessRequest."""
    malformed = _invalid(f"Malformed request: {method} {path}")
    if method == "POST":
        match = _PREDICTION_PATH.fullmatch(path)
        if not match:
            raise malformed
        name, version, label = _model_info(match)
        verb = match["verb"]
        if verb == "predict":
            return _rest_predict(servables, name, version, label, body, strict)
        if verb == "classify":
            return _rest_classify(servables, name, version, label, body, strict)
        if verb == "regress":
            raise ServingError(Code.UNIMPLEMENTED, "Regress is not served by this stand-in (exportkit.serve)")
        raise malformed
    if method == "GET":
        match = _STATUS_PATH.fullmatch(path)
        if not match:
            raise malformed
        name, version, label = _model_info(match)
        if not name:
            raise _invalid("Missing model name in request.")
        spec = _model_spec(name, version, label)
        return _rest_metadata(servables, spec) if match["sub"] == "metadata" else _rest_status(servables, spec)
    raise malformed


def rest_call(servables: Servables, method: str, path: str, body: bytes = b"", *,
              strict: bool = True) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) for one REST request, as TF Serving answers it; errors are
    {"error": message} with TF Serving's HTTP code for the status."""
    try:
        return 200, _rest_dispatch(servables, method, path, body, strict)
    except ServingError as e:
        return e.http_status, {"error": e.message}
    except RecursionError:
        return 400, {"error": "JSON Value nested too deeply"}


class _RestServer(ThreadingHTTPServer):
    """At most ``max_concurrent`` requests at once; the next ones get a 429 at once,
    without a thread of their own."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], servables: Servables, *, max_body_bytes: int, max_concurrent: int,
                 observe: Callable[[bytes], None] | None):
        self.servables = servables
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.observe = observe
        self._slots = threading.BoundedSemaphore(max_concurrent)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: Any) -> None:
        body = json.dumps({"error": f"more than {self.max_concurrent} requests at once: this stand-in refuses the "
                                    "rest (--max-concurrent-requests)"}).encode()
        head = (f"HTTP/1.0 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is not the server's error."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            super().handle_error(request, client_address)


class _RestHandler(BaseHTTPRequestHandler):
    server: _RestServer
    server_version = "exportkit-serve"
    timeout = 60  # a client that stalls mid-request gives its slot back

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def do_OPTIONS(self) -> None:  # noqa: N802
        """A CORS preflight: TF Serving accepts one with an http(s) Origin."""
        if re.match(r"https?://", self.headers.get("Origin", "")):
            return self._send(200, None)
        self._send(400, {"error": "Origin header is missing in CORS preflight"})

    def _answer(self) -> None:
        path = urlsplit(self.path).path
        if not _API_PATH.fullmatch(path):
            return self._send(404, {"error": f"Not Found: {self.command} {path} (the API is under /v1/)"})
        body = self._read_body()
        if body is None:
            return
        if self.server.observe is not None:
            self.server.observe(body)
        try:
            status, payload = rest_call(self.server.servables, self.command, path, body)
        except Exception as e:  # a bug here: answer, and show it where the server runs
            traceback.print_exc()
            status, payload = 500, {"error": f"exportkit.serve failed: {type(e).__name__}: {e}"}
        self._send(status, payload)

    def _read_body(self) -> bytes | None:
        """The body, or None once a refusal was sent: no chunked encoding, and at most
        max_body_bytes (checked before reading it)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, {"error": "chunked request bodies are not supported by this stand-in: send Content-Length"})
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        if not (text.strip().isascii() and text.strip().isdigit()):
            self._send(400, {"error": f"Content-Length {text!r} is not a number of bytes"})
            return None
        length = int(text)
        if length > self.server.max_body_bytes:
            self._send(413, {"error": f"request body of {length} bytes is over this stand-in's limit of "
                                      f"{self.server.max_body_bytes} bytes (--max-request-mb)"})
            return None
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _send(self, status: int, payload: Mapping[str, Any] | None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


def start_rest(servables: Servables, *, host: str = "127.0.0.1", port: int = 0,
               max_body_bytes: int = DEFAULT_MAX_REQUEST_MB * MiB, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
               observe: Callable[[bytes], None] | None = None) -> tuple[ThreadingHTTPServer, int]:
    """TF Serving's REST API on host:port (0: a free port), served from a daemon thread;
    returns the server and its port. ``observe`` sees each request body (tests assert on
    what a client sent). Stop it with ``server.shutdown(); server.server_close()``."""
    try:
        server = _RestServer((host, port), servables, max_body_bytes=max_body_bytes, max_concurrent=max_concurrent,
                             observe=observe)
    except OSError as e:
        raise ServeError(f"cannot listen on {_address(host, port)} for REST (--rest-port, --host): "
                         f"{e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="serve-rest", daemon=True).start()
    return server, server.server_address[1]


# ---------------------------------------------------------------- command line


def _port(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port in 0..65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in 0..86400")
    return value


def _positive(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exportkit.serve",
        description="A local stand-in for TF Serving (gRPC and REST) over an export root, to try clients and tests "
                    "without tensorflow_model_server. NOT a production server: one request at a time per model, "
                    "no batching, TLS or authentication.",
        epilog="It loads each version with TF's SavedModel loader and answers Predict, Classify, GetModelMetadata "
               "and GetModelStatus as TF Serving does. Serve real traffic with tensorflow/serving "
               "(docs/serving.md: \"Serving the export with TF Serving\").")
    parser.add_argument("root", type=Path, help="the serving root (export.root), holding models.config")
    parser.add_argument("--grpc-port", type=_port, default=DEFAULT_GRPC_PORT,
                        help="gRPC port (default 8500; 0: any free port)")
    parser.add_argument("--rest-port", type=_port, default=DEFAULT_REST_PORT,
                        help="REST port (default 8501; 0 turns REST off, as TF Serving's --rest_api_port=0 does)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--max-request-mb", type=_positive, default=DEFAULT_MAX_REQUEST_MB,
                        help="largest REST body or gRPC message, and request tensor, in MiB (default 64)")
    parser.add_argument("--max-concurrent-requests", type=_positive, default=DEFAULT_MAX_CONCURRENT,
                        help="requests in progress at once per API; more are refused (default 8)")
    parser.add_argument("--no-model-warmup", dest="warmup", action="store_false",
                        help="do not replay each version's assets.extra/tf_serving_warmup_requests at start "
                             "(TF Serving's --enable_model_warmup=false)")
    parser.add_argument("--poll-seconds", type=_seconds, default=DEFAULT_POLL_SECONDS, metavar="S",
                        help="re-read models.config every S seconds and load, unload and relabel versions as it "
                             "says (TF Serving's --model_config_file_poll_wait_seconds, off there by default); "
                             f"0: read it once (default {DEFAULT_POLL_SECONDS:g})")
    parser.add_argument("--enable-signature-method-name-check", action="store_true",
                        help="check signatures' method_name, as TF Serving's flag of that name does (off there too)")
    return parser


def _say(text: str) -> None:
    print(text, flush=True)


def _start(args: argparse.Namespace) -> tuple[Servables, list[Callable[[], None]], str]:
    """Load, then listen; the callables stop what was started. Returns a line naming the ports."""
    if not args.root.is_dir():
        raise ServeError(f"{args.root} is not a directory (the serving root, export.root)")
    limit = args.max_request_mb * MiB
    servables = Servables(read_models_config(args.root, note=_say), warmup=args.warmup,
                          method_name_check=args.enable_signature_method_name_check, max_tensor_bytes=limit, note=_say)
    stops: list[Callable[[], None]] = [servables.close]
    try:
        grpc_server, grpc_port = start_grpc(servables, host=args.host, port=args.grpc_port, max_message_bytes=limit,
                                            max_concurrent=args.max_concurrent_requests, root=args.root)
        stops.insert(0, lambda: grpc_server.stop(2).wait())
        ports = f"gRPC on {_address(args.host, grpc_port)}"
        if args.rest_port:
            rest_server, rest_port = start_rest(servables, host=args.host, port=args.rest_port, max_body_bytes=limit,
                                                max_concurrent=args.max_concurrent_requests)
            stops.insert(0, lambda: (rest_server.shutdown(), rest_server.server_close()))
            ports += f", REST on http://{_address(args.host, rest_port)}"
        if args.poll_seconds > 0:
            poller = ConfigPoller(args.root, servables, seconds=args.poll_seconds, note=_say).start()
            stops.insert(0, poller.stop)
    except BaseException:
        for stop in stops:
            stop()
        raise
    return servables, stops, ports


def _describe(servables: Servables) -> list[str]:
    """One line per loaded version, with its labels and signatures."""
    lines = []
    for loaded in servables.loaded_versions():
        labels = [label for label, v in sorted(servables.labels(loaded.name).items()) if v == loaded.version]
        tags = f" (labels: {', '.join(labels)})" if labels else ""
        lines.append(f"{loaded.name} version {loaded.version}{tags} from {loaded.path} "
                     f"(signatures: {', '.join(sorted(loaded.signatures))})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation warning is not the user's to act on
    try:
        servables, stops, ports = _start(args)
    except ExportkitError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in _describe(servables):
            _say(line)
        _say(f"{ports}: a stand-in for trying clients, not a production server; Ctrl-C or SIGTERM stops it")
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for halt in stops:
            halt()
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
