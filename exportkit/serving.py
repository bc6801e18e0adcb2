"""What TF Serving reads beside the SavedModel, built from its own protos.

* ``<version>/assets.extra/tf_serving_warmup_requests``: a TFRecord of
  PredictionLogs that the server replays when it loads the version, so the first
  client request does not pay for graph initialization;
* ``<export.root>/models.config``: a ``model_config_list`` naming every model
  under the serving root, for ``--model_config_file``;
* ``<export.root>/batching_parameters.txt``: for ``--enable_batching``, and
  ``<version>/batching_params.pbtxt`` for ``--enable_per_model_batching_parameters``;
* ``<export.root>/monitoring.config``: for ``--monitoring_config_file`` (Prometheus).

``python -m exportkit.serving ROOT`` regenerates models.config;
``python -m exportkit.serving label ROOT MODEL stable=3`` moves version labels.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import tensorflow as tf
from google.protobuf import text_format

from .errors import ExportError, ExportkitError
from .versions import locked

try:
    from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2, prediction_log_pb2
    from tensorflow_serving.config import file_system_storage_path_source_pb2, model_server_config_pb2
except ImportError:  # installed by `make install`; a plain `pip install -e .` cannot pull it in
    raise ExportkitError(
        "tensorflow-serving-api is missing: pip install --no-deps 'tensorflow-serving-api>=2.21,<2.22' "
        "(--no-deps: it would pull the full tensorflow package over tensorflow-cpu)"
    ) from None

_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")  # as config.py checks serving.version_labels
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for in assets.extra
MODELS_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"  # kBatchingParamsFilename in TF Serving
MONITORING_FILE = "monitoring.config"


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
        versions = loadable_versions(model_dir)
        if versions:
            models[model_dir.name] = versions
    return models


def version_dirs(base: Path) -> dict[int, Path]:
    """Integer-named version folders that hold a saved_model.pb, as TF Serving finds them
    (an export still being written, or one that failed, has none)."""
    if not base.is_dir():
        return {}
    found = {}
    for child in sorted(base.iterdir()):
        if child.name.isascii() and child.name.isdigit() and (child / "saved_model.pb").is_file():
            found.setdefault(int(child.name), child)
    return found


def loadable_versions(base: Path) -> list[int]:
    return sorted(version_dirs(base))


# ---------------------------------------------------------------- version policies and labels

Policy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy


def version_policy(versions: str, specific: Sequence[int] = ()) -> Any:
    """serving.versions (and serving.specific_versions) as TF Serving's ServableVersionPolicy."""
    policy = Policy()
    if versions == "all":
        policy.all.SetInParent()
    elif versions == "specific":
        policy.specific.versions.extend(sorted(specific))
    else:
        policy.latest.num_versions = 1
    return policy


def select_versions(policy: Any, available: Iterable[int]) -> list[int]:
    """The versions a ServableVersionPolicy serves (file_system_storage_path_source.cc),
    newest first: latest (num_versions, at least 1), all, or specific."""
    newest_first = sorted(available, reverse=True)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return newest_first
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in newest_first if v in wanted]
    return newest_first[:max(policy.latest.num_versions, 1)]


def describe_policy(policy: Any) -> str:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        return f"specific [{', '.join(map(str, policy.specific.versions))}]"
    return "latest" if max(policy.latest.num_versions, 1) == 1 else f"latest {policy.latest.num_versions}"


def _versions_text(versions: Sequence[int]) -> str:
    return ", ".join(map(str, versions)) if versions else "none"


def read_models_config(root: Path) -> model_server_config_pb2.ModelServerConfig | None:
    """``root/models.config`` as TF Serving parses it; None where there is none yet."""
    path = root / MODELS_CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ExportError(f"{path} is not a ModelServerConfig text proto ({str(e).splitlines()[0]}): fix it or "
                          "move it away, then run python -m exportkit.serving again") from None


def _entries(config: model_server_config_pb2.ModelServerConfig | None) -> dict[str, Any]:
    return {entry.name: entry for entry in config.model_config_list.config} if config is not None else {}


