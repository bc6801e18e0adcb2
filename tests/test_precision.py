"""export.precision, export.freeze and the graph rewrites (fold_batch_norm, fuse_residual_add,
scale_shift_batch_norm): what they bake into the graph, that each keeps the answers (fp32)
or passes the agreement gate (bf16), and that TF's own optimizer fuses what they prepare.

The exports are of the CIFAR-10 ResNet-8: the ImageNet ResNet's v2 building blocks (each
first block of a stage with its projection shortcut), one per stage, at 32x32, so the
rewrites meet every pattern they handle for a fifth of ResNet-18's cost. Its structure:
an initial convolution (then an Identity), 3 stages of one block (batch norm and ReLU,
convolution, batch norm and ReLU, convolution, plus a projection of the first ReLU's
output), a final batch norm and ReLU, pooling and the dense layer: 10 convolutions,
7 batch norms. Every default export of any model is also checked against its unrewritten
graph by verification (tests/test_end_to_end.py exports ResNet-18 so)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from exportkit import optimize, runtime
from exportkit.errors import ExportError
from exportkit.verify import bf16_agreement, sample_jpegs
from tests.helpers import (AS_BUILT, CIFAR8, FAST, REPO, answers, compose_config, export_in_process, export_metadata,
                           export_with_onednn, integer_versions)

v1 = tf.compat.v1

# Marked `runtime` (make test runs them under oneDNN on and off): the tests that run graphs whose
# kernels or fusions oneDNN changes. What an export wrote is the same whichever runtime reads it.
RUNTIME = pytest.mark.runtime
SIZE = 32


def _export(model_dir: Path, root: Path, *overrides: str) -> dict:
    # No verification: the tests compare every variant's answers with the plain export's themselves.
    return export_in_process(*CIFAR8, f"checkpoint.path={model_dir}", f"export.root={root}", *FAST, *overrides)[0]


def _export_bf16(model_dir: Path, root: Path, name: str, *overrides: str) -> dict:
    return export_with_onednn(*CIFAR8, f"checkpoint.path={model_dir}", f"export.root={root}",
                              "serving.warmup.enabled=false", f"export.model_name={name}", "export.precision=bf16",
                              *overrides, run_dir=root / f"run-{name}")


def _metadata(result: dict) -> dict:
    return export_metadata(result["version_path"])


REWRITES = ("fold_batch_norm", "fuse_residual_add", "scale_shift_batch_norm")


def _only(rewrite: str | None) -> list[str]:
    """Frozen, with one graph rewrite on (or none) and the others off."""
    return ["export.freeze=true", *(f"export.{name}={'true' if name == rewrite else 'false'}" for name in REWRITES)]


@pytest.fixture(scope="module")
def exports(cifar8_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    return {
        "plain": _export(cifar8_model_dir, root, "export.model_name=plain", *AS_BUILT),
        "frozen": _export(cifar8_model_dir, root, "export.model_name=frozen", *_only(None)),
        **{rewrite: _export(cifar8_model_dir, root, f"export.model_name={rewrite}", *_only(rewrite))
           for rewrite in REWRITES},
        # Every rewrite, frozen; "variables" is the same in variables (the default since issue 18).
        "defaults": _export(cifar8_model_dir, root, "export.model_name=defaults", "export.freeze=true"),
        "variables": _export(cifar8_model_dir, root, "export.model_name=variables", "export.freeze=false"),
    }


@pytest.fixture(scope="module")
def bf16_exports(cifar8_model_dir, tmp_path_factory):
    """Made with oneDNN on (in a child where this process has it off); read by tests that need no runtime."""
    root = tmp_path_factory.mktemp("bf16")
    return {"bf16": _export_bf16(cifar8_model_dir, root, "bf16", "export.freeze=true"),
            "bf16_variables": _export_bf16(cifar8_model_dir, root, "bf16_variables", "export.freeze=false")}


@RUNTIME
def test_fp32_optimizations_keep_the_answers(exports):
    images = sample_jpegs(SIZE) + sample_jpegs(SIZE, seed=5)
    plain = answers(exports["plain"]["version_path"], images)
    for name in ("frozen", *REWRITES, "defaults", "variables"):
        got = answers(exports[name]["version_path"], images)
        np.testing.assert_array_equal(got["classes"], plain["classes"])
        np.testing.assert_allclose(got["probabilities"], plain["probabilities"], atol=1e-4)
    assert _metadata(exports["plain"])["optimizations"] == []
    assert _metadata(exports["frozen"])["optimizations"] == ["frozen"]
    # The second batch norm of each block follows its convolution; the first block's first reads the
    # initial convolution through an Identity (as ImageNet's reads max pooling), so it is not folded.
    assert _metadata(exports["fold_batch_norm"])["optimizations"] == ["frozen", "3 batch norms folded"]
    assert _metadata(exports["fuse_residual_add"])["optimizations"] == ["frozen", "3 residual additions fused"]
    assert _metadata(exports["scale_shift_batch_norm"])["optimizations"] == ["frozen", "7 batch norms as scale and shift"]
    # Of the 4 left, the 2 stage ends and the last take their ReLU into a residual sum (read by
    # nothing else: the next block's shortcut is a projection); the first block's stays.
    everything = ["3 batch norms folded", "3 residual additions fused", "1 batch norms as scale and shift"]
    assert _metadata(exports["defaults"])["optimizations"] == ["frozen", *everything]
    # 6 3x3 filters and stage 3's 1x1 projection (32x64); the initial convolution (3x3x3x16), the
    # other projections and the dense layer (64x10) are under optimize.WEIGHT_ELEMENTS and stay constants.
    assert _metadata(exports["variables"])["optimizations"] == [*everything, "7 weight tensors in variables"]


def _loaded_graph(version: str) -> tuple[list, set]:
    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        v1.saved_model.loader.load(sess, ["serve"], version)
        return [(v.op.name, v.dtype.base_dtype) for v in v1.global_variables()], {op.type for op in graph.get_operations()}


def test_where_the_weights_live(exports, bf16_exports):
    variables, ops = _loaded_graph(exports["fold_batch_norm"]["version_path"])
    assert variables == []  # frozen: constants in the graph, nothing to restore
    assert "FusedBatchNormV3" in ops  # the batch norms on block inputs stay (a ReLU follows, no conv before)
    assert "BiasAdd" in ops
    variables, ops = _loaded_graph(exports["defaults"]["version_path"])
    assert variables == [] and not any(op.startswith("FusedBatchNorm") for op in ops)
    assert {"AddN", "DepthwiseConv2dNative"} <= ops  # the residual additions, the block inputs' batch norms
    variables, _ = _loaded_graph(exports["variables"]["version_path"])
    assert len(variables) == 7 and {dtype for _, dtype in variables} == {tf.float32}
    variables, _ = _loaded_graph(bf16_exports["bf16_variables"]["version_path"])
    assert [dtype for _, dtype in variables] == [tf.bfloat16] * 7  # the convolution filters, stored in bfloat16
    sizes = {name: sum(f.stat().st_size for f in (Path(result["version_path"]) / "variables").glob("variables.data*"))
             for name, result in {**exports, **bf16_exports}.items()}
    assert 0 < sizes["bf16_variables"] < 0.6 * sizes["variables"]


ONEDNN = runtime.current().onednn
NEEDS_ONEDNN = pytest.mark.skipif(not ONEDNN, reason=f"needs oneDNN in this process, off here ({runtime.current().source}); "
                                                    "make test runs it again with oneDNN on")


def _kernel_counts(version: str) -> collections.Counter:
    from benchmarks.profile_ops import step_kernels

    return collections.Counter(kernel for kernel, _ in step_kernels(version, batch=2)[0])


@RUNTIME
@NEEDS_ONEDNN  # the fusions are oneDNN's
def test_tf_fuses_what_the_rewrites_prepare(exports):
    """Loaded as TF Serving loads it, the default export runs no separate residual addition and no batch
    norm: grappler fused each addition into its convolution and each scale and shift with its ReLU."""
    plain = _kernel_counts(exports["plain"]["version_path"])
    fused = _kernel_counts(exports["defaults"]["version_path"])
    # As built, the batch norms with their ReLU on a residual sum (stages 2 and 3's inputs, the last);
    # grappler fuses the other four into the convolution before them (the Identity goes at load).
    assert plain["_MklNativeFusedBatchNormEx"] == 3
    assert not [kernel for kernel in fused if "BatchNorm" in kernel or kernel in ("AddN", "Relu")]
    assert plain["AddV2"] - fused["AddV2"] == 3  # the 3 residual additions (the rest count decode-loop steps)
    assert fused["_MklNativeFusedDepthwiseConv2dNative"] == 1  # the other 3 went into a sum with their ReLU
    convolutions = sum(count for kernel, count in fused.items() if "Conv2D" in kernel)
    assert convolutions == sum(count for kernel, count in plain.items() if "Conv2D" in kernel) == 10


def _residual_graph(final_gamma_sign: float = 1.0) -> tf.Graph:
    """Pre-activation blocks as ResNet v2 chains them: sums that are the next block's shortcut
    (one past an Identity), a sum read only by the next stage's batch norm and ReLU (a 1x1
    convolution and a padded 3x3 read that), a last sum whose batch norm and ReLU feed pooling, a
    reshape and the logits; a sum also read raw, and an addition that broadcasts."""
    rng = np.random.RandomState(3)

    def constant(*shape):
        return tf.constant(rng.normal(size=shape).astype(np.float32))

    def batch_norm(x, sign=1.0):
        gamma = rng.uniform(0.5, 2, 4) * np.array([1, 1, sign, 1])
        stats = [tf.constant(v.astype(np.float32)) for v in (gamma, rng.normal(size=4), rng.normal(size=4),
                                                              rng.uniform(0.5, 2, 4))]
        return tf.compat.v1.nn.fused_batch_norm(x, *stats, epsilon=1e-5, is_training=False)[0]

    def block(x, kernel=1):
        return tf.nn.conv2d(tf.nn.relu(batch_norm(x)), constant(kernel, kernel, 4, 4), 1, "SAME") + x

    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6, 6, 4], name="x")
        stem = tf.nn.conv2d(x, constant(3, 3, 4, 4), 1, "SAME")
        third = block(block(tf.identity(block(stem), name="block1"), kernel=3))
        h = tf.nn.relu(batch_norm(third))
        shortcut = tf.nn.conv2d(h, constant(1, 1, 4, 4), 1, "SAME")
        fourth = tf.nn.conv2d(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), constant(3, 3, 4, 4), 1, "VALID") + shortcut
        pooled = tf.nn.avg_pool2d(tf.nn.relu(batch_norm(fourth, final_gamma_sign)), 6, 1, "VALID")
        tf.matmul(tf.reshape(pooled, [-1, 4]), constant(4, 3), name="logits")
        raw = tf.nn.conv2d(x, constant(1, 1, 4, 4), 1, "SAME") + x
        tf.identity(tf.nn.relu(batch_norm(raw)) + raw, name="raw")  # read raw too: no shift
        tf.identity(tf.nn.conv2d(x, constant(1, 1, 4, 4), 1, "SAME") + constant(4), name="broadcast")
    return graph


def _run(graph_def, feed: np.ndarray) -> list[np.ndarray]:
    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        tf.graph_util.import_graph_def(graph_def, name="")
        return sess.run(["logits:0", "raw:0", "broadcast:0"], {"x:0": feed})


@RUNTIME
@pytest.mark.parametrize("final_gamma_sign", [1.0, -1.0])
def test_residual_fusion_and_scale_shift_keep_the_answers(final_gamma_sign):
    graph = _residual_graph(final_gamma_sign)
    fused, count = optimize.fuse_residual_adds(graph.as_graph_def(), optimize.addition_input_shapes(graph))
    # Five sums of a convolution and a same-shape tensor become AddN; four carry a bias the remapper
    # fuses ("raw"'s sum has no shift to carry); the broadcast addition stays.
    assert count == 4
    ops = [node.op for node in fused.node]
    assert ops.count("AddN") == 5 and ops.count("AddV2") == 2  # the broadcast addition, the one after "raw"'s ReLU
    # Sums that are also a shortcut carry minus their batch norm's mean (the two after the stem's, and the
    # last when a negative scale keeps its batch norm); the third, and the last when its scale is positive,
    # take their batch norm and ReLU in (relu(s(x - m) + b) = s relu(x - m + b/s)), so those batch norms go.
    centred = [node for node in fused.node if node.name.endswith("/centred_mean")]
    assert len(centred) == (2 if final_gamma_sign > 0 else 3)
    assert all(not optimize._const_value(node).any() for node in centred)
    assert ops.count("FusedBatchNormV3") == (4 if final_gamma_sign > 0 else 5)
    biases = [optimize._const_value(node) for node in fused.node if node.name.endswith("/bias")]
    assert len(biases) == 4 and all(bias.any() for bias in biases)  # "raw"'s sum has nothing to carry
    scaled, rewritten = optimize.scale_shift_batch_norms(fused)
    assert rewritten == ops.count("FusedBatchNormV3") and "FusedBatchNormV3" not in [n.op for n in scaled.node]
    feed = np.random.RandomState(4).normal(size=[2, 6, 6, 4]).astype(np.float32)
    expected = _run(graph.as_graph_def(), feed)
    for graph_def in (fused, scaled):
        for got, want in zip(_run(graph_def, feed), expected):  # values up to about 200: float rounding only
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_bf16_keeps_the_signature_and_records_the_gate(exports, bf16_exports):
    assert bf16_exports["bf16"]["signature"] == exports["defaults"]["signature"]
    signature = bf16_exports["bf16"]["signature"]
    assert signature["inputs"]["images"]["dtype"] == "string"
    assert (signature["outputs"]["classes"]["dtype"], signature["outputs"]["probabilities"]["dtype"]) == ("int32", "float32")
    metadata = _metadata(bf16_exports["bf16"])
    precision = metadata["precision"]
    assert precision["value"] == "bf16" and precision["passed"] is True and precision["images"] == 64
    assert precision["top1_agreement_near_ties_aside"] >= 0.99
    assert 0 < precision["max_log_probability_error"] < 0.5
    assert metadata["optimizations"][-1].startswith("bfloat16 (")
    graph_def = tf.compat.v1.GraphDef()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(bf16_exports["bf16"]["version_path"]) / "saved_model.pb").read_bytes())
    graph_def.CopyFrom(saved.meta_graphs[0].graph_def)
    converted = optimize.count_bfloat16_ops(graph_def)
    assert converted["Conv2D"] == 10  # every convolution computes in bfloat16
    nodes = {node.name: node for node in graph_def.node}
    filters = [optimize._source(nodes, node.input[1]) for node in graph_def.node if node.op == "Conv2D"]
    # stored as bfloat16, not cast at every request
    assert all(f is not None and f.attr["dtype"].type == tf.bfloat16.as_datatype_enum for f in filters)


def test_bf16_runs_where_onednn_is_off(bf16_exports):
    """Exported with oneDNN, served where it is off (TF's own kernels): in this process where
    oneDNN is off here, else in a child with TF_ENABLE_ONEDNN_OPTS=0."""
    version = bf16_exports["bf16"]["version_path"]
    if not ONEDNN:
        out = answers(version, sample_jpegs(SIZE))
        assert (out["classes"].shape, out["probabilities"].dtype) == ((3, 5), np.float32)
        return
    probe = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]);"
             "from tests.helpers import answers; from exportkit.verify import sample_jpegs;"
             f"out = answers(sys.argv[1], sample_jpegs({SIZE})); print(out['classes'].shape, out['probabilities'].dtype)")
    run = subprocess.run([sys.executable, "-c", probe, version, str(REPO)],
                         env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "(3, 5) float32"


def _negate_the_logits_layer(graph_def):
    """A broken bf16 graph: the final dense kernel's sign flipped after conversion."""
    nodes = {n.name: n for n in graph_def.node}
    matmul = next(n for n in graph_def.node if n.op == "MatMul")
    kernel = optimize._source(nodes, matmul.input[1])
    optimize._set_const(kernel, -optimize._const_value(kernel))
    return graph_def


@RUNTIME
@NEEDS_ONEDNN  # the broken conversion is patched into this process
def test_the_gate_fails_a_broken_bf16_graph_and_publishes_nothing(cifar8_model_dir, tmp_path, monkeypatch):
    """The gate is the network's agreement with itself: the smallest registered network shows it."""
    convert = optimize.to_bfloat16
    monkeypatch.setattr(optimize, "to_bfloat16", lambda gd, outs: _negate_the_logits_layer(convert(gd, outs)))
    with pytest.raises(ExportError, match=r"bf16 answers disagree with fp32: top-1 agreement \d+\.\d% with near-ties aside"):
        export_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}",
                          f"export.root={tmp_path}", *FAST, "export.precision=bf16")
    assert integer_versions(tmp_path / "cifar_resnet") == []


