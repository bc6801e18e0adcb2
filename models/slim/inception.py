"""TF-slim's Inception v1, v2 and v3 classifiers, inference only.

Provenance: ``tf_slim/nets/inception_v1.py``, ``inception_v2.py`` and
``inception_v3.py`` of tf_slim 1.1.0 with their default arg scopes
(``inception_v{1,2,3}_arg_scope``), the networks behind the slim model zoo's
``inception_v{1,2,3}_2016_08_28`` checkpoints. tf_slim builds its layers from
``tf.layers``, which TF 2.16+ ships only with legacy Keras; this module builds the
same graph from ``tf.compat.v1.get_variable`` and ``tf.nn`` so that

* variables have slim's names, shapes and creation order (``<Scope>/weights``,
  then ``<Scope>/BatchNorm/{beta, moving_mean, moving_variance}``: batch norm
  without a scale; the logits convolution has ``weights`` and ``biases``;
  Inception v2's first layer is a separable convolution with
  ``depthwise_weights``, ``pointwise_weights`` and ``biases`` and no batch norm);
* the ops are the ones slim runs with ``is_training=False``: fused batch norm on
  the moving statistics (epsilon 0.001), ReLU, dropout left out, and logits
  squeezed to [N, num_classes] as ``spatial_squeeze=True`` does.

A zoo checkpoint, or one fine-tuned from it, therefore restores by name. Inception
v3's auxiliary head (``InceptionV3/AuxLogits/...``, which slim builds by default
and the zoo checkpoint holds) is left out: inference does not use it, and a saver
over this graph's variables ignores checkpoint entries it has no variable for.

Variables start from slim's default convolution initializer (variance scaling,
factor 2, fan-in), not its per-layer overrides: initial values only matter for a
checkpoint written before any training. The tests compare names, shapes, order
and logits with tf_slim 1.1.0 itself.

Input sizes are those slim's code accepts with ``spatial_squeeze=True``: the final
feature map must pool to 1x1 (see ``INPUT_SIZES``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

_BATCH_NORM_EPSILON = 0.001

# The side lengths (pixels) each network takes, smallest and largest, by slim's
# arithmetic: the final average pool must leave a 1x1 map. v1's 7x7 pool (stride 1)
# needs a 7x7 map; v2's 7x7 and v3's 8x8 pools (stride 2) shrink to smaller maps
# and reduce up to 8x8 (v2) and 9x9 (v3) maps; v3's VALID stem needs 75 pixels.
# (slim's v3 with its auxiliary head, left out here, takes only 107..346.)
INPUT_SIZES = {"inception_v1": (193, 224), "inception_v2": (1, 256), "inception_v3": (75, 362)}


# ----------------------------------------------------------------------- layers


def _weights(name: str, shape: Sequence[int]) -> tf.Variable:
    return v1.get_variable(
        name, shape, initializer=v1.variance_scaling_initializer(scale=2.0, distribution="truncated_normal")
    )


def _batch_norm(inputs: tf.Tensor) -> tf.Tensor:
    """slim.batch_norm with scale=False, inference: gamma is a constant 1."""
    channels = inputs.shape[-1]
    with v1.variable_scope("BatchNorm"):
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        mean = v1.get_variable("moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False)
        variance = v1.get_variable("moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False)
        # A Const (not tf.ones, which may become Fill) so graph rewrites can fold it.
        gamma = tf.constant(np.ones([channels], np.float32), name="gamma")
        outputs, _, _ = v1.nn.fused_batch_norm(
            inputs, gamma, beta, mean=mean, variance=variance, epsilon=_BATCH_NORM_EPSILON, is_training=False
        )
        return outputs


def _conv(inputs: tf.Tensor, depth: int, kernel: Sequence[int], *, scope: str, stride: int = 1,
          padding: str = "SAME") -> tf.Tensor:
    """slim.conv2d under the Inception arg scope: convolution, batch norm, ReLU."""
    with v1.variable_scope(scope):
        weights = _weights("weights", [*kernel, inputs.shape[-1], depth])
        net = tf.nn.conv2d(inputs, weights, [1, stride, stride, 1], padding)
        return tf.nn.relu(_batch_norm(net))


def _separable_conv(inputs: tf.Tensor, depth: int, kernel: Sequence[int], *, depth_multiplier: int, stride: int,
                    scope: str) -> tf.Tensor:
    """slim.separable_conv2d outside the conv2d arg scope: biases and ReLU, no batch norm."""
    in_channels = inputs.shape[-1]
    with v1.variable_scope(scope):
        depthwise = _weights("depthwise_weights", [*kernel, in_channels, depth_multiplier])
        pointwise = _weights("pointwise_weights", [1, 1, in_channels * depth_multiplier, depth])
        biases = v1.get_variable("biases", [depth], initializer=v1.zeros_initializer())
        net = tf.nn.separable_conv2d(inputs, depthwise, pointwise, [1, stride, stride, 1], "SAME")
        return tf.nn.relu(tf.nn.bias_add(net, biases))


def _max_pool(inputs: tf.Tensor, kernel: int, *, stride: int = 1, padding: str = "SAME") -> tf.Tensor:
    return tf.nn.max_pool2d(inputs, kernel, stride, padding)


def _avg_pool(inputs: tf.Tensor, kernel: int, *, stride: int = 1, padding: str = "SAME") -> tf.Tensor:
    return tf.nn.avg_pool2d(inputs, kernel, stride, padding)


def _logits(net: tf.Tensor, num_classes: int, *, arch: str, images: tf.Tensor, pool: int, pool_stride: int,
            shrink_pool: bool, conv_scope: str) -> tf.Tensor:
    """Logits scope: VALID average pool, 1x1 convolution with biases, spatial squeeze.

    ``shrink_pool`` is slim's ``_reduced_kernel_size_for_small_input``: a pool no
    larger than a statically known feature map. v2 and v3 leave slim.avg_pool2d's
    stride at its default, 2, which only matters for maps larger than the pool.
    """
    height, width = net.shape[1], net.shape[2]
    kernel = [pool, pool]
    if shrink_pool and height is not None and width is not None:
        kernel = [min(height, pool), min(width, pool)]
    if height is not None and width is not None:
        pooled = [(side - k) // pool_stride + 1 if side >= k else 0 for side, k in zip((height, width), kernel)]
        if pooled != [1, 1]:
            low, high = INPUT_SIZES[arch]
            raise ValueError(
                f"{arch} cannot classify a {images.shape[1]}x{images.shape[2]} image: its final {height}x{width} "
                f"feature map does not pool to 1x1; it takes sides from {low} to {high} pixels"
            )
    with v1.variable_scope("Logits"):
        net = tf.nn.avg_pool2d(net, kernel, pool_stride, "VALID")
        with v1.variable_scope(conv_scope):
            weights = _weights("weights", [1, 1, net.shape[-1], num_classes])
            biases = v1.get_variable("biases", [num_classes], initializer=v1.zeros_initializer())
            logits = tf.nn.bias_add(tf.nn.conv2d(net, weights, 1, "SAME"), biases)
        return tf.squeeze(logits, [1, 2], name="SpatialSqueeze")


def _concat(branches: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.concat(list(branches), 3)


# ----------------------------------------------------------------- Inception v1

# Mixed blocks: (Branch_0 1x1, Branch_1 1x1 -> 3x3, Branch_2 1x1 -> 3x3, Branch_3 pool -> 1x1).
_V1_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _v1_mixed(net: tf.Tensor, name: str) -> tf.Tensor:
    d0, d1a, d1b, d2a, d2b, d3 = _V1_MIXED[name]
    # slim names Mixed_5b's second Branch_2 layer "Conv2d_0a_3x3", every other one "Conv2d_0b_3x3".
    branch_2_scope = "Conv2d_0a_3x3" if name == "Mixed_5b" else "Conv2d_0b_3x3"
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, d0, [1, 1], scope="Conv2d_0a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, d1a, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, d1b, [3, 3], scope="Conv2d_0b_3x3")
        with v1.variable_scope("Branch_2"):
            branch_2 = _conv(net, d2a, [1, 1], scope="Conv2d_0a_1x1")
            branch_2 = _conv(branch_2, d2b, [3, 3], scope=branch_2_scope)
        with v1.variable_scope("Branch_3"):
            branch_3 = _max_pool(net, 3)
            branch_3 = _conv(branch_3, d3, [1, 1], scope="Conv2d_0b_1x1")
        return _concat([branch_0, branch_1, branch_2, branch_3])


def inception_v1(images: tf.Tensor, num_classes: int) -> tf.Tensor:
    """slim's inception_v1(is_training=False): [N, H, W, 3] float32 -> [N, num_classes] logits."""
    with v1.variable_scope("InceptionV1"):
        net = _conv(images, 64, [7, 7], stride=2, scope="Conv2d_1a_7x7")
        net = _max_pool(net, 3, stride=2)
        net = _conv(net, 64, [1, 1], scope="Conv2d_2b_1x1")
        net = _conv(net, 192, [3, 3], scope="Conv2d_2c_3x3")
        net = _max_pool(net, 3, stride=2)
        net = _v1_mixed(net, "Mixed_3b")
        net = _v1_mixed(net, "Mixed_3c")
        net = _max_pool(net, 3, stride=2)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            net = _v1_mixed(net, name)
        net = _max_pool(net, 2, stride=2)
        net = _v1_mixed(net, "Mixed_5b")
        net = _v1_mixed(net, "Mixed_5c")
        return _logits(net, num_classes, arch="inception_v1", images=images, pool=7, pool_stride=1, shrink_pool=False,
                       conv_scope="Conv2d_0c_1x1")


