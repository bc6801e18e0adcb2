"""The client the notebook promised: images in, a table of top-k classes out.

Reads image files or URLs, turns each upright by its EXIF orientation
(``--no-exif-transpose`` keeps the stored pixels), resizes it to the model's
input size and JPEG-encodes it on the client side (``--send-original`` sends
the file's own bytes), sends all of them in one Predict request over gRPC (TF
Serving's PredictionService) or REST (``POST /v1/models/<name>:predict``), and
prints the classes with their names and probabilities.

    python client/resnet_client.py cat.jpg https://example.com/dog.jpg --server localhost:8500
    python client/resnet_client.py cat.jpg --rest --server localhost:8501

Every failure the user can fix (unreachable server, unknown model or signature,
an image the server rejects, a timeout, a file that is not an image or is too
large to decode) prints one line and exits 1; malformed options (--server,
--image-size) are refused by argparse, with its usage line, exit 2.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

INPUT_KEY = "images"
DEFAULT_PORTS = {"grpc": 8500, "rest": 8501}


class ClientError(Exception):
    """A problem the user can fix; printed as one line."""


@dataclass(frozen=True)
class Target:
    server: str  # host:port
    model_name: str
    signature_name: str
    timeout: float


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


# ------------------------------------------------------------------- gRPC


def predict_grpc(target: Target, images: Sequence[bytes]) -> dict[str, np.ndarray]:
    """One PredictRequest through TF Serving's PredictionService stub."""
    import grpc

    from .console import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = target.model_name
    request.model_spec.signature_name = target.signature_name
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    # Requests of a few MB of JPEGs exceed gRPC's 4 MiB default.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target.server, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=target.timeout)
        except grpc.RpcError as e:
            raise ClientError(_grpc_message(e, target)) from None
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def _grpc_message(error: Any, target: Target) -> str:
    import grpc

    code, details = error.code(), (error.details() or "").strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach TF Serving at {target.server} over gRPC: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {target.server} within {target.timeout:g}s (--timeout)"
    return _server_message(code.name, details, target)


def _server_message(code: str, details: str, target: Target) -> str:
    """TF Serving's own refusals, in the user's terms."""
    first = details.splitlines()[0] if details else code
    if code in ("NOT_FOUND", "404") or "Servable not found" in details:
        return f"the server has no model {target.model_name!r} (--model-name): {first}"
    if "signature" in details.lower() and "not found" in details.lower():
        return f"model {target.model_name!r} has no signature {target.signature_name!r} (--signature-name): {first}"
    if code in ("INVALID_ARGUMENT", "400"):
        return f"the server rejected the request: {first}"
    return f"the server answered {code}: {first}"


# ------------------------------------------------------------------- REST


def rest_request_body(signature_name: str, images: Sequence[bytes], *, columnar: bool = False) -> dict[str, Any]:
    """TF Serving's REST Predict body: binary inputs as {"b64": ...}, in the row
    ("instances") or columnar ("inputs") format."""
    encoded = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
    if columnar:
        return {"signature_name": signature_name, "inputs": {INPUT_KEY: encoded}}
    return {"signature_name": signature_name, "instances": [{INPUT_KEY: item} for item in encoded]}


def rest_url(target: Target) -> str:
    return f"http://{target.server}/v1/models/{target.model_name}:predict"