def check_labels(name: str, policy: Any, labels: Mapping[str, int], available: Sequence[int], *,
                 where: str, what: Callable[[str, int], str]) -> None:
    """Each label on a version that is on disk and that the policy loads: TF Serving refuses a
    config whose label points at a version it has not loaded (server_core.cc)."""
    served = select_versions(policy, available)
    for label, version in sorted(labels.items()):
        if version not in available:
            raise ExportError(f"{what(label, version)}: {name} has no version {version} under {where} "
                              f"(versions with a saved_model.pb: {_versions_text(sorted(available))})")
        if version not in served:
            raise ExportError(f"{what(label, version)}: the version policy {describe_policy(policy)} does not load "
                              f"version {version} of {name} (it loads {_versions_text(sorted(served))}), and TF "
                              "Serving labels only a version it loads")


def check_rollout(root: Path, name: str, *, versions: str, specific: Sequence[int] = (),
                  labels: Mapping[str, int] | None = None) -> list[str]:
    """Before an export of ``name`` under ``root``: whether the models.config entry it will write
    can be served once its version is published. Raises ExportError; returns notices."""
    from .versions import existing_versions

    labels = dict(labels or {})
    base = root / name
    entry = _entries(read_models_config(root)).get(name)
    kept = {label: v for label, v in (entry.version_labels.items() if entry is not None else []) if label not in labels}
    on_disk = loadable_versions(base)
    publishes = max(existing_versions(base) if base.is_dir() else [], default=0) + 1
    after = sorted({*on_disk, publishes})
    policy = version_policy(versions, specific)
    notices = []

    def configured(label: str, version: int) -> str:
        return f"serving.version_labels.{label}={version}"

    def existing(label: str, version: int) -> str:
        return (f"{MODELS_CONFIG_FILE} labels {label} on version {version} of {name}, and this export keeps it "
                f"(move or remove it first: python -m exportkit.serving label {root} {name} --remove {label})")

    check_labels(name, policy, labels, after, where=f"{base} once this export publishes version {publishes}",
                 what=configured)
    check_labels(name, policy, kept, after, where=str(base), what=existing)
    for label, version in sorted(labels.items()):
        if version != publishes:
            continue
        before = entry.version_labels.get(label) if entry is not None else None
        if before is not None and before != version:
            raise ExportError(
                f"serving.version_labels.{label}={version} would move label {label} from version {before} to the "
                f"version this export publishes: TF Serving moves a label only onto a version it has loaded (even "
                f"with --allow_version_labels_for_unavailable_models); export without it, and once the server has "
                f"loaded version {version}: python -m exportkit.serving label {root} {name} {label}={version}")
        notices.append(f"label {label} goes on version {version}, which this export publishes: TF Serving assigns a "
                       "label to a version it has not loaded yet only with "
                       "--allow_version_labels_for_unavailable_models=true")
    if versions == "specific":
        missing = sorted(set(specific) - set(after))
        if missing:
            notices.append(f"serving.specific_versions: {name} has no version {_versions_text(missing)} yet; "
                           "TF Serving loads it when it appears")
        if publishes not in specific:
            notices.append(f"this export publishes version {publishes} of {name}, which serving.specific_versions="
                           f"{sorted(specific)} does not load")
    return notices