# ----------------------------------------------------------------- Inception v2

# Mixed blocks: (Branch_0 1x1, Branch_1 1x1 -> 3x3, Branch_2 1x1 -> 3x3 -> 3x3,
# Branch_3 pool -> 1x1, the pool).
_V2_MIXED = {
    "Mixed_3b": (64, 64, 64, 64, 96, 32, _avg_pool),
    "Mixed_3c": (64, 64, 96, 64, 96, 64, _avg_pool),
    "Mixed_4b": (224, 64, 96, 96, 128, 128, _avg_pool),
    "Mixed_4c": (192, 96, 128, 96, 128, 128, _avg_pool),
    "Mixed_4d": (160, 128, 160, 128, 160, 96, _avg_pool),
    "Mixed_4e": (96, 128, 192, 160, 192, 96, _avg_pool),
    "Mixed_5b": (352, 192, 320, 160, 224, 128, _avg_pool),
    "Mixed_5c": (352, 192, 320, 192, 224, 128, _max_pool),
}
# Grid reductions: (Branch_0 1x1 -> 3x3/2, Branch_1 1x1 -> 3x3 -> 3x3/2); Branch_2 max pools.
_V2_REDUCTION = {"Mixed_4a": (128, 160, 64, 96), "Mixed_5a": (128, 192, 192, 256)}


