"""How far apart the `notebook` and `vgg` presets are on the same JPEGs.

    .venv/bin/python benchmarks/preprocessing_gap.py

For each image size: the share of the photo the network sees, and the value
range and spread of what it is fed. The official checkpoints were trained
with `vgg` (v1.4.0 vgg_preprocessing eval path); `notebook` feeds values about
255x smaller and, for photos larger than 224, a full-resolution centre cut
instead of the whole (resized) scene.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from exportkit.config import config_dir, register_configs, to_plain  # noqa: E402
from exportkit.plugin import load_plugins  # noqa: E402
from exportkit.preprocessing import standard  # noqa: E402

load_plugins()  # as the app does: the model plugins, then the schemas they extend
register_configs()

SIZES = [(224, 224), (375, 500), (480, 640), (1080, 1920), (160, 120)]


def preset(name: str) -> dict:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_plain(compose(config_name="config", overrides=[f"preprocessing={name}"]))["preprocessing"]


def seen_fraction(params: dict, height: int, width: int) -> float:
    size = params["image_size"]
    if params["resize_side"]:
        scale = params["resize_side"] / min(height, width)
        height, width = round(height * scale), round(width * scale)
    return min(size, height) * min(size, width) / (height * width)


def main() -> None:
    rng = np.random.RandomState(0)
    presets = {name: preset(name) for name in ("notebook", "vgg")}
    table = Table(title="notebook vs vgg preprocessing on the same JPEG")
    for column in ("image (h x w)", "preset", "share of photo seen", "min", "max", "std"):
        table.add_column(column, justify="right")
    jpegs = {}
    for height, width in SIZES:
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([127 + 100 * np.sin(x / 23.0 + c) * np.cos(y / 17.0) for c in range(3)], -1)
        pixels = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
        jpegs[height, width] = tf.io.encode_jpeg(pixels).numpy()
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        images = tf.compat.v1.placeholder(tf.string, [None])
        outputs = {name: standard(images, params) for name, params in presets.items()}
        for (height, width), jpeg in jpegs.items():
            for name, out in outputs.items():
                value = sess.run(out, {images: [jpeg]})
                table.add_row(f"{height} x {width}", name, f"{seen_fraction(presets[name], height, width):.0%}",
                              f"{value.min():.2f}", f"{value.max():.2f}", f"{value.std():.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
