"""One export: checkpoint -> graph -> restore -> write -> verify -> publish.

Each stage is one function; :func:`export_model` strings them together. It
takes the resolved config as plain Python values (no Hydra needed) and returns
a summary of what it published.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf

from . import __version__, checkpoint, optimize, runtime, serving, signatures
from .config import main_warmup_sizes, resolve_data_format
from .console import Reporter
from .errors import ConfigError, ExportError, PublishedButIncomplete, first_line
from .estimator import EstimatorSpec, ModeKeys, ServingInputReceiver, assemble_model_fn, network, signature_defs
from .labels import load_labels, write_labels
from .registry import MODELS
from .verify import (MAX_BF16_LOG_ERROR, bf16_agreement, input_size_jpegs, sample_jpegs, signature_summary,
                     verify_saved_model)
from .versions import (interrupted, prepare_base, publish, remove_if_empty, signals_held, staging_dir,
                       stop_if_interrupted)

v1 = tf.compat.v1
# TF's deprecation notices about the v1 APIs we use on purpose, and its INFO
# chatter, would bury the stage lines.
tf.get_logger().setLevel(logging.ERROR)
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "export_metadata.json"
# The bf16 gate runs its images this many at a time, not all in one: TF's oneDNN allocator
# keeps the largest batch's activations for the rest of the process, rewrites included.
GATE_BATCH = 8
try:  # glibc's malloc_trim, where there is one (not on musl or macOS)
    _LIBC: Any = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None
if not hasattr(_LIBC, "malloc_trim"):
    _LIBC = None


@dataclass(frozen=True)
class ExportPlan:
    """What to build, in the terms the parts take."""

    config: Mapping[str, Any]
    params: Mapping[str, Mapping[str, Any]]  # "model", "preprocessing", "head"
    data_format_source: str
    signature_name: str
    labels: list[str] | None
    interface: signatures.Interface

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExportPlan":
        data_format, source = resolve_data_format(config["model"]["data_format"], config["serving"]["device"])
        labels = load_labels(config["model"]["labels"]) if config["model"]["labels"] else None
        params = {
            "model": {**config["model"], "data_format": data_format},
            "preprocessing": dict(config["preprocessing"]),
            "head": {**config["head"], "labels": labels},
            "signature": dict(config["signature"]),
        }
        return cls(config=config, params=params, data_format_source=source,
                   signature_name=config["signature"]["name"], labels=labels,
                   interface=signatures.Interface.from_params(config["signature"]))

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


def check_runtime(plan: ExportPlan, here: runtime.Runtime, *, notify: Callable[[str], None]) -> runtime.Runtime:
    """Refuse what this process's runtime cannot export, in one line; say what it does differently.

    bf16 needs TF's oneDNN kernels (its rewrite is oneDNN's and the bf16 gate runs the
    graph here). An NCHW graph runs on TF's own CPU kernels only through grappler's
    layout conversion, which :func:`runtime.session_config` turns on where oneDNN is off.
    """
    cpu = here.cpu
    if plan.config["export"]["precision"] == "bf16":
        if here.bf16 == "unavailable":
            if here.requested is False:
                why, fix = f"{here.source} turns off in this process", f"unset {runtime.ONEDNN_VAR} or set it to 1"
            else:
                why = f"TF leaves off on this {cpu.cpu_class} CPU ({here.source})"
                fix = (f"export on a CPU with AVX512_BF16 or AMX, or set {runtime.ONEDNN_VAR}=1 to export with "
                       "bf16 emulated (slower than fp32 here)")
            raise ExportError(f"export.precision=bf16 needs TF's oneDNN kernels, which {why}: {fix}")
        if here.bf16 == "emulated":
            notify(f"bf16 is emulated on this {cpu.cpu_class} CPU (no AVX512_BF16 or AMX): the export and its gate "
                   "run, but here bf16 serves slower than fp32; it pays on a server with AVX512_BF16 or AMX")
    if plan.params["model"]["data_format"] == "channels_first":
        if not here.nchw_kernels:
            notify(f"channels_first: TF's own CPU kernels take NHWC only and oneDNN is off here ({here.source}), "
                   "so verification runs the graph through grappler's NCHW->NHWC layout conversion")
        if plan.config["serving"]["device"] == "cpu":
            notify(f"channels_first on a CPU server needs oneDNN there ({runtime.ONEDNN_VAR}=1 on CPUs "
                   "without AVX512_VNNI, AVX512_BF16 or AMX); channels_last serves on every CPU")
    return here


def build_serving_graph(plan: ExportPlan) -> tuple[tf.Graph, Any, Any]:
    """The PREDICT graph: the interface's inputs -> model_fn -> predictions and export outputs."""
    model_fn = assemble_model_fn(
        model=plan.model,
        preprocessing=plan.params["preprocessing"]["pipeline"],
        head=plan.params["head"]["name"],
    )
    graph = tf.Graph()
    with graph.as_default():
        receiver = signatures.build_receiver(plan.interface)
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
        network(images, model=model_params["name"], params=model_params)
    return variable_shapes(graph)


