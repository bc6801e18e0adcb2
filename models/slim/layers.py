"""TF-slim's layers as the zoo's networks call them, for inference, from tf.compat.v1.

Each creates its variables under the layer's scope with slim's names, in the
order tf_slim 1.1.0 creates them (its ``conv2d`` and ``batch_norm`` are Keras
legacy layers underneath):

* ``conv2d``: ``weights`` [k, k, in, out], then ``biases`` [out], or, with a batch
  norm, no biases and ``BatchNorm/{gamma,beta,moving_mean,moving_variance}``;
* ``depthwise_conv2d`` (``separable_conv2d`` with ``num_outputs=None``):
  ``depthwise_weights`` [k, k, in, 1], then the batch norm;
* ``batch_norm``: ``gamma`` (with ``scale=True``), ``beta``, ``moving_mean``,
  ``moving_variance``, computed as a FusedBatchNorm with the moving statistics.

Initial values only matter for freshly initialized checkpoints (demo, tests):
He-normal weights, zero biases, batch norms at identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import tensorflow as tf

v1 = tf.compat.v1

Activation = Optional[Callable[[tf.Tensor], tf.Tensor]]


@dataclass(frozen=True)
class BatchNorm:
    """slim.batch_norm's arguments in a network's arg_scope."""

    epsilon: float
    scale: bool = True


def _variable(name: str, shape: list[int], initializer: object) -> tf.Variable:
    return v1.get_variable(name, shape=shape, dtype=tf.float32, initializer=initializer)


def batch_norm(inputs: tf.Tensor, norm: BatchNorm, *, activation: Activation = None,
               scope: str = "BatchNorm") -> tf.Tensor:
    channels = int(inputs.shape[-1])
    with v1.variable_scope(scope):
        gamma = _variable("gamma", [channels], v1.ones_initializer()) if norm.scale else None
        beta = _variable("beta", [channels], v1.zeros_initializer())
        mean = _variable("moving_mean", [channels], v1.zeros_initializer())
        variance = _variable("moving_variance", [channels], v1.ones_initializer())
        if gamma is None:  # slim's scale=False multiplies by a constant 1
            gamma = tf.constant(1.0, shape=[channels])
        outputs, _, _ = v1.nn.fused_batch_norm(inputs, gamma, beta, mean=mean, variance=variance,
                                              epsilon=norm.epsilon, is_training=False)
    return activation(outputs) if activation is not None else outputs


def _he_normal(per_filter: int = 1) -> object:
    """He initialization; a depthwise filter [k, k, in, 1] has a fan-in of k * k, not
    k * k * in as variance scaling reads its shape (``per_filter`` = in corrects that;
    without it a fresh MobileNet's signal vanishes and every image gets one answer)."""
    return v1.variance_scaling_initializer(scale=2.0 * per_filter, mode="fan_in", distribution="truncated_normal")


def conv2d(inputs: tf.Tensor, filters: int, kernel: int | tuple[int, int], *, scope: str, stride: int = 1,
           rate: int = 1, padding: str = "SAME", norm: BatchNorm | None = None,
           activation: Activation = tf.nn.relu) -> tf.Tensor:
    """slim.conv2d: weights, then biases or a batch norm, then the activation."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    with v1.variable_scope(scope):
        weights = _variable("weights", [kh, kw, int(inputs.shape[-1]), filters], _he_normal())
        outputs = tf.nn.conv2d(inputs, weights, strides=[1, stride, stride, 1], padding=padding,
                               dilations=[1, rate, rate, 1])
        if norm is not None:
            outputs = batch_norm(outputs, norm)
        else:
            outputs = tf.nn.bias_add(outputs, _variable("biases", [filters], v1.zeros_initializer()))
    return activation(outputs) if activation is not None else outputs


def depthwise_conv2d(inputs: tf.Tensor, kernel: int, *, scope: str, stride: int, norm: BatchNorm,
                     activation: Activation, padding: str = "SAME") -> tf.Tensor:
    """slim.separable_conv2d(inputs, None, kernel, depth_multiplier=1, normalizer_fn=batch_norm)."""
    with v1.variable_scope(scope):
        channels = int(inputs.shape[-1])
        weights = _variable("depthwise_weights", [kernel, kernel, channels, 1], _he_normal(per_filter=channels))
        outputs = tf.nn.depthwise_conv2d(inputs, weights, strides=[1, stride, stride, 1], padding=padding)
        outputs = batch_norm(outputs, norm)
    return activation(outputs) if activation is not None else outputs


def max_pool(inputs: tf.Tensor, size: int, *, stride: int, padding: str) -> tf.Tensor:
    return tf.nn.max_pool2d(inputs, size, stride, padding)


def squeeze_logits(logits: tf.Tensor, *, arch: str, needs: str) -> tf.Tensor:
    """[N, 1, 1, C] -> [N, C], as slim's spatial_squeeze; another spatial size is an input
    size the network cannot take (it would not classify the whole image)."""
    from exportkit.config import ConfigError

    height, width = logits.shape[1], logits.shape[2]
    if (height, width) != (1, 1):
        raise ConfigError(f"model.arch={arch} {needs}: its logits would be {height}x{width}, not 1x1; "
                          "set preprocessing.image_size")
    return tf.squeeze(logits, [1, 2])
