"""Test-only reference: the seed notebook's own ResNet serving code, on TF 2.x.

This module is the test suite's *independent reference implementation*. It is
NOT part of exportkit and must never be imported by production code.

It reproduces, as close to verbatim as possible, the TF1 code of the seed
notebook ``serving_resnet_estimator_notebook.md`` (which copies
https://github.com/tensorflow/models/tree/v1.4.0/official/resnet):
``batch_norm_relu``, ``fixed_padding``, ``conv2d_fixed_padding``,
``building_block``, ``bottleneck_block``, ``block_layer``,
``imagenet_resnet_v2_generator``, ``imagenet_resnet_v2``, ``preprocess_image``
and the PREDICT part of ``resnet_model_fn``.  The only changes are mechanical
API translations so it runs on TensorFlow 2.21 in graph mode through
``tf.compat.v1`` and legacy Keras (``tf_keras``):

* ``tf.layers.*`` -> ``tf.compat.v1.layers.*``
* ``tf.to_float(x)`` -> ``tf.cast(x, tf.float32)``
* ``tf.variance_scaling_initializer`` ->
  ``tf.compat.v1.variance_scaling_initializer``
* ``tf.image.resize_image_with_crop_or_pad`` ->
  ``tf.image.resize_with_crop_or_pad``
* ``tf.placeholder`` -> ``tf.compat.v1.placeholder`` (etc.)

plus two content fixes: the notebook's TODO constants are filled in with the
tensorflow/models v1.4.0 values, and the notebook's bug (``imagenet_resnet_v2``
called without ``num_classes``) is fixed: the network gets ``num_classes``.

``tf.compat.v1.layers`` only works with legacy Keras, so this module sets
``TF_USE_LEGACY_KERAS=1`` (unless already set) *before* importing tensorflow,
and raises ``ImportError`` at import time if the legacy layers are unusable
(e.g. tensorflow was imported earlier in the process with Keras 3 active).

Public API (all keyword arguments after the first positional ones):

* ``build_notebook_serving_graph(*, resnet_size, data_format, top_k,
  num_classes)`` -> ``(images_placeholder, predictions)`` in the current
  default graph; ``predictions`` has ``classes``, ``probabilities`` and
  ``logits``.
* ``write_notebook_checkpoint(model_dir, *, resnet_size, data_format,
  num_classes, global_step, seed)`` -> checkpoint prefix, laid out like a
  TF 1.4 Estimator ``model_dir`` (``model.ckpt-<step>.*``, ``checkpoint``,
  ``graph.pbtxt``; includes ``global_step`` and ``*/Momentum`` slots).
* ``notebook_variable_shapes(*, resnet_size, data_format, num_classes)`` ->
  ``[(name, shape_tuple), ...]`` of the network variables in creation order
  (91 variables for ResNet-18, 251 for ResNet-50).
* ``run_notebook_graph(checkpoint_prefix, jpeg_bytes_list, *, resnet_size,
  data_format, top_k, num_classes)`` -> dict of numpy arrays
  (``classes``, ``probabilities``, ``logits``).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from exportkit import runtime  # noqa: E402


def _require_legacy_layers():
  """Fails loudly if tf.compat.v1.layers is unusable (Keras 3 active)."""
  try:
    tf.compat.v1.layers.conv2d  # pylint: disable=pointless-statement
  except Exception as e:  # AttributeError: "`conv2d` is not available with Keras 3."
    raise ImportError(
        "tests/notebook_reference.py needs tf.compat.v1.layers (legacy Keras, "
        "package tf_keras). Set the environment variable TF_USE_LEGACY_KERAS=1 "
        "before tensorflow is first imported in this process (currently "
        "TF_USE_LEGACY_KERAS=%r). Underlying error: %s: %s" %
        (os.environ.get("TF_USE_LEGACY_KERAS"), type(e).__name__, e)) from e


_require_legacy_layers()


################################################################################
# Constants (the notebook's TODOs, filled in from tensorflow/models v1.4.0
# official/resnet/imagenet_main.py and official/resnet/resnet_model.py).
################################################################################

# imagenet_main.py
_DEFAULT_IMAGE_SIZE = 224
_NUM_CHANNELS = 3
_LABEL_CLASSES = 1001
_MOMENTUM = 0.9

# resnet_model.py: parameters for batch normalization
_BATCH_NORM_DECAY = 0.997
_BATCH_NORM_EPSILON = 1e-5

TOP_K = 5


################################################################################
# The notebook's functions (verbatim except for mechanical API translation).
################################################################################

def batch_norm_relu(inputs, is_training, data_format):
  """Performs a batch normalization followed by a ReLU."""
  # We set fused=True for a significant performance boost. See
  # https://www.tensorflow.org/performance/performance_guide#common_fused_ops
  inputs = tf.compat.v1.layers.batch_normalization(
      inputs=inputs, axis=1 if data_format == 'channels_first' else 3,
      momentum=_BATCH_NORM_DECAY, epsilon=_BATCH_NORM_EPSILON, center=True,
      scale=True, training=is_training, fused=True)
  inputs = tf.nn.relu(inputs)
  return inputs


def fixed_padding(inputs, kernel_size, data_format):
  """Pads the input along the spatial dimensions independently of input size.
  Args:
    inputs: A tensor of size [batch, channels, height_in, width_in] or
      [batch, height_in, width_in, channels] depending on data_format.
    kernel_size: The kernel to be used in the conv2d or max_pool2d operation.
                 Should be a positive integer.
    data_format: The input format ('channels_last' or 'channels_first').
  Returns:
    A tensor with the same format as the input with the data either intact
    (if kernel_size == 1) or padded (if kernel_size > 1).
  """
  pad_total = kernel_size - 1
  pad_beg = pad_total // 2
  pad_end = pad_total - pad_beg

  if data_format == 'channels_first':
    padded_inputs = tf.pad(inputs, [[0, 0], [0, 0],
                                    [pad_beg, pad_end], [pad_beg, pad_end]])
  else:
    padded_inputs = tf.pad(inputs, [[0, 0], [pad_beg, pad_end],
                                    [pad_beg, pad_end], [0, 0]])
  return padded_inputs


def conv2d_fixed_padding(inputs, filters, kernel_size, strides, data_format):
  """Strided 2-D convolution with explicit padding."""
  # The padding is consistent and is based only on `kernel_size`, not on the
  # dimensions of `inputs` (as opposed to using `tf.layers.conv2d` alone).
  if strides > 1:
    inputs = fixed_padding(inputs, kernel_size, data_format)

  return tf.compat.v1.layers.conv2d(
      inputs=inputs, filters=filters, kernel_size=kernel_size, strides=strides,
      padding=('SAME' if strides == 1 else 'VALID'), use_bias=False,
      kernel_initializer=tf.compat.v1.variance_scaling_initializer(),
      data_format=data_format)


def building_block(inputs, filters, is_training, projection_shortcut, strides,
                   data_format):
  """Standard building block for residual networks with BN before convolutions.
  Args:
    inputs: A tensor of size [batch, channels, height_in, width_in] or
      [batch, height_in, width_in, channels] depending on data_format.
    filters: The number of filters for the convolutions.
    is_training: A Boolean for whether the model is in training or inference
      mode. Needed for batch normalization.
    projection_shortcut: The function to use for projection shortcuts (typically
      a 1x1 convolution when downsampling the input).
    strides: The block's stride. If greater than 1, this block will ultimately
      downsample the input.
    data_format: The input format ('channels_last' or 'channels_first').
  Returns:
    The output tensor of the block.
  """
  shortcut = inputs
  inputs = batch_norm_relu(inputs, is_training, data_format)

  # The projection shortcut should come after the first batch norm and ReLU
  # since it performs a 1x1 convolution.
  if projection_shortcut is not None:
    shortcut = projection_shortcut(inputs)

  inputs = conv2d_fixed_padding(
      inputs=inputs, filters=filters, kernel_size=3, strides=strides,
      data_format=data_format)

  inputs = batch_norm_relu(inputs, is_training, data_format)
  inputs = conv2d_fixed_padding(
      inputs=inputs, filters=filters, kernel_size=3, strides=1,
      data_format=data_format)

  return inputs + shortcut


def bottleneck_block(inputs, filters, is_training, projection_shortcut,
                     strides, data_format):
  """Bottleneck block variant for residual networks with BN before convolutions.
  Args:
    inputs: A tensor of size [batch, channels, height_in, width_in] or
      [batch, height_in, width_in, channels] depending on data_format.
    filters: The number of filters for the first two convolutions. Note that the
      third and final convolution will use 4 times as many filters.
    is_training: A Boolean for whether the model is in training or inference
      mode. Needed for batch normalization.
    projection_shortcut: The function to use for projection shortcuts (typically
      a 1x1 convolution when downsampling the input).
    strides: The block's stride. If greater than 1, this block will ultimately
      downsample the input.
    data_format: The input format ('channels_last' or 'channels_first').
  Returns:
    The output tensor of the block.
  """
  shortcut = inputs
  inputs = batch_norm_relu(inputs, is_training, data_format)

  # The projection shortcut should come after the first batch norm and ReLU
  # since it performs a 1x1 convolution.
  if projection_shortcut is not None:
    shortcut = projection_shortcut(inputs)

  inputs = conv2d_fixed_padding(
      inputs=inputs, filters=filters, kernel_size=1, strides=1,
      data_format=data_format)

  inputs = batch_norm_relu(inputs, is_training, data_format)
  inputs = conv2d_fixed_padding(
      inputs=inputs, filters=filters, kernel_size=3, strides=strides,
      data_format=data_format)

  inputs = batch_norm_relu(inputs, is_training, data_format)
  inputs = conv2d_fixed_padding(
      inputs=inputs, filters=4 * filters, kernel_size=1, strides=1,
      data_format=data_format)

  return inputs + shortcut


def block_layer(inputs, filters, block_fn, blocks, strides, is_training, name,
                data_format):
  """Creates one layer of blocks for the ResNet model.
  Args:
    inputs: A tensor of size [batch, channels, height_in, width_in] or
      [batch, height_in, width_in, channels] depending on data_format.
    filters: The number of filters for the first convolution of the layer.
    block_fn: The block to use within the model, either `building_block` or
      `bottleneck_block`.
    blocks: The number of blocks contained in the layer.
    strides: The stride to use for the first convolution of the layer. If
      greater than 1, this layer will ultimately downsample the input.
    is_training: Either True or False, whether we are currently training the
      model. Needed for batch norm.
    name: A string name for the tensor output of the block layer.
    data_format: The input format ('channels_last' or 'channels_first').
  Returns:
    The output tensor of the block layer.
  """
  # Bottleneck blocks end with 4x the number of filters as they start with
  filters_out = 4 * filters if block_fn is bottleneck_block else filters

  def projection_shortcut(inputs):
    return conv2d_fixed_padding(
        inputs=inputs, filters=filters_out, kernel_size=1, strides=strides,
        data_format=data_format)

  # Only the first block per block_layer uses projection_shortcut and strides
  inputs = block_fn(inputs, filters, is_training, projection_shortcut, strides,
                    data_format)

  for _ in range(1, blocks):
    inputs = block_fn(inputs, filters, is_training, None, 1, data_format)

  return tf.identity(inputs, name)


def imagenet_resnet_v2_generator(block_fn, layers, num_classes,
                                 data_format=None):
  """Generator for ImageNet ResNet v2 models.
  Args:
    block_fn: The block to use within the model, either `building_block` or
      `bottleneck_block`.
    layers: A length-4 array denoting the number of blocks to include in each
      layer. Each layer consists of blocks that take inputs of the same size.
    num_classes: The number of possible classes for image classification.
    data_format: The input format ('channels_last', 'channels_first', or None).
      If set to None, the format is dependent on whether a GPU is available.
  Returns:
    The model function that takes in `inputs` and `is_training` and
    returns the output tensor of the ResNet model.
  """
  if data_format is None:
    data_format = (
        'channels_first' if tf.test.is_built_with_cuda() else 'channels_last')

  def model(inputs, is_training):
    """Constructs the ResNet model given the inputs."""
    if data_format == 'channels_first':
      # Convert the inputs from channels_last (NHWC) to channels_first (NCHW).
      # This provides a large performance boost on GPU. See
      # https://www.tensorflow.org/performance/performance_guide#data_formats
      inputs = tf.transpose(inputs, [0, 3, 1, 2])

    inputs = conv2d_fixed_padding(
        inputs=inputs, filters=64, kernel_size=7, strides=2,
        data_format=data_format)
    inputs = tf.identity(inputs, 'initial_conv')
    inputs = tf.compat.v1.layers.max_pooling2d(
        inputs=inputs, pool_size=3, strides=2, padding='SAME',
        data_format=data_format)
    inputs = tf.identity(inputs, 'initial_max_pool')

    inputs = block_layer(
        inputs=inputs, filters=64, block_fn=block_fn, blocks=layers[0],
        strides=1, is_training=is_training, name='block_layer1',
        data_format=data_format)
    inputs = block_layer(
        inputs=inputs, filters=128, block_fn=block_fn, blocks=layers[1],
        strides=2, is_training=is_training, name='block_layer2',
        data_format=data_format)
    inputs = block_layer(
        inputs=inputs, filters=256, block_fn=block_fn, blocks=layers[2],
        strides=2, is_training=is_training, name='block_layer3',
        data_format=data_format)
    inputs = block_layer(
        inputs=inputs, filters=512, block_fn=block_fn, blocks=layers[3],
        strides=2, is_training=is_training, name='block_layer4',
        data_format=data_format)

    inputs = batch_norm_relu(inputs, is_training, data_format)
    inputs = tf.compat.v1.layers.average_pooling2d(
        inputs=inputs, pool_size=7, strides=1, padding='VALID',
        data_format=data_format)
    inputs = tf.identity(inputs, 'final_avg_pool')
    inputs = tf.reshape(inputs,
                        [-1, 512 if block_fn is building_block else 2048])
    inputs = tf.compat.v1.layers.dense(inputs=inputs, units=num_classes)
    inputs = tf.identity(inputs, 'final_dense')
    return inputs

  return model


def imagenet_resnet_v2(resnet_size, num_classes, data_format=None):
  """Returns the ResNet model for a given size and number of output classes."""
  model_params = {
      18: {'block': building_block, 'layers': [2, 2, 2, 2]},
      34: {'block': building_block, 'layers': [3, 4, 6, 3]},
      50: {'block': bottleneck_block, 'layers': [3, 4, 6, 3]},
      101: {'block': bottleneck_block, 'layers': [3, 4, 23, 3]},
      152: {'block': bottleneck_block, 'layers': [3, 8, 36, 3]},
      200: {'block': bottleneck_block, 'layers': [3, 24, 36, 3]}
  }

  if resnet_size not in model_params:
    raise ValueError('Not a valid resnet_size:', resnet_size)

  params = model_params[resnet_size]
  return imagenet_resnet_v2_generator(
      params['block'], params['layers'], num_classes, data_format)


def preprocess_image(encoded_image, height=_DEFAULT_IMAGE_SIZE, width=_DEFAULT_IMAGE_SIZE):
  """Preprocesses the image by subtracting out the mean from all channels.
  Args:
    image: A jpeg-formatted byte stream represented as a string.
  Returns:
    A 3d tensor of image pixels normalized to be between -0.5 and 0.5, resized to height x width x 3.
    The normalization is an approximation of the preprocess_for_train and preprocess_for_eval functions in
    https://github.com/tensorflow/models/blob/v1.4.0/official/resnet/vgg_preprocessing.py.
  """
  image = tf.image.decode_jpeg(encoded_image, channels=3)
  image = tf.cast(image, tf.float32) / 255.0 - 0.5
  image = tf.image.resize_with_crop_or_pad(image, height, width)
  return image


def resnet_model_fn_predict(features, params, top_k=TOP_K):
  """The PREDICT path of the notebook's resnet_model_fn.

  Verbatim from the notebook up to the `predictions` dict, with the notebook's
  bug fixed (the network gets `num_classes`). Instead of an EstimatorSpec it
  returns `(logits, predictions)`.
  """
  # NOTE: New ops to convert tensor of jpegs to a 4d tensor.
  images = features['images']  # A tensor of tf.strings
  processed_images = tf.map_fn(preprocess_image, images, dtype=tf.float32)  # Convert to a list of tensors
  processed_images = tf.stack(processed_images)  # Convert list of tensors to tensor of tensors
  processed_images = tf.reshape(tensor=processed_images,  # Reshape to ensure TF graph knows the final dimensions
                                shape=[-1, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE, 3])

  # FIXED (notebook bug): the network gets num_classes, IDENTICAL to training.
  network = imagenet_resnet_v2(params['resnet_size'], params['num_classes'],
                               params['data_format'])

  # NOTE: is_training will be false since we are predicting.
  logits = network(
      inputs=processed_images, is_training=False)

  # NOTE: Instead of the top 1 result, we can now return top k to the client!
  top_k_logits, top_k_classes = tf.nn.top_k(logits, k=top_k)
  top_k_probs = tf.nn.softmax(top_k_logits)
  predictions = {
      'classes': top_k_classes,
      'probabilities': top_k_probs
  }
  return logits, predictions


################################################################################
# Public test helpers.
################################################################################

_DATA_FORMATS = ("channels_last", "channels_first")

# Python `warnings` the legacy layers emit on every call (e.g. "`tf.layers.conv2d`
# is deprecated..."). They are expected here; silence them so that test runs
# with stricter warning filters are not affected by this reference module.
_WARNING_CATEGORIES = (UserWarning, DeprecationWarning, FutureWarning)


class _quiet_legacy_warnings(warnings.catch_warnings):

  def __enter__(self):
    result = super().__enter__()
    for category in _WARNING_CATEGORIES:
      warnings.simplefilter("ignore", category)
    return result


def _check_args(resnet_size, data_format):
  if data_format not in _DATA_FORMATS:
    raise ValueError("data_format must be one of %r, got %r" %
                     (_DATA_FORMATS, data_format))
  if resnet_size not in (18, 34, 50, 101, 152, 200):
    raise ValueError("Not a valid resnet_size: %r" % (resnet_size,))


def _require_graph_mode():
  if tf.executing_eagerly():
    raise RuntimeError(
        "notebook_reference builds TF1 graphs: call it inside "
        "`with tf.Graph().as_default():` (eager execution is active).")


def build_notebook_serving_graph(*, resnet_size, data_format="channels_last",
                                 top_k=TOP_K, num_classes=_LABEL_CLASSES):
  """Builds the notebook's serving graph in the CURRENT default graph.

  Returns `(images_placeholder, predictions)`: `images_placeholder` is a
  `tf.string` placeholder of shape [None] (JPEG bytes, as the notebook's
  serving_input_receiver_fn), and `predictions` is a dict with
  `classes` (int32 [N, top_k]), `probabilities` (float32 [N, top_k], softmax
  over the top-k logits) and `logits` (float32 [N, num_classes]).
  """
  _check_args(resnet_size, data_format)
  _require_graph_mode()
  with _quiet_legacy_warnings():
    images = tf.compat.v1.placeholder(dtype=tf.string, shape=[None])
    params = {
        'resnet_size': resnet_size,
        'data_format': data_format,
        'num_classes': num_classes,
    }
    logits, predictions = resnet_model_fn_predict(
        {'images': images}, params, top_k=top_k)
  predictions = dict(predictions)
  predictions['logits'] = logits
  return images, predictions


def notebook_variable_shapes(*, resnet_size, data_format="channels_last",
                             num_classes=_LABEL_CLASSES):
  """[(name, shape_tuple)] of the network's global variables, creation order.

  Network only (no global_step, no optimizer slots); names without ":0".
  """
  _check_args(resnet_size, data_format)
  graph = tf.Graph()
  with graph.as_default(), _quiet_legacy_warnings():
    inputs = tf.compat.v1.placeholder(
        tf.float32, [None, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE,
                     _NUM_CHANNELS])
    network = imagenet_resnet_v2(resnet_size, num_classes, data_format)
    network(inputs=inputs, is_training=False)
    return [(v.op.name, tuple(v.shape.as_list()))
            for v in tf.compat.v1.global_variables()]


def _random_batch_norm_value(var_name, shape, rng):
  """Random but sane BN value for `var_name`, or None if not a BN variable."""
  leaf = var_name.rsplit('/', 1)[-1]
  if 'batch_normalization' not in var_name:
    return None
  if leaf == 'moving_mean':
    return (rng.normal(size=shape) * 0.1).astype(np.float32)
  if leaf == 'moving_variance':
    return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
  if leaf == 'gamma':
    return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
  if leaf == 'beta':
    return (rng.normal(size=shape) * 0.1).astype(np.float32)
  return None


# Target std (over classes) of the logits of the calibration images.
_TARGET_LOGIT_SPREAD = 3.0


def _calibration_images(rng, count=8):
  """Diverse float images in [-0.5, 0.5] (already "preprocessed"), NHWC."""
  size = _DEFAULT_IMAGE_SIZE
  images = []
  for i in range(count):
    kind = i % 4
    if kind == 0:  # uniform noise
      img = rng.uniform(0, 255, (size, size, 3))
    elif kind == 1:  # solid colour
      img = np.ones((size, size, 3)) * rng.uniform(0, 255, (1, 1, 3))
    elif kind == 2:  # colour gradient
      ramp = np.linspace(0.0, 1.0, size)
      a, b = rng.uniform(0, 255, (2, 1, 1, 3))
      img = a + (b - a) * (ramp[:, None, None] if i % 8 < 4 else
                           ramp[None, :, None])
      img = np.broadcast_to(img, (size, size, 3))
    else:  # blocky noise
      block = rng.randint(4, 33)
      n = -(-size // block)
      img = rng.uniform(0, 255, (n, n, 3)).repeat(block, 0).repeat(block, 1)
      img = img[:size, :size]
    images.append(np.floor(img) / 255.0 - 0.5)
  return np.stack(images).astype(np.float32)


def _calibrate_dense(values, *, resnet_size, num_classes, rng):
  """New (dense/kernel, dense/bias) giving sane, image-dependent logits.

  With random weights the pooled features share a large image-independent
  component, so every image gets nearly the same logits and top-k classes.
  This runs the inference-mode network (channels_last; the variables do not
  depend on data_format) on a few diverse calibration images, then draws a
  Glorot-uniform dense kernel from `rng` and scales it so the centered logits have a std over classes
  of about _TARGET_LOGIT_SPREAD, and sets the bias to cancel the mean logits
  (plus a little noise).
  """
  graph = tf.Graph()
  with graph.as_default(), _quiet_legacy_warnings():
    inputs = tf.compat.v1.placeholder(
        tf.float32, [None, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE,
                     _NUM_CHANNELS])
    network = imagenet_resnet_v2(resnet_size, num_classes, 'channels_last')
    network(inputs=inputs, is_training=False)
    pooled = graph.get_tensor_by_name('final_avg_pool:0')
    variables = tf.compat.v1.global_variables()
    phs = [tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape)
           for v in variables]
    assign = tf.group(*[tf.compat.v1.assign(v, ph)
                        for v, ph in zip(variables, phs)])
    with runtime.session(graph) as sess:
      sess.run(assign, feed_dict={ph: values[v.op.name]
                                  for v, ph in zip(variables, phs)})
      features = sess.run(pooled, {inputs: _calibration_images(rng)})
  features = features.reshape(features.shape[0], -1).astype(np.float64)
  # Fresh Glorot-uniform kernel from `rng`: tf_keras' default dense kernel
  # initializer draws its seed from Python's `random` module, so the
  # initialized value is not reproducible from the graph seed.
  fan_in, fan_out = values['dense/kernel'].shape
  limit = np.sqrt(6.0 / (fan_in + fan_out))
  kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out))
  centered = (features - features.mean(axis=0)) @ kernel
  spread = centered.std(axis=1).mean()
  if not np.isfinite(spread) or spread <= 0:
    raise RuntimeError('calibration failed: logit spread %r' % (spread,))
  kernel = kernel * (_TARGET_LOGIT_SPREAD / spread)
  bias = -(features.mean(axis=0) @ kernel) + rng.normal(size=num_classes) * 0.1
  return kernel.astype(np.float32), bias.astype(np.float32)


def write_notebook_checkpoint(model_dir, *, resnet_size,
                              data_format="channels_last",
                              num_classes=_LABEL_CLASSES, global_step=1234,
                              seed=0):
  """Writes an Estimator-style (tensorflow/models v1.4.0) model_dir checkpoint.

  The network is built exactly as the v1.4.0 training model_fn builds it
  (is_training=True, MomentumOptimizer so that `<var>/Momentum` slots exist,
  global_step), initialized deterministically from `seed`, with random but
  sane batch-norm gamma/beta/moving_mean/moving_variance (numpy
  RandomState(seed), creation order) and a calibrated dense layer (see
  _calibrate_dense) so that logits are finite, spread out (std over classes
  roughly 1-4) and image-dependent. Same arguments -> identical checkpoint
  (also across data formats). Writes `model.ckpt-<global_step>.{index,data-00000-of-00001,
  meta}`, the `checkpoint` state file and `graph.pbtxt` into `model_dir`.

  Returns the checkpoint prefix (`<model_dir>/model.ckpt-<global_step>`).
  """
  _check_args(resnet_size, data_format)
  model_dir = os.fspath(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default(), _quiet_legacy_warnings():
    tf.compat.v1.set_random_seed(seed)
    # The Estimator creates the global step before calling model_fn.
    global_step_var = tf.compat.v1.train.get_or_create_global_step()
    features = tf.compat.v1.placeholder(
        tf.float32, [None, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE,
                     _NUM_CHANNELS], name='features')
    network = imagenet_resnet_v2(resnet_size, num_classes, data_format)
    logits = network(inputs=features, is_training=True)
    network_vars = [v for v in tf.compat.v1.global_variables()
                    if v is not global_step_var]

    # Dummy loss; only the variables (incl. Momentum slots) matter.
    loss = tf.reduce_mean(logits)
    optimizer = tf.compat.v1.train.MomentumOptimizer(
        learning_rate=0.1, momentum=_MOMENTUM)
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
      optimizer.minimize(loss, global_step_var)

    rng = np.random.RandomState(seed)
    assignments = []  # (placeholder, assign_op, value)
    for var in network_vars + [global_step_var]:
      name = var.op.name
      if var is global_step_var:
        value = np.asarray(global_step, dtype=np.int64)
      else:
        value = _random_batch_norm_value(name, var.shape.as_list(), rng)
        if value is None:
          continue
      ph = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
      assignments.append((ph, tf.compat.v1.assign(var, ph), value))
    dense_vars = {v.op.name: v for v in network_vars
                  if v.op.name in ('dense/kernel', 'dense/bias')}
    dense_phs = {name: tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape)
                 for name, v in dense_vars.items()}
    dense_assign = tf.group(*[tf.compat.v1.assign(v, dense_phs[name])
                              for name, v in dense_vars.items()])

    # Like the Estimator's default Scaffold saver.
    saver = tf.compat.v1.train.Saver(sharded=True, save_relative_paths=True)
    init_op = tf.compat.v1.global_variables_initializer()

    with runtime.session(graph) as sess:
      sess.run(init_op)
      sess.run([op for _, op, _ in assignments],
               feed_dict={ph: value for ph, _, value in assignments})
      # Re-center and re-scale the final dense layer (see _calibrate_dense).
      values = dict(zip([v.op.name for v in network_vars],
                        sess.run(network_vars)))
      kernel, bias = _calibrate_dense(values, resnet_size=resnet_size,
                                      num_classes=num_classes, rng=rng)
      sess.run(dense_assign, feed_dict={dense_phs['dense/kernel']: kernel,
                                        dense_phs['dense/bias']: bias})
      tf.io.write_graph(graph.as_graph_def(add_shapes=True), model_dir,
                        'graph.pbtxt')
      prefix = saver.save(sess, os.path.join(model_dir, 'model.ckpt'),
                          global_step=global_step)
  return prefix


def run_notebook_graph(checkpoint_prefix, jpeg_bytes_list, *, resnet_size,
                       data_format="channels_last", top_k=TOP_K,
                       num_classes=_LABEL_CLASSES):
  """Runs the notebook serving graph on JPEG bytes, restored from a checkpoint.

  Returns a dict of numpy arrays: `classes` int32 [N, top_k],
  `probabilities` float32 [N, top_k], `logits` float32 [N, num_classes].
  """
  _check_args(resnet_size, data_format)
  jpegs = np.array([bytes(b) for b in jpeg_bytes_list], dtype=object)
  graph = tf.Graph()
  with graph.as_default():
    images, predictions = build_notebook_serving_graph(
        resnet_size=resnet_size, data_format=data_format, top_k=top_k,
        num_classes=num_classes)
    # The checkpoint also holds global_step and */Momentum entries; a Saver
    # over this graph's variables just ignores them.
    saver = tf.compat.v1.train.Saver(
        var_list=tf.compat.v1.global_variables())
    with runtime.session(graph) as sess:
      saver.restore(sess, os.fspath(checkpoint_prefix))
      out = sess.run(predictions, feed_dict={images: jpegs})
  return {k: np.asarray(v) for k, v in out.items()}
