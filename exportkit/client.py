"""The client the notebook promised: images in, a table of top-k classes out.

Reads image files or URLs, turns each upright by its EXIF orientation
(``--no-exif-transpose`` keeps the stored pixels), resizes it to
``--image-size`` and JPEG-encodes it on the client side (``--send-original``
sends the file's own bytes), sends all of them in one request over gRPC (TF
Serving's PredictionService) or REST (``POST /v1/models/<name>:predict``), and
prints the classes with their names and probabilities.

    python client/resnet_client.py cat.jpg https://example.com/dog.jpg --server localhost:8500
    python client/resnet_client.py cat.jpg --rest --server localhost:8501
    python client/resnet_client.py cat.jpg dog.jpg --key a,b            # AI Platform style keys, echoed
    python client/resnet_client.py cat.jpg --classify                   # the Classify API
    python client/resnet_client.py cat.jpg --version-label stable       # or --version 3

What to send is asked of the server first (GetModelMetadata over gRPC,
``GET /v1/models/<name>/metadata`` over REST), not assumed:

* the signature: ``--signature-name``, else ``serving_default``, else
  ``predict_images``, else the model's only one (``--classify``:
  ``classification``, else the model's only Classify signature);
* its input of encoded images: ``--input-key``, else its one string [N] input
  other than the passthrough one (``--key-name``, default ``key``);
* the passthrough input: when the signature has one, each image's ``--key``
  value (default: the image argument itself) is sent in it, and the echoed
  value is printed in a ``key`` column;
* the names: the model's own ``class_names`` output when it has one, else
  ``--labels`` (default imagenet); Classify answers with names itself.

The image size is not in the signature (an encoded-image input has no pixel
shape), so ``--image-size`` (224) stays the client's choice: an export whose
preprocessing resizes (the ``vgg`` preset: shorter side to 256, then the
central 224) takes any size, and 224 only sets how much detail travels; one
that only crops or pads needs the size its preset crops to (``notebook``:
224; a 32-pixel model: 32). Where the server gives no metadata (an old server
or a proxy without the call), the client says so in one line on stderr and
assumes what it always did: signature ``predict_images``, input ``images``;
``--no-metadata`` skips the call.

Every failure the user can fix (unreachable server, unknown model, version,
label or signature, a signature that takes no encoded images, a --key count
that is not one per image, an image the server rejects, a timeout, a file
that is not an image or is too large to decode) prints one line and exits 1;
malformed or conflicting options (--server, --image-size, --version with
--version-label, --key with --classify) are refused by argparse, with its
usage line, exit 2.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# What the client assumes without the server's metadata (the seed notebook's export).
INPUT_KEY = "images"
FALLBACK_SIGNATURE = "predict_images"
DEFAULT_SIGNATURES = ("serving_default", "predict_images")  # tried in this order when the server is asked
CLASSIFY_SIGNATURE = "classification"
KEY_NAME = "key"
EXAMPLE_FEATURE = "image/encoded"
DEFAULT_PORTS = {"grpc": 8500, "rest": 8501}
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers


class ClientError(Exception):
    """A problem the user can fix; printed as one line."""


class MetadataUnavailable(Exception):
    """The server answered, but gave no signature metadata: the client falls back."""


@dataclass(frozen=True)
class Target:
    server: str  # host:port
    model_name: str
    signature_name: str
    timeout: float
    version: int | None = None  # ModelSpec.version; REST /versions/<v>
    version_label: str | None = None  # ModelSpec.version_label; REST /labels/<l>


# ----------------------------------------------------------------- images


def read_source(source: str, *, timeout: float) -> bytes:
    """The bytes of an image file or http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as e:
            raise ClientError(f"cannot download {source}: {getattr(e, 'reason', None) or e}") from None
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {source}: {e.strerror or e}") from None


