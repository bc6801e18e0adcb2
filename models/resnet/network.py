"""The ImageNet ResNet v2 network of tensorflow/models v1.4.0, inference only.

Provenance: official/resnet/resnet_model.py at tag v1.4.0 (``imagenet_resnet_v2``),
the network the seed notebook copies. That code builds layers with ``tf.layers``,
which TF 2.16+ no longer ships without legacy Keras; this module builds the same
graph from ``tf.compat.v1.get_variable`` and ``tf.nn`` so that

* variables carry the names ``tf.layers`` gave them and are created in the same
  order: ``conv2d``, ``conv2d_1``, ... ``batch_normalization_N/{gamma, beta,
  moving_mean, moving_variance}``, ``dense/{kernel, bias}``;
* the ops are the ones ``tf.layers`` used in inference (fused batch norm with
  the moving statistics, explicit fixed padding before strided convolutions),
  so the outputs match the original graph.

A checkpoint trained by v1.4.0 therefore restores unchanged, in either data format
(kernels are HWIO in both). The tests compare names, shapes and outputs with the
notebook's own ``tf.layers`` code.

``Layers``, ``batch_norm_relu``, ``conv2d_fixed_padding`` and ``block_layer`` are
public: the CIFAR-10 generator of the same v1.4.0 file (models/cifar_resnet)
is built from them.
"""

from __future__ import annotations

import itertools
from typing import Callable

import tensorflow as tf

from exportkit.config import ConfigError

from .config import BLOCK_LAYERS

_BATCH_NORM_EPSILON = 1e-5
v1 = tf.compat.v1


class Layers:
    """Creates layers named as ``tf.layers`` named them: base name, then _1, _2..."""

    def __init__(self, data_format: str) -> None:
        self.data_format = data_format
        self._counters: dict[str, itertools.count] = {}
        self.channel_axis = 1 if data_format == "channels_first" else 3
        self._tf_format = "NCHW" if data_format == "channels_first" else "NHWC"

    def _scope(self, base: str) -> str:
        n = next(self._counters.setdefault(base, itertools.count()))
        return base if n == 0 else f"{base}_{n}"

    def conv2d(self, inputs: tf.Tensor, *, filters: int, kernel_size: int, strides: int, padding: str) -> tf.Tensor:
        in_channels = inputs.shape[self.channel_axis]
        with v1.variable_scope(self._scope("conv2d")):
            kernel = v1.get_variable(
                "kernel",
                [kernel_size, kernel_size, in_channels, filters],
                initializer=v1.variance_scaling_initializer(),
            )
            stride = [1, 1, strides, strides] if self._tf_format == "NCHW" else [1, strides, strides, 1]
            return tf.nn.conv2d(inputs, kernel, stride, padding, data_format=self._tf_format)

    def batch_norm(self, inputs: tf.Tensor) -> tf.Tensor:
        channels = inputs.shape[self.channel_axis]
        with v1.variable_scope(self._scope("batch_normalization")):
            gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
            beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
            mean = v1.get_variable(
                "moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False
            )
            variance = v1.get_variable(
                "moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False
            )
            outputs, _, _ = v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=mean, variance=variance,
                epsilon=_BATCH_NORM_EPSILON, is_training=False, data_format=self._tf_format,
            )
            return outputs

    def max_pool(self, inputs: tf.Tensor, *, size: int, strides: int, padding: str) -> tf.Tensor:
        return tf.nn.max_pool2d(inputs, size, strides, padding, data_format=self._tf_format)

    def avg_pool(self, inputs: tf.Tensor, *, size: int, strides: int, padding: str) -> tf.Tensor:
        return tf.nn.avg_pool2d(inputs, size, strides, padding, data_format=self._tf_format)

    def dense(self, inputs: tf.Tensor, *, units: int) -> tf.Tensor:
        with v1.variable_scope(self._scope("dense")):
            kernel = v1.get_variable(
                "kernel", [inputs.shape[-1], units], initializer=v1.glorot_uniform_initializer()
            )
            bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
            return tf.nn.bias_add(tf.matmul(inputs, kernel), bias)


