"""TF-slim's MobileNet v1 (tensorflow/models research/slim/nets/mobilenet_v1.py), inference only.

Under ``MobilenetV1``: ``Conv2d_0`` (3x3/2, 32 filters), then 13 depthwise-separable
pairs ``Conv2d_i_depthwise`` (3x3 depthwise, ``depthwise_weights``) and
``Conv2d_i_pointwise`` (1x1), each with a batch norm (epsilon 1e-3, with a scale) and
ReLU6, SAME padding, as ``mobilenet_v1_arg_scope()`` sets them. Then ``Logits``: an
average pool of the final map (7x7, smaller for a smaller input, VALID, stride 2),
``Conv2d_1c_1x1`` with biases, squeezed to [N, classes]. nets_factory's
mobilenet_v1_075/050/025 multiply every depth by 0.75/0.5/0.25 (at least 8 channels).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import tensorflow as tf

from .config import depth_multiplier
from .layers import BatchNorm, conv2d, depthwise_conv2d, squeeze_logits

v1 = tf.compat.v1

NORM = BatchNorm(epsilon=1e-3, scale=True)
MIN_DEPTH = 8
# (stride, depth) of Conv2d_0 and of the 13 separable pairs.
FIRST = (2, 32)
SEPARABLE = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512), (1, 512),
             (1, 512), (1, 512), (2, 1024), (1, 1024))


def _mobilenet_v1(images: tf.Tensor, num_classes: int, *, arch: str) -> tf.Tensor:
    multiplier = depth_multiplier(arch)

    def depth(d: int) -> int:
        return max(int(d * multiplier), MIN_DEPTH)

    with v1.variable_scope("MobilenetV1"):
        net = conv2d(images, depth(FIRST[1]), 3, stride=FIRST[0], norm=NORM, activation=tf.nn.relu6,
                     scope="Conv2d_0")
        for i, (stride, filters) in enumerate(SEPARABLE, start=1):
            net = depthwise_conv2d(net, 3, stride=stride, norm=NORM, activation=tf.nn.relu6,
                                   scope=f"Conv2d_{i}_depthwise")
            net = conv2d(net, depth(filters), 1, norm=NORM, activation=tf.nn.relu6, scope=f"Conv2d_{i}_pointwise")
        with v1.variable_scope("Logits"):
            height, width = int(net.shape[1]), int(net.shape[2])
            # slim.avg_pool2d(kernel, padding="VALID") with its default stride 2
            net = tf.nn.avg_pool2d(net, [min(height, 7), min(width, 7)], 2, "VALID")
            logits = conv2d(net, num_classes, 1, activation=None, scope="Conv2d_1c_1x1")
        return squeeze_logits(logits, arch=arch, needs="pools its final map to 1x1 only up to 256 pixels (the zoo's: 224, 192, 160, 128)")


NETS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    arch: partial(_mobilenet_v1, arch=arch)
    for arch in ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")
}
