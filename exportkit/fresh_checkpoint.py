"""Write a freshly initialized checkpoint in the exact layout an Estimator leaves.

An Estimator model_dir holds ``checkpoint`` (the state file, with absolute
paths), ``model.ckpt-N.{index,data-00000-of-00001,meta}`` and ``graph.pbtxt``;
the checkpoint carries the network's variables plus ``global_step`` and the
optimizer's ``.../Momentum`` slots. ``make demo`` and the tests use this to
export without downloading real weights. The weights are random: the
exported model's answers mean nothing. The batch norms get statistics like a
trained network's (not the initializers' mean 0, variance 1, gamma 1, beta
0), so a folded batch norm leaves a real bias, as it does on a trained
checkpoint, rather than a zero one that TF drops.

    python -m exportkit.fresh_checkpoint OUT_DIR --model resnet --set size=18
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from .config import config_dir

DEMO_NOTICE = "freshly initialized random weights (not a trained model): its answers mean nothing"


def write_fresh_checkpoint(
    model_dir: str | os.PathLike,
    *,
    model_params: Mapping[str, Any],
    image_size: int = 224,
    global_step: int = 1000,
    seed: int = 0,
    preprocessing: Mapping[str, Any] | None = None,
) -> str:
    """Build the plugin's network, initialize it, save as an Estimator would; return the prefix.

    ``preprocessing``: the resolved preprocessing config the export will use; the
    last layer is calibrated on smooth images through it (without it, on smooth
    pixels at the mean-subtracted 0..255 scale).
    """
    import tensorflow as tf

    from . import runtime
    from .estimator import network

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        images = v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        logits = network(images, model=model_params["name"], params=model_params, empty_batches=False)
        step = v1.train.get_or_create_global_step()
        # The training op is never run: building it creates the Momentum slots
        # that every v1.4.0 Estimator checkpoint carries.
        v1.train.MomentumOptimizer(learning_rate=0.1, momentum=0.9).minimize(
            tf.reduce_mean(logits), global_step=step
        )
        # An Estimator's Scaffold saves sharded, with paths relative to the model_dir.
        saver = v1.train.Saver(sharded=True, save_relative_paths=True)
        with runtime.session(graph) as sess:  # the plugin may build NCHW
            sess.run(v1.global_variables_initializer())
            _trained_like_batch_norms(sess, seed=seed)
            _calibrate_logits(sess, graph, images, logits, seed=seed, preprocessing=preprocessing)
            sess.run(step.assign(global_step))
            Path(model_dir).mkdir(parents=True, exist_ok=True)
            prefix = saver.save(sess, os.path.join(os.path.abspath(model_dir), "model.ckpt"), global_step=global_step)
        tf.io.write_graph(graph.as_graph_def(), str(model_dir), "graph.pbtxt")
    return prefix


# Batch-norm variables by their tf.layers names -> how a trained value is drawn.
_BATCH_NORM_DRAWS = {
    "moving_mean": lambda rng, shape: rng.normal(0.0, 0.1, shape),
    "moving_variance": lambda rng, shape: rng.uniform(0.5, 1.5, shape),
    "gamma": lambda rng, shape: rng.uniform(0.5, 1.5, shape),
    "beta": lambda rng, shape: rng.normal(0.0, 0.1, shape),
}


def _trained_like_batch_norms(sess: Any, *, seed: int) -> None:
    """Give every batch norm seeded statistics and parameters near a trained net's.

    At their initial values (mean 0, variance 1, gamma 1, beta 0) a batch norm
    is a near-identity, and folding it into its convolution leaves a bias of
    zeros, which grappler removes at load: the served graph would then differ
    from any trained model's (no bias for the convolution's fused ReLU).
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    drawn = {}
    for variable in tf.compat.v1.global_variables():  # creation order, so the draws are reproducible
        leaf = variable.op.name.rsplit("/", 1)[-1]
        if leaf in _BATCH_NORM_DRAWS:  # the Momentum slots end in "Momentum"
            shape = variable.shape.as_list()
            drawn[variable] = _BATCH_NORM_DRAWS[leaf](rng, shape).astype(variable.dtype.base_dtype.as_numpy_dtype)
    # The initializers again with their initial values fed: no node added to graph.pbtxt, and
    # one run for all (a run per variable costs a ResNet-18 1.5 s of graph pruning).
    sess.run([variable.initializer for variable in drawn],
             {variable.initial_value: value for variable, value in drawn.items()})


def _calibration_batch(image_size: int, preprocessing: Mapping[str, Any] | None, *, seed: int) -> Any:
    """Image-like float input: smooth sample JPEGs through the plugin's own preprocessing
    (``preprocessing``: its resolved config, whose ``pipeline`` names a PREPROCESSORS entry)
    or, without one, smooth pixels mean-subtracted to the 0..255 scale the shipped
    checkpoints were trained on. Built in a private graph: graph.pbtxt stays the network's."""
    import numpy as np
    import tensorflow as tf

    from .verify import _smooth_pixels, encode_jpegs

    if preprocessing is not None and preprocessing.get("image_size", image_size) == image_size:
        from . import preprocessing as _builtin_pipelines  # noqa: F401  (registers ``standard``)
        from .registry import PREPROCESSORS

        sides = [(image_size, image_size), (image_size + 40, image_size + 17), (image_size, image_size + 31),
                 (image_size + 9, image_size)]
        jpegs = encode_jpegs(sides, seed=seed)
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
            encoded = tf.compat.v1.placeholder(tf.string, [None])
            pipeline = PREPROCESSORS.get(preprocessing.get("pipeline", "standard"))
            return sess.run(pipeline(encoded, dict(preprocessing)), {encoded: jpegs}).astype(np.float32)
    rng = np.random.RandomState(seed)
    pixels = [_smooth_pixels(rng, image_size, image_size) for _ in range(4)]
    return (np.stack(pixels).astype(np.float32) - 127.0)


