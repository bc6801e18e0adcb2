"""From encoded image bytes to the float batch a network eats.

The ``standard`` pipeline runs per image: decode -> optional aspect-preserving
resize of the shorter side -> crop (central, or crop-or-pad) -> normalize. Every
step is driven by ``preprocessing.*`` config fields, so a new preset is a YAML
file. The two shipped presets:

* ``notebook``: the seed notebook's ``preprocess_image`` (decode to RGB,
  x / 255 - 0.5, crop-or-pad to 224);
* ``vgg``: the eval path tensorflow/models v1.4.0 trained with
  (vgg_preprocessing.preprocess_for_eval: shorter side to 256 by bilinear
  resize, central crop 224, subtract the RGB means 123.68, 116.78, 103.94).
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from .registry import PREPROCESSORS


def _aspect_preserving_resize(image: tf.Tensor, smallest_side: int) -> tf.Tensor:
    """v1.4.0 ``_aspect_preserving_resize``: shorter side to ``smallest_side``."""
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    scale = tf.cast(smallest_side, tf.float32) / tf.minimum(height, width)
    new_height = tf.cast(tf.math.rint(height * scale), tf.int32)
    new_width = tf.cast(tf.math.rint(width * scale), tf.int32)
    # TF1's resize_bilinear: no corner alignment, no half-pixel centres, as
    # the checkpoint's training code resized (tf.image.resize would shift by
    # half a pixel).
    resized = tf.raw_ops.ResizeBilinear(
        images=tf.expand_dims(image, 0), size=tf.stack([new_height, new_width]),
        align_corners=False, half_pixel_centers=False,
    )
    return tf.squeeze(resized, [0])


def _central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    with tf.control_dependencies(
        [tf.debugging.assert_greater_equal(
            tf.minimum(shape[0], shape[1]), size,
            message=f"image smaller than the {size}x{size} central crop")]
    ):
        return tf.slice(image, [top, left, 0], [size, size, -1])


def _normalize(image: tf.Tensor, norm: dict[str, Any]) -> tf.Tensor:
    image = tf.cast(image, tf.float32)
    if norm["divisor"] != 1:
        image = image / norm["divisor"]
    mean = norm["mean"]
    # A scalar when the channels agree, so x / 255 - 0.5 is computed exactly as
    # the notebook does.
    image = image - (mean[0] if len(set(mean)) == 1 else tf.constant(mean, tf.float32))
    std = norm["std"]
    if any(s != 1 for s in std):
        image = image / tf.constant(std, tf.float32)
    return image


def standard_image_fn(params: dict[str, Any]) -> Callable[[tf.Tensor], tf.Tensor]:
    """The per-image function for one config: scalar string -> [size, size, 3]."""
    size = params["image_size"]
    resize_side = params["resize_side"]
    crop = params["crop"]

    def preprocess_image(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(encoded, channels=3)
        if resize_side is not None:
            image = _aspect_preserving_resize(image, resize_side)
        if crop == "central":
            return _normalize(_central_crop(image, size), params["normalization"])
        # Normalize first, so padding is 0 in normalized units: the notebook's
        # order, kept for identical answers.
        image = _normalize(image, params["normalization"])
        return tf.image.resize_with_crop_or_pad(image, size, size)

    return preprocess_image


@PREPROCESSORS.register("standard")
def standard(images: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """[N] encoded images -> [N, size, size, 3] float32, NHWC."""
    size = params["image_size"]
    batch = tf.map_fn(
        standard_image_fn(params), images,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )
    return tf.reshape(batch, [-1, size, size, 3])