def batch_norm_relu(layers: Layers, inputs: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(layers.batch_norm(inputs))


def _fixed_padding(layers: Layers, inputs: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Pads spatially by kernel_size - 1, independently of the input size."""
    pad_beg = (kernel_size - 1) // 2
    pad_end = kernel_size - 1 - pad_beg
    spatial = [pad_beg, pad_end]
    if layers.data_format == "channels_first":
        return tf.pad(inputs, [[0, 0], [0, 0], spatial, spatial])
    return tf.pad(inputs, [[0, 0], spatial, spatial, [0, 0]])


def conv2d_fixed_padding(layers: Layers, inputs: tf.Tensor, *, filters: int, kernel_size: int, strides: int) -> tf.Tensor:
    if strides > 1:
        inputs = _fixed_padding(layers, inputs, kernel_size)
    return layers.conv2d(
        inputs, filters=filters, kernel_size=kernel_size, strides=strides,
        padding="SAME" if strides == 1 else "VALID",
    )


def _building_block(layers: Layers, inputs: tf.Tensor, filters: int, projection: Callable | None, strides: int) -> tf.Tensor:
    shortcut = inputs
    inputs = batch_norm_relu(layers, inputs)
    # The projection comes after the first batch norm and ReLU (pre-activation).
    if projection is not None:
        shortcut = projection(inputs)
    inputs = conv2d_fixed_padding(layers, inputs, filters=filters, kernel_size=3, strides=strides)
    inputs = batch_norm_relu(layers, inputs)
    inputs = conv2d_fixed_padding(layers, inputs, filters=filters, kernel_size=3, strides=1)
    return inputs + shortcut


def _bottleneck_block(layers: Layers, inputs: tf.Tensor, filters: int, projection: Callable | None, strides: int) -> tf.Tensor:
    shortcut = inputs
    inputs = batch_norm_relu(layers, inputs)
    if projection is not None:
        shortcut = projection(inputs)
    inputs = conv2d_fixed_padding(layers, inputs, filters=filters, kernel_size=1, strides=1)
    inputs = batch_norm_relu(layers, inputs)
    inputs = conv2d_fixed_padding(layers, inputs, filters=filters, kernel_size=3, strides=strides)
    inputs = batch_norm_relu(layers, inputs)
    inputs = conv2d_fixed_padding(layers, inputs, filters=4 * filters, kernel_size=1, strides=1)
    return inputs + shortcut


_BLOCKS = {"building": (_building_block, 1), "bottleneck": (_bottleneck_block, 4)}


def block_layer(layers: Layers, inputs: tf.Tensor, *, filters: int, block: str, blocks: int, strides: int, name: str) -> tf.Tensor:
    block_fn, expansion = _BLOCKS[block]

    def projection(x: tf.Tensor) -> tf.Tensor:
        return conv2d_fixed_padding(layers, x, filters=filters * expansion, kernel_size=1, strides=strides)

    # Only the first block of a layer projects the shortcut and strides.
    inputs = block_fn(layers, inputs, filters, projection, strides)
    for _ in range(1, blocks):
        inputs = block_fn(layers, inputs, filters, None, 1)
    return tf.identity(inputs, name)


def imagenet_resnet_v2(resnet_size: int, *, num_classes: int, data_format: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The network as a function of a float32 NHWC batch [N, H, W, 3] -> logits."""
    if resnet_size not in BLOCK_LAYERS:
        raise ValueError(f"not a valid ResNet size: {resnet_size}; sizes: {sorted(BLOCK_LAYERS)}")
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"data_format must be concrete here, got {data_format!r}")
    block, block_sizes = BLOCK_LAYERS[resnet_size]
    final_channels = 512 * _BLOCKS[block][1]

    def model(inputs: tf.Tensor) -> tf.Tensor:
        layers = Layers(data_format)
        images_hw = tuple(inputs.shape[1:3])
        if data_format == "channels_first":
            inputs = tf.transpose(inputs, [0, 3, 1, 2])
        inputs = conv2d_fixed_padding(layers, inputs, filters=64, kernel_size=7, strides=2)
        inputs = tf.identity(inputs, "initial_conv")
        inputs = layers.max_pool(inputs, size=3, strides=2, padding="SAME")
        inputs = tf.identity(inputs, "initial_max_pool")
        for i, (filters, blocks, strides) in enumerate(zip((64, 128, 256, 512), block_sizes, (1, 2, 2, 2), strict=True)):
            inputs = block_layer(
                layers, inputs, filters=filters, block=block, blocks=blocks,
                strides=strides, name=f"block_layer{i + 1}",
            )
        inputs = batch_norm_relu(layers, inputs)
        inputs = layers.avg_pool(inputs, size=7, strides=1, padding="VALID")
        inputs = tf.identity(inputs, "final_avg_pool")
        spatial = inputs.shape[2:] if data_format == "channels_first" else inputs.shape[1:3]
        if tuple(spatial) != (1, 1):
            raise ConfigError(
                f"the ImageNet ResNet needs 224x224 input (its final pool is 7x7); "
                f"got {images_hw[0]}x{images_hw[1]}: set preprocessing.image_size=224"
            )
        inputs = tf.reshape(inputs, [-1, final_channels])
        inputs = layers.dense(inputs, units=num_classes)
        return tf.identity(inputs, "final_dense")

    return model