def _v2_mixed(net: tf.Tensor, name: str) -> tf.Tensor:
    d0, d1a, d1b, d2a, d2b, d3, pool = _V2_MIXED[name]
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, d0, [1, 1], scope="Conv2d_0a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, d1a, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, d1b, [3, 3], scope="Conv2d_0b_3x3")
        with v1.variable_scope("Branch_2"):
            branch_2 = _conv(net, d2a, [1, 1], scope="Conv2d_0a_1x1")
            branch_2 = _conv(branch_2, d2b, [3, 3], scope="Conv2d_0b_3x3")
            branch_2 = _conv(branch_2, d2b, [3, 3], scope="Conv2d_0c_3x3")
        with v1.variable_scope("Branch_3"):
            branch_3 = pool(net, 3)
            branch_3 = _conv(branch_3, d3, [1, 1], scope="Conv2d_0b_1x1")
        return _concat([branch_0, branch_1, branch_2, branch_3])


def _v2_reduction(net: tf.Tensor, name: str) -> tf.Tensor:
    d0a, d0b, d1a, d1b = _V2_REDUCTION[name]
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, d0a, [1, 1], scope="Conv2d_0a_1x1")
            branch_0 = _conv(branch_0, d0b, [3, 3], stride=2, scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, d1a, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, d1b, [3, 3], scope="Conv2d_0b_3x3")
            branch_1 = _conv(branch_1, d1b, [3, 3], stride=2, scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_2"):
            branch_2 = _max_pool(net, 3, stride=2)
        return _concat([branch_0, branch_1, branch_2])


def inception_v2(images: tf.Tensor, num_classes: int) -> tf.Tensor:
    """slim's inception_v2(is_training=False): [N, H, W, 3] float32 -> [N, num_classes] logits."""
    with v1.variable_scope("InceptionV2"):
        # slim: depth_multiplier = min(int(64 / 3), 8); every padding here is SAME.
        net = _separable_conv(images, 64, [7, 7], depth_multiplier=8, stride=2, scope="Conv2d_1a_7x7")
        net = _max_pool(net, 3, stride=2)
        net = _conv(net, 64, [1, 1], scope="Conv2d_2b_1x1")
        net = _conv(net, 192, [3, 3], scope="Conv2d_2c_3x3")
        net = _max_pool(net, 3, stride=2)
        net = _v2_mixed(net, "Mixed_3b")
        net = _v2_mixed(net, "Mixed_3c")
        net = _v2_reduction(net, "Mixed_4a")
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e"):
            net = _v2_mixed(net, name)
        net = _v2_reduction(net, "Mixed_5a")
        net = _v2_mixed(net, "Mixed_5b")
        net = _v2_mixed(net, "Mixed_5c")
        return _logits(net, num_classes, arch="inception_v2", images=images, pool=7, pool_stride=2, shrink_pool=True,
                       conv_scope="Conv2d_1c_1x1")


# ----------------------------------------------------------------- Inception v3


def _v3_mixed_5(net: tf.Tensor, name: str, pool_depth: int) -> tf.Tensor:
    """35x35 blocks Mixed_5b/5c/5d."""
    # slim names Mixed_5c's Branch_1 layers differently from 5b's and 5d's.
    branch_1_scopes = ("Conv2d_0b_1x1", "Conv_1_0c_5x5") if name == "Mixed_5c" else ("Conv2d_0a_1x1", "Conv2d_0b_5x5")
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, 64, [1, 1], scope="Conv2d_0a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, 48, [1, 1], scope=branch_1_scopes[0])
            branch_1 = _conv(branch_1, 64, [5, 5], scope=branch_1_scopes[1])
        with v1.variable_scope("Branch_2"):
            branch_2 = _conv(net, 64, [1, 1], scope="Conv2d_0a_1x1")
            branch_2 = _conv(branch_2, 96, [3, 3], scope="Conv2d_0b_3x3")
            branch_2 = _conv(branch_2, 96, [3, 3], scope="Conv2d_0c_3x3")
        with v1.variable_scope("Branch_3"):
            branch_3 = _avg_pool(net, 3)
            branch_3 = _conv(branch_3, pool_depth, [1, 1], scope="Conv2d_0b_1x1")
        return _concat([branch_0, branch_1, branch_2, branch_3])


def _v3_mixed_6a(net: tf.Tensor) -> tf.Tensor:
    """35x35 -> 17x17 reduction (slim names its 3x3 convolutions "Conv2d_1a_1x1")."""
    with v1.variable_scope("Mixed_6a"):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, 384, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, 64, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, 96, [3, 3], scope="Conv2d_0b_3x3")
            branch_1 = _conv(branch_1, 96, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_1x1")
        with v1.variable_scope("Branch_2"):
            branch_2 = _max_pool(net, 3, stride=2, padding="VALID")
        return _concat([branch_0, branch_1, branch_2])


def _v3_mixed_6(net: tf.Tensor, name: str, width: int) -> tf.Tensor:
    """17x17 blocks Mixed_6b..6e with factorized 7x7 convolutions ``width`` deep."""
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, 192, [1, 1], scope="Conv2d_0a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, width, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, width, [1, 7], scope="Conv2d_0b_1x7")
            branch_1 = _conv(branch_1, 192, [7, 1], scope="Conv2d_0c_7x1")
        with v1.variable_scope("Branch_2"):
            branch_2 = _conv(net, width, [1, 1], scope="Conv2d_0a_1x1")
            branch_2 = _conv(branch_2, width, [7, 1], scope="Conv2d_0b_7x1")
            branch_2 = _conv(branch_2, width, [1, 7], scope="Conv2d_0c_1x7")
            branch_2 = _conv(branch_2, width, [7, 1], scope="Conv2d_0d_7x1")
            branch_2 = _conv(branch_2, 192, [1, 7], scope="Conv2d_0e_1x7")
        with v1.variable_scope("Branch_3"):
            branch_3 = _avg_pool(net, 3)
            branch_3 = _conv(branch_3, 192, [1, 1], scope="Conv2d_0b_1x1")
        return _concat([branch_0, branch_1, branch_2, branch_3])


def _v3_mixed_7a(net: tf.Tensor) -> tf.Tensor:
    """17x17 -> 8x8 reduction."""
    with v1.variable_scope("Mixed_7a"):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, 192, [1, 1], scope="Conv2d_0a_1x1")
            branch_0 = _conv(branch_0, 320, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, 192, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _conv(branch_1, 192, [1, 7], scope="Conv2d_0b_1x7")
            branch_1 = _conv(branch_1, 192, [7, 1], scope="Conv2d_0c_7x1")
            branch_1 = _conv(branch_1, 192, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_2"):
            branch_2 = _max_pool(net, 3, stride=2, padding="VALID")
        return _concat([branch_0, branch_1, branch_2])


def _v3_mixed_7(net: tf.Tensor, name: str) -> tf.Tensor:
    """8x8 blocks Mixed_7b/7c, whose branches fan out into parallel 1x3 and 3x1 convolutions."""
    # slim names the 3x1 convolution of Branch_1 "Conv2d_0b_3x1" in Mixed_7b, "Conv2d_0c_3x1" in 7c.
    branch_1_3x1 = "Conv2d_0b_3x1" if name == "Mixed_7b" else "Conv2d_0c_3x1"
    with v1.variable_scope(name):
        with v1.variable_scope("Branch_0"):
            branch_0 = _conv(net, 320, [1, 1], scope="Conv2d_0a_1x1")
        with v1.variable_scope("Branch_1"):
            branch_1 = _conv(net, 384, [1, 1], scope="Conv2d_0a_1x1")
            branch_1 = _concat([
                _conv(branch_1, 384, [1, 3], scope="Conv2d_0b_1x3"),
                _conv(branch_1, 384, [3, 1], scope=branch_1_3x1),
            ])
        with v1.variable_scope("Branch_2"):
            branch_2 = _conv(net, 448, [1, 1], scope="Conv2d_0a_1x1")
            branch_2 = _conv(branch_2, 384, [3, 3], scope="Conv2d_0b_3x3")
            branch_2 = _concat([
                _conv(branch_2, 384, [1, 3], scope="Conv2d_0c_1x3"),
                _conv(branch_2, 384, [3, 1], scope="Conv2d_0d_3x1"),
            ])
        with v1.variable_scope("Branch_3"):
            branch_3 = _avg_pool(net, 3)
            branch_3 = _conv(branch_3, 192, [1, 1], scope="Conv2d_0b_1x1")
        return _concat([branch_0, branch_1, branch_2, branch_3])


def inception_v3(images: tf.Tensor, num_classes: int) -> tf.Tensor:
    """slim's inception_v3(is_training=False) without its auxiliary head:
    [N, H, W, 3] float32 -> [N, num_classes] logits."""
    with v1.variable_scope("InceptionV3"):
        # The stem pads VALID unless a layer says otherwise.
        net = _conv(images, 32, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        net = _conv(net, 32, [3, 3], padding="VALID", scope="Conv2d_2a_3x3")
        net = _conv(net, 64, [3, 3], scope="Conv2d_2b_3x3")
        net = _max_pool(net, 3, stride=2, padding="VALID")
        net = _conv(net, 80, [1, 1], padding="VALID", scope="Conv2d_3b_1x1")
        net = _conv(net, 192, [3, 3], padding="VALID", scope="Conv2d_4a_3x3")
        net = _max_pool(net, 3, stride=2, padding="VALID")
        net = _v3_mixed_5(net, "Mixed_5b", pool_depth=32)
        net = _v3_mixed_5(net, "Mixed_5c", pool_depth=64)
        net = _v3_mixed_5(net, "Mixed_5d", pool_depth=64)
        net = _v3_mixed_6a(net)
        for name, width in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            net = _v3_mixed_6(net, name, width)
        net = _v3_mixed_7a(net)
        net = _v3_mixed_7(net, "Mixed_7b")
        net = _v3_mixed_7(net, "Mixed_7c")
        return _logits(net, num_classes, arch="inception_v3", images=images, pool=8, pool_stride=2, shrink_pool=True,
                       conv_scope="Conv2d_1c_1x1")


NETS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    "inception_v1": inception_v1,
    "inception_v2": inception_v2,
    "inception_v3": inception_v3,
}