def _alternatives(plan: ExportPlan) -> Iterator[tuple[str, Callable[[], dict[str, tuple[int, ...]]]]]:
    """The plugin's other variants, each built only when the misfit check gets to it; one
    that cannot take this input size (its build raises ConfigError) is not the one."""
    plugin = MODELS.get(plan.model)
    size = plan.params["preprocessing"]["image_size"]
    for override, params in plugin.alternatives(dict(plan.params["model"])):
        try:
            shapes = network_variable_shapes(params, size)
        except ConfigError:
            continue
        yield override, lambda s=shapes: s


def _restore(sess: v1.Session, graph: tf.Graph, ckpt: checkpoint.Checkpoint) -> None:
    try:
        with graph.as_default():
            saver = v1.train.Saver(var_list={v.op.name: v for v in v1.global_variables()})
            saver.restore(sess, ckpt.prefix)
    except tf.errors.OpError as e:
        raise checkpoint.unreadable(ckpt.prefix, e) from None


@dataclass(frozen=True)
class Exporting:
    """The graph being exported, with its live session and the tensors it serves."""

    session: v1.Session
    graph: tf.Graph
    receiver: ServingInputReceiver
    spec: EstimatorSpec
    input_key: str

    def answers(self, images: list[bytes]) -> dict[str, Any]:
        """The predictions for encoded images, through the main input."""
        return self.session.run(dict(self.spec.predictions), {self.receiver.receiver_tensors[self.input_key]: images})


def _rewrites(config: Mapping[str, Any]) -> bool:
    """Whether the graph is rewritten at all; if not, it is saved as built, with its variables."""
    options = config["export"]
    return (options["freeze"] or options["fold_batch_norm"] or options["fuse_residual_add"]
            or options["scale_shift_batch_norm"] or options["precision"] != "fp32")


def _optimize(plan: ExportPlan, exporting: Exporting, *,
              release: Callable[[], None]) -> tuple[Exporting, list[str]]:
    """Freeze, fold, convert: the serving graph TF Serving will load, as a new
    graph with the same tensor names and its own session.

    ``release`` frees the restored session once it is frozen, and each GraphDef
    goes as soon as the next exists: the restored variables, the frozen
    constants, each rewrite's input and the imported graph are never all held
    at once (docs/performance.md, Memory)."""
    served = [*exporting.spec.predictions.values(),
              *(tensor for out in exporting.spec.export_outputs.values() for tensor in out.outputs.values())]
    outputs = list(dict.fromkeys(tensor.op.name for tensor in served))
    addition_shapes = optimize.addition_input_shapes(exporting.graph)
    # Handed straight on, so that rewrite() holds the frozen GraphDef's only reference.
    graph_def, done = optimize.rewrite(_frozen(exporting, outputs, release=release), options=plan.config["export"],
                                       outputs=outputs, addition_shapes=addition_shapes)
    if plan.config["export"]["freeze"]:
        done.insert(0, "frozen")
    weights: dict[str, Any] = {}
    if not plan.config["export"]["freeze"]:
        graph_def, weights = optimize.split_weights(graph_def)
        done.append(f"{len(weights)} weight tensors in variables")
    graph = tf.Graph()
    with graph.as_default():
        # Zeros as initial values keep the weights out of the graph; load() fills them.
        variables = {name: v1.Variable(tf.zeros(value.shape, value.dtype), name=f"weights/{name}", trainable=False)
                     for name, value in weights.items()}
        tf.graph_util.import_graph_def(graph_def, input_map={f"{name}:0": var.value() for name, var in variables.items()},
                                       name="")
    del graph_def  # the graph holds its own copy
    session = runtime.session(graph)
    with graph.as_default():
        for name, var in variables.items():
            var.load(weights.pop(name), session)  # each array goes once the session holds it

    def same(tensor: tf.Tensor) -> tf.Tensor:
        return graph.get_tensor_by_name(tensor.name)

    return Exporting(session, graph, exporting.receiver.map(same), exporting.spec.map(same), exporting.input_key), done


