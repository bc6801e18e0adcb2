"""Graph-level work baked into the saved graph, so TF Serving runs it fast with
its own session options and no special flags.

Each step takes and returns a GraphDef of the whole serving graph (decode,
network, head), keeping every tensor name the signatures use:

* :func:`freeze`: variables become constants, so the weights can be rewritten
  below; :func:`split_weights` takes them back out afterwards, for a version
  that keeps its weights in variables (stored once in memory at serving);
* :func:`fold_batch_norms`: a batch norm that reads a convolution's output
  alone becomes a scaled filter and a bias, where the math allows (inference
  statistics, nothing else reading the convolution);
* :func:`to_bfloat16`: TF's own oneDNN bfloat16 mixed-precision rewrite
  (grappler's ``auto_mixed_precision_onednn_bfloat16``, the same pass TF runs
  when a session asks for it), then constant folding, so the saved graph holds
  bfloat16 weights and computes the network in bfloat16. Its inputs and outputs
  keep their types.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.core.protobuf import config_pb2

v1 = tf.compat.v1


def freeze(sess: v1.Session, graph: tf.Graph, output_names: Sequence[str]) -> graph_pb2.GraphDef:
    """The graph with every variable read replaced by its restored value."""
    with graph.as_default():
        return v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), list(output_names))


def split_weights(graph_def: graph_pb2.GraphDef, *, min_elements: int = 1024) -> tuple[graph_pb2.GraphDef, dict[str, np.ndarray]]:
    """The graph without its large constants, and those constants by name.

    A served graph that embeds its weights holds them in the GraphDef, in
    grappler's optimized copy and in the executor's kernels: about twice the
    memory of weights kept in variables. Small constants (shapes, scalars) stay.
    """
    out = graph_pb2.GraphDef()
    out.library.CopyFrom(graph_def.library)
    out.versions.CopyFrom(graph_def.versions)
    weights = {}
    for node in graph_def.node:
        if node.op == "Const" and _elements(node) >= min_elements:
            weights[node.name] = _const_value(node)
        else:
            out.node.add().CopyFrom(node)
    return out, weights


def _elements(node: node_def_pb2.NodeDef) -> int:
    return int(np.prod([d.size for d in node.attr["value"].tensor.tensor_shape.dim]))


# --------------------------------------------------------- batch-norm folding


def _const_value(node: node_def_pb2.NodeDef) -> np.ndarray:
    return tf.make_ndarray(node.attr["value"].tensor)


def _set_const(node: node_def_pb2.NodeDef, value: np.ndarray) -> None:
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))


def _source(nodes: dict[str, node_def_pb2.NodeDef], name: str) -> node_def_pb2.NodeDef | None:
    """The Const behind a tensor name, looking through Identity nodes (freezing leaves them)."""
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity":
        node = nodes.get(node.input[0].split(":")[0])
    return node if node is not None and node.op == "Const" else None


def fold_batch_norms(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, int]:
    """Conv2D -> FusedBatchNorm(inference) becomes Conv2D(scaled filter) -> BiasAdd.

    y = (conv(x, W) - mean) * gamma / sqrt(var + eps) + beta
      = conv(x, W * s) + (beta - mean * s),  s = gamma / sqrt(var + eps)

    The BiasAdd takes the batch norm's name, so whatever read it still does.
    Returns the new GraphDef and how many batch norms were folded.
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    nodes = {node.name: node for node in out.node}
    readers: dict[str, list[str]] = {}
    read = set()
    for node in out.node:
        for tensor in node.input:
            readers.setdefault(tensor.lstrip("^").split(":")[0], []).append(node.name)
            read.add(tensor.lstrip("^"))
    folded = 0
    for bn in list(out.node):
        if bn.op not in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3") or bn.attr["is_training"].b:
            continue
        conv = nodes.get(bn.input[0].split(":")[0])
        params = [_source(nodes, name) for name in bn.input[1:5]]
        if conv is None or conv.op != "Conv2D" or readers.get(conv.name) != [bn.name] or None in params:
            continue
        if any(f"{bn.name}:{output}" in read for output in range(1, 6)):
            continue  # something reads the batch statistics outputs
        conv_filter = _source(nodes, conv.input[1])
        if conv_filter is None or len(readers.get(conv_filter.name, [])) != 1:
            continue
        gamma, beta, mean, variance = (_const_value(p).astype(np.float64) for p in params)
        scale = gamma / np.sqrt(variance + bn.attr["epsilon"].f)
        weights = _const_value(conv_filter)
        _set_const(conv_filter, (weights * scale).astype(weights.dtype))  # HWIO: scale the output channels
        bias = out.node.add(name=f"{bn.name}/folded_bias", op="Const")
        bias.attr["dtype"].type = tf.float32.as_datatype_enum
        _set_const(bias, (beta - mean * scale).astype(np.float32))
        name, data_format = bn.name, bn.attr["data_format"].s or b"NHWC"
        bn.Clear()
        bn.name, bn.op = name, "BiasAdd"
        bn.input.extend([conv.name, bias.name])
        bn.attr["T"].type = tf.float32.as_datatype_enum
        bn.attr["data_format"].s = data_format
        folded += 1
    return out, folded


# ------------------------------------------------------------------ bfloat16


def _grappler(graph_def: graph_pb2.GraphDef, output_names: Sequence[str], optimizers: Sequence[str]) -> graph_pb2.GraphDef:
    """Run the named grappler passes over ``graph_def``, keeping ``output_names``."""
    from tensorflow.python.grappler import tf_optimizer

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        for name in output_names:  # grappler keeps what the train_op collection fetches
            graph.add_to_collection("train_op", graph.get_operation_by_name(name))
        meta_graph = v1.train.export_meta_graph(graph=graph)
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = list(optimizers)
    rewrite.min_graph_nodes = -1
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def to_bfloat16(graph_def: graph_pb2.GraphDef, output_names: Sequence[str]) -> graph_pb2.GraphDef:
    """The network in bfloat16 by TF's own rewrite; the casts of the constant
    weights are folded, so they are stored in bfloat16."""
    rewritten = _grappler(graph_def, output_names, ["auto_mixed_precision_onednn_bfloat16"])
    return _grappler(rewritten, output_names, ["constfold"])


def count_bfloat16_ops(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """Ops computing in bfloat16, by type (to tell a real rewrite from a no-op)."""
    counts: dict[str, int] = {}
    for node in graph_def.node:
        if "T" in node.attr and node.attr["T"].type == tf.bfloat16.as_datatype_enum and node.op != "Cast":
            counts[node.op] = counts.get(node.op, 0) + 1
    return counts
