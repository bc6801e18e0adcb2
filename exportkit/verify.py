"""Reload a written SavedModel as TF Serving does and check its answers.

TF Serving's SavedModel loader is ``loader.load(sess, ["serve"], dir)`` in a
fresh graph; the check runs the same JPEGs through every exported signature
and compares with the graph that wrote the version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from . import runtime
from .errors import ExportError, first_line
from .serving import read_warmup
from .signatures import CLASSIFY, IMAGE_TENSOR, Interface, expected_answers, request_inputs

PREDICT_METHOD = tf.saved_model.PREDICT_METHOD_NAME
# Reloading changes no weights, but oneDNN may pick other kernels for the new
# session's graph; 1e-4 is the bar the notebook parity is held to.
_TOLERANCE = 1e-4


def sample_jpegs(image_size: int, *, seed: int = 0) -> list[bytes]:
    """Deterministic smooth test images: exact size, larger and smaller, odd aspect."""
    shapes = [(image_size, image_size), (image_size + 88, image_size + 36), (image_size // 2 + 13, image_size - 20)]
    return encode_jpegs(shapes, seed=seed)


def input_size_jpegs(image_size: int, count: int, *, seed: int = 1) -> list[bytes]:
    """``count`` different images at the model's input size, as the client sends them."""
    return encode_jpegs([(image_size, image_size)] * count, seed=seed)


def encode_jpegs(shapes: Sequence[tuple[int, int]], *, seed: int) -> list[bytes]:
    rng = np.random.RandomState(seed)
    # A private graph, so this works whether or not the caller is building one.
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        pixels = tf.compat.v1.placeholder(tf.uint8, [None, None, 3])
        encoded = tf.io.encode_jpeg(pixels, quality=90)
        return [sess.run(encoded, {pixels: _smooth_pixels(rng, height, width)}) for height, width in shapes]