def resize_to_jpeg(data: bytes, *, image_size: int, source: str, exif_transpose: bool = True,
                   quality: int = 95) -> bytes:
    """The image as an RGB JPEG of image_size x image_size (grayscale, CMYK,
    palette and alpha images converted first), upright by its EXIF Orientation
    unless exif_transpose is False."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            # Phones store pixels as the sensor read them and an Orientation tag
            # saying how to turn them; the model has to see what the user saw, and
            # the JPEG written below carries no EXIF, so turn the pixels here.
            upright = ImageOps.exif_transpose(image) if exif_transpose else image
            rgb = upright.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except Image.DecompressionBombError as e:
        raise ClientError(_too_large(source, e)) from None
    except UnidentifiedImageError:
        # PIL's own message names only the BytesIO it was given.
        raise ClientError(f"{source}: not an image PIL can read (unknown format; {len(data)} bytes "
                          f"starting {data[:8]!r})") from None
    except (OSError, ValueError) as e:
        raise ClientError(f"{source}: not an image PIL can read ({e})") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _too_large(source: str, error: Exception) -> str:
    """PIL refuses to decode more than twice Image.MAX_IMAGE_PIXELS (a header
    can claim gigapixels in a few hundred bytes); its message is the only place
    that says how many the header claims."""
    from PIL import Image

    claimed = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return f"{source}: {size}, over PIL's decompression-bomb limit of {limit:,} pixels; not decoding it"


def prepare_images(sources: Sequence[str], *, image_size: int, send_original: bool, timeout: float,
                   exif_transpose: bool = True) -> list[bytes]:
    images = []
    for source in sources:
        data = read_source(source, timeout=timeout)
        if not send_original:
            data = resize_to_jpeg(data, image_size=image_size, source=source, exif_transpose=exif_transpose)
        images.append(data)
    return images


# ------------------------------------------------------------- signatures


@dataclass(frozen=True)
class TensorSpec:
    dtype: str  # TF's DataTypeString: "string", "uint8", "float", ...
    shape: tuple[int, ...] | None  # None: unknown rank; -1: any size

    def __str__(self) -> str:
        dims = "..." if self.shape is None else ",".join(str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"

    @property
    def is_string_batch(self) -> bool:
        """string [N] (or of unknown rank): one encoded image, or one key, per request item."""
        return self.dtype == "string" and (self.shape is None or len(self.shape) == 1)


@dataclass(frozen=True)
class Signature:
    key: str
    method: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    def describe_inputs(self) -> str:
        return ", ".join(f"{alias} {spec}" for alias, spec in sorted(self.inputs.items())) or "none"

    def image_inputs(self, key_name: str) -> list[str]:
        """Its string [N] inputs other than the passthrough one: candidates for the images."""
        return [alias for alias, spec in sorted(self.inputs.items()) if spec.is_string_batch and alias != key_name]


@dataclass(frozen=True)
class Metadata:
    """What GetModelMetadata says about the version that would answer."""

    signatures: Mapping[str, Signature]
    version: int | None = None


def _dtype_name(name: str) -> str:
    """DT_STRING -> string, as TF Serving's messages name types."""
    return name[3:].lower() if name.startswith("DT_") else name.lower()


def metadata_from_proto(signature_defs: Any, version: int | None) -> Metadata:
    """From a tensorflow_serving SignatureDefMap (the gRPC answer, unpacked)."""
    from tensorflow.core.framework import types_pb2

    def spec(info: Any) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        try:
            dtype = _dtype_name(types_pb2.DataType.Name(info.dtype))
        except ValueError:
            dtype = str(info.dtype)
        return TensorSpec(dtype, shape)

    return Metadata({key: Signature(key, sig.method_name, {a: spec(i) for a, i in sig.inputs.items()},
                                    {a: spec(i) for a, i in sig.outputs.items()})
                     for key, sig in signature_defs.signature_def.items()}, version)


def metadata_from_json(body: Any) -> Metadata:
    """From TF Serving's REST metadata answer: ``{"model_spec": {..., "version": "2"},
    "metadata": {"signature_def": {"signature_def": {key: SignatureDef as JSON}}}}``."""
    try:
        defs = body["metadata"][SIGNATURE_DEF][SIGNATURE_DEF]
        signatures = {key: Signature(key, str(sig.get("method_name", "")),
                                     {a: _json_spec(i) for a, i in (sig.get("inputs") or {}).items()},
                                     {a: _json_spec(i) for a, i in (sig.get("outputs") or {}).items()})
                      for key, sig in defs.items()}
        version = (body.get("model_spec") or {}).get("version")
        return Metadata(signatures, int(version) if version not in (None, "") else None)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise MetadataUnavailable("its metadata answer holds no signature_def map") from None


def _json_spec(info: Mapping[str, Any]) -> TensorSpec:
    shape = info.get("tensor_shape") or {}
    dims = None if shape.get("unknown_rank") else tuple(int(d.get("size", 0)) for d in shape.get("dim") or [])
    dtype = info.get("dtype", "DT_INVALID")
    return TensorSpec(_dtype_name(dtype) if isinstance(dtype, str) else str(dtype), dims)


@dataclass(frozen=True)
class Plan:
    """What one run sends: the signature, and for Predict the images' input and the keys."""

    signature_name: str
    classify: bool = False
    input_key: str = INPUT_KEY
    key_name: str = KEY_NAME
    keys: Sequence[str] | None = None  # sent in the key_name input when not None
    signature: Signature | None = None  # None: no metadata
    version: int | None = None  # the version the metadata describes


