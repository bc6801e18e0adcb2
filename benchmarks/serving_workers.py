"""The serving benchmark's child processes: one per contender, plus the OpenVINO conversion.

Each contender lives in its own spawned process, so its load time and its
memory (VmRSS, VmHWM from /proc/self/status) are its own and not those of the
parent or of another contender. A worker loads its servable, answers the
parent over a pipe, and computes only when asked, so only one contender
computes at a time. This module imports neither TensorFlow nor OpenVINO at
the top: each worker imports only the runtime it serves with.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

SERVE_TAG = "serve"


def memory_mib() -> dict[str, float]:
    """This process's resident set now (VmRSS) and at its peak so far (VmHWM), in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024  # kB
    return {"rss_mib": values.get("VmRSS"), "peak_rss_mib": values.get("VmHWM")}


def _log_to(path: str) -> None:
    """Send this process's stdout and stderr (TF's and OpenVINO's C++ logs too) to ``path``."""
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


class TensorFlowServable:
    """A SavedModel version loaded as TF Serving loads it: fresh graph, default session, serve tag."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        from exportkit import runtime

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, [SERVE_TAG], spec["path"])
        signature = meta.signature_def[spec["signature"]]
        self.input_name = signature.inputs["images"].name
        self.fetches = {key: info.name for key, info in signature.outputs.items()}
        self.jpegs = list(spec["jpegs"])
        here = runtime.current()
        self.info = {"runtime": f"TensorFlow {tf.__version__}", "signature": spec["signature"],
                     "oneDNN": f"{'on' if here.onednn else 'off'} ({here.source})"}

    def batch(self, size: int) -> np.ndarray:
        return np.array(self.jpegs[:size], dtype=object)

    def run(self, batch: np.ndarray) -> Mapping[str, np.ndarray]:
        return self.session.run(self.fetches, {self.input_name: batch})

    def top1(self, outputs: Mapping[str, np.ndarray]) -> dict[str, list]:
        return _top1(outputs["classes"], outputs["probabilities"])


class OpenVinoServable:
    """An OpenVINO IR compiled for the CPU at one inference precision, one synchronous request."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": spec["precision"], "PERFORMANCE_HINT": spec["hint"]}
        self.compiled = core.compile_model(core.read_model(spec["xml"]), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = {key: next(o for o in self.compiled.outputs if f"{key}:0" in o.get_names())
                        for key in ("classes", "probabilities")}
        self.images = np.load(spec["float_batch"])
        self.info = {
            "runtime": f"OpenVINO {ov.__version__.split('-')[0]}",
            **{key: _property_text(self.compiled.get_property(key)) for key in
               ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")},
        }

    def batch(self, size: int) -> np.ndarray:
        return np.ascontiguousarray(self.images[:size])

    def run(self, batch: np.ndarray) -> Any:
        self.request.infer({0: batch})
        return self.request

    def top1(self, request: Any) -> dict[str, list]:
        return _top1(*(request.get_tensor(self.outputs[key]).data for key in ("classes", "probabilities")))


def _top1(classes: np.ndarray, probabilities: np.ndarray) -> dict[str, list]:
    """Each image's most likely class and its probability: what the agreement check compares."""
    return {"classes": [int(c) for c in classes[:, 0]], "probabilities": [float(p) for p in probabilities[:, 0]]}


def _property_text(value: Any) -> str:
    """What the compiled model settled on: ov.Type prints as "<Type: 'bfloat16'>", its name is "bf16"."""
    name = getattr(value, "get_type_name", None)
    return name() if callable(name) else str(value)


SERVABLES = {"tensorflow": TensorFlowServable, "openvino": OpenVinoServable}


def _serve(conn: Any, servable: Any, batch_sizes: Sequence[int], spec: Mapping[str, Any]) -> None:
    """Answer the parent's commands until "stop": warmup, timed runs, memory, reload."""
    batches = {size: servable.batch(size) for size in batch_sizes}
    while True:
        command, *args = conn.recv()
        if command == "stop":
            return
        if command == "warmup":  # one call per batch size; the largest also yields the top-1 classes
            start = time.perf_counter()
            outputs = {size: servable.top1(servable.run(batches[size])) for size in batch_sizes}
            conn.send(("ok", {"warmup_s": time.perf_counter() - start, "top1": outputs[max(batch_sizes)]}))
        elif command == "run":
            size, requests = args
            latencies = []
            for _ in range(requests):
                start = time.perf_counter()
                servable.run(batches[size])
                latencies.append(time.perf_counter() - start)
            conn.send(("ok", latencies))
        elif command == "memory":
            conn.send(("ok", memory_mib()))
        elif command == "reload":
            conn.send(("ok", _reload(spec, batch_sizes)))


def _reload(spec: Mapping[str, Any], batch_sizes: Sequence[int]) -> dict[str, float]:
    """A second copy of the servable loaded and warmed up beside the one serving, as TF Serving
    loads a new version before it unloads the old: the process's peak (VmHWM) with both, then
    its RSS once the copy is gone again."""
    second = SERVABLES[spec["kind"]](spec)
    for size in batch_sizes:
        second.run(second.batch(size))
    both = memory_mib()
    del second
    return {"peak_rss_mib": both["peak_rss_mib"], "rss_with_both_mib": both["rss_mib"],
            "rss_after_unload_mib": memory_mib()["rss_mib"]}


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def worker_main(conn: Any, spec: Mapping[str, Any]) -> None:
    """A contender's process: load (timed), report, then serve the parent's requests."""
    _log_to(spec["log"])
    try:
        start = time.perf_counter()
        servable = SERVABLES[spec["kind"]](spec)
        load_s = time.perf_counter() - start
        conn.send(("ok", {"load_s": load_s, "memory": memory_mib(), "info": servable.info}))
        _serve(conn, servable, spec["batch_sizes"], spec)
    except Exception as e:  # the parent reports it in one line and points at the log
        traceback.print_exc()
        conn.send(("error", _one_line(e)))


def convert_main(conn: Any, job: Mapping[str, Any]) -> None:
    """Build the float batch and the OpenVINO IR from the checkpoint, in a throwaway process."""
    _log_to(job["log"])
    try:
        conn.send(("ok", convert_checkpoint(job)))
    except Exception as e:
        traceback.print_exc()
        conn.send(("error", _one_line(e)))


def convert_checkpoint(job: Mapping[str, Any]) -> dict[str, Any]:
    """The network alone (float NHWC in, the export's head out), frozen and converted to IR.

    The float batch is the JPEGs run through exportkit's own preprocessing with
    the export's parameters, so OpenVINO is fed exactly what the TF variants'
    networks see after their in-graph decode. The TF answers on that batch are
    the reference for every contender's top-1 agreement.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import exportkit.heads  # noqa: F401  (registers the heads)
    from exportkit.plugin import load_plugins

    load_plugins()  # the built-in model plugins and the installed ones, as the app does

    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    images = _preprocess(job["jpegs"], job["preprocessing"])
    frozen, reference = _freeze_network(job, images)
    pb = out / "frozen.pb"
    pb.write_bytes(frozen.SerializeToString())
    np.save(out / "float_batch.npy", images)
    xml = _to_openvino_ir(pb, out / "model.xml")
    return {"xml": str(xml), "float_batch": str(out / "float_batch.npy"), "reference_top1": reference,
            "tensorflow": tf.__version__}


def _preprocess(jpegs: Sequence[bytes], params: Mapping[str, Any]) -> np.ndarray:
    import tensorflow as tf

    from exportkit.preprocessing import standard

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        encoded = tf.compat.v1.placeholder(tf.string, [None])
        return sess.run(standard(encoded, dict(params)), {encoded: list(jpegs)})


def _freeze_network(job: Mapping[str, Any], images: np.ndarray) -> tuple[Any, dict[str, list]]:
    """Network + head restored from the checkpoint, variables folded into constants."""
    import tensorflow as tf

    from exportkit.estimator import predict

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        inputs = v1.placeholder(tf.float32, [None, *images.shape[1:]], name="images")
        # No class names: OpenVINO's CPU plugin computes numbers, not strings.
        params = {"model": job["model"], "head": {**job["head"], "class_names": False}}
        predictions = predict(inputs, model=job["model"]["name"], head=job["head"]["name"], params=params,
                              empty_batches=False)
        with v1.Session(graph=graph) as sess:
            v1.train.Saver().restore(sess, job["checkpoint"])
            reference = sess.run(predictions, {inputs: images})
            frozen = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), sorted(predictions))
    return frozen, _top1(reference["classes"], reference["probabilities"])


def _to_openvino_ir(pb: Path, xml: Path) -> Path:
    """OpenVINO's TensorFlow frontend reads the frozen GraphDef; the IR keeps f32 weights
    (save_model would otherwise store them as f16, which is not the same weights)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(pb)), str(xml), compress_to_fp16=False)
    return xml