def test_agreement_gate_counts_only_flips_fp32_was_sure_about():
    classes32 = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    probs32 = np.array([[0.50, 0.49], [0.9, 0.05], [0.6, 0.3], [0.7, 0.2]], np.float32)
    tie_flip = {"classes": np.array([[2, 1], [3, 4], [5, 6], [7, 8]]),
                "probabilities": np.array([[0.498, 0.492], [0.9, 0.05], [0.6, 0.3], [0.7, 0.2]], np.float32)}
    result = bf16_agreement({"classes": classes32, "probabilities": probs32}, tie_flip, min_top1_agreement=0.99)
    assert result["top1_agreement"] == 0.75 and result["near_tie_flips"] == 1
    assert result["top1_agreement_near_ties_aside"] == 1.0 and result["passed"]

    sure_flip = {"classes": np.array([[1, 2], [4, 3], [5, 6], [7, 8]]),
                 "probabilities": np.array([[0.50, 0.49], [0.5, 0.45], [0.6, 0.3], [0.7, 0.2]], np.float32)}
    result = bf16_agreement({"classes": classes32, "probabilities": probs32}, sure_flip, min_top1_agreement=0.99)
    assert result["top1_agreement_near_ties_aside"] == 0.75 and not result["passed"]

    wrong = {"classes": classes32, "probabilities": probs32 * 0.2}  # same order, far off: a broken cast
    assert not bf16_agreement({"classes": classes32, "probabilities": probs32}, wrong, min_top1_agreement=0.5)["passed"]


