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
* :func:`fuse_residual_adds`: a residual addition ``conv(h) + shortcut``
  takes the form grappler's remapper fuses into that convolution (oneDNN's sum
  post-op), so the sum is never a separate pass over memory;
* :func:`scale_shift_batch_norms`: the batch norms left (those on a block's
  input, after an addition) become a per-channel scale and shift that oneDNN
  runs, with the ReLU after it, at memory speed;
* :func:`to_bfloat16`: TF's own oneDNN bfloat16 mixed-precision rewrite
  (grappler's ``auto_mixed_precision_onednn_bfloat16``, the same pass TF runs
  when a session asks for it), then constant folding, so the saved graph holds
  bfloat16 weights and computes the network in bfloat16. Its inputs and outputs
  keep their types.

:func:`rewrite` runs the last four in their one order, as ``export.*`` asks for them;
the export and the benchmarks both go through it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from .errors import ExportError

v1 = tf.compat.v1


def freeze(sess: v1.Session, graph: tf.Graph, output_names: Sequence[str]) -> graph_pb2.GraphDef:
    """The graph with every variable read replaced by its restored value."""
    with graph.as_default():
        return v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), list(output_names))


# A constant of at least this many elements is a weight (a filter, a kernel, a bias of a
# wide layer); smaller ones are shapes, scalars and the like.
WEIGHT_ELEMENTS = 1024