# Ops whose weight input (input 1) makes a last layer.
_LAYER_OPS = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "Conv2D", "DepthwiseConv2dNative", "Conv3D"})
# Ops between a variable and the op that reads it.
_READ_OPS = frozenset({"Identity", "ReadVariableOp", "Cast", "Reshape", "Squeeze", "ExpandDims", "Transpose"})
_VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})


def last_layer_variables(logits: Any) -> list[Any]:
    """The variables that are the weights of the last MatMul or convolution before ``logits``.

    Walks the graph back from the logits op, breadth first (the layer nearest the
    logits wins), to the first matrix product or convolution; its weight input is
    followed back through reads, casts and reshapes to its variable(s). Found from
    the graph, whatever the plugin named them.
    """
    import tensorflow as tf

    by_op = {v.op: v for v in tf.compat.v1.global_variables()}
    seen, frontier = {logits.op}, [logits.op]
    while frontier:
        layers = [op for op in frontier if op.type in _LAYER_OPS]
        if layers:
            found: list[Any] = []
            for layer in layers:
                sources, stack = set(), [layer.inputs[1].op]
                while stack:
                    op = stack.pop()
                    if op in by_op:
                        sources.add(by_op[op])
                    elif op.type in _READ_OPS and op.type not in _VARIABLE_OPS:
                        stack.extend(t.op for t in op.inputs)
                found += [v for v in sources if v not in found]
            if found:
                return found
        next_frontier = []
        for op in frontier:
            for tensor in op.inputs:
                if tensor.op not in seen:
                    seen.add(tensor.op)
                    next_frontier.append(tensor.op)
        frontier = next_frontier
    return []


def _calibrate_logits(sess: Any, graph: Any, images: Any, logits: Any, *, seed: int, spread: float = 3.0,
                      preprocessing: Mapping[str, Any] | None = None) -> None:
    """Scale the last layer so logits spread by about ``spread`` on image-like input.

    Batch norms whose statistics were not measured on these random weights'
    own activations let them grow with depth, so raw logits span hundreds and
    every softmax saturates at 1.0: useless for checking that an export answers
    like its checkpoint. The input is smooth images through the plugin's own
    preprocessing where its config is given (see :func:`_calibration_batch`);
    the last layer is the one :func:`last_layer_variables` finds from the graph.
    """
    import numpy as np

    batch = _calibration_batch(int(images.shape[1]), preprocessing, seed=seed)
    std = float(np.std(sess.run(logits, {images: batch}), axis=1).mean())
    if not std > 0:
        return
    with graph.as_default():
        for variable in last_layer_variables(logits):
            value = sess.run(variable) * (spread / std)
            # Re-running the initializer with the value fed adds no node to graph.pbtxt.
            sess.run(variable.initializer, {variable.initial_value: value})


# The shipped conf/, the one the exportkit command composes from.
DEFAULT_CONFIG_DIR = config_dir()


def composed_config(model: str, settings: list[str], *, config_dir: Path) -> dict[str, Any]:
    """The plain config ``run_export.py model=<model> model.KEY=VALUE ...`` composes."""
    from hydra import compose, initialize_config_dir

    from .config import register_configs, to_plain

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", *(f"model.{s}" for s in settings)])
    return to_plain(cfg)


def composed_model(model: str, settings: list[str], *, config_dir: Path,
                   config: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """The model params and input size that ``run_export.py model=<model> model.KEY=VALUE ...``
    composes, so the checkpoint fits that export (a 10-class model with 32x32
    input, say) without restating them here."""
    from .config import resolve_data_format

    config = config if config is not None else composed_config(model, settings, config_dir=config_dir)
    # The variables do not depend on the layout; a CPU writes channels_last.
    params = {**config["model"], "data_format": resolve_data_format(config["model"]["data_format"], "cpu")[0]}
    return params, config["preprocessing"]["image_size"]


def _without_search_path(error: Exception) -> str:
    """Hydra's message without the config search path it appends."""
    return str(error).split("\nConfig search path")[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--plugin", action="append", default=[], help="module that registers the model (built-in and installed plugins load anyway)")
    parser.add_argument("--model", required=True, help="model config group option, e.g. resnet")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model.KEY=VALUE override, as run_export.py takes it, e.g. size=18")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side; default: the model's preprocessing.image_size")
    parser.add_argument("--global-step", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same weights")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR)
    args = parser.parse_args(argv)

    from hydra.errors import HydraException

    from .console import import_tensorflow_quietly
    from .errors import ExportkitError
    from .plugin import load_plugins
    from .registry import MODELS, RegistryError

    load_plugins(args.plugin)
    try:
        MODELS.get(args.model)  # names the plugins that are loaded, before Hydra's "could not load base_<model>"
        config = composed_config(args.model, args.set, config_dir=args.config_dir)
        params, image_size = composed_model(args.model, args.set, config_dir=args.config_dir, config=config)
        MODELS.get(params["name"]).validate(params)
        import_tensorflow_quietly()
        prefix = write_fresh_checkpoint(
            args.model_dir, model_params=params, image_size=args.image_size or image_size,
            global_step=args.global_step, seed=args.seed, preprocessing=config["preprocessing"],
        )
    except (HydraException, ExportkitError, RegistryError) as e:  # e.g. an input size the network refuses
        print(f"error: {_without_search_path(e)}", file=sys.stderr)
        return 1
    print(f"wrote {prefix}: {args.model} {params}, {DEMO_NOTICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