def plan_request(metadata: Metadata | None, *, model_name: str, sources: Sequence[str], signature_name: str | None,
                 input_key: str | None, key_name: str, keys: Sequence[str] | None, classify: bool) -> Plan:
    """The request for ``sources``: from the server's metadata, or without it (None) from
    the options and the old assumptions (signature predict_images, input images)."""
    if metadata is None:
        name = signature_name or (CLASSIFY_SIGNATURE if classify else FALLBACK_SIGNATURE)
        return Plan(name, classify, input_key or INPUT_KEY, key_name, keys)
    signature = choose_signature(metadata, signature_name, model_name=model_name, classify=classify)
    if classify:  # the server judges whether it is a Classify signature, in its own words
        return Plan(signature.key, True, signature=signature, version=metadata.version)
    if signature.method in (CLASSIFY_METHOD, REGRESS_METHOD):
        api = "Classify" if signature.method == CLASSIFY_METHOD else "Regress"
        hint = "add --classify" if signature.method == CLASSIFY_METHOD else "this client calls Predict and Classify"
        raise ClientError(f"signature {signature.key!r} is for TF Serving's {api} API ({signature.method}), "
                          f"not Predict: {hint}")
    chosen = choose_image_input(signature, metadata, input_key=input_key, key_name=key_name)
    if not {"classes", "probabilities"} <= set(signature.outputs):
        raise ClientError(f"signature {signature.key!r} returns {sorted(signature.outputs)}, "
                          "not the classes and probabilities of an exportkit top_k head")
    takes_key = key_name in signature.inputs and key_name != chosen
    if keys is not None and not takes_key:
        raise ClientError(f"signature {signature.key!r} has no {key_name!r} input for --key (inputs: "
                          f"{signature.describe_inputs()}); --key-name names the passthrough input")
    if keys is None and takes_key:
        keys = list(sources)  # one per image, and the echo shows which answer is whose
    return Plan(signature.key, False, chosen, key_name, keys, signature, metadata.version)


def choose_signature(metadata: Metadata, requested: str | None, *, model_name: str, classify: bool) -> Signature:
    signatures = metadata.signatures
    name = requested
    if name is None and classify:
        classifiers = [key for key, sig in sorted(signatures.items()) if sig.method == CLASSIFY_METHOD]
        name = classifiers[0] if CLASSIFY_SIGNATURE not in signatures and len(classifiers) == 1 else CLASSIFY_SIGNATURE
    elif name is None:
        name = next((key for key in DEFAULT_SIGNATURES if key in signatures), None)
        if name is None:
            name = next(iter(signatures)) if len(signatures) == 1 else DEFAULT_SIGNATURES[0]
    if name not in signatures:
        listed = ", ".join(sorted(signatures)) or "none"
        raise ClientError(f"model {model_name!r} has no signature {name!r} (--signature-name); "
                          f"its signatures: {listed}")
    return signatures[name]


def choose_image_input(signature: Signature, metadata: Metadata, *, input_key: str | None, key_name: str) -> str:
    """--input-key if given (it must be a string input), else the one string [N] input
    that is not the passthrough one."""
    if input_key is not None:
        spec = signature.inputs.get(input_key)
        if spec is None:
            raise ClientError(f"signature {signature.key!r} has no input {input_key!r} (--input-key); its inputs: "
                              f"{signature.describe_inputs()}")
        if spec.dtype != "string":
            raise ClientError(f"input {input_key!r} of signature {signature.key!r} is {spec}, not encoded images "
                              "(string [-1]) (--input-key)")
        return input_key
    candidates = signature.image_inputs(key_name)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ClientError(f"signature {signature.key!r} has several string inputs ({', '.join(candidates)}); "
                          "name the images' one with --input-key (and a passthrough one with --key-name)")
    raise ClientError(f"signature {signature.key!r} takes no encoded images (inputs: {signature.describe_inputs()}); "
                      f"{_other_signatures(signature.key, metadata, key_name)}")


def _other_signatures(current: str, metadata: Metadata, key_name: str) -> str:
    """The hint after 'takes no encoded images': a default signature that does, else every
    Predict signature that does, and --classify where the model has a Classify signature."""
    taking = [key for key, sig in sorted(metadata.signatures.items())
              if key != current and sig.method not in (CLASSIFY_METHOD, REGRESS_METHOD)
              and len(sig.image_inputs(key_name)) == 1]
    preferred = [key for key in DEFAULT_SIGNATURES if key in taking][:1] or taking
    classify = any(sig.method == CLASSIFY_METHOD for sig in metadata.signatures.values())
    if preferred:
        return f"use --signature-name {' or '.join(preferred)}" + (", or --classify" if classify else "")
    return "use --classify" if classify else "this model takes no encoded images in any signature"