def merged_models_config(root: Path, *, mount: str | None, versions: str = "latest",
                         specific_versions: Sequence[int] = (), version_labels: Mapping[str, int] | None = None,
                         update: Collection[str] | None = None, new_models: str = "latest",
                         keep_base_paths: bool = False,
                         ) -> tuple[model_server_config_pb2.ModelServerConfig, list[str]]:
    """models.config for every model under ``root`` with a loadable version, and what changed.

    ``update=None`` rebuilds every entry with ``versions`` (no labels). Otherwise the models in
    ``update`` get the mount's base path, the policy and ``version_labels`` (set over the labels
    their entry has); every other entry stays as the current models.config has it; models it does
    not list yet get ``new_models`` as their policy. ``keep_base_paths``: entries it lists keep
    their base paths (the command line without --mount).
    """
    base = mount.rstrip("/") if mount else str(root.resolve())
    current = _entries(read_models_config(root)) if update is not None else {}
    config = model_server_config_pb2.ModelServerConfig()
    changes: list[str] = []
    on_disk = served_models(root)
    for name, available in on_disk.items():
        entry = config.model_config_list.config.add()
        if update is not None and name in current and name not in update:
            entry.CopyFrom(current[name])
            continue
        entry.name, entry.base_path, entry.model_platform = name, f"{base}/{name}", "tensorflow"
        if keep_base_paths and name in current:
            entry.base_path = current[name].base_path
        if update is None or name in update:
            policy = version_policy(versions, specific_versions)
        else:
            policy = version_policy(new_models)
        entry.model_version_policy.CopyFrom(policy)
        if update is None:
            continue
        labels = dict(current[name].version_labels) if name in current else {}
        labels.update(version_labels or {})
        if name in current:
            before = current[name]
            if before.model_version_policy != policy:
                changes.append(f"{name}: policy {describe_policy(before.model_version_policy)} -> "
                               f"{describe_policy(policy)}")
        else:
            changes.append(f"{name}: added ({describe_policy(policy)})")
        check_labels(name, policy, labels, available, where=f"{root / name}",
                     what=lambda label, version: f"label {label}={version}")
        for label, version in sorted(labels.items()):
            entry.version_labels[label] = version
    for name in sorted(set(current) - set(on_disk)):
        changes.append(f"{name}: removed (no loadable version under {root / name})")
    return config, changes


def write_models_config(root: Path, *, mount: str | None, versions: str = "latest",
                        specific_versions: Sequence[int] = (), version_labels: Mapping[str, int] | None = None,
                        update: Collection[str] | None = None, new_models: str = "latest",
                        keep_base_paths: bool = False, notify: Callable[[str], None] | None = None) -> Path:
    """Regenerate ``root/models.config`` from what is on disk (see :func:`merged_models_config`),
    under the root's lock, so parallel exports of a sweep each leave it complete."""
    path = root / MODELS_CONFIG_FILE
    with locked(root, notify=notify):
        config, _ = merged_models_config(root, mount=mount, versions=versions, specific_versions=specific_versions,
                                         version_labels=version_labels, update=update, new_models=new_models,
                                         keep_base_paths=keep_base_paths)
        _write_atomically(path, text_format.MessageToString(config))
    return path


def move_labels(root: Path, name: str, *, assign: Mapping[str, int], remove: Collection[str] = (),
                notify: Callable[[str], None] | None = None) -> str:
    """Set and remove version labels of one model in ``root/models.config``, under the lock that
    exports take; returns one line saying what changed. Each label must point at a version on
    disk that the entry's policy loads; the policy itself is left alone (TF Serving assigns a
    label only to a loaded version, so a version must be loaded before a label can move to it)."""
    path = root / MODELS_CONFIG_FILE
    both = sorted(set(assign) & set(remove))
    if both:
        raise ExportError(f"label {both[0]} is both set and removed")
    with locked(root, notify=notify):
        config = read_models_config(root)
        if config is None:
            raise ExportError(f"no {MODELS_CONFIG_FILE} in {root}: export first (python run_export.py "
                              f"export.root={root} ...)")
        entries = _entries(config)
        if name not in entries:
            raise ExportError(f"{path} has no model {name!r} (models: {', '.join(sorted(entries)) or 'none'})")
        entry = entries[name]
        for label in remove:
            if label not in entry.version_labels:
                raise ExportError(f"{name} has no label {label!r} to remove (labels: "
                                  f"{', '.join(sorted(entry.version_labels)) or 'none'})")
        local = Path(entry.base_path) if Path(entry.base_path).is_absolute() else root / entry.base_path
        if not local.is_dir():  # the base path as a docker server mounts the root
            local = root / name
        check_labels(name, entry.model_version_policy, assign, loadable_versions(local), where=str(local),
                     what=lambda label, version: f"{label}={version}")
        said = []
        for label, version in sorted(assign.items()):
            before = entry.version_labels.get(label)
            if before == version:
                continue
            said.append(f"{label} {before} -> {version}" if before is not None else f"{label} -> {version} (new)")
            entry.version_labels[label] = version
        for label in sorted(remove):
            said.append(f"{label} removed (was {entry.version_labels[label]})")
            del entry.version_labels[label]
        if not said:
            return f"{path}: {name} unchanged ({', '.join(f'{k}={v}' for k, v in sorted(assign.items()))} already)"
        _write_atomically(path, text_format.MessageToString(config))
    return f"{path}: {name} " + ", ".join(said)