def _frozen(exporting: Exporting, outputs: list[str], *, release: Callable[[], None]) -> Any:
    graph_def = optimize.freeze(exporting.session, exporting.graph, outputs)
    release()
    return graph_def


def _release(session: v1.Session) -> None:
    """Free what ``session`` holds now (variables, kernels with their constants, oneDNN's
    reordered filters): close() alone frees them only with the last reference to the
    session, which the Exporting records and the caller's frames still hold. A later
    close() or ``with`` exit is a no-op."""
    session.close()
    session.__del__()  # TF_DeleteSession; the object stays, marked deleted
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Collect the graphs' reference cycles, then hand the heap's free pages back to the
    system: glibc keeps them otherwise, and the next stage's peak would start from there."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _write(exporting: Exporting, target: Path) -> dict[str, Any]:
    with exporting.graph.as_default():
        defs = signature_defs(exporting.spec, exporting.receiver)
        builder = v1.saved_model.Builder(str(target))
        builder.add_meta_graph_and_variables(
            exporting.session, [tf.saved_model.SERVING], signature_def_map=defs, strip_default_attrs=True
        )
        builder.save()
    return defs


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_model(config: Mapping[str, Any], *, reporter: Reporter) -> dict[str, Any]:
    """Export one configured model as a new verified version; return its summary.

    Until the rename that publishes the version, any failure leaves nothing behind (not
    even a model directory this run created). After it, the version is live whatever
    happens, and a failure or signal is raised as :class:`PublishedButIncomplete`
    carrying that version.
    """
    with _collecting_only_what_the_export_makes():
        return _export_model(config, reporter=reporter)


@contextlib.contextmanager
def _collecting_only_what_the_export_makes() -> Iterator[None]:
    """The export's collections (:func:`_return_freed_memory`) look for the graphs it dropped,
    all of them made after it began: what was alive before, TensorFlow's modules alone some
    290,000 objects, is set aside for the export's duration (0.15 s saved per collection,
    three or more per export), then handed back to the collector as it was."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _export_model(config: Mapping[str, Any], *, reporter: Reporter) -> dict[str, Any]:
    started = time.perf_counter()
    plan = ExportPlan.from_config(config)
    here = check_runtime(plan, runtime.current(), notify=reporter.notice)
    base = plan.serving_root / plan.model_name
    created = prepare_base(base)
    result: dict[str, Any] = {}  # filled in the moment the version is live, signals held
    try:
        for notice in _check_rollout(plan):
            reporter.notice(notice)
        _export_and_publish(plan, here, base, reporter=reporter, published=result)
        with reporter.stage("serving") as stage:
            serving_files = _write_serving_config(plan, notify=reporter.notice)
            stage.detail = ", ".join(str(path) for path in serving_files.values())
    except BaseException as error:
        if not result:
            remove_if_empty(created)
            raise
        raise _after_publishing(plan, result, error, started=started) from None
    result["serving_files"] = {key: str(path) for key, path in serving_files.items()}
    result["seconds"] = time.perf_counter() - started
    return result


def _after_publishing(plan: ExportPlan, result: dict[str, Any], error: BaseException, *,
                      started: float) -> PublishedButIncomplete:
    """The truth after a late failure: which version is live, what is stale, and the command
    that regenerates it."""
    options = plan.config["serving"]
    was_interrupted = isinstance(error, KeyboardInterrupt) or interrupted()
    what = "interrupted" if was_interrupted else f"failed ({first_line(error)})"
    batching = (f"; {serving.BATCHING_FILE} too (the next export with serving.batching.enabled=true rewrites it)"
                if options["batching"]["enabled"] else "")
    return PublishedButIncomplete(
        f"version {result['version']} was published ({result['version_path']}), then the run {what}: "
        f"{plan.serving_root / serving.MODELS_CONFIG_FILE} may be stale{batching}\n"
        f"  regenerate it: {_regenerate_command(plan)}",
        result={**result, "seconds": time.perf_counter() - started}, interrupted=was_interrupted,
    )


def _regenerate_command(plan: ExportPlan) -> str:
    """The command that writes what this export's models.config would have held."""
    options = plan.config["serving"]
    words = ["python -m exportkit.serving", str(plan.serving_root)]
    if options["mount"]:
        words.append(f"--mount {options['mount']}")
    words.append(f"--versions {options['versions']}")
    if options["versions"] == "specific":
        words.append(f"--specific-versions {','.join(map(str, options['specific_versions']))}")
    words.append(f"--model {plan.model_name}")
    words += [f"--label {label}={version}" for label, version in sorted(options["version_labels"].items())]
    return " ".join(words)


