"""export.precision, export.freeze, export.fold_batch_norm: what they bake into the graph,
and that each keeps the answers (fp32) or passes the agreement gate (bf16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from exportkit import optimize
from exportkit.errors import ExportError
from exportkit.verify import bf16_agreement, run_signature, sample_jpegs
from tests.conftest import REPO, compose_config, export_in_process, integer_versions

v1 = tf.compat.v1


def _export(model_dir: Path, root: Path, *overrides: str) -> dict:
    result, _ = export_in_process("model.size=18", f"checkpoint.path={model_dir}", f"export.root={root}",
                                  "serving.warmup.enabled=false", *overrides)
    return result


def _metadata(result: dict) -> dict:
    return json.loads((Path(result["version_path"]) / "assets.extra" / "export_metadata.json").read_text())


def _answers(version: str, images: list[bytes]) -> dict[str, np.ndarray]:
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], version)
        return run_signature(sess, meta.signature_def["predict_images"], {"images": np.array(images, dtype=object)})


@pytest.fixture(scope="module")
def exports(resnet18_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    return {
        "plain": _export(resnet18_model_dir, root, "export.model_name=plain", "export.freeze=false",
                         "export.fold_batch_norm=false"),
        "frozen": _export(resnet18_model_dir, root, "export.model_name=frozen", "export.fold_batch_norm=false"),
        "folded": _export(resnet18_model_dir, root, "export.model_name=folded"),
        "variables": _export(resnet18_model_dir, root, "export.model_name=variables", "export.freeze=false"),
        "bf16": _export(resnet18_model_dir, root, "export.model_name=bf16", "export.precision=bf16"),
        "bf16_variables": _export(resnet18_model_dir, root, "export.model_name=bf16_variables",
                                  "export.precision=bf16", "export.freeze=false"),
    }


def test_fp32_optimizations_keep_the_answers(exports):
    images = sample_jpegs(224) + sample_jpegs(224, seed=5)
    plain = _answers(exports["plain"]["version_path"], images)
    for name in ("frozen", "folded", "variables"):
        got = _answers(exports[name]["version_path"], images)
        np.testing.assert_array_equal(got["classes"], plain["classes"])
        np.testing.assert_allclose(got["probabilities"], plain["probabilities"], atol=1e-4)
    assert _metadata(exports["plain"])["optimizations"] == []
    assert _metadata(exports["frozen"])["optimizations"] == ["frozen"]
    assert _metadata(exports["folded"])["optimizations"] == ["frozen", "8 batch norms folded"]
    assert _metadata(exports["variables"])["optimizations"] == ["8 batch norms folded", "22 weight tensors in variables"]  # 21 filters + dense


def _loaded_graph(version: str) -> tuple[list, set]:
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        v1.saved_model.loader.load(sess, ["serve"], version)
        return [(v.op.name, v.dtype.base_dtype) for v in v1.global_variables()], {op.type for op in graph.get_operations()}


def test_where_the_weights_live(exports):
    variables, ops = _loaded_graph(exports["folded"]["version_path"])
    assert variables == []  # frozen: constants in the graph, nothing to restore
    assert "FusedBatchNormV3" in ops  # the batch norms on block inputs stay (a ReLU follows, no conv before)
    assert "BiasAdd" in ops
    variables, _ = _loaded_graph(exports["variables"]["version_path"])
    assert len(variables) == 22 and {dtype for _, dtype in variables} == {tf.float32}
    variables, _ = _loaded_graph(exports["bf16_variables"]["version_path"])
    assert sum(dtype == tf.bfloat16 for _, dtype in variables) >= 20  # the convolution filters, stored in bfloat16
    sizes = {name: sum(f.stat().st_size for f in Path(exports[name]["version_path"]).rglob("*")) for name in exports}
    assert sizes["bf16_variables"] < 0.6 * sizes["variables"]


def test_bf16_keeps_the_signature_and_records_the_gate(exports):
    assert exports["bf16"]["signature"] == exports["folded"]["signature"]
    signature = exports["bf16"]["signature"]
    assert signature["inputs"]["images"]["dtype"] == "string"
    assert (signature["outputs"]["classes"]["dtype"], signature["outputs"]["probabilities"]["dtype"]) == ("int32", "float32")
    metadata = _metadata(exports["bf16"])
    precision = metadata["precision"]
    assert precision["value"] == "bf16" and precision["passed"] is True and precision["images"] == 64
    assert precision["top1_agreement_near_ties_aside"] >= 0.99
    assert 0 < precision["max_log_probability_error"] < 0.5
    assert metadata["optimizations"][-1].startswith("bfloat16 (")
    graph_def = tf.compat.v1.GraphDef()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(exports["bf16"]["version_path"]) / "saved_model.pb").read_bytes())
    graph_def.CopyFrom(saved.meta_graphs[0].graph_def)
    converted = optimize.count_bfloat16_ops(graph_def)
    assert converted["Conv2D"] >= 20  # every convolution of ResNet-18 computes in bfloat16
    weights = [n for n in graph_def.node if n.op == "Const" and n.attr["dtype"].type == tf.bfloat16.as_datatype_enum]
    assert len(weights) >= 20  # stored as bfloat16, not cast at every request


def test_bf16_runs_where_onednn_is_off(exports):
    probe = ("import sys, numpy as np, tensorflow as tf; sys.path.insert(0, sys.argv[2]);"
             "from exportkit.verify import run_signature, sample_jpegs;"
             "g = tf.Graph(); s = tf.compat.v1.Session(graph=g)\n"
             "with g.as_default(): m = tf.compat.v1.saved_model.loader.load(s, ['serve'], sys.argv[1])\n"
             "out = run_signature(s, m.signature_def['predict_images'], {'images': np.array(sample_jpegs(224), dtype=object)})\n"
             "print(out['classes'].shape, out['probabilities'].dtype)")
    run = subprocess.run([sys.executable, "-c", probe, exports["bf16"]["version_path"], str(REPO)],
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


def test_the_gate_fails_a_broken_bf16_graph_and_publishes_nothing(resnet18_model_dir, tmp_path, monkeypatch):
    convert = optimize.to_bfloat16
    monkeypatch.setattr(optimize, "to_bfloat16", lambda gd, outs: _negate_the_logits_layer(convert(gd, outs)))
    with pytest.raises(ExportError, match=r"bf16 answers disagree with fp32: top-1 agreement \d+\.\d% with near-ties aside"):
        _export(resnet18_model_dir, tmp_path, "export.precision=bf16")
    assert integer_versions(tmp_path / "resnet") == []


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
    assert count == 1 and not [n for n in folded.node if n.op.startswith("FusedBatchNorm")]
    feed = rng.normal(size=shape).astype(np.float32)
    answers = []
    for graph_def in (graph.as_graph_def(), folded):
        g = tf.Graph()
        with g.as_default(), v1.Session(graph=g) as sess:
            tf.graph_util.import_graph_def(graph_def, name="")
            answers.append(sess.run("out:0", {"x:0": feed}))
    np.testing.assert_allclose(answers[1], answers[0], atol=1e-4)


def test_bf16_with_weights_in_variables_passes_the_gate(exports):
    precision = _metadata(exports["bf16_variables"])["precision"]
    assert precision["passed"] is True and precision["top1_agreement_near_ties_aside"] >= 0.99


def test_precision_is_checked_at_compose_time():
    with pytest.raises(Exception) as error:
        compose_config("export.precision=fp16")
    assert "expected one of [fp32, bf16]" in str(error.value.__cause__ or error.value)
