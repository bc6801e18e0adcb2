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

    python -m exportkit.fresh_checkpoint OUT_DIR --plugin models.resnet --model resnet --set size=18
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping

DEMO_NOTICE = "freshly initialized random weights (not a trained model): its answers mean nothing"


def write_fresh_checkpoint(
    model_dir: str | os.PathLike,
    *,
    model_params: Mapping[str, Any],
    image_size: int = 224,
    global_step: int = 1000,
    seed: int = 0,
) -> str:
    """Build the plugin's network, initialize it, save as an Estimator would; return the prefix."""
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
            _calibrate_logits(sess, graph, images, logits, seed=seed)
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
    for variable in tf.compat.v1.global_variables():  # creation order, so the draws are reproducible
        name = variable.op.name
        leaf = name.rsplit("/", 1)[-1]
        if leaf in _BATCH_NORM_DRAWS:  # the Momentum slots end in "Momentum"
            shape = variable.shape.as_list()
            value = _BATCH_NORM_DRAWS[leaf](rng, shape).astype(variable.dtype.base_dtype.as_numpy_dtype)
            # Re-running the initializer with its initial value fed adds no node to graph.pbtxt.
            sess.run(variable.initializer, {variable.initial_value: value})


def _calibrate_logits(sess: Any, graph: Any, images: Any, logits: Any, *, seed: int, spread: float = 3.0) -> None:
    """Scale the last layer so logits spread by about ``spread`` on image-like input.

    Batch norms whose statistics were not measured on these random weights'
    own activations let them grow with depth,
    so raw logits span hundreds and every softmax saturates at 1.0: useless for
    checking that an export answers like its checkpoint. Input at the scale of
    the mean-subtracted 0..255 pixels the checkpoints were trained on.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    batch = rng.normal(0.0, 60.0, size=[4, *images.shape[1:]]).astype(np.float32)
    std = float(np.std(sess.run(logits, {images: batch}), axis=1).mean())
    with graph.as_default():
        # The kernel created last is the one feeding the logits (the final dense layer).
        kernels = [v for v in tf.compat.v1.trainable_variables() if v.op.name.endswith("/kernel")]
        if std > 0 and kernels:
            last = kernels[-1]
            sess.run(last.assign(last * (spread / std)))


# The checkout's conf/, the one run_export.py composes from.
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def composed_model(model: str, settings: list[str], *, config_dir: Path) -> tuple[dict[str, Any], int]:
    """The model params and input size that ``run_export.py model=<model> model.KEY=VALUE ...``
    composes, so the checkpoint fits that export (a 10-class model with 32x32
    input, say) without restating them here."""
    from hydra import compose, initialize_config_dir

    from .config import register_configs, resolve_data_format, to_plain

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", *(f"model.{s}" for s in settings)])
    config = to_plain(cfg)
    # The variables do not depend on the layout; a CPU writes channels_last.
    params = {**config["model"], "data_format": resolve_data_format(config["model"]["data_format"], "cpu")[0]}
    return params, config["preprocessing"]["image_size"]


def _without_search_path(error: Exception) -> str:
    """Hydra's message without the config search path it appends."""
    return str(error).split("\nConfig search path")[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--plugin", action="append", default=[], help="module that registers the model")
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
        params, image_size = composed_model(args.model, args.set, config_dir=args.config_dir)
        MODELS.get(params["name"]).validate(params)
        import_tensorflow_quietly()
        prefix = write_fresh_checkpoint(
            args.model_dir, model_params=params, image_size=args.image_size or image_size,
            global_step=args.global_step, seed=args.seed,
        )
    except (HydraException, ExportkitError, RegistryError) as e:  # e.g. an input size the network refuses
        print(f"error: {_without_search_path(e)}", file=sys.stderr)
        return 1
    print(f"wrote {prefix}: {args.model} {params}, {DEMO_NOTICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
