"""Test-only oracle of the slim plugin: TF-slim's own code, runnable on TF 2.21.

* tf_slim 1.1.0 (``tf_slim.nets``: resnet_v1, resnet_v2, vgg). It reaches Keras's legacy
  ``tf.layers`` through ``tensorflow.python.layers.*``, which lazy-load
  ``tf_keras.legacy_tf_layers.*``; tf_keras 2.21 keeps those modules under
  ``tf_keras.src.legacy_tf_layers``, so the shim below aliases them before tf_slim loads.
* research/slim's mobilenet_v1.py (not in tf_slim), copied below, built from tf_slim.
* ``slim_logits``: nets_factory's network for an arch, in inference mode, under its arg_scope.
* research/slim's eval preprocessing (vgg_preprocessing, inception_preprocessing).

Never imported by exportkit or a plugin.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import importlib  # noqa: E402
import sys  # noqa: E402

_LEGACY = ("base", "convolutional", "core", "normalization", "pooling", "variable_scope_shim")


def _alias_legacy_layers() -> None:
    package = importlib.import_module("tf_keras.src.legacy_tf_layers")
    sys.modules.setdefault("tf_keras.legacy_tf_layers", package)
    for name in _LEGACY:
        sys.modules.setdefault(f"tf_keras.legacy_tf_layers.{name}",
                               importlib.import_module(f"tf_keras.src.legacy_tf_layers.{name}"))


_alias_legacy_layers()

import tf_slim as slim  # noqa: E402,F401
from tf_slim.nets import resnet_v1, resnet_v2, vgg  # noqa: E402,F401


# ----------------------------------------------------------------------------------------
# tensorflow/models research/slim/nets/mobilenet_v1.py (Apache-2.0, commit ebafe289), the
# classification path verbatim but for: tf.contrib.slim -> tf_slim, tf.variable_scope ->
# tf.compat.v1.variable_scope, tf.truncated_normal_initializer -> its tf.compat.v1 name,
# tf.contrib.layers.l2_regularizer/softmax -> tf_slim's, keep_dims -> keepdims; the
# output_stride, use_explicit_padding and final_endpoint options, unused here, are left out.
# ----------------------------------------------------------------------------------------
import tensorflow as tf  # noqa: E402
from collections import namedtuple  # noqa: E402

Conv = namedtuple('Conv', ['kernel', 'stride', 'depth'])
DepthSepConv = namedtuple('DepthSepConv', ['kernel', 'stride', 'depth'])

_CONV_DEFS = [
    Conv(kernel=[3, 3], stride=2, depth=32),
    DepthSepConv(kernel=[3, 3], stride=1, depth=64),
    DepthSepConv(kernel=[3, 3], stride=2, depth=128),
    DepthSepConv(kernel=[3, 3], stride=1, depth=128),
    DepthSepConv(kernel=[3, 3], stride=2, depth=256),
    DepthSepConv(kernel=[3, 3], stride=1, depth=256),
    DepthSepConv(kernel=[3, 3], stride=2, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=2, depth=1024),
    DepthSepConv(kernel=[3, 3], stride=1, depth=1024)
]


def mobilenet_v1_base(inputs, min_depth=8, depth_multiplier=1.0, conv_defs=None, scope=None):
  depth = lambda d: max(int(d * depth_multiplier), min_depth)
  end_points = {}
  if depth_multiplier <= 0:
    raise ValueError('depth_multiplier is not greater than zero.')
  if conv_defs is None:
    conv_defs = _CONV_DEFS
  with tf.compat.v1.variable_scope(scope, 'MobilenetV1', [inputs]):
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d], padding='SAME'):
      net = inputs
      for i, conv_def in enumerate(conv_defs):
        end_point_base = 'Conv2d_%d' % i
        layer_stride = conv_def.stride
        layer_rate = 1
        if isinstance(conv_def, Conv):
          end_point = end_point_base
          net = slim.conv2d(net, depth(conv_def.depth), conv_def.kernel,
                            stride=conv_def.stride,
                            normalizer_fn=slim.batch_norm,
                            scope=end_point)
          end_points[end_point] = net
        elif isinstance(conv_def, DepthSepConv):
          end_point = end_point_base + '_depthwise'
          net = slim.separable_conv2d(net, None, conv_def.kernel,
                                      depth_multiplier=1,
                                      stride=layer_stride,
                                      rate=layer_rate,
                                      normalizer_fn=slim.batch_norm,
                                      scope=end_point)
          end_points[end_point] = net
          end_point = end_point_base + '_pointwise'
          net = slim.conv2d(net, depth(conv_def.depth), [1, 1],
                            stride=1,
                            normalizer_fn=slim.batch_norm,
                            scope=end_point)
          end_points[end_point] = net
  return net, end_points


def mobilenet_v1(inputs, num_classes=1000, dropout_keep_prob=0.999, is_training=True, min_depth=8,
                 depth_multiplier=1.0, conv_defs=None, prediction_fn=slim.softmax, spatial_squeeze=True,
                 reuse=None, scope='MobilenetV1', global_pool=False):
  input_shape = inputs.get_shape().as_list()
  if len(input_shape) != 4:
    raise ValueError('Invalid input tensor rank, expected 4, was: %d' % len(input_shape))
  with tf.compat.v1.variable_scope(scope, 'MobilenetV1', [inputs], reuse=reuse) as scope:
    with slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
      net, end_points = mobilenet_v1_base(inputs, scope=scope, min_depth=min_depth,
                                          depth_multiplier=depth_multiplier, conv_defs=conv_defs)
      with tf.compat.v1.variable_scope('Logits'):
        if global_pool:
          net = tf.reduce_mean(net, [1, 2], keepdims=True, name='global_pool')
          end_points['global_pool'] = net
        else:
          kernel_size = _reduced_kernel_size_for_small_input(net, [7, 7])
          net = slim.avg_pool2d(net, kernel_size, padding='VALID', scope='AvgPool_1a')
          end_points['AvgPool_1a'] = net
        if not num_classes:
          return net, end_points
        net = slim.dropout(net, keep_prob=dropout_keep_prob, scope='Dropout_1b')
        logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                             normalizer_fn=None, scope='Conv2d_1c_1x1')
        if spatial_squeeze:
          logits = tf.squeeze(logits, [1, 2], name='SpatialSqueeze')
      end_points['Logits'] = logits
      if prediction_fn:
        end_points['Predictions'] = prediction_fn(logits, scope='Predictions')
  return logits, end_points


def _reduced_kernel_size_for_small_input(input_tensor, kernel_size):
  shape = input_tensor.get_shape().as_list()
  if shape[1] is None or shape[2] is None:
    kernel_size_out = kernel_size
  else:
    kernel_size_out = [min(shape[1], kernel_size[0]),
                       min(shape[2], kernel_size[1])]
  return kernel_size_out


def mobilenet_v1_arg_scope(is_training=True, weight_decay=0.00004, stddev=0.09, regularize_depthwise=False,
                           batch_norm_decay=0.9997, batch_norm_epsilon=0.001):
  batch_norm_params = {
      'center': True,
      'scale': True,
      'decay': batch_norm_decay,
      'epsilon': batch_norm_epsilon,
  }
  if is_training is not None:
    batch_norm_params['is_training'] = is_training
  weights_init = tf.compat.v1.truncated_normal_initializer(stddev=stddev)
  regularizer = slim.l2_regularizer(weight_decay)
  if regularize_depthwise:
    depthwise_regularizer = regularizer
  else:
    depthwise_regularizer = None
  with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                      weights_initializer=weights_init,
                      activation_fn=tf.nn.relu6, normalizer_fn=slim.batch_norm):
    with slim.arg_scope([slim.batch_norm], **batch_norm_params):
      with slim.arg_scope([slim.conv2d], weights_regularizer=regularizer):
        with slim.arg_scope([slim.separable_conv2d],
                            weights_regularizer=depthwise_regularizer) as sc:
          return sc


# nets_factory's arch -> (network fn, arg_scope fn), for inference (is_training=False).
def _mobilenet(multiplier):
  return lambda images, num_classes, is_training: mobilenet_v1(
      images, num_classes, is_training=is_training, depth_multiplier=multiplier)


NETWORKS = {
    **{f'resnet_v1_{d}': (getattr(resnet_v1, f'resnet_v1_{d}'), resnet_v1.resnet_arg_scope)
       for d in (50, 101, 152, 200)},
    **{f'resnet_v2_{d}': (getattr(resnet_v2, f'resnet_v2_{d}'), resnet_v2.resnet_arg_scope)
       for d in (50, 101, 152, 200)},
    'vgg_16': (vgg.vgg_16, vgg.vgg_arg_scope),
    'vgg_19': (vgg.vgg_19, vgg.vgg_arg_scope),
    'mobilenet_v1': (_mobilenet(1.0), mobilenet_v1_arg_scope),
    'mobilenet_v1_075': (_mobilenet(0.75), mobilenet_v1_arg_scope),
    'mobilenet_v1_050': (_mobilenet(0.50), mobilenet_v1_arg_scope),
    'mobilenet_v1_025': (_mobilenet(0.25), mobilenet_v1_arg_scope),
}


def slim_logits(arch, images, num_classes):
  """nets_factory.get_network_fn(arch, num_classes, is_training=False)(images), logits [N, C]."""
  network_fn, arg_scope = NETWORKS[arch]
  with slim.arg_scope(arg_scope()):
    logits, _ = network_fn(images, num_classes, is_training=False)
  return tf.squeeze(logits, [1, 2]) if logits.shape.rank == 4 else logits


# ----------------------------------------------------------------------------------------
# slim's eval preprocessing (research/slim/preprocessing, Apache-2.0) for one decoded uint8
# image, TF 1.x ops through tf.compat.v1: vgg_preprocessing.preprocess_for_eval and
# inception_preprocessing.preprocess_for_eval (central_fraction 0.875), as in TF 1.x.
# ----------------------------------------------------------------------------------------
_R_MEAN, _G_MEAN, _B_MEAN = 123.68, 116.78, 103.94


def _smallest_size_at_least(height, width, smallest_side):
  smallest_side = tf.convert_to_tensor(smallest_side, dtype=tf.int32)
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  smallest_side = tf.cast(smallest_side, tf.float32)
  scale = tf.cond(tf.greater(height, width), lambda: smallest_side / width, lambda: smallest_side / height)
  new_height = tf.cast(tf.math.rint(height * scale), tf.int32)
  new_width = tf.cast(tf.math.rint(width * scale), tf.int32)
  return new_height, new_width


def vgg_preprocess_for_eval(image, output_height, output_width, resize_side=256):
  shape = tf.shape(image)
  new_height, new_width = _smallest_size_at_least(shape[0], shape[1], resize_side)
  image = tf.expand_dims(image, 0)
  image = tf.compat.v1.image.resize_bilinear(image, [new_height, new_width], align_corners=False)
  image = tf.squeeze(image, [0])
  image.set_shape([None, None, 3])
  shape = tf.shape(image)
  offset_height = (shape[0] - output_height) // 2
  offset_width = (shape[1] - output_width) // 2
  image = tf.slice(image, [offset_height, offset_width, 0], [output_height, output_width, 3])
  image = tf.cast(image, tf.float32)
  channels = tf.split(image, 3, axis=2)
  for i, mean in enumerate((_R_MEAN, _G_MEAN, _B_MEAN)):
    channels[i] -= mean
  return tf.concat(channels, axis=2)


def _tf1_central_crop(image, central_fraction):
  """TF 1.x tf.image.central_crop (integer offsets: side // int(1 / ((1 - f) / 2)))."""
  shape = tf.shape(image)
  depth = image.get_shape()[2]
  fraction_offset = int(1 / ((1 - central_fraction) / 2.0))
  bbox_h_start = shape[0] // fraction_offset
  bbox_w_start = shape[1] // fraction_offset
  bbox_h_size = shape[0] - bbox_h_start * 2
  bbox_w_size = shape[1] - bbox_w_start * 2
  image = tf.slice(image, tf.stack([bbox_h_start, bbox_w_start, 0]), tf.stack([bbox_h_size, bbox_w_size, -1]))
  image.set_shape([None, None, depth])
  return image


def inception_preprocess_for_eval(image, height, width, central_fraction=0.875):
  image = tf.image.convert_image_dtype(image, dtype=tf.float32)
  image = _tf1_central_crop(image, central_fraction=central_fraction)
  image = tf.expand_dims(image, 0)
  image = tf.compat.v1.image.resize_bilinear(image, [height, width], align_corners=False)
  image = tf.squeeze(image, [0])
  image = tf.subtract(image, 0.5)
  image = tf.multiply(image, 2.0)
  return image