# ------------------------------------------------------------------- gRPC


def _serving_apis() -> Any:
    """tensorflow and the tensorflow_serving protos (which import it), TF's start-up lines silenced."""
    from .console import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    return tf


def _model_spec(spec: Any, target: Target, *, signature: bool = True) -> None:
    spec.name = target.model_name
    if signature:
        spec.signature_name = target.signature_name
    if target.version is not None:
        spec.version.value = target.version
    elif target.version_label is not None:
        spec.version_label = target.version_label


def _grpc_call(target: Target, method: str, request: Any, *, on_error: Callable[[Any], None] | None = None) -> Any:
    """One PredictionService call; an RpcError becomes a ClientError, after ``on_error``
    (which may raise something else) has seen it."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    # Requests of a few MB of JPEGs exceed gRPC's 4 MiB default.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target.server, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=target.timeout)
        except grpc.RpcError as e:
            if on_error is not None:
                on_error(e)
            raise ClientError(_grpc_message(e, target)) from None


def metadata_grpc(target: Target) -> Metadata:
    """GetModelMetadata with metadata_field signature_def; MetadataUnavailable where the
    server answers without it (UNIMPLEMENTED on a server that lacks the call, ...)."""
    _serving_apis()
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF])
    _model_spec(request.model_spec, target, signature=False)

    def fall_back(error: Any) -> None:
        details = (error.details() or "").strip()
        if not _is_fatal(error.code().name, details):
            raise MetadataUnavailable(f"GetModelMetadata: {error.code().name}: {_first_line(details)}")

    response = _grpc_call(target, "GetModelMetadata", request, on_error=fall_back)
    if SIGNATURE_DEF not in response.metadata:
        raise MetadataUnavailable("its GetModelMetadata answer holds no signature_def")
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata[SIGNATURE_DEF].Unpack(signature_defs):
        raise MetadataUnavailable(f"its signature_def is a {response.metadata[SIGNATURE_DEF].TypeName()}, "
                                  "not a SignatureDefMap")
    version = response.model_spec.version.value if response.model_spec.HasField("version") else None
    return metadata_from_proto(signature_defs, version)


def predict_grpc(target: Target, images: Sequence[bytes], *, input_key: str = INPUT_KEY,
                 passthrough: Mapping[str, Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    """One PredictRequest through TF Serving's PredictionService stub: the images under
    ``input_key``, each passthrough input (name -> one string per image) beside them."""
    tf = _serving_apis()
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, target)
    request.inputs[input_key].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    for name, values in (passthrough or {}).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto([v.encode("utf-8") for v in values], dtype=tf.string,
                                                           shape=[len(values)]))
    response = _grpc_call(target, "Predict", request)
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def classify_grpc(target: Target, images: Sequence[bytes], *, feature: str = EXAMPLE_FEATURE) -> dict[str, np.ndarray]:
    """One ClassificationRequest: an Input.example_list of tf.Examples, each image under
    ``feature``; returns ``classes`` (label strings) and ``scores``, [N, k] each."""
    _serving_apis()
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    _model_spec(request.model_spec, target)
    for image in images:
        request.input.example_list.examples.add().features.feature[feature].bytes_list.value.append(image)
    response = _grpc_call(target, "Classify", request)
    rows = [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]
    return _classification_arrays(rows)


def _classification_arrays(rows: Sequence[Sequence[tuple[str, float]]]) -> dict[str, np.ndarray]:
    classes = np.array([[label for label, _ in row] for row in rows], dtype=object)
    scores = np.array([[score for _, score in row] for row in rows], dtype=np.float32)
    return {"classes": classes.reshape(len(rows), -1) if rows else classes,
            "scores": scores.reshape(len(rows), -1) if rows else scores}


def _grpc_message(error: Any, target: Target) -> str:
    import grpc

    code, details = error.code(), (error.details() or "").strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach TF Serving at {target.server} over gRPC: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {target.server} within {target.timeout:g}s (--timeout)"
    return _server_message(code.name, details, target)


def _is_fatal(code: str, details: str) -> bool:
    """A metadata failure that the Predict would meet too (server unreachable, slow or busy;
    no such model, version or label): reported, not fallen back from."""
    # Not a bare HTTP 404: a proxy, or a server without the metadata route, answers that too.
    return (code in ("NOT_FOUND", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "429")
            or "Servable not found" in details
            or "servable version label" in details or "ModelSpec has no name" in details)


def _first_line(details: str) -> str:
    """The message's first line, without the proto dump some messages end in
    ("No classification inputs found in SignatureDef: inputs {")."""
    first = details.splitlines()[0] if details else ""
    dump = re.fullmatch(r"(.*?):\s+\w+ \{\s*", first)
    return dump.group(1) if dump else first


def _server_message(code: str, details: str, target: Target) -> str:
    """TF Serving's own refusals, in the user's terms."""
    first = _first_line(details) or code
    if "Servable not found" in details and "Specific(" in details:
        return f"the server has no version {target.version} of model {target.model_name!r} (--version): {first}"
    if "servable version label" in details:
        return (f"the server has no version label {target.version_label!r} for model {target.model_name!r} "
                f"(--version-label): {first}")
    if code in ("NOT_FOUND", "404") or "Servable not found" in details:
        return f"the server has no model {target.model_name!r} (--model-name): {first}"
    # Predict over gRPC and REST, and Classify; not "Signature input alias: ... not found in request".
    if re.search(r'signature (key|name:?) "[^"]*" not found|No signature was found with the name', details):
        return f"model {target.model_name!r} has no signature {target.signature_name!r} (--signature-name): {first}"
    if code in ("INVALID_ARGUMENT", "400"):
        return f"the server rejected the request: {first}"
    return f"the server answered {code}: {first}"


# ------------------------------------------------------------------- REST


def rest_model_path(target: Target) -> str:
    """``/v1/models/<name>[/versions/<v>|/labels/<l>]``, names URL-quoted."""
    path = f"/v1/models/{urllib.parse.quote(target.model_name, safe='')}"
    if target.version is not None:
        path += f"/versions/{target.version}"
    elif target.version_label is not None:
        path += f"/labels/{urllib.parse.quote(target.version_label, safe='')}"
    return path


def rest_url(target: Target, verb: str = "predict") -> str:
    return f"http://{target.server}{rest_model_path(target)}:{verb}"


def rest_metadata_url(target: Target) -> str:
    return f"http://{target.server}{rest_model_path(target)}/metadata"


def rest_request_body(signature_name: str, images: Sequence[bytes], *, columnar: bool = False,
                      input_key: str = INPUT_KEY, passthrough: Mapping[str, Sequence[str]] | None = None
                      ) -> dict[str, Any]:
    """TF Serving's REST Predict body: binary inputs as {"b64": ...}, passthrough strings
    as they are, in the row ("instances") or columnar ("inputs") format."""
    encoded = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
    passthrough = dict(passthrough or {})
    if columnar:
        return {"signature_name": signature_name, "inputs": {input_key: encoded, **passthrough}}
    return {"signature_name": signature_name,
            "instances": [{input_key: item, **{name: values[i] for name, values in passthrough.items()}}
                          for i, item in enumerate(encoded)]}


def rest_classify_body(signature_name: str, images: Sequence[bytes], *, feature: str = EXAMPLE_FEATURE
                       ) -> dict[str, Any]:
    """TF Serving's REST Classify body: one example per image, the bytes under ``feature``."""
    return {"signature_name": signature_name,
            "examples": [{feature: {"b64": base64.b64encode(image).decode("ascii")}} for image in images]}