@RUNTIME
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_fold_batch_norms_matches_conv_then_batch_norm(data_format):
    rng = np.random.RandomState(0)
    channels_first = data_format == "NCHW"
    graph = tf.Graph()
    with graph.as_default():
        shape = [2, 3, 9, 9] if channels_first else [2, 9, 9, 3]
        x = v1.placeholder(tf.float32, shape, name="x")
        conv = tf.nn.conv2d(x, tf.constant(rng.normal(size=[3, 3, 3, 4]).astype(np.float32)), 1, "SAME",
                            data_format=data_format)
        stats = [tf.constant(v.astype(np.float32)) for v in (rng.uniform(0.5, 2, 4), rng.normal(size=4),
                                                              rng.normal(size=4), rng.uniform(0.5, 2, 4))]
        y, *_ = tf.compat.v1.nn.fused_batch_norm(conv, *stats, epsilon=1e-5, is_training=False,
                                                 data_format=data_format)
        tf.identity(tf.nn.relu(y), name="out")
    folded, count = optimize.fold_batch_norms(graph.as_graph_def())
    assert count == {"Conv2D": 1, "DepthwiseConv2dNative": 0}
    assert not [n for n in folded.node if n.op.startswith("FusedBatchNorm")]
    feed = rng.normal(size=shape).astype(np.float32)
    answers = []
    for graph_def in (graph.as_graph_def(), folded):
        g = tf.Graph()
        with g.as_default(), runtime.session(g) as sess:
            tf.graph_util.import_graph_def(graph_def, name="")
            answers.append(sess.run("out:0", {"x:0": feed}))
    np.testing.assert_allclose(answers[1], answers[0], atol=1e-4)


