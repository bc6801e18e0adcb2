"""One export: checkpoint -> graph -> restore -> write -> verify -> publish.

Each stage is one function; :func:`export_model` strings them together. It
takes the resolved config as plain Python values (no Hydra needed) and returns
a summary of what it published.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import tensorflow as tf

from . import __version__, checkpoint, serving
from .config import resolve_data_format
from .console import Reporter
from .errors import CheckpointError, first_line
from .estimator import INPUT_KEY, ModeKeys, assemble_model_fn, build_raw_serving_input_receiver, signature_defs
from .labels import load_labels, write_labels
from .registry import MODELS
from .verify import input_size_jpegs, sample_jpegs, signature_summary, verify_saved_model
from .versions import prepare_base, publish, staging_dir

v1 = tf.compat.v1
# TF's deprecation notices about the v1 APIs we use on purpose, and its INFO
# chatter, would bury the stage lines.
tf.get_logger().setLevel(logging.ERROR)
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "export_metadata.json"


@dataclass(frozen=True)
class ExportPlan:
    """What to build, in the terms the parts take."""

    config: Mapping[str, Any]
    params: Mapping[str, Mapping[str, Any]]  # "model", "preprocessing", "head"
    data_format_source: str
    signature_name: str
    labels: list[str] | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExportPlan":
        data_format, source = resolve_data_format(config["model"]["data_format"], config["serving"]["device"])
        labels = load_labels(config["model"]["labels"]) if config["model"]["labels"] else None
        params = {
            "model": {**config["model"], "data_format": data_format},
            "preprocessing": dict(config["preprocessing"]),
            "head": {**config["head"], "labels": labels},
        }
        return cls(config=config, params=params, data_format_source=source,
                   signature_name=config["signature"]["name"], labels=labels)

    @property
    def serving_root(self) -> Path:
        return Path(self.config["export"]["root"]).expanduser()

    @property
    def model_name(self) -> str:
        return self.config["export"]["model_name"]

    @property
    def model(self) -> str:
        return self.params["model"]["name"]

    def describe_model(self) -> str:
        params = self.params["model"]
        keys = [k for k in params if k not in ("name", "data_format", "labels")]
        return f"model={params['name']} " + " ".join(f"model.{k}={params[k]}" for k in keys)


def build_serving_graph(plan: ExportPlan) -> tuple[tf.Graph, Any, Any]:
    """The PREDICT graph: raw string placeholder -> model_fn -> predictions."""
    model_fn = assemble_model_fn(
        model=plan.model,
        preprocessing=plan.params["preprocessing"]["pipeline"],
        head=plan.params["head"]["name"],
        signature_name=plan.signature_name,
    )
    graph = tf.Graph()
    with graph.as_default():
        receiver = build_raw_serving_input_receiver()
        spec = model_fn(receiver.features, None, ModeKeys.PREDICT, plan.params)
    return graph, receiver, spec


def variable_shapes(graph: tf.Graph) -> dict[str, tuple[int, ...]]:
    with graph.as_default():
        return {v.op.name: tuple(v.shape.as_list()) for v in v1.global_variables()}


def network_variable_shapes(model_params: Mapping[str, Any], image_size: int) -> dict[str, tuple[int, ...]]:
    """The variables of the network alone (no preprocessing), for misfit hints."""
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        MODELS.get(model_params["name"]).build(images, dict(model_params))
    return variable_shapes(graph)


def _alternatives(plan: ExportPlan) -> list[tuple[str, Callable[[], dict[str, tuple[int, ...]]]]]:
    plugin = MODELS.get(plan.model)
    size = plan.params["preprocessing"]["image_size"]
    return [
        (override, lambda p=params: network_variable_shapes(p, size))
        for override, params in plugin.alternatives(dict(plan.params["model"]))
    ]


def _restore(sess: v1.Session, graph: tf.Graph, ckpt: checkpoint.Checkpoint) -> None:
    try:
        with graph.as_default():
            saver = v1.train.Saver(var_list={v.op.name: v for v in v1.global_variables()})
            saver.restore(sess, ckpt.prefix)
    except tf.errors.OpError as e:
        raise CheckpointError(
            f"cannot restore from {ckpt.prefix}: {first_line(e)} (a corrupt or truncated data file?)"
        ) from None


def _write(sess: v1.Session, graph: tf.Graph, receiver: Any, spec: Any, target: Path) -> dict[str, Any]:
    with graph.as_default():
        defs = signature_defs(spec, receiver)
        builder = v1.saved_model.Builder(str(target))
        builder.add_meta_graph_and_variables(
            sess, [tf.saved_model.SERVING], signature_def_map=defs, strip_default_attrs=True
        )
        builder.save()
    return defs


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_model(config: Mapping[str, Any], *, reporter: Reporter) -> dict[str, Any]:
    """Export one configured model as a new verified version; return its summary."""
    started = time.perf_counter()
    plan = ExportPlan.from_config(config)
    base = plan.serving_root / plan.model_name
    prepare_base(base)

    with reporter.stage("checkpoint") as stage:
        options = config["checkpoint"]
        prefix = checkpoint.locate(path=options["path"], url=options["url"], cache_dir=options["cache_dir"],
                                   notify=reporter.notice)
        ckpt = checkpoint.read(prefix)
        stage.detail = f"{prefix} (global step {ckpt.global_step})"

    with reporter.stage("graph") as stage:
        graph, receiver, spec = build_serving_graph(plan)
        shapes = variable_shapes(graph)
        stage.detail = f"{plan.describe_model()}, {plan.params['model']['data_format']}, {len(shapes)} variables"

    with v1.Session(graph=graph) as sess:
        with reporter.stage("restore") as stage:
            checkpoint.check_fits(ckpt, shapes, describe=plan.describe_model(), alternatives=_alternatives(plan))
            _restore(sess, graph, ckpt)
            stage.detail = f"{len(shapes)} variables by name; {len(ckpt.variables) - len(shapes)} checkpoint entries unused"

        with staging_dir(base) as staging:
            written = staging / "version"
            with reporter.stage("write") as stage:
                defs = _write(sess, graph, receiver, spec, written)
                extras = _write_assets_extra(plan, written)
                stage.detail = f"signatures {', '.join(defs)}; assets.extra: {', '.join(extras) or 'none'}"
            verification = SKIPPED
            if config["export"]["verify"]:
                with reporter.stage("verify") as stage:
                    verification = _verify(sess, plan, receiver, spec, written, list(defs))
                    stage.detail = (
                        f"{verification['images']} JPEGs through {', '.join(defs)} reloaded: same answers as "
                        f"the exporting graph (max diff {verification['max_abs_diff']:.1g})"
                    )
                    if "warmup_requests" in verification:
                        stage.detail += f"; {verification['warmup_requests']} warmup requests replayed"
            metadata = _metadata(plan, ckpt, defs, verification)
            (written / ASSETS_EXTRA / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            size = _directory_bytes(written)
            version_path = publish(written, base)

    with reporter.stage("serving") as stage:
        serving_files = _write_serving_config(plan)
        stage.detail = ", ".join(str(path) for path in serving_files.values())

    return {
        "version": int(version_path.name),
        "version_path": str(version_path),
        "signatures": list(defs),
        "signature": metadata["signatures"][plan.signature_name],
        "data_format": plan.params["model"]["data_format"],
        "data_format_source": plan.data_format_source,
        "checkpoint": ckpt.prefix,
        "global_step": ckpt.global_step,
        "verification": verification,
        "bytes": size,
        "model_name": plan.model_name,
        "signature_name": plan.signature_name,
        "serving_files": {key: str(path) for key, path in serving_files.items()},
        "seconds": time.perf_counter() - started,
    }


def _write_assets_extra(plan: ExportPlan, written: Path) -> list[str]:
    """Labels and warmup requests beside the SavedModel; TF Serving copies
    assets.extra/ along with the version and reads the warmup file at load."""
    extra = written / ASSETS_EXTRA
    extra.mkdir()
    names = []
    if plan.labels:
        names.append(write_labels(plan.labels, extra).name)
    warmup = plan.config["serving"]["warmup"]
    if warmup["enabled"]:
        sizes = warmup["batch_sizes"]
        images = input_size_jpegs(plan.params["preprocessing"]["image_size"], min(max(sizes), 8))
        logs = serving.warmup_requests(model_name=plan.model_name, signature_name=plan.signature_name,
                                       input_key=INPUT_KEY, images=images, batch_sizes=sizes)
        serving.write_warmup(extra / serving.WARMUP_FILE, logs)
        names.append(f"{serving.WARMUP_FILE} ({len(logs)} requests)")
    return names


def _write_serving_config(plan: ExportPlan) -> dict[str, Path]:
    """The serving root's models.config (and batching parameters), rewritten to
    list every model now under the root."""
    options = plan.config["serving"]
    files = {"models_config": serving.write_models_config(plan.serving_root, mount=options["mount"],
                                                          versions=options["versions"])}
    if options["batching"]["enabled"]:
        files["batching_parameters"] = serving.write_batching_parameters(plan.serving_root, options["batching"])
    return files


SKIPPED: Mapping[str, Any] = {"passed": None, "skipped": True}


def _verify(sess: v1.Session, plan: ExportPlan, receiver: Any, spec: Any, written: Path,
            signature_names: list[str]) -> dict[str, Any]:
    """The in-memory graph's answers on sample JPEGs, then the reloaded version's."""
    images = sample_jpegs(plan.params["preprocessing"]["image_size"])
    expected = sess.run(dict(spec.predictions), {receiver.receiver_tensors[INPUT_KEY]: images})
    warmup = written / ASSETS_EXTRA / serving.WARMUP_FILE
    return verify_saved_model(written, signature_names=signature_names, input_key=INPUT_KEY,
                              images=images, expected=expected, warmup=warmup if warmup.exists() else None)


def _metadata(plan: ExportPlan, ckpt: checkpoint.Checkpoint, defs: Mapping[str, Any], verification: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "exportkit": __version__,
        "tensorflow": tf.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": plan.config,
        "checkpoint": {"prefix": ckpt.prefix, "global_step": ckpt.global_step},
        "data_format": {"value": plan.params["model"]["data_format"], "source": plan.data_format_source},
        "signatures": {name: signature_summary(sig) for name, sig in defs.items()},
        "verification": dict(verification),
    }
