"""The CIFAR-10 ResNet v2 network of tensorflow/models v1.4.0, inference only.

Provenance: official/resnet/resnet_model.py at tag v1.4.0,
``cifar10_resnet_v2_generator``, as ``cifar10_main.py`` builds it (no variable
scope, 10 classes, 32x32x3 input):

    conv2d_fixed_padding(16, 3x3, stride 1)             -> 'initial_conv'
    block_layer(16, building blocks, n, stride 1)       -> 'block_layer1'
    block_layer(32, building blocks, n, stride 2)       -> 'block_layer2'
    block_layer(64, building blocks, n, stride 2)       -> 'block_layer3'
    batch_norm_relu; average_pooling2d(8, stride 1, VALID) -> 'final_avg_pool'
    reshape [-1, 64]; dense(num_classes)                -> 'final_dense'

with n = (size - 2) / 6. The building blocks are the ImageNet network's
(models/resnet/network.py), which create variables with the names and in the
order ``tf.layers`` did, so a v1.4.0 ``cifar10_main.py`` checkpoint restores.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from exportkit.config import ConfigError
from ..resnet.network import Layers, batch_norm_relu, block_layer, conv2d_fixed_padding

from .config import IMAGE_SIZE, blocks_per_layer

_FILTERS = (16, 32, 64)
_STRIDES = (1, 2, 2)


def cifar10_resnet_v2(resnet_size: int, *, num_classes: int, data_format: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The network as a function of a float32 NHWC batch [N, 32, 32, 3] -> logits."""
    num_blocks = blocks_per_layer(resnet_size)
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"data_format must be concrete here, got {data_format!r}")

    def model(inputs: tf.Tensor) -> tf.Tensor:
        height, width = tuple(inputs.shape[1:3])
        if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            # Another size would not pool to 1x1, and the reshape to [-1, 64]
            # would silently mix images.
            raise ConfigError(
                f"the CIFAR-10 ResNet needs {IMAGE_SIZE}x{IMAGE_SIZE} input (its final pool is 8x8); "
                f"got {height}x{width}: set preprocessing.image_size={IMAGE_SIZE}"
            )
        layers = Layers(data_format)
        if data_format == "channels_first":
            inputs = tf.transpose(inputs, [0, 3, 1, 2])
        inputs = conv2d_fixed_padding(layers, inputs, filters=16, kernel_size=3, strides=1)
        inputs = tf.identity(inputs, "initial_conv")
        for i, (filters, strides) in enumerate(zip(_FILTERS, _STRIDES, strict=True)):
            inputs = block_layer(
                layers, inputs, filters=filters, block="building", blocks=num_blocks,
                strides=strides, name=f"block_layer{i + 1}",
            )
        inputs = batch_norm_relu(layers, inputs)
        inputs = layers.avg_pool(inputs, size=8, strides=1, padding="VALID")
        inputs = tf.identity(inputs, "final_avg_pool")
        inputs = tf.reshape(inputs, [-1, _FILTERS[-1]])
        inputs = layers.dense(inputs, units=num_classes)
        return tf.identity(inputs, "final_dense")

    return model