def parse_rest_response(body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"predictions": [{name: value}, ...]}`` (row) or ``{"outputs": {name: [...]}}``."""
    if "outputs" in body:
        return {key: np.asarray(value) for key, value in body["outputs"].items()}
    rows = body["predictions"]
    if not rows:
        return {}
    return {key: np.asarray([row[key] for row in rows]) for key in rows[0]}


def predict_rest(target: Target, images: Sequence[bytes], *, columnar: bool = False) -> dict[str, np.ndarray]:
    payload = json.dumps(rest_request_body(target.signature_name, images, columnar=columnar)).encode()
    request = urllib.request.Request(rest_url(target), data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=target.timeout) as response:
            return parse_rest_response(json.loads(response.read()))
    except urllib.error.HTTPError as e:
        raise ClientError(_server_message(str(e.code), _rest_error(e), target)) from None
    except (TimeoutError, socket.timeout):
        raise ClientError(f"no answer from {target.server} within {target.timeout:g}s (--timeout)") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (TimeoutError, socket.timeout)):
            raise ClientError(f"no answer from {target.server} within {target.timeout:g}s (--timeout)") from None
        raise ClientError(f"cannot reach TF Serving at {target.server} over REST: {e.reason}") from None


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


def results_table(sources: Sequence[str], outputs: Mapping[str, np.ndarray], labels: list[str] | None) -> Table:
    table = Table(title="Predictions", title_justify="left")
    for column in ("image", "rank", "class", "name", "probability"):
        table.add_column(column, justify="right" if column in ("rank", "class", "probability") else "left")
    classes, probabilities = outputs["classes"], outputs["probabilities"]
    names = outputs.get("class_names")
    for row, source in enumerate(sources):
        for rank, (index, probability) in enumerate(zip(classes[row], probabilities[row]), start=1):
            table.add_row(source if rank == 1 else "", str(rank), str(int(index)),
                          _name(int(index), rank - 1, row, names, labels), f"{float(probability):.4f}")
        table.add_section()
    return table


def _name(index: int, rank: int, row: int, names: np.ndarray | None, labels: list[str] | None) -> str:
    if names is not None:  # the model's own class_names output
        value = names[row][rank]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return ""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or http(s) URLs, sent as one batch")
    parser.add_argument("--server", type=server_address,
                        help="host:port (default localhost:8500 for gRPC, localhost:8501 for REST)")
    parser.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    parser.add_argument("--columnar", action="store_true", help='REST: send {"inputs": ...} instead of {"instances": ...}')
    parser.add_argument("--model-name", default="resnet", help="model_spec.name (export.model_name)")
    parser.add_argument("--signature-name", default="predict_images", help="model_spec.signature_name (signature.name)")
    parser.add_argument("--image-size", type=image_size, default=224,
                        help="resize to this square size before sending")
    parser.add_argument("--no-exif-transpose", dest="exif_transpose", action="store_false",
                        help="send the pixels as stored; by default each image is first turned upright "
                             "by its EXIF Orientation tag, as photo viewers show it")
    parser.add_argument("--send-original", action="store_true",
                        help="send the files' own bytes, not resized JPEGs (nor turned upright: TF's decoder "
                             "ignores EXIF)")
    parser.add_argument("--labels", default="imagenet",
                        help="class names: 'imagenet', a labels.txt (the export's assets.extra/labels.txt) or 'none'")
    parser.add_argument("--timeout", type=timeout_seconds, default=30.0, help="seconds to wait for the server")
    return parser


def main(argv: Sequence[str] | None = None, *, console: Console | None = None,
         errors: Console | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = console or Console()
    errors = errors or Console(stderr=True)
    protocol = "rest" if args.rest else "grpc"
    target = Target(server=args.server or f"localhost:{DEFAULT_PORTS[protocol]}", model_name=args.model_name,
                    signature_name=args.signature_name, timeout=args.timeout)
    try:
        labels = load_label_names(args.labels)
        images = prepare_images(args.images, image_size=args.image_size, send_original=args.send_original,
                                timeout=args.timeout, exif_transpose=args.exif_transpose)
        if args.rest:
            outputs = predict_rest(target, images, columnar=args.columnar)
        else:
            outputs = predict_grpc(target, images)
        if not {"classes", "probabilities"} <= set(outputs):
            raise ClientError(f"signature {target.signature_name!r} returned {sorted(outputs)}, "
                              "not the classes and probabilities of an exportkit top_k head")
    except ClientError as e:
        # Escaped and unwrapped: file names and server messages may hold [markup]
        # or :emoji: codes (localhost:abc: ...), and one line must stay one line.
        errors.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, emoji=False, soft_wrap=True)
        return 1
    console.print(results_table(args.images, outputs, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