def _smooth_pixels(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        127 + 100 * np.sin(x / rng.uniform(5, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(5, 40))
        for _ in range(3)
    ]
    pixels = np.stack(channels, -1) + rng.normal(0, 8, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _describe(tensor_info: Any) -> dict[str, Any]:
    dims = [d.size for d in tensor_info.tensor_shape.dim]
    return {
        "name": tensor_info.name,
        "dtype": tf.dtypes.as_dtype(tensor_info.dtype).name,
        "shape": None if tensor_info.tensor_shape.unknown_rank else dims,
    }


def signature_summary(signature_def: Any) -> dict[str, Any]:
    return {
        "method": signature_def.method_name,
        "inputs": {k: _describe(v) for k, v in sorted(signature_def.inputs.items())},
        "outputs": {k: _describe(v) for k, v in sorted(signature_def.outputs.items())},
    }


def run_signature(sess: tf.compat.v1.Session, signature_def: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    feeds = {signature_def.inputs[k].name: v for k, v in inputs.items()}
    fetches = {k: v.name for k, v in signature_def.outputs.items()}
    return sess.run(fetches, feed_dict=feeds)


def verify_saved_model(
    version_dir: Path,
    *,
    interface: Interface,
    labels: list[str] | None,
    images: Sequence[bytes],
    expected: Mapping[str, np.ndarray],
    warmup: Path | None = None,
) -> dict[str, Any]:
    """Load ``version_dir`` with the serve tag in a fresh graph and compare answers.

    ``expected`` holds the in-memory graph's predictions for ``images`` through its
    main input. Every signature of the interface gets the same images as its clients
    send them (encoded, as pixels, in tf.Examples) on the whole batch and on the first
    image alone (pixels: each image alone, as their shapes differ), and must answer
    the same, with passthrough inputs echoed; then the ``warmup`` file's requests are
    replayed as TF Serving replays them at load. Before any of that, ``expected`` must
    not answer every image alike (see check_answers_depend_on_input). Raises
    ExportError on any difference or failure.
    """
    check_answers_depend_on_input(expected)
    try:
        return _reload_and_compare(version_dir, interface, labels, images, expected, warmup)
    except (tf.errors.OpError, OSError, DecodeError) as e:
        raise ExportError(f"verification: the written version does not load or run: {first_line(e)}") from None


# Different images whose float outputs all agree within this, with the same
# classes, got one answer: far below what any input-dependent network shows,
# far above float noise on the same answer.
ALIKE_TOLERANCE = 1e-6


def check_answers_depend_on_input(answers: Mapping[str, np.ndarray]) -> None:
    """Raise ExportError if every image got the same answer.

    ``answers`` holds one row per (different) image. They are alike when every
    non-float output (classes, class names) is identical across the rows and
    every float output (probabilities, scores) is within ALIKE_TOLERANCE of the
    first row's. A network whose answers ignore the input (a zeroed last layer,
    dead activations, an untrained checkpoint) would otherwise reload and verify
    as "same answers": a comparison of two useless graphs proves nothing.
    Fewer than two images, or no outputs, say nothing and pass.
    """
    arrays = {key: np.asarray(value) for key, value in answers.items()}
    rows = {len(value) for value in arrays.values() if value.ndim > 0}
    if not arrays or len(rows) != 1 or rows.pop() < 2:
        return
    spread = 0.0
    for value in arrays.values():
        if np.issubdtype(value.dtype, np.floating):
            spread = max(spread, float(np.max(np.abs(value - value[:1]))) if value.size else 0.0)
            if not spread <= ALIKE_TOLERANCE:
                return
        elif np.any(value != value[:1]):
            return
    count = len(next(iter(arrays.values())))
    shown = ""
    if "classes" in arrays and arrays["classes"].ndim == 2 and arrays["classes"].shape[1]:
        shown = f": top class {arrays['classes'][0, 0]}"
        if "probabilities" in arrays and arrays["probabilities"].shape == arrays["classes"].shape:
            shown += f" at probability {float(arrays['probabilities'][0, 0]):.4g}"
        shown += " for each"
    raise ExportError(
        f"verification: the network answers every image alike ({count} different sample JPEGs{shown}, "
        f"classes identical, float outputs within {spread:.1g}): its answers do not depend on the input; "
        "a degenerate or untrained checkpoint?"
    )


_METHODS = {CLASSIFY: tf.saved_model.CLASSIFY_METHOD_NAME}


def _batches(kind: str, count: int) -> list[list[int]]:
    """Which images go into each request: all and the first alone, or each alone for pixels."""
    if kind == IMAGE_TENSOR:
        return [[i] for i in range(count)]
    return [list(range(count)), [0]] if count else [[]]


def _reload_and_compare(version_dir: Path, interface: Interface, labels: list[str] | None,
                        images: Sequence[bytes], expected: Mapping[str, np.ndarray],
                        warmup: Path | None) -> dict[str, Any]:
    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        signature_defs = _signature_defs(tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING],
                                                                               str(version_dir)))
        replayed = _replay_warmup(sess, signature_defs, warmup) if warmup else None
        worst = 0.0
        for name, kind in interface.signatures().items():
            if name not in signature_defs:
                raise ExportError(f"verification: signature {name!r} missing from {version_dir}")
            sig = signature_defs[name]
            method = _METHODS.get(kind, PREDICT_METHOD)
            for batch in _batches(kind, len(images)):
                inputs = request_inputs(interface, kind, [images[i] for i in batch])
                if sig.method_name != method or set(sig.inputs) != set(inputs):
                    raise ExportError(
                        f"verification: signature {name!r} is {sig.method_name} with inputs "
                        f"{sorted(sig.inputs)}, expected {method} with {sorted(inputs)}"
                    )
                predictions = {k: v[batch] for k, v in expected.items()}
                want = expected_answers(interface, kind, predictions, inputs, labels=labels)
                worst = max(worst, _compare(name, run_signature(sess, sig, inputs), want))
    result = {"passed": True, "images": len(images), "signatures": list(interface.signatures()),
              "max_abs_diff": worst}
    if replayed is not None:
        result["warmup_requests"] = replayed
    return result


def _signature_defs(meta_graph: Any) -> dict[str, Any]:
    """The signatures, copied out of the loaded MetaGraphDef so that it can go: a frozen
    version's holds every weight once more (a submessage kept would keep it all)."""
    copies = {}
    for name, signature in meta_graph.signature_def.items():
        copies[name] = type(signature)()
        copies[name].CopyFrom(signature)
    return copies


def _replay_warmup(sess: tf.compat.v1.Session, signature_defs: Mapping[str, Any], path: Path) -> int:
    """Run every warmup record through the signature it names; return how many.

    TF Serving fails to load a version whose warmup request fails, so a bad
    record here must stop the export.
    """
    logs = read_warmup(path)
    for number, log in enumerate(logs):
        where = f"verification: warmup record {number}"
        kind = log.WhichOneof("log_type")
        if kind not in ("predict_log", "classify_log"):
            raise ExportError(f"{where} is a {kind}, not a predict_log or classify_log")
        request = getattr(log, kind).request
        name = request.model_spec.signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        if name not in signature_defs:
            raise ExportError(f"{where} calls signature {name!r}, which the version does not have")
        signature = signature_defs[name]
        if kind == "classify_log":
            if signature.method_name != tf.saved_model.CLASSIFY_METHOD_NAME:
                raise ExportError(f"{where} classifies through {name!r}, a {signature.method_name} signature")
            examples = [example.SerializeToString() for example in request.input.example_list.examples]
            inputs = {next(iter(signature.inputs)): np.array(examples, dtype=object)}
        else:
            if set(request.inputs) != set(signature.inputs):
                raise ExportError(f"{where} sends inputs {sorted(request.inputs)}, the signature takes "
                                  f"{sorted(signature.inputs)}")
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        batch = len(next(iter(inputs.values())))
        for key, value in run_signature(sess, signature, inputs).items():
            if value.shape[:1] != (batch,):
                raise ExportError(f"{where}: output {key!r} has shape {list(value.shape)} for a batch of {batch}")
    return len(logs)


def _near_ties(scores: np.ndarray) -> np.ndarray:
    """Entries within the tolerance of a neighbour in their row: their order may swap."""
    close = np.abs(np.diff(scores, axis=-1)) <= _TOLERANCE
    mask = np.zeros(scores.shape, bool)
    mask[..., 1:] |= close
    mask[..., :-1] |= close
    return mask


def _compare(signature: str, got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """Largest float difference; raises on any other difference.

    Other outputs (classes, class names) must match exactly, except where a float
    output of the same shape (their scores) shows a near-tie that rounding may
    reorder.
    """
    if set(got) != set(expected):
        raise ExportError(f"verification: {signature!r} outputs {sorted(got)}, expected {sorted(expected)}")
    worst = 0.0
    for key, want in expected.items():
        have = got[key]
        if have.shape != want.shape or have.dtype != want.dtype:
            raise ExportError(
                f"verification: {signature!r} output {key!r} is {have.dtype}{list(have.shape)}, "
                f"expected {want.dtype}{list(want.shape)}"
            )
        if not np.issubdtype(want.dtype, np.floating):  # classes, class names
            allowed = np.zeros(want.shape, bool)
            for scores in expected.values():
                if scores.shape == want.shape and np.issubdtype(scores.dtype, np.floating):
                    allowed |= _near_ties(scores)
            if np.any((have != want) & ~allowed):
                raise ExportError(f"verification: {signature!r} output {key!r} differs from the exporting graph")
        else:
            diff = float(np.max(np.abs(have - want))) if want.size else 0.0
            if not diff <= _TOLERANCE:
                raise ExportError(
                    f"verification: {signature!r} output {key!r} differs from the exporting graph by {diff:.3g}"
                )
            worst = max(worst, diff)
    return worst


# A healthy bfloat16 network stays well inside this in log-probability of the
# classes both precisions rank in their top k; a wrong cast or a damaged weight
# goes far past it.
MAX_BF16_LOG_ERROR = 0.5


def bf16_agreement(fp32: Mapping[str, np.ndarray], bf16: Mapping[str, np.ndarray], *,
                   min_top1_agreement: float) -> dict[str, Any]:
    """How far the bf16 graph's answers are from fp32's, and whether that passes.

    A top-1 flip counts against ``min_top1_agreement`` unless fp32 itself was
    undecided: its top two classes within twice the measured bf16 error (in
    log-probability) of each other. Random-weight checkpoints are full of such
    near-ties; a broken graph shows as a measured error past MAX_BF16_LOG_ERROR.
    """
    classes32, probs32 = fp32["classes"], fp32["probabilities"].astype(np.float64)
    classes16, probs16 = bf16["classes"], bf16["probabilities"].astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    errors = []
    for row in range(len(classes32)):
        shared = set(classes32[row]) & set(classes16[row])
        errors += [abs(np.log(max(probs16[row][list(classes16[row]).index(c)], tiny))
                       - np.log(max(probs32[row][list(classes32[row]).index(c)], tiny))) for c in shared]
        if not shared:
            errors.append(np.inf)
    measured = float(max(errors, default=0.0))
    flips = classes32[:, 0] != classes16[:, 0]
    if classes32.shape[1] > 1:
        margins = np.log(np.maximum(probs32[:, 0], tiny)) - np.log(np.maximum(probs32[:, 1], tiny))
        near_ties = flips & (margins <= 2 * min(measured, MAX_BF16_LOG_ERROR))
    else:  # k=1 shows no runner-up: every flip counts
        near_ties = np.zeros_like(flips)
    count = len(classes32)
    agreement = 1.0 - float((flips & ~near_ties).sum()) / count if count else 1.0
    return {
        "images": count,
        "top1_agreement": 1.0 - float(flips.sum()) / count if count else 1.0,
        "top1_agreement_near_ties_aside": agreement,
        "near_tie_flips": int(near_ties.sum()),
        "max_log_probability_error": measured,
        "max_probability_diff": float(np.max(np.abs(np.sort(probs32, 1) - np.sort(probs16, 1)))) if count else 0.0,
        "passed": bool(agreement >= min_top1_agreement and measured <= MAX_BF16_LOG_ERROR),
    }