def batching_parameters(options: Mapping[str, Any], *, threads: bool = True) -> str:
    """TF Serving's BatchingParameters text proto (session_bundle_config.proto).

    The tensorflow-serving-api package does not ship that proto, so this writes
    its text form: wrapped int64 fields, then the repeated allowed sizes.

    ``num_batch_threads: null`` leaves the field out: TF Serving then sizes the batch thread
    pool with port::MaxParallelism(), the server's own core count, which is what its batching
    guide recommends on CPU (the export machine's count says nothing about the server).
    ``threads=False`` leaves it out too: with --enable_per_model_batching_parameters, a
    version's batching_params.pbtxt sets its queue, while the shared thread pool comes from
    --batching_parameters_file.
    """
    lines = [
        f"max_batch_size {{ value: {options['max_batch_size']} }}",
        f"batch_timeout_micros {{ value: {options['batch_timeout_micros']} }}",
        f"max_enqueued_batches {{ value: {options['max_enqueued_batches']} }}",
    ]
    if threads and options["num_batch_threads"] is not None:
        lines.append(f"num_batch_threads {{ value: {options['num_batch_threads']} }}")
    lines += [f"allowed_batch_sizes: {size}" for size in options["allowed_batch_sizes"]]
    return "\n".join(lines) + "\n"


def write_batching_parameters(root: Path, options: Mapping[str, Any],
                              notify: Callable[[str], None] | None = None) -> Path:
    path = root / BATCHING_FILE
    with locked(root, notify=notify):
        _write_atomically(path, batching_parameters(options))
    return path


def write_version_batching_parameters(version_dir: Path, options: Mapping[str, Any]) -> Path:
    """``<version>/batching_params.pbtxt``: where TF Serving's GetPerModelBatchingParams
    (servables/tensorflow/bundle_factory_util.cc) looks, in the SavedModel directory itself,
    when the server runs with --enable_per_model_batching_parameters."""
    path = version_dir / PER_MODEL_BATCHING_FILE
    path.write_text(batching_parameters(options, threads=False))
    return path


