"""What TF Serving reads beside the SavedModel, built from its own protos.

* ``<version>/assets.extra/tf_serving_warmup_requests``: a TFRecord of
  PredictionLogs that the server replays when it loads the version, so the first
  client request does not pay for graph initialization;
* ``<export.root>/models.config``: a ``model_config_list`` naming every model
  under the serving root, for ``--model_config_file``;
* ``<export.root>/batching_parameters.txt``: for ``--enable_batching``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import tensorflow as tf
from google.protobuf import text_format

from .errors import ExportkitError
from .versions import locked

try:
    from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2, prediction_log_pb2
    from tensorflow_serving.config import model_server_config_pb2
except ImportError:  # installed by `make install`; a plain `pip install -e .` cannot pull it in
    raise ExportkitError(
        "tensorflow-serving-api is missing: pip install --no-deps 'tensorflow-serving-api>=2.21,<2.22' "
        "(--no-deps: it would pull the full tensorflow package over tensorflow-cpu)"
    ) from None

WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for in assets.extra
MODELS_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"


def warmup_requests(*, model_name: str, requests: Sequence[tuple[str, Mapping[str, Any]]],
                    classify: Collection[str] = ()) -> list[prediction_log_pb2.PredictionLog]:
    """One log per (signature key, inputs): a ClassifyLog for the signatures in ``classify``
    (its ``inputs`` are serialized tf.Examples), else a PredictLog."""
    logs = []
    for signature_name, inputs in requests:
        spec = model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
        if signature_name in classify:
            request = classification_pb2.ClassificationRequest(model_spec=spec)
            for serialized in inputs["inputs"]:
                request.input.example_list.examples.add().ParseFromString(serialized)
            logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request)))
        else:
            request = predict_pb2.PredictRequest(model_spec=spec)
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(path: Path, logs: Sequence[prediction_log_pb2.PredictionLog]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read_warmup(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The records as TF Serving's warmup reader sees them."""
    logs = []
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


def _write_atomically(path: Path, text: str) -> None:
    """A server polling the file never reads half of it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def served_models(root: Path) -> dict[str, list[int]]:
    """Model directories under ``root`` that hold at least one loadable version."""
    models = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = sorted(int(v.name) for v in model_dir.iterdir()
                          if v.name.isdigit() and (v / "saved_model.pb").is_file())
        if versions:
            models[model_dir.name] = versions
    return models


def model_server_config(root: Path, *, mount: str | None, versions: str) -> model_server_config_pb2.ModelServerConfig:
    """Every model under ``root``, with base paths as the server will see them."""
    config = model_server_config_pb2.ModelServerConfig()
    base = mount.rstrip("/") if mount else str(root.resolve())
    for name in served_models(root):
        entry = config.model_config_list.config.add(name=name, base_path=f"{base}/{name}",
                                                   model_platform="tensorflow")
        if versions == "all":
            entry.model_version_policy.all.SetInParent()
        else:
            entry.model_version_policy.latest.num_versions = 1
    return config


def write_models_config(root: Path, *, mount: str | None, versions: str,
                        notify: Callable[[str], None] | None = None) -> Path:
    """Regenerate ``root/models.config`` from what is on disk, under the root's lock,
    so parallel exports of a sweep each leave it complete."""
    path = root / MODELS_CONFIG_FILE
    with locked(root, notify=notify):
        config = model_server_config(root, mount=mount, versions=versions)
        _write_atomically(path, text_format.MessageToString(config))
    return path


def batching_parameters(options: Mapping[str, Any]) -> str:
    """TF Serving's BatchingParameters text proto (session_bundle_config.proto).

    The tensorflow-serving-api package does not ship that proto, so this writes
    its text form: wrapped int64 fields, then the repeated allowed sizes.
    """
    threads = options["num_batch_threads"] or os.cpu_count() or 1
    lines = [
        f"max_batch_size {{ value: {options['max_batch_size']} }}",
        f"batch_timeout_micros {{ value: {options['batch_timeout_micros']} }}",
        f"max_enqueued_batches {{ value: {options['max_enqueued_batches']} }}",
        f"num_batch_threads {{ value: {threads} }}",
    ]
    lines += [f"allowed_batch_sizes: {size}" for size in options["allowed_batch_sizes"]]
    return "\n".join(lines) + "\n"


def write_batching_parameters(root: Path, options: Mapping[str, Any],
                              notify: Callable[[str], None] | None = None) -> Path:
    path = root / BATCHING_FILE
    with locked(root, notify=notify):
        _write_atomically(path, batching_parameters(options))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exportkit.serving ROOT``: rewrite ROOT/models.config from the versions on disk,
    as an export would (after an export was interrupted once its version was live)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m exportkit.serving", description=main.__doc__)
    parser.add_argument("root", type=Path, help="the serving root (export.root)")
    parser.add_argument("--mount", default=None,
                        help="where the root is mounted for the server (serving.mount); default: this machine's paths")
    parser.add_argument("--versions", choices=("latest", "all"), default="latest", help="serving.versions")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    path = write_models_config(args.root, mount=args.mount, versions=args.versions)
    models = served_models(args.root)
    print(f"wrote {path}: " + (", ".join(f"{name} (versions {', '.join(map(str, v))})" for name, v in models.items())
                               or "no model with a loadable version"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
