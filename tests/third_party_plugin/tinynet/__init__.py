"""tinynet: one 3x3 convolution, global average pooling, one dense layer.

A third-party plugin: it registers its schema and its model on import (the
``exportkit.models`` entry point), and its config group options live in
``tinynet/conf``, which ``hydra_plugins/tinynet_searchpath`` puts on Hydra's
search path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exportkit.config import ModelConfig, register_model_schema
from exportkit.plugin import ModelPlugin
from exportkit.registry import MODELS


@dataclass
class TinyNetConfig(ModelConfig):
    name: str = "tinynet"
    num_classes: int = 7
    width: int = 8  # filters of the convolution


register_model_schema("tinynet", TinyNetConfig)


def _build(images: Any, params: dict[str, Any]) -> Any:
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.variable_scope("conv2d"):
        kernel = v1.get_variable("kernel", [3, 3, 3, params["width"]])
        features = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME"))
    pooled = tf.reduce_mean(features, axis=[1, 2])
    with v1.variable_scope("dense"):
        weights = v1.get_variable("kernel", [params["width"], params["num_classes"]])
        bias = v1.get_variable("bias", [params["num_classes"]], initializer=v1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(pooled, weights), bias)


def _other_widths(params: dict[str, Any]):
    for width in (4, 8, 16):
        if width != params["width"]:
            yield f"model.width={width}", {**params, "width": width}


MODELS.register("tinynet", ModelPlugin(name="tinynet", build=_build, alternatives=_other_widths,
                                       test_overrides=("model.width=4",), description="a tiny test network"))