def monitoring_config(path: str) -> str:
    """TF Serving's MonitoringConfig text proto (config/monitoring_config.proto), for
    --monitoring_config_file: Prometheus metrics on the REST port at ``path``."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2  # not in every tensorflow-serving-api
    except ImportError:
        return f'prometheus_config {{\n  enable: true\n  path: "{path}"\n}}\n'
    config = monitoring_config_pb2.MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = path
    return text_format.MessageToString(config)


def write_monitoring_config(root: Path, path: str, notify: Callable[[str], None] | None = None) -> Path:
    target = root / MONITORING_FILE
    with locked(root, notify=notify):
        _write_atomically(target, monitoring_config(path))
    return target


def _version_list(text: str) -> list[int]:
    import argparse

    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of version numbers, e.g. 1,3")
    return sorted({int(p) for p in parts})


def _label_assignment(text: str) -> tuple[str, int]:
    import argparse

    label, equals, version = text.partition("=")
    if not equals or not _LABEL.fullmatch(label) or not (version.isascii() and version.isdigit() and int(version) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=VERSION (e.g. stable=3; a label is letters, digits, "
                                         "'_', '.' or '-', starting with a letter)")
    return label, int(version)


def _label_name(text: str) -> str:
    import argparse

    if not _LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a label name")
    return text


def _say_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def label_main(argv: Sequence[str]) -> int:
    """python -m exportkit.serving label ROOT MODEL LABEL=VERSION ... [--remove LABEL]: move version
    labels in ROOT/models.config without re-exporting (a promotion, a rollback)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m exportkit.serving label", description=label_main.__doc__,
        epilog="Each label must point at a version with a saved_model.pb that the model's version policy loads "
               "(TF Serving labels only loaded versions); to serve another version first: python -m "
               "exportkit.serving ROOT --model MODEL --versions specific --specific-versions 1,3,4. The file is "
               "rewritten atomically under the lock exports take; a server polling it "
               "(--model_config_file_poll_wait_seconds) picks the change up.")
    parser.add_argument("root", type=Path, help="the serving root (export.root)")
    parser.add_argument("model", help="the model's name in models.config (export.model_name)")
    parser.add_argument("assign", nargs="*", type=_label_assignment, metavar="LABEL=VERSION")
    parser.add_argument("--remove", action="append", default=[], type=_label_name, metavar="LABEL",
                        help="remove this label (repeatable)")
    args = parser.parse_args(argv)
    if not args.assign and not args.remove:
        parser.error("give LABEL=VERSION or --remove LABEL")
    assign: dict[str, int] = {}
    for label, version in args.assign:
        if label in assign and assign[label] != version:
            parser.error(f"label {label} is given twice")
        assign[label] = version
    if not args.root.is_dir():
        return _say_error(f"{args.root} is not a directory (the serving root, export.root)")
    try:
        print(move_labels(args.root, args.model, assign=assign, remove=args.remove))
    except ExportkitError as e:
        return _say_error(str(e))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exportkit.serving ROOT``: rewrite ROOT/models.config from the versions on disk,
    as an export would (after an export was interrupted once its version was live). Entries that
    models.config already has are kept as they are (policies, labels), except --model's;
    models it does not list yet are added with --versions.
    ``python -m exportkit.serving label ROOT MODEL stable=3``: move version labels."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["label"]:
        return label_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m exportkit.serving", description=main.__doc__)
    parser.add_argument("root", type=Path, help="the serving root (export.root); "
                                                "'label' as the first argument moves version labels instead")
    parser.add_argument("--mount", default=None,
                        help="where the root is mounted for the server (serving.mount), for the entries this "
                             "writes; default: this machine's paths for new entries, the base path it has for --model's")
    parser.add_argument("--versions", choices=("latest", "all", "specific"), default="latest",
                        help="serving.versions, for --model and for models that models.config does not list yet")
    parser.add_argument("--specific-versions", type=_version_list, default=[], metavar="1,3",
                        help="serving.specific_versions, with --versions specific")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="rewrite this model's entry from --mount, --versions and --label (repeatable)")
    parser.add_argument("--label", action="append", default=[], type=_label_assignment, metavar="LABEL=VERSION",
                        help="serving.version_labels for --model's entry, set over the labels it has")
    args = parser.parse_args(argv)
    if (args.versions == "specific") != bool(args.specific_versions):
        parser.error("--versions specific and --specific-versions go together")
    if args.label and not args.model:
        parser.error("--label needs --model")
    if args.versions == "specific" and not args.model:
        parser.error("--versions specific needs --model (the versions are one model's)")
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    try:
        path = write_models_config(args.root, mount=args.mount, versions=args.versions,
                                   specific_versions=args.specific_versions, version_labels=dict(args.label),
                                   update=set(args.model), new_models=args.versions if not args.model else "latest",
                                   keep_base_paths=args.mount is None)
    except ExportkitError as e:
        return _say_error(str(e))
    models = served_models(args.root)
    print(f"wrote {path}: " + (", ".join(f"{name} (versions {', '.join(map(str, v))})" for name, v in models.items())
                               or "no model with a loadable version"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