def parse_rest_response(body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"predictions": [{name: value}, ...]}`` (row) or ``{"outputs": {name: [...]}}``; a
    signature with a single output is answered without its name (kept as "")."""
    if not isinstance(body, dict) or not ({"outputs", "predictions"} & set(body)):
        raise ClientError(f"the server's Predict answer has neither \"predictions\" nor \"outputs\": {str(body)[:80]}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            return {"": np.asarray(outputs)}
        return {key: np.asarray(value) for key, value in outputs.items()}
    rows = body["predictions"]
    if not rows:
        return {}
    if not isinstance(rows[0], dict):
        return {"": np.asarray(rows)}
    return {key: np.asarray([row[key] for row in rows]) for key in rows[0]}


def parse_rest_classification(body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"results": [[[label, score], ...], ...]}`` (TF Serving writes "results")."""
    try:
        return _classification_arrays([[(str(label), float(score)) for label, score in row] for row in body["results"]])
    except (KeyError, TypeError, ValueError):
        raise ClientError(f"the server's Classify answer is not {{\"results\": [[[label, score], ...], ...]}}: "
                          f"{str(body)[:80]}") from None


def _rest_call(target: Target, url: str, payload: Mapping[str, Any] | None = None, *,
               on_error: Callable[[int, str], None] | None = None) -> Any:
    """GET (no payload) or POST of JSON; the answer's JSON. An HTTP error becomes a
    ClientError after ``on_error`` (which may raise something else) has seen it."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=target.timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        message = _rest_error(e)
        if on_error is not None:
            on_error(e.code, message)
        raise ClientError(_server_message(str(e.code), message, target)) from None
    except (TimeoutError, socket.timeout):
        raise ClientError(f"no answer from {target.server} within {target.timeout:g}s (--timeout)") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (TimeoutError, socket.timeout)):
            raise ClientError(f"no answer from {target.server} within {target.timeout:g}s (--timeout)") from None
        raise ClientError(f"cannot reach TF Serving at {target.server} over REST: {e.reason}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise _NotJson(f"the answer from {url} is not JSON ({len(text)} bytes starting {text[:40]!r})") from None


class _NotJson(ClientError):
    pass


def metadata_rest(target: Target) -> Metadata:
    """GET /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata."""
    def fall_back(status: int, message: str) -> None:
        if not _is_fatal(str(status), message):
            raise MetadataUnavailable(f"GET {rest_model_path(target)}/metadata: HTTP {status}: {_first_line(message)}")

    try:
        body = _rest_call(target, rest_metadata_url(target), on_error=fall_back)
    except _NotJson as e:
        raise MetadataUnavailable(str(e)) from None
    return metadata_from_json(body)


def predict_rest(target: Target, images: Sequence[bytes], *, columnar: bool = False, input_key: str = INPUT_KEY,
                 passthrough: Mapping[str, Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    body = rest_request_body(target.signature_name, images, columnar=columnar, input_key=input_key,
                             passthrough=passthrough)
    return parse_rest_response(_rest_call(target, rest_url(target), body))


def classify_rest(target: Target, images: Sequence[bytes], *, feature: str = EXAMPLE_FEATURE) -> dict[str, np.ndarray]:
    body = rest_classify_body(target.signature_name, images, feature=feature)
    return parse_rest_classification(_rest_call(target, rest_url(target, "classify"), body))


def _rest_error(error: urllib.error.HTTPError) -> str:
    text = error.read().decode("utf-8", "replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or error.reason


# ------------------------------------------------------------------ output


def load_label_names(option: str) -> list[str] | None:
    """--labels: a built-in list, a labels.txt (e.g. the export's
    assets.extra/labels.txt), or "none"."""
    if option == "none":
        return None
    from .errors import ConfigError
    from .labels import load_labels

    try:
        return load_labels(option)
    except ConfigError as e:
        raise ClientError(str(e).replace("model.labels", "--labels")) from None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def results_table(sources: Sequence[str], outputs: Mapping[str, np.ndarray], labels: list[str] | None, *,
                  key_name: str = KEY_NAME, caption: str | None = None) -> Table:
    """One block of k rows per image; a ``key`` column when the answer echoes a passthrough ``key_name``."""
    table = Table(title="Predictions", title_justify="left", caption=caption, caption_justify="left")
    keys = outputs.get(key_name)
    columns = ["image", *([key_name] if keys is not None else []), "rank", "class", "name", "probability"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("rank", "class", "probability") else "left")
    classes, probabilities = outputs["classes"], outputs["probabilities"]
    names = outputs.get("class_names")
    for row, source in enumerate(sources):
        for rank, (index, probability) in enumerate(zip(classes[row], probabilities[row]), start=1):
            first = [source, *([_text(keys[row])] if keys is not None else [])]
            table.add_row(*(first if rank == 1 else [""] * len(first)), str(rank), str(int(index)),
                          _name(int(index), rank - 1, row, names, labels), f"{float(probability):.4f}")
        table.add_section()
    return table


def classification_table(sources: Sequence[str], outputs: Mapping[str, np.ndarray], *,
                         caption: str | None = None) -> Table:
    """The Classify API's answer: each image's classes (the model's label strings) and scores."""
    table = Table(title="Classifications", title_justify="left", caption=caption, caption_justify="left")
    for column in ("image", "rank", "class", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for row, source in enumerate(sources):
        for rank, (label, score) in enumerate(zip(outputs["classes"][row], outputs["scores"][row]), start=1):
            table.add_row(source if rank == 1 else "", str(rank), _text(label), f"{float(score):.4f}")
        table.add_section()
    return table


def _name(index: int, rank: int, row: int, names: np.ndarray | None, labels: list[str] | None) -> str:
    if names is not None:  # the model's own class_names output
        return _text(names[row][rank])
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return ""


def _caption(target: Target, plan: Plan) -> str:
    """Which model, version and signature answered (as far as the client knows)."""
    version = plan.version if plan.version is not None else target.version
    where = f"version {version}" if version is not None else (
        f"label {target.version_label}" if target.version_label is not None else "latest version")
    api = "Classify" if plan.classify else "Predict"
    return f"model {target.model_name}, {where}, signature {plan.signature_name} ({api})"


# -------------------------------------------------------------------- main


def server_address(text: str) -> str:
    """--server: host:port, checked here because gRPC dials 443 for an empty or
    missing port and REST 80, and both report a bad one as unreachable."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is a URL; give host:port, e.g. localhost:8500")
    host, colon, port = text.rpartition(":")
    if not (colon and host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port with a port in 1..65535, e.g. localhost:8500")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise argparse.ArgumentTypeError(f"{text!r}: an IPv6 host goes in brackets, e.g. [::1]:8500")
    return text


MAX_IMAGE_SIZE = 4096  # a 4096x4096 RGB image is 48 MiB; no ImageNet model eats more


def image_size(text: str) -> int:
    """--image-size: caught here, as PIL's 'height and width must be > 0' would blame the
    image, and a huge size would allocate gigabytes before failing."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pixels in 1..{MAX_IMAGE_SIZE}")
    return value


def timeout_seconds(text: str) -> float:
    """--timeout: urllib takes no negative or infinite timeout (a ValueError traceback)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def version_number(text: str) -> int:
    """--version: a model version is an int64 (TF Serving's ModelSpec.version)."""
    if not (text.isascii() and text.isdigit() and int(text) <= 2**63 - 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (0..{2**63 - 1})")
    return int(text)


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name")
    return text


def split_keys(values: Sequence[str] | None) -> list[str] | None:
    """--key a,b --key c -> [a, b, c]; None when no --key was given."""
    if values is None:
        return None
    return [key for value in values for key in value.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The signature, its image input and its passthrough input are read\n"
                                            "from the server's GetModelMetadata answer unless --no-metadata\n"
                                            "(then: signature predict_images, input images).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or http(s) URLs, sent as one batch")
    parser.add_argument("--server", type=server_address,
                        help="host:port (default localhost:8500 for gRPC, localhost:8501 for REST)")
    parser.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    parser.add_argument("--columnar", action="store_true", help='REST: send {"inputs": ...} instead of {"instances": ...}')
    parser.add_argument("--model-name", default="resnet", type=nonempty, help="model_spec.name (export.model_name)")
    versions = parser.add_mutually_exclusive_group()
    versions.add_argument("--version", type=version_number,
                          help="ask this version (ModelSpec.version; REST /versions/N); default: the latest served")
    versions.add_argument("--version-label", type=nonempty, metavar="LABEL",
                          help="ask the version with this label in models.config (ModelSpec.version_label; "
                               "REST /labels/LABEL)")
    parser.add_argument("--signature-name", metavar="NAME",
                        help="model_spec.signature_name (signature.name); default: serving_default, else "
                             "predict_images, else the model's only signature (with --no-metadata: predict_images); "
                             "with --classify: classification")
    parser.add_argument("--input-key", metavar="NAME",
                        help="the signature's input of encoded images (signature.input_key); default: its one string "
                             "input other than the passthrough one (with --no-metadata: images)")
    parser.add_argument("--key", action="append", metavar="VALUE",
                        help="a passthrough value per image, echoed back in a key column (repeat it, or give a "
                             "comma list: --key a,b); default, where the signature takes a passthrough input: each "
                             "image's argument")
    parser.add_argument("--key-name", default=KEY_NAME, type=nonempty, metavar="NAME",
                        help="the passthrough input --key goes in (signature.passthrough; default key)")
    parser.add_argument("--classify", action="store_true",
                        help="call the Classify API (signature.extra=[classify]) with one tf.Example per image, "
                             "and print the label strings and scores it answers")
    parser.add_argument("--example-feature", default=None, metavar="NAME",
                        help=f"--classify: the tf.Example feature holding the image (signature.example_feature; "
                             f"default {EXAMPLE_FEATURE})")
    parser.add_argument("--no-metadata", dest="metadata", action="store_false",
                        help="do not ask the server for the signature (GetModelMetadata); assume --signature-name, "
                             "--input-key or their old defaults")
    parser.add_argument("--image-size", type=image_size, default=224,
                        help="resize to this square size before sending (default 224); not in the signature: an "
                             "export that resizes (vgg preprocessing) takes any size, one that only crops or pads "
                             "needs its preset's size (notebook: 224)")
    parser.add_argument("--no-exif-transpose", dest="exif_transpose", action="store_false",
                        help="send the pixels as stored; by default each image is first turned upright "
                             "by its EXIF Orientation tag, as photo viewers show it")
    parser.add_argument("--send-original", action="store_true",
                        help="send the files' own bytes, not resized JPEGs (nor turned upright: TF's decoder "
                             "ignores EXIF)")
    parser.add_argument("--labels", default="imagenet",
                        help="class names where the model has no class_names output: 'imagenet', a labels.txt "
                             "(the export's assets.extra/labels.txt) or 'none'")
    parser.add_argument("--timeout", type=timeout_seconds, default=30.0, help="seconds to wait for the server")
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that contradict each other: argparse's usage line, exit 2."""
    if args.classify:
        for option, given in (("--key", args.key is not None), ("--input-key", args.input_key is not None),
                              ("--columnar", args.columnar)):
            if given:
                parser.error(f"{option} is for Predict: a Classify request carries only tf.Examples (--classify)")
    elif args.example_feature is not None:
        parser.error("--example-feature is for --classify")


def main(argv: Sequence[str] | None = None, *, console: Console | None = None,
         errors: Console | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    console = console or Console()
    errors = errors or Console(stderr=True)

    def say(prefix: str, text: str) -> None:
        # Escaped and unwrapped: file names and server messages may hold [markup]
        # or :emoji: codes (localhost:abc: ...), and one line must stay one line.
        errors.print(f"{prefix} {escape(text)}", highlight=False, emoji=False, soft_wrap=True)

    protocol = "rest" if args.rest else "grpc"
    target = Target(server=args.server or f"localhost:{DEFAULT_PORTS[protocol]}", model_name=args.model_name,
                    signature_name=args.signature_name or "", timeout=args.timeout, version=args.version,
                    version_label=args.version_label)
    try:
        keys = split_keys(args.key)
        if keys is not None and len(keys) != len(args.images):
            raise ClientError(f"{len(keys)} --key value{'s' if len(keys) != 1 else ''} for {len(args.images)} "
                              f"image{'s' if len(args.images) != 1 else ''}: give one per image")
        labels = None if args.classify else load_label_names(args.labels)
        images = prepare_images(args.images, image_size=args.image_size, send_original=args.send_original,
                                timeout=args.timeout, exif_transpose=args.exif_transpose)
        metadata = None
        if args.metadata:
            try:
                metadata = (metadata_rest if args.rest else metadata_grpc)(target)
            except MetadataUnavailable as e:
                fallback = args.signature_name or (CLASSIFY_SIGNATURE if args.classify else FALLBACK_SIGNATURE)
                assumed = f"signature {fallback!r}" + ("" if args.classify else
                                                       f" with input {args.input_key or INPUT_KEY!r}")
                say("[yellow]note:[/]", f"no signature metadata from the server ({e}); assuming {assumed} "
                                        "(--no-metadata skips asking)")
        plan = plan_request(metadata, model_name=args.model_name, sources=args.images,
                            signature_name=args.signature_name, input_key=args.input_key, key_name=args.key_name,
                            keys=keys, classify=args.classify)
        target = dataclasses.replace(target, signature_name=plan.signature_name)
        if plan.classify:
            feature = args.example_feature or EXAMPLE_FEATURE
            try:
                outputs = (classify_rest if args.rest else classify_grpc)(target, images, feature=feature)
            except ClientError as e:
                raise ClientError(f"{e}{_classify_hint(plan, metadata)}") from None
            table = classification_table(args.images, outputs, caption=_caption(target, plan))
        else:
            passthrough = {plan.key_name: list(plan.keys)} if plan.keys is not None else {}
            if args.rest:
                outputs = predict_rest(target, images, columnar=args.columnar, input_key=plan.input_key,
                                       passthrough=passthrough)
            else:
                outputs = predict_grpc(target, images, input_key=plan.input_key, passthrough=passthrough)
            if not {"classes", "probabilities"} <= set(outputs):
                raise ClientError(f"signature {target.signature_name!r} returned {sorted(outputs)}, "
                                  "not the classes and probabilities of an exportkit top_k head")
            table = results_table(args.images, outputs, labels, key_name=args.key_name, caption=_caption(target, plan))
    except ClientError as e:
        say("[bold red]error:[/]", str(e))
        return 1
    console.print(table)
    return 0


def _classify_hint(plan: Plan, metadata: Metadata | None) -> str:
    """After the server's refusal of a Classify request to a Predict signature."""
    if metadata is None or plan.signature is None or plan.signature.method == CLASSIFY_METHOD:
        return ""
    classifiers = sorted(key for key, sig in metadata.signatures.items() if sig.method == CLASSIFY_METHOD)
    kind = "a Predict" if plan.signature.method == PREDICT_METHOD else f"a {plan.signature.method or 'untyped'}"
    return (f" (signature {plan.signature_name!r} is {kind} signature; --classify needs a Classify one: "
            f"{', '.join(classifiers) if classifiers else 'this model has none'})")


if __name__ == "__main__":
    sys.exit(main())