def test_bf16_with_weights_in_variables_passes_the_gate(bf16_exports):
    precision = _metadata(bf16_exports["bf16_variables"])["precision"]
    assert precision["passed"] is True and precision["top1_agreement_near_ties_aside"] >= 0.99


@NEEDS_ONEDNN  # TF's bfloat16 rewrite is oneDNN's
def test_bf16_weights_are_put_back_as_constant_folding_leaves_them():
    """to_bfloat16 runs grappler with the weights as placeholders and puts them back itself: the
    graph is the one grappler's two passes give on the whole graph, node for node, no stand-in is
    left, and each weight is rounded to nearest even as TF's Cast rounds it."""
    rng = np.random.RandomState(7)
    filters = rng.randn(3, 3, 16, 1024).astype(np.float32)
    # ties to even (down, up, negative), just past a tie, infinity, a subnormal
    filters.reshape(-1)[:6] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20, np.inf, 1e-40]
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 8, 8, 16], name="images")
        conv = tf.nn.conv2d(images, tf.identity(tf.constant(filters, name="filters"), name="filters/read"), 1, "SAME")
        biased = tf.nn.bias_add(conv, tf.constant(rng.randn(1024).astype(np.float32), name="bias"))
        zero_biased = tf.nn.bias_add(biased, tf.constant(np.zeros(1024, np.float32), name="zeros"))  # folding drops it
        pooled = tf.reduce_mean(tf.nn.relu(zero_biased), [1, 2])
        logits = tf.matmul(pooled, tf.constant(rng.randn(1024, 10).astype(np.float32), name="kernel"))
        tf.nn.softmax(logits, name="probabilities")
    graph_def, outputs = graph.as_graph_def(), ["probabilities"]
    assert optimize._weight_stand_ins(graph_def, outputs) == {"filters", "bias", "kernel"}

    got = optimize.to_bfloat16(graph_def, outputs)
    whole = optimize._grappler(graph_def, outputs, ["auto_mixed_precision_onednn_bfloat16"])
    expected = optimize._grappler(whole, outputs, ["constfold"])
    assert {node.name: node for node in got.node} == {node.name: node for node in expected.node}
    assert [node.name for node in got.node if node.op == "Placeholder"] == ["images"]
    stored = tf.make_ndarray({node.name: node for node in got.node}["filters/read"].attr["value"].tensor)
    np.testing.assert_array_equal(stored.view(np.uint16), tf.cast(filters, tf.bfloat16).numpy().view(np.uint16))


def test_precision_is_checked_at_compose_time():
    with pytest.raises(Exception) as error:
        compose_config("export.precision=fp16")
    assert "expected one of [fp32, bf16]" in str(error.value.__cause__ or error.value)
