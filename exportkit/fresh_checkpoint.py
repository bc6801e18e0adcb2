"""Write a freshly initialized checkpoint in the exact layout an Estimator leaves.

An Estimator model_dir holds ``checkpoint`` (the state file, with absolute
paths), ``model.ckpt-N.{index,data-00000-of-00001,meta}`` and ``graph.pbtxt``;
the checkpoint carries the network's variables plus ``global_step`` and the
optimizer's ``.../Momentum`` slots. ``make demo`` and the tests use this to
export without downloading real weights. The weights are random: the
exported model's answers mean nothing.

    python -m exportkit.fresh_checkpoint OUT_DIR --plugin models.resnet --model resnet --set size=18
"""

from __future__ import annotations

import argparse
import json
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

    from .registry import MODELS

    v1 = tf.compat.v1
    plugin = MODELS.get(model_params["name"])
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        images = v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        logits = plugin.build(images, dict(model_params))
        step = v1.train.get_or_create_global_step()
        # The training op is never run: building it creates the Momentum slots
        # that every v1.4.0 Estimator checkpoint carries.
        v1.train.MomentumOptimizer(learning_rate=0.1, momentum=0.9).minimize(
            tf.reduce_mean(logits), global_step=step
        )
        # An Estimator's Scaffold saves sharded, with paths relative to the model_dir.
        saver = v1.train.Saver(sharded=True, save_relative_paths=True)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            _calibrate_logits(sess, graph, images, logits, seed=seed)
            sess.run(step.assign(global_step))
            Path(model_dir).mkdir(parents=True, exist_ok=True)
            prefix = saver.save(sess, os.path.join(os.path.abspath(model_dir), "model.ckpt"), global_step=global_step)
        tf.io.write_graph(graph.as_graph_def(), str(model_dir), "graph.pbtxt")
    return prefix


def _calibrate_logits(sess: Any, graph: Any, images: Any, logits: Any, *, seed: int, spread: float = 3.0) -> None:
    """Scale the last layer so logits spread by about ``spread`` on image-like input.

    Untrained batch norm (mean 0, variance 1) lets activations grow with depth,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--plugin", action="append", default=[], help="module that registers the model")
    parser.add_argument("--model", required=True, help="registered model name, e.g. resnet")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model param (JSON value), e.g. size=18 or data_format='\"channels_last\"'")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--global-step", type=int, default=1000)
    args = parser.parse_args(argv)

    from .console import import_tensorflow_quietly
    from .plugin import load_plugins

    import_tensorflow_quietly()
    load_plugins(args.plugin)
    params: dict[str, Any] = {"name": args.model, "num_classes": 1001, "data_format": "channels_last"}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    prefix = write_fresh_checkpoint(
        args.model_dir, model_params=params, image_size=args.image_size, global_step=args.global_step
    )
    print(f"wrote {prefix}: {args.model} {params}, {DEMO_NOTICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