def _check_rollout(plan: ExportPlan) -> list[str]:
    """Refuse, before any work, a models.config entry that the server could not take once this
    export's version is published (labels on versions absent or not loaded); notices otherwise."""
    options = plan.config["serving"]
    return serving.check_rollout(plan.serving_root, plan.model_name, versions=options["versions"],
                                 specific=options["specific_versions"], labels=options["version_labels"])


def _export_and_publish(plan: ExportPlan, here: runtime.Runtime, base: Path, *, reporter: Reporter,
                        published: dict[str, Any]) -> None:
    """Checkpoint to published version; ``published`` gets the summary of what it published."""
    config = plan.config
    with reporter.stage("checkpoint") as stage:
        options = config["checkpoint"]
        prefix = checkpoint.locate(path=options["path"], url=options["url"], cache_dir=options["cache_dir"],
                                   notify=reporter.notice)
        ckpt = checkpoint.read(prefix)
        stage.detail = f"{prefix} " + (f"(global step {ckpt.global_step})" if ckpt.global_step is not None
                                       else "(no global step)")

    with reporter.stage("graph") as stage:
        graph, receiver, spec = build_serving_graph(plan)
        shapes = variable_shapes(graph)
        stage.detail = f"{plan.describe_model()}, {plan.params['model']['data_format']}, {len(shapes)} variables"

    with runtime.session(graph) as sess:
        with reporter.stage("restore") as stage:
            checkpoint.check_fits(ckpt, shapes, describe=plan.describe_model(), alternatives=_alternatives(plan))
            checkpoint.check_finite(ckpt, shapes)
            _restore(sess, graph, ckpt)
            stage.detail = f"{len(shapes)} variables by name; {len(ckpt.variables) - len(shapes)} checkpoint entries unused"
        exporting = Exporting(sess, graph, receiver, spec, plan.interface.input_key)
        bf16 = config["export"]["precision"] == "bf16"
        verify = config["export"]["verify"]
        rewritten = _rewrites(config)
        # Each in-memory graph's answers are taken just before it is released, so that the
        # restored graph, the optimized one and the reloaded version are never all held at once.
        restored: dict[str, Any] = {}
        optimizations: list[str] = []
        if rewritten:
            with reporter.stage("optimize") as stage:
                restored = _answers(plan, exporting, verify=verify and not bf16, gate=bf16)
                exporting, optimizations = _optimize(plan, exporting, release=lambda: _release(sess))
                stage.detail = ", ".join(optimizations)

        with staging_dir(base) as staging, contextlib.closing(exporting.session):
            written = staging / "version"
            with reporter.stage("write") as stage, _writing(base):
                defs = _write(exporting, written)
                extras = _write_assets_extra(plan, written)
                stage.detail = f"signatures {', '.join(defs)}; assets.extra: {', '.join(extras) or 'none'}"
                if plan.config["serving"]["batching"]["enabled"]:
                    serving.write_version_batching_parameters(written, plan.config["serving"]["batching"])
                    stage.detail += f"; {serving.PER_MODEL_BATCHING_FILE}"
            own = _answers(plan, exporting, verify=verify and (bf16 or not rewritten), gate=bf16)
            _release(exporting.session)
            del exporting  # and its graph, which holds a frozen version's weights
            _return_freed_memory()
            # fp32 must answer as the graph it was optimized from; bf16 as its own in-memory
            # graph (its distance from fp32 is the bf16 gate's job).
            expected = (own if bf16 or not rewritten else restored).get("verify")
            verification, precision = _check(plan, expected, (restored.get("gate"), own.get("gate")), written,
                                             list(defs), reporter=reporter)
            metadata = _metadata(plan, ckpt, defs, verification)
            metadata.update(precision=precision, optimizations=optimizations, runtime=here.record())
            with _writing(base):
                (written / ASSETS_EXTRA / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            size = _directory_bytes(written)
            stop_if_interrupted()  # one whose exception TensorFlow swallowed: asked to stop, nothing is published
            # A signal between the rename and this record would leave a live version unreported.
            with signals_held():
                version_path = publish(written, base, notify=reporter.notice)
                published.update({
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
                    "precision": precision,
                    "optimizations": optimizations,
                    "runtime": here.describe(),
                    "model_name": plan.model_name,
                    "signature_name": plan.signature_name,
                    "version_policy": config["serving"]["versions"],
                })


# What a full disk (ResourceExhausted), a file size limit (OutOfRange: EFBIG), a quota or a
# read-only mount raise from TF's file system, and from Python.
_WRITE_ERRORS = (OSError, tf.errors.ResourceExhaustedError, tf.errors.OutOfRangeError,
                 tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError, tf.errors.UnknownError)


@contextlib.contextmanager
def _writing(base: Path):
    """A write that the file system refuses is the user's to fix, in one line."""
    try:
        yield
    except _WRITE_ERRORS as e:
        raise ExportError(f"cannot write the version under {base}: {first_line(e)} (disk full or read-only?)") from None


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
        logs = _warmup_logs(plan, warmup["batch_sizes"],
                            main_sizes=main_warmup_sizes(warmup["batch_sizes"], plan.config["serving"]["batching"]))
        serving.write_warmup(extra / serving.WARMUP_FILE, logs)
        names.append(f"{serving.WARMUP_FILE} ({len(logs)} requests)")
    return names


def _warmup_logs(plan: ExportPlan, sizes: list[int], *, main_sizes: list[int] | None = None) -> list[Any]:
    """A request per batch size for every signature, shaped as its clients send it
    (serving_default aside where it is the main signature's twin: the same subgraph).
    ``main_sizes`` (default ``sizes``) are the main signature's: with batching on, every
    allowed batch size, so no padded batch shape is first run by a client's request."""
    main_sizes = list(sizes) if main_sizes is None else list(main_sizes)
    images = input_size_jpegs(plan.params["preprocessing"]["image_size"], min(max([*sizes, *main_sizes]), 8))
    interface = plan.interface
    requests = [
        (key, signatures.request_inputs(interface, kind, [images[i % len(images)] for i in range(size)]))
        for key, kind in interface.signatures().items()
        if not (key == signatures.DEFAULT_KEY and key != interface.name)
        for size in (main_sizes if key == interface.name else sizes)
    ]
    return serving.warmup_requests(model_name=plan.model_name, requests=requests,
                                   classify=interface.keys_of(signatures.CLASSIFY))


def _write_serving_config(plan: ExportPlan, *, notify: Callable[[str], None]) -> dict[str, Path]:
    """The serving root's models.config (and batching parameters), rewritten to
    list every model now under the root."""
    options = plan.config["serving"]
    files = {"models_config": serving.write_models_config(
        plan.serving_root, mount=options["mount"], versions=options["versions"],
        specific_versions=options["specific_versions"], version_labels=options["version_labels"],
        update={plan.model_name}, notify=notify)}
    if options["batching"]["enabled"]:
        files["batching_parameters"] = serving.write_batching_parameters(plan.serving_root, options["batching"], notify=notify)
    if options["monitoring"]["enabled"]:
        files["monitoring_config"] = serving.write_monitoring_config(plan.serving_root, options["monitoring"]["path"],
                                                                     notify=notify)
    return files


SKIPPED: Mapping[str, Any] = {"passed": None, "skipped": True}


def _answers(plan: ExportPlan, exporting: Exporting, *, verify: bool, gate: bool) -> dict[str, Any]:
    """``exporting``'s answers on the JPEGs that verification ("verify") and the bf16 gate
    ("gate") compare with, as asked."""
    size = plan.params["preprocessing"]["image_size"]
    answers = {}
    if verify:
        answers["verify"] = exporting.answers(sample_jpegs(size))
    if gate:
        images = _gate_jpegs(size)
        batches = [exporting.answers(images[i:i + GATE_BATCH]) for i in range(0, len(images), GATE_BATCH)]
        answers["gate"] = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return answers


def _gate_jpegs(size: int) -> list[bytes]:
    """More images than verification uses, so one real disagreement in a hundred shows."""
    return sample_jpegs(size) + input_size_jpegs(size, 61, seed=7)


def _verify(plan: ExportPlan, expected: Mapping[str, Any], written: Path) -> dict[str, Any]:
    """The reloaded version's answers on sample JPEGs against the in-memory graph's, ``expected``."""
    images = sample_jpegs(plan.params["preprocessing"]["image_size"])
    warmup = written / ASSETS_EXTRA / serving.WARMUP_FILE
    return verify_saved_model(written, interface=plan.interface, labels=plan.labels, images=images,
                              expected=expected, warmup=warmup if warmup.exists() else None)


def _check(plan: ExportPlan, expected: Mapping[str, Any] | None, gate: tuple[Any, Any], written: Path,
           signature_names: list[str], *, reporter: Reporter) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Verification of the written version against ``expected``, then the bf16 gate on
    ``gate``'s (fp32, bf16) answers; their records."""
    options = plan.config["export"]
    verification = SKIPPED
    if options["verify"]:
        with reporter.stage("verify") as stage:
            verification = _verify(plan, expected, written)
            stage.detail = (
                f"{verification['images']} JPEGs through {', '.join(signature_names)} reloaded: same answers as "
                f"the exporting graph (max diff {verification['max_abs_diff']:.1g})"
            )
            if "warmup_requests" in verification:
                stage.detail += f"; {verification['warmup_requests']} warmup requests replayed"
    precision = {"value": options["precision"]}
    if options["precision"] == "bf16":
        with reporter.stage("bf16 gate") as stage:
            precision.update(_bf16_gate(plan, *gate))
            stage.detail = (
                f"top-1 agreement with fp32 {precision['top1_agreement']:.0%} on {precision['images']} JPEGs "
                f"({precision['near_tie_flips']} near-tie flips aside: "
                f"{precision['top1_agreement_near_ties_aside']:.0%}); max probability diff "
                f"{precision['max_probability_diff']:.2g}"
            )
    return verification, precision


def _bf16_gate(plan: ExportPlan, fp32: Mapping[str, Any], bf16: Mapping[str, Any]) -> dict[str, Any]:
    """bf16's answers on the gate's JPEGs against the fp32 graph's it came from."""
    minimum = plan.config["export"]["min_top1_agreement"]
    result = bf16_agreement(fp32, bf16, min_top1_agreement=minimum)
    if not result["passed"]:
        raise ExportError(
            f"bf16 answers disagree with fp32: top-1 agreement {result['top1_agreement_near_ties_aside']:.1%} "
            f"with near-ties aside (export.min_top1_agreement={minimum}), log-probability error up to "
            f"{result['max_log_probability_error']:.3g} (a healthy bf16 graph stays under {MAX_BF16_LOG_ERROR})"
        )
    return result


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