def _emptied(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A GraphDef with ``graph_def``'s versions and function library and no node: what a
    rewrite fills anew (a new message, so the old one's values go with it)."""
    return graph_pb2.GraphDef(versions=graph_def.versions, library=graph_def.library, version=graph_def.version)


def split_weights(graph_def: graph_pb2.GraphDef, *,
                  min_elements: int = WEIGHT_ELEMENTS) -> tuple[graph_pb2.GraphDef, dict[str, np.ndarray]]:
    """The graph without its large constants, and those constants by name.

    A served graph that embeds its weights holds them in the GraphDef, in
    grappler's optimized copy and in the executor's kernels: about twice the
    memory of weights kept in variables. Small constants (shapes, scalars) stay.
    """
    out = _emptied(graph_def)
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


_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
_FLOAT = tf.float32.as_datatype_enum


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _data_format(node: node_def_pb2.NodeDef) -> bytes:
    """A node's data_format, NHWC where it is left at the default (reading a missing
    key of a NodeDef's attr map would add it, empty)."""
    return node.attr["data_format"].s if "data_format" in node.attr else b"NHWC"


def _flag(node: node_def_pb2.NodeDef, name: str) -> bool:
    return name in node.attr and node.attr[name].b


def _epsilon(batch_norm: node_def_pb2.NodeDef) -> float:
    return batch_norm.attr["epsilon"].f if "epsilon" in batch_norm.attr else 1e-4  # the op's default


class _Graph:
    """A GraphDef being rewritten in place, with who reads what."""

    def __init__(self, graph_def: graph_pb2.GraphDef) -> None:
        self.graph_def = graph_pb2.GraphDef()
        self.graph_def.CopyFrom(graph_def)
        self.nodes = {node.name: node for node in self.graph_def.node}
        self.readers: dict[str, list[str]] = {}
        self.read: set[str] = set()  # every tensor read, as "name:port" or "name"
        for node in self.graph_def.node:
            for tensor in node.input:
                self.readers.setdefault(_node_name(tensor), []).append(node.name)
                self.read.add(tensor.lstrip("^"))

    def pruned(self) -> graph_pb2.GraphDef:
        """The GraphDef without what the rewrite left unread: a batch norm, constant or
        Identity that something read before and nothing reads now (a replaced batch
        norm, the statistics only it read)."""
        before = set(self.readers)
        prunable = {"Const", "Identity", *_BATCH_NORMS}
        while True:
            read_now = {_node_name(t) for node in self.graph_def.node for t in node.input}
            dead = {node.name for node in self.graph_def.node
                    if node.op in prunable and node.name in before and node.name not in read_now}
            if not dead:
                return self.graph_def
            # Into a new GraphDef: a message's memory (protobuf's arena) keeps every value a
            # rewrite replaced until the whole message goes, a weight's old value included.
            compact = _emptied(self.graph_def)
            compact.node.extend(node for node in self.graph_def.node if node.name not in dead)
            self.graph_def = compact

    def only_reader(self, name: str, reader: str) -> bool:
        return self.readers.get(name) == [reader]

    def const(self, name: str, value: np.ndarray) -> node_def_pb2.NodeDef:
        node = self.graph_def.node.add(name=name, op="Const")
        node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
        _set_const(node, value)
        self.nodes[name] = node
        return node

    def batch_norm(self, node: node_def_pb2.NodeDef) -> list[np.ndarray] | None:
        """(gamma, beta, mean, variance) of an fp32 inference batch norm whose statistics are
        constants and whose other outputs nothing reads; None for anything else."""
        if node.op not in _BATCH_NORMS or _flag(node, "is_training") or node.attr["T"].type != _FLOAT:
            return None
        params = [_source(self.nodes, name) for name in node.input[1:5]]
        if None in params or any(f"{node.name}:{output}" in self.read for output in range(1, 6)):
            return None
        return [_const_value(p).astype(np.float64) for p in params]

    def replace_with_bias_add(self, node: node_def_pb2.NodeDef, value: str, bias: np.ndarray, data_format: bytes,
                              *, bias_name: str) -> None:
        """``node`` becomes BiasAdd(value, bias) under its own name, so whatever read it still does."""
        bias_node = self.const(f"{node.name}/{bias_name}", bias.astype(np.float32))
        name = node.name
        node.Clear()
        node.name, node.op = name, "BiasAdd"
        node.input.extend([value, bias_node.name])
        node.attr["T"].type = _FLOAT
        node.attr["data_format"].s = data_format


def _batch_norm_scale(params: Sequence[np.ndarray], epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """y = (x - mean) * gamma / sqrt(var + eps) + beta = x * scale + shift."""
    gamma, beta, mean, variance = params
    scale = gamma / np.sqrt(variance + epsilon)
    return scale, beta - mean * scale


def fold_batch_norms(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, dict[str, int]]:
    """Conv2D or DepthwiseConv2dNative -> FusedBatchNorm(inference) becomes the
    convolution with a scaled filter -> BiasAdd.

    y = (conv(x, W) - mean) * gamma / sqrt(var + eps) + beta
      = conv(x, W * s) + (beta - mean * s),  s = gamma / sqrt(var + eps)

    The BiasAdd takes the batch norm's name, so whatever read it still does.
    Returns the new GraphDef and how many batch norms were folded, by the
    convolution's op type.
    """
    g = _Graph(graph_def)
    folded = dict.fromkeys(_FOLDABLE, 0)
    for bn in list(g.graph_def.node):
        params = g.batch_norm(bn)
        if params is None:
            continue
        conv = g.nodes.get(_node_name(bn.input[0]))
        if conv is None or conv.op not in _FOLDABLE or not g.only_reader(conv.name, bn.name):
            continue
        conv_filter = _source(g.nodes, conv.input[1])
        if conv_filter is None or len(g.readers.get(conv_filter.name, [])) != 1:
            continue
        scale, shift = _batch_norm_scale(params, _epsilon(bn))
        weights = _const_value(conv_filter)
        _set_const(conv_filter, _scale_filter(weights, scale, conv.op).astype(weights.dtype))
        g.replace_with_bias_add(bn, conv.name, shift, _data_format(bn), bias_name="folded_bias")
        folded[conv.op] += 1
    return g.pruned(), folded


_FOLDABLE = ("Conv2D", "DepthwiseConv2dNative")


def _scale_filter(weights: np.ndarray, scale: np.ndarray, op: str) -> np.ndarray:
    """A filter whose output channel c is scaled by scale[c]: a Conv2D's HWIO scales O; a
    depthwise [H, W, in, multiplier] filter's output channel i * multiplier + m is (i, m)."""
    if op == "DepthwiseConv2dNative":
        return weights * scale.reshape(1, 1, weights.shape[2], weights.shape[3])
    return weights * scale


def count_batch_norms(graph_def: graph_pb2.GraphDef) -> int:
    """The batch norm ops in a graph (after the rewrites: those left as built)."""
    return sum(node.op in _BATCH_NORMS for node in graph_def.node)


# ------------------------------------------------ residual additions, block inputs


def _through_identities(g: _Graph, tensor: str) -> str:
    """The node behind ``tensor``, past Identity nodes (they pass a value on unchanged)."""
    node = g.nodes.get(_node_name(tensor))
    while node is not None and node.op == "Identity":
        node = g.nodes.get(_node_name(node.input[0]))
    return node.name if node is not None else _node_name(tensor)


def _value_readers(g: _Graph, name: str) -> list[node_def_pb2.NodeDef]:
    """The nodes that read the value of ``name``, past Identity nodes; control edges
    aside (they see no value). An Identity that nothing reads may be fetched, so it counts."""
    found, pending = [], [name]
    while pending:
        current = pending.pop()
        for reader in dict.fromkeys(g.readers.get(current, [])):
            node = g.nodes[reader]
            if not any(_node_name(t) == current and not t.startswith("^") for t in node.input):
                continue
            if node.op == "Identity" and g.readers.get(node.name):
                pending.append(node.name)
            else:
                found.append(node)
    return found


def _conv_branch(g: _Graph, add: node_def_pb2.NodeDef,
                 port: int) -> tuple[node_def_pb2.NodeDef, node_def_pb2.NodeDef | None] | None:
    """(Conv2D, its BiasAdd or None) when input ``port`` of ``add`` is a convolution's output
    that only the addition reads (the remapper fuses nothing else)."""
    tensor = add.input[port]
    node = g.nodes.get(_node_name(tensor))
    if node is None or (tensor.partition(":")[2] or "0") != "0" or not g.only_reader(node.name, add.name):
        return None
    if node.op == "Conv2D":
        return node, None
    conv = g.nodes.get(_node_name(node.input[0])) if node.op == "BiasAdd" else None
    if conv is not None and conv.op == "Conv2D" and g.only_reader(conv.name, node.name) and _source(g.nodes, node.input[1]):
        return conv, node
    return None


def _scaled_inputs(g: _Graph, name: str, channels: int, data_format: bytes) -> list[tuple[node_def_pb2.NodeDef, int]] | None:
    """Where a positive per-channel scale on the value of ``name`` (``channels`` of them)
    can go instead: the (constant, axis) of every Conv2D filter and MatMul kernel that
    reads it, past ops that commute with such a scale (Identity, zero Pad, pooling, and
    in NHWC a Reshape to [-1, channels]). None if any path ends anywhere else, or may be
    fetched."""
    targets, pending = [], [name]
    while pending:
        current = pending.pop()
        readers = [g.nodes[r] for r in dict.fromkeys(g.readers.get(current, []))]
        if not readers:
            return None  # an end of the graph: something may fetch it
        for node in readers:
            port = next((i for i, t in enumerate(node.input) if _node_name(t) == current and not t.startswith("^")), None)
            if port is None:
                continue  # a control edge
            weights = _source(g.nodes, node.input[1]) if len(node.input) > 1 else None
            shape = _const_value(weights).reshape(-1).tolist() if node.op == "Reshape" and weights is not None else None
            if port == 0 and (node.op in ("Identity", "AvgPool", "MaxPool", "Pad")
                              or (node.op == "Reshape" and data_format == b"NHWC" and shape == [-1, channels])):
                pending.append(node.name)
            elif (port == 0 and node.op in ("Conv2D", "MatMul") and weights is not None
                  and len(g.readers.get(weights.name, [])) == 1
                  and not _flag(node, "transpose_a") and not _flag(node, "transpose_b")):
                targets.append((weights, 2 if node.op == "Conv2D" else 0))  # HWIO's I; a [C, K] kernel's C
            else:
                return None
    return targets


def addition_input_shapes(graph: tf.Graph) -> dict[str, list[list[int | None]]]:
    """Each Add/AddV2 operation's operand shapes, from the graph a GraphDef came
    from (a GraphDef alone has none): what :func:`fuse_residual_adds` needs."""
    return {op.name: [tensor.shape.as_list() for tensor in op.inputs] for op in graph.get_operations()
            if op.type in ("Add", "AddV2") and all(tensor.shape.rank is not None for tensor in op.inputs)}


def fuse_residual_adds(graph_def: graph_pb2.GraphDef,
                       input_shapes: Mapping[str, Sequence[Sequence[int | None]]]) -> tuple[graph_pb2.GraphDef, int]:
    """``conv(h) + shortcut`` becomes ``AddN(BiasAdd(conv(h), b), shortcut)``.

    That is the form grappler's remapper (TF 2.21) fuses into one oneDNN
    convolution whose sum post-op adds the shortcut as the output is written:
    it takes AddN, not an Add whose operands' shapes it cannot prove equal, and
    it needs a BiasAdd that constant folding leaves alone, so a real bias, not
    zeros. The bias comes from the inference batch norm that reads the sum
    (the next block's):

    * where that batch norm and its ReLU are all that read the sum (the last
      block of a stage, the network's end) and its scale s is positive, the
      pair moves into the sum and its readers,
      ``relu(s * (x - mean) + beta) = s * relu(x - mean + beta / s)``: the bias
      takes ``beta / s - mean``, the filters reading the ReLU take s, and the
      remapper fuses the ReLU into the convolution too;
    * otherwise (the sum is also the next block's shortcut) the sum computes
      ``x - mean`` instead of ``x``, that batch norm's mean becomes 0, and an
      addition whose shortcut is such a shifted sum takes the shift back out
      of its own bias.

    The outputs are the same up to float rounding. ``input_shapes`` gives each
    Add/AddV2 node's operand shapes (from the graph the GraphDef came from);
    only additions of two equal 4-D shapes are rewritten. Returns the new
    GraphDef and how many additions now have the fusable form (a bias of
    zeros, as from a freshly initialized checkpoint, does not).
    """
    g = _Graph(graph_def)
    branches = {}  # addition -> (port of the convolution branch, BiasAdd or None, channels, data format)
    for add in g.graph_def.node:
        shapes = [list(shape) for shape in input_shapes.get(add.name, ())]
        if (add.op not in ("Add", "AddV2") or len(add.input) != 2 or any(t.startswith("^") for t in add.input)
                or len(shapes) != 2 or shapes[0] != shapes[1] or len(shapes[0]) != 4 or None in shapes[0][1:]):
            continue
        for port in (0, 1):
            branch = _conv_branch(g, add, port)
            if branch is not None:
                data_format = _data_format(branch[0])
                branches[add.name] = (port, branch[1], shapes[0][1 if data_format == b"NCHW" else 3], data_format)
                break

    shifts: dict[str, np.ndarray] = {}  # sum -> what it now adds to x, as its readers see it
    absorbed: dict[str, np.ndarray] = {}  # sum -> what it adds to x, its batch norm and ReLU gone
    for name, (_, _, _, data_format) in branches.items():
        readers = _value_readers(g, name)
        norms = [r for r in readers if g.batch_norm(r) is not None and _through_identities(g, r.input[0]) == name
                 and _data_format(r) == data_format]
        if len(norms) != 1 or any(r.name not in branches for r in readers if r is not norms[0]):
            continue
        norm = norms[0]
        params = g.batch_norm(norm)
        scale, shift = _batch_norm_scale(params, _epsilon(norm))
        relus = _value_readers(g, norm.name)
        targets = (_scaled_inputs(g, relus[0].name, len(scale), data_format)
                   if len(readers) == 1 and [r.op for r in relus] == ["Relu"] else None)
        if targets is not None and np.all(scale > 0):
            absorbed[name] = shift / scale  # relu(x * scale + shift) = scale * relu(x + shift / scale)
            for weights, axis in targets:
                value = _const_value(weights)
                _set_const(weights, (value * scale.reshape([-1 if a == axis else 1 for a in range(value.ndim)]))
                           .astype(value.dtype))
            relus[0].input[0] = name
        else:
            shifts[name] = -params[2]  # minus the mean
            norm.input[3] = g.const(f"{norm.name}/centred_mean", np.zeros_like(shift, np.float32)).name

    fused = 0
    for name, (port, bias_add, channels, data_format) in branches.items():
        add = g.nodes[name]
        delta = shifts.get(name, absorbed.get(name, 0.0)) - shifts.get(_through_identities(g, add.input[1 - port]), 0.0)
        if bias_add is not None:
            bias = _source(g.nodes, bias_add.input[1])
            bias_add.input[1] = g.const(f"{name}/bias", (_const_value(bias) + delta).astype(np.float32)).name
        elif np.any(delta):
            bias = g.const(f"{name}/bias", np.broadcast_to(np.asarray(delta, np.float32), [channels]).copy())
            bias_add = g.graph_def.node.add(name=f"{name}/bias_add", op="BiasAdd")
            bias_add.input.extend([add.input[port], bias.name])
            bias_add.attr["T"].type = _FLOAT
            bias_add.attr["data_format"].s = data_format
            add.input[port] = bias_add.name
        add.op = "AddN"
        add.attr["N"].i = 2
        fused += bias_add is not None  # without a bias (all its shifts 0) the remapper leaves it alone
    return g.pruned(), fused


def scale_shift_batch_norms(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, int]:
    """Each inference batch norm left (NHWC) becomes x * scale + shift as a 1x1
    depthwise convolution and a BiasAdd.

    Same arithmetic as the batch norm's; but grappler fuses the pair with the
    ReLU after it into one oneDNN depthwise convolution, which runs near memory
    speed in bfloat16, where oneDNN's batch norm is several times slower.
    NCHW graphs keep their batch norms (TF has no NCHW depthwise kernel on CPU).
    Returns the new GraphDef and how many batch norms were rewritten.
    """
    g = _Graph(graph_def)
    count = 0
    for bn in list(g.graph_def.node):
        params = g.batch_norm(bn)
        if params is None or _data_format(bn) != b"NHWC":
            continue
        scale, shift = _batch_norm_scale(params, _epsilon(bn))
        scale_node = g.const(f"{bn.name}/scale", scale.astype(np.float32).reshape(1, 1, -1, 1))
        depthwise = g.graph_def.node.add(name=f"{bn.name}/scale_channels", op="DepthwiseConv2dNative")
        depthwise.input.extend([bn.input[0], scale_node.name])
        depthwise.attr["T"].type = _FLOAT
        depthwise.attr["strides"].list.i.extend([1, 1, 1, 1])
        depthwise.attr["dilations"].list.i.extend([1, 1, 1, 1])
        depthwise.attr["padding"].s = b"VALID"
        depthwise.attr["data_format"].s = b"NHWC"
        g.replace_with_bias_add(bn, depthwise.name, shift, b"NHWC", bias_name="shift")
        count += 1
    return g.pruned(), count


# ------------------------------------------------------------------ bfloat16


def _grappler(graph_def: graph_pb2.GraphDef, output_names: Sequence[str], optimizers: Sequence[str]) -> graph_pb2.GraphDef:
    """Run the named grappler passes over ``graph_def``, keeping ``output_names``."""
    from tensorflow.python.grappler import tf_optimizer

    # The MetaGraphDef is built around the GraphDef, not exported from an imported graph:
    # each of those steps holds every weight once more.
    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.graph_def.CopyFrom(graph_def)
    # grappler keeps what the train_op collection fetches
    meta_graph.collection_def["train_op"].node_list.value.extend(output_names)
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = list(optimizers)
    rewrite.min_graph_nodes = -1
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def to_bfloat16(graph_def: graph_pb2.GraphDef, output_names: Sequence[str]) -> graph_pb2.GraphDef:
    """The network in bfloat16 by TF's own rewrite; the casts of the constant
    weights are folded, so they are stored in bfloat16.

    Both grappler passes hold several copies of every constant while they run
    (nine of the fp32 weights, 1.8 GiB at ResNet-152), so they run on the graph
    with its weights as placeholders of the same type and shape
    (:func:`_weight_stand_ins`); :func:`_put_weights_back` then does for the
    weights what constant folding did: each bfloat16 cast of a weight becomes a
    bfloat16 constant under the name folding gives it. The graph is the one the
    two passes give on the whole graph, node for node (checked on ResNet-50 and
    ResNet-152; only the nodes' order differs)."""
    stand_ins = _weight_stand_ins(graph_def, output_names)
    rewritten = _grappler(_with_stand_ins(graph_def, stand_ins), output_names, ["auto_mixed_precision_onednn_bfloat16"])
    folded = _grappler(rewritten, output_names, ["constfold"])
    del rewritten
    return _put_weights_back(folded, graph_def, stand_ins, output_names)


# The inputs that read a weight (past Identity nodes) where constant folding does nothing with
# its value but fold the cast in front of it, unless it is all zeros or ones (x + 0 becomes x):
# a tensor of one repeated value keeps its constant (_weight_stand_ins).
_WEIGHT_INPUTS = {"Conv2D": 1, "DepthwiseConv2dNative": 1, "MatMul": 1, "BiasAdd": 1}
_BFLOAT16 = tf.bfloat16.as_datatype_enum


def _weight_stand_ins(graph_def: graph_pb2.GraphDef, output_names: Sequence[str], *,
                      min_elements: int = WEIGHT_ELEMENTS) -> set[str]:
    """The fp32 constants of at least ``min_elements`` that only feed weight inputs
    (:data:`_WEIGHT_INPUTS`), through Identity nodes, and hold more than one value."""
    readers: dict[str, list[tuple[node_def_pb2.NodeDef, int]]] = {}
    for node in graph_def.node:
        for port, tensor in enumerate(node.input):
            readers.setdefault(_node_name(tensor), []).append((node, -1 if tensor.startswith("^") else port))

    def feeds_weights_only(name: str) -> bool:
        found = readers.get(name, [])
        return bool(found) and name not in output_names and all(
            (reader.op == "Identity" and port == 0 and feeds_weights_only(reader.name))
            or _WEIGHT_INPUTS.get(reader.op) == port for reader, port in found)

    stand_ins = set()
    for node in graph_def.node:
        if (node.op == "Const" and node.attr["dtype"].type == _FLOAT and _elements(node) >= min_elements
                and feeds_weights_only(node.name)):
            value = _const_value(node)
            if np.any(value != value.flat[0]):
                stand_ins.add(node.name)
    return stand_ins


def _with_stand_ins(graph_def: graph_pb2.GraphDef, stand_ins: set[str]) -> graph_pb2.GraphDef:
    """``graph_def`` with each constant in ``stand_ins`` a Placeholder of its type and shape."""
    out = _emptied(graph_def)
    for node in graph_def.node:
        if node.name in stand_ins:
            placeholder = out.node.add(name=node.name, op="Placeholder", device=node.device)
            placeholder.attr["dtype"].type = node.attr["dtype"].type
            placeholder.attr["shape"].shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
        else:
            out.node.add().CopyFrom(node)
    return out


def _put_weights_back(graph_def: graph_pb2.GraphDef, weights_from: graph_pb2.GraphDef, stand_ins: set[str],
                      output_names: Sequence[str]) -> graph_pb2.GraphDef:
    """``graph_def`` (the passes' output) with its stand-ins constant again, folded as
    constant folding folds them: a stand-in, and an Identity or a bfloat16 Cast
    (round to nearest even, as TF's) of one, is a constant; one that something else
    reads stays as a Const under its own name, the rest go."""
    sources = {node.name: node for node in weights_from.node if node.name in stand_ins}
    folded: dict[str, tuple[str, bool]] = {}  # node -> (the weight it holds, as bfloat16)
    nodes = list(graph_def.node)
    while True:
        before = len(folded)
        for node in nodes:
            if node.name in folded or node.name in output_names:
                continue
            if node.op == "Placeholder" and node.name in stand_ins:
                folded[node.name] = (node.name, False)
            elif (len(node.input) == 1 and node.input[0].partition(":")[2] in ("", "0")
                  and not node.input[0].startswith("^") and _node_name(node.input[0]) in folded):
                weight, as_bfloat16 = folded[_node_name(node.input[0])]
                if node.op == "Identity":
                    folded[node.name] = (weight, as_bfloat16)
                elif (node.op == "Cast" and not as_bfloat16 and node.attr["SrcT"].type == _FLOAT
                      and node.attr["DstT"].type == _BFLOAT16 and not _flag(node, "Truncate")):
                    folded[node.name] = (weight, True)
        if len(folded) == before:
            break
    read = {_node_name(tensor) for node in nodes if node.name not in folded for tensor in node.input}
    out = _emptied(graph_def)
    for node in nodes:
        if node.name not in folded:
            out.node.add().CopyFrom(node)
        elif node.name in read:
            weight, as_bfloat16 = folded[node.name]
            const = out.node.add()
            if as_bfloat16:
                _bfloat16_const(const, node.name, _const_value(sources[weight]))
            else:
                const.CopyFrom(sources[weight])
                const.name = node.name
            const.device = node.device
    return out


def _bfloat16_const(node: node_def_pb2.NodeDef, name: str, value: np.ndarray) -> None:
    """``node`` a bfloat16 Const of ``value`` rounded to nearest even (TF's Cast), encoded
    as constant folding encodes it: every element's bits in half_val."""
    node.name, node.op = name, "Const"
    node.attr["dtype"].type = _BFLOAT16
    tensor = node.attr["value"].tensor
    tensor.dtype = _BFLOAT16
    tensor.tensor_shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
    tensor.half_val.extend(value.astype(tf.bfloat16.as_numpy_dtype).view(np.uint16).reshape(-1))


def count_bfloat16_ops(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """Ops computing in bfloat16, by type (to tell a real rewrite from a no-op)."""
    counts: dict[str, int] = {}
    for node in graph_def.node:
        if "T" in node.attr and node.attr["T"].type == tf.bfloat16.as_datatype_enum and node.op != "Cast":
            counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def rewrite(graph_def: graph_pb2.GraphDef, *, options: Mapping[str, object], outputs: Sequence[str],
            addition_shapes: Mapping[str, list[list[int | None]]]) -> tuple[graph_pb2.GraphDef, list[str]]:
    """The rewrites ``export.*`` asks for (fold_batch_norm, fuse_residual_add,
    scale_shift_batch_norm, precision), in the one order they compose in, on a frozen
    graph; returns it and what each did. The export and the benchmarks both call this."""
    done = []
    if options["fold_batch_norm"]:
        graph_def, by_op = fold_batch_norms(graph_def)
        depthwise = by_op["DepthwiseConv2dNative"]
        done.append(f"{sum(by_op.values())} batch norms folded"
                    + (f" ({depthwise} into depthwise convolutions)" if depthwise else ""))
    if options["fuse_residual_add"]:
        graph_def, fused = fuse_residual_adds(graph_def, addition_shapes)
        done.append(f"{fused} residual additions fused")
    if options["scale_shift_batch_norm"]:
        graph_def, rewritten = scale_shift_batch_norms(graph_def)
        done.append(f"{rewritten} batch norms as scale and shift")
    if options["fold_batch_norm"] and options["scale_shift_batch_norm"]:
        # Both batch-norm rewrites asked for: those that matched neither (NCHW, a shared input, ...).
        left = count_batch_norms(graph_def)
        if left:
            done.append(f"{left} batch norms left as built")
    if options["precision"] == "bf16":
        graph_def = to_bfloat16(graph_def, outputs)
        converted = count_bfloat16_ops(graph_def)
        if not converted.get("Conv2D"):
            raise ExportError("export.precision=bf16: TF's bfloat16 rewrite converted no convolution")
        done.append(f"bfloat16 ({sum(converted.values())} ops)")
    return graph_def, done
