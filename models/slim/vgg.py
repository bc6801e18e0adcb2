"""TF-slim's VGG 16 and 19 (tf_slim 1.1.0 ``nets/vgg.py``), inference only.

Under ``vgg_16`` / ``vgg_19``: five stages ``convS/convS_I`` of 3x3 SAME convolutions
with biases and ReLU (2, 2, 3, 3, 3 of them; 2, 2, 4, 4, 4 for VGG 19), each followed by
a 2x2/2 VALID max pool, then the fully connected layers as convolutions: ``fc6`` 7x7
VALID (4096), ``fc7`` 1x1 (4096), ``fc8`` 1x1 without ReLU, squeezed to [N, classes].
Dropout is the identity at inference. The 7x7 ``fc6`` needs a 7x7 map, so the input
must be 224 to 255 pixels (slim evaluates at 224).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import tensorflow as tf

from .layers import conv2d, max_pool, squeeze_logits

v1 = tf.compat.v1

STAGES = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_FILTERS = (64, 128, 256, 512, 512)


def _vgg(images: tf.Tensor, num_classes: int, *, depth: int) -> tf.Tensor:
    with v1.variable_scope(f"vgg_{depth}"):
        net = images
        for s, (repeats, filters) in enumerate(zip(STAGES[depth], _FILTERS, strict=True)):
            with v1.variable_scope(f"conv{s + 1}"):  # slim.repeat's scope
                for i in range(repeats):
                    net = conv2d(net, filters, 3, scope=f"conv{s + 1}_{i + 1}")
            net = max_pool(net, 2, stride=2, padding="VALID")
        net = conv2d(net, 4096, 7, padding="VALID", scope="fc6")
        net = conv2d(net, 4096, 1, scope="fc7")
        logits = conv2d(net, num_classes, 1, activation=None, scope="fc8")
        return squeeze_logits(logits, arch=f"vgg_{depth}", needs="takes 224 to 255 pixels (slim: 224)")


NETS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    f"vgg_{depth}": partial(_vgg, depth=depth) for depth in STAGES
}
