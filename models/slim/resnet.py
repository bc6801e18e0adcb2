"""TF-slim's ResNet v1 and v2 (tf_slim 1.1.0 ``nets/resnet_v1.py``, ``nets/resnet_v2.py``,
``nets/resnet_utils.py``), inference only, as the model zoo's checkpoints were saved.

Both build ``<scope>/conv1``, a 3x3/2 max pool, four blocks of bottleneck units
(``blockB/unit_U/bottleneck_v1`` or ``bottleneck_v2``; each block's stride is on its
last unit, in the 3x3 ``conv2``), global average pooling and a 1x1 ``logits``
convolution, under ``resnet_arg_scope()``: batch norms with epsilon 1e-5 and a
scale, ReLU, SAME padding.

* v1: every convolution is followed by a batch norm (no biases) but ``logits``; the
  unit's output is ``relu(shortcut + conv3)``; the shortcut is a 1x1 convolution with
  a batch norm where the depth changes, else the input subsampled.
* v2 (pre-activation): each unit starts with ``preact`` (batch norm + ReLU), the
  shortcut convolution and ``conv3`` have biases and no batch norm, the unit's output
  is ``shortcut + conv3`` without a ReLU, ``conv1`` (the 7x7) has biases and no batch
  norm, and ``postnorm`` (batch norm + ReLU) follows the last block.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import tensorflow as tf

from .layers import BatchNorm, batch_norm, conv2d, max_pool

v1 = tf.compat.v1

NORM = BatchNorm(epsilon=1e-5, scale=True)

# Units per block (block1..block4); the base depths are 64, 128, 256, 512, strides 2, 2, 2, 1.
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
_BASE_DEPTHS = (64, 128, 256, 512)
_STRIDES = (2, 2, 2, 1)


def _subsample(inputs: tf.Tensor, stride: int) -> tf.Tensor:
    return inputs if stride == 1 else max_pool(inputs, 1, stride=stride, padding="SAME")


def _conv2d_same(inputs: tf.Tensor, filters: int, kernel: int, stride: int, *, scope: str, **kwargs) -> tf.Tensor:
    """resnet_utils.conv2d_same: explicit zero padding before a strided VALID convolution."""
    if stride == 1:
        return conv2d(inputs, filters, kernel, scope=scope, **kwargs)
    pad_beg = (kernel - 1) // 2
    pad_end = kernel - 1 - pad_beg
    inputs = tf.pad(inputs, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
    return conv2d(inputs, filters, kernel, stride=stride, padding="VALID", scope=scope, **kwargs)


def _bottleneck_v1(inputs: tf.Tensor, depth: int, bottleneck: int, stride: int) -> tf.Tensor:
    with v1.variable_scope("bottleneck_v1"):
        if depth == int(inputs.shape[-1]):
            shortcut = _subsample(inputs, stride)
        else:
            shortcut = conv2d(inputs, depth, 1, stride=stride, norm=NORM, activation=None, scope="shortcut")
        residual = conv2d(inputs, bottleneck, 1, norm=NORM, scope="conv1")
        residual = _conv2d_same(residual, bottleneck, 3, stride, norm=NORM, scope="conv2")
        residual = conv2d(residual, depth, 1, norm=NORM, activation=None, scope="conv3")
        return tf.nn.relu(shortcut + residual)


def _bottleneck_v2(inputs: tf.Tensor, depth: int, bottleneck: int, stride: int) -> tf.Tensor:
    with v1.variable_scope("bottleneck_v2"):
        preact = batch_norm(inputs, NORM, activation=tf.nn.relu, scope="preact")
        if depth == int(inputs.shape[-1]):
            shortcut = _subsample(inputs, stride)
        else:
            shortcut = conv2d(preact, depth, 1, stride=stride, activation=None, scope="shortcut")
        residual = conv2d(preact, bottleneck, 1, norm=NORM, scope="conv1")
        residual = _conv2d_same(residual, bottleneck, 3, stride, norm=NORM, scope="conv2")
        residual = conv2d(residual, depth, 1, activation=None, scope="conv3")
        return shortcut + residual


def _resnet(images: tf.Tensor, num_classes: int, *, version: int, depth: int) -> tf.Tensor:
    unit = _bottleneck_v1 if version == 1 else _bottleneck_v2
    with v1.variable_scope(f"resnet_v{version}_{depth}"):
        if version == 1:
            net = _conv2d_same(images, 64, 7, 2, norm=NORM, scope="conv1")
        else:
            net = _conv2d_same(images, 64, 7, 2, activation=None, scope="conv1")
        net = max_pool(net, 3, stride=2, padding="SAME")
        for b, (units, base, stride) in enumerate(zip(UNITS[depth], _BASE_DEPTHS, _STRIDES, strict=True)):
            with v1.variable_scope(f"block{b + 1}"):
                for u in range(units):
                    with v1.variable_scope(f"unit_{u + 1}"):
                        net = unit(net, 4 * base, base, stride if u == units - 1 else 1)
        if version == 2:
            net = batch_norm(net, NORM, activation=tf.nn.relu, scope="postnorm")
        net = tf.reduce_mean(net, [1, 2], keepdims=True, name="pool5")
        logits = conv2d(net, num_classes, 1, activation=None, scope="logits")
        return tf.squeeze(logits, [1, 2], name="SpatialSqueeze")


NETS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    f"resnet_v{version}_{depth}": partial(_resnet, version=version, depth=depth)
    for version in (1, 2) for depth in UNITS
}
