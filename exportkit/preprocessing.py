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

from .config import resize_budget
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


def _central_fraction(image: tf.Tensor, fraction: float) -> tf.Tensor:
    """TF 1.x ``tf.image.central_crop``, which slim's inception_preprocessing evaluated the zoo
    with: an offset of side // int(1 / ((1 - fraction) / 2)) on each side. TF 2 computes
    it in floats; the two differ where that quotient is not whole (0.9 gives 19, not 20)."""
    if fraction == 1:
        return image
    offset = int(1 / ((1 - fraction) / 2.0))
    shape = tf.shape(image)
    top, left = shape[0] // offset, shape[1] // offset
    return tf.slice(image, [top, left, 0], [shape[0] - 2 * top, shape[1] - 2 * left, -1])


def _resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """TF1's resize_bilinear to size x size (no corner alignment, no half-pixel centres), as
    slim resized; float32 raw values."""
    resized = tf.raw_ops.ResizeBilinear(images=tf.expand_dims(image, 0), size=[size, size],
                                        align_corners=False, half_pixel_centers=False)
    return tf.reshape(resized, [size, size, 3])


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


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(encoded: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    return tf.logical_and(tf.equal(tf.strings.substr(encoded, 0, 8), _PNG_MAGIC), params["decode"] == "image")


def header_size(encoded: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """int64 [height, width] from the header alone: no pixel is decoded. A JPEG header
    that libjpeg cannot parse fails here with a message that names no image."""

    def png() -> tf.Tensor:  # IHDR: big-endian width, height at bytes 16..23
        fields = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8), tf.int64)
        big_endian = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        width = tf.reduce_sum(fields[:4] * big_endian)
        height = tf.reduce_sum(fields[4:] * big_endian)
        return tf.stack([height, width])

    def jpeg() -> tf.Tensor:
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    return tf.cond(_is_png(encoded, params), png, jpeg)


def _has_jpeg_end(encoded: tf.Tensor) -> tf.Tensor:
    data = tf.io.decode_raw(encoded, tf.uint8)
    return tf.reduce_any(tf.logical_and(tf.equal(data[:-1], 0xFF), tf.equal(data[1:], 0xD9)))


def _check(condition: tf.Tensor, template: str, *values: tf.Tensor) -> tf.Operation:
    """An assertion whose error (INVALID_ARGUMENT through TF Serving) reads as one
    sentence: ``assertion failed: [images[3] is empty]``."""
    return tf.debugging.Assert(condition, [tf.strings.format(template, values)])


def _resized_size(height: tf.Tensor, width: tf.Tensor, smallest_side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The size :func:`_aspect_preserving_resize` will give, from the header's size (float64, so a
    thin image's huge side is not rounded down)."""
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    scale = smallest_side / tf.maximum(tf.minimum(height, width), 1.0)
    return tf.cast(tf.math.rint(height * scale), tf.int64), tf.cast(tf.math.rint(width * scale), tf.int64)


def _check_resized_size(height: tf.Tensor, width: tf.Tensor, smallest_side: int, budget: int,
                        index: tf.Tensor) -> tf.Operation:
    """A thin image (4x60000: 240,000 pixels) resized to a shorter side of 256 would be a
    256x3,840,000 float buffer: refused from the header, before decoding."""
    new_height, new_width = _resized_size(height, width, smallest_side)
    return _check(new_height * new_width <= budget,
                  "images[{}] is {}x{} pixels: resized to a shorter side of " + str(smallest_side) +
                  " it would be {}x{}, over the resize budget of " + f"{budget:,} pixels", index, width, height,
                  new_width, new_height)


def check_format(encoded: tf.Tensor, index: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """``encoded`` once it is a non-empty JPEG (or PNG, with decode=image) whose header can be
    read, or an error naming the image and the problem (INVALID_ARGUMENT through TF Serving)."""
    length = tf.strings.length(encoded)
    is_png = _is_png(encoded, params)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), _JPEG_MAGIC)
    accepted = "a JPEG or PNG" if params["decode"] == "image" else "a JPEG"
    # Each check runs after the one before, so the error names the first problem.
    check = _check(length > 0, "images[{}] is empty", index)
    with tf.control_dependencies([check]):
        check = _check(tf.logical_or(is_jpeg, is_png), "images[{}] is not " + accepted + " ({} bytes)", index, length)
    with tf.control_dependencies([check]):
        # The PNG branch reads the 8-byte signature and the IHDR after it.
        check = _check(tf.logical_or(tf.logical_not(is_png), length >= 24), "images[{}] is a truncated PNG", index)
    with tf.control_dependencies([check]):
        # Entropy-coded data stuffs every 0xFF with 0x00, so FF D9 is always a
        # marker: without one the file was cut short (decode_jpeg would only say
        # "Invalid JPEG data", without naming the image).
        check = _check(tf.logical_or(tf.logical_not(is_jpeg), _has_jpeg_end(encoded)),
                       "images[{}] is a truncated JPEG (no end-of-image marker)", index)
    with tf.control_dependencies([check]):
        return tf.identity(encoded)


def check_size(encoded: tf.Tensor, index: tf.Tensor, size: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """``encoded`` once the size its header gives (:func:`header_size`) fits every buffer the
    preprocessing will make of it, or an error naming the image and the limit. Nothing is
    decoded yet, so a decompression bomb, or a thin image that the resize would blow up,
    is refused before any pixel buffer exists."""
    height, width = size[0], size[1]
    limit = params["max_pixels"]
    check = _check(height * width <= limit, "images[{}] is {}x{} pixels, over the limit of " + f"{limit:,} pixels",
                   index, width, height)
    if params.get("resize_side") is not None:
        with tf.control_dependencies([check]):
            check = _check_resized_size(height, width, params["resize_side"], resize_budget(limit), index)
    elif params.get("crop") == "central":
        side = params["image_size"]
        with tf.control_dependencies([check]):
            check = _check(tf.minimum(height, width) >= side,
                           "images[{}] is {}x{} pixels, smaller than the " + f"{side}x{side} central crop",
                           index, width, height)
    with tf.control_dependencies([check]):
        return tf.identity(encoded)


def decode(encoded: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """Encoded bytes -> uint8 [height, width, 3]."""
    if params["decode"] == "image":
        image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        return image
    return tf.io.decode_jpeg(encoded, channels=3)


def decode_checked(encoded: tf.Tensor, index: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """One image -> uint8 [height, width, 3], through every check (a kernel's own error
    for corrupt data aside: :func:`standard` names the image for those)."""
    encoded = check_format(encoded, index, params)
    return decode(check_size(encoded, index, header_size(encoded, params), params), params)


def _zero_value(norm: dict[str, Any]) -> float | None:
    """The raw pixel value that normalizes to 0 in every channel, if there is one."""
    values = {mean * norm["divisor"] for mean in norm["mean"]}
    return values.pop() if len(values) == 1 else None


def _crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The centre, at most ``size`` x ``size``: ``tf.image.resize_with_crop_or_pad``'s crop."""
    shape = tf.shape(image)
    top, left = tf.maximum((shape[0] - size) // 2, 0), tf.maximum((shape[1] - size) // 2, 0)
    return image[top:top + size, left:left + size]


def _crop_or_pad(image: tf.Tensor, size: int, pad_value: float) -> tf.Tensor:
    """``tf.image.resize_with_crop_or_pad``'s centring, padding with ``pad_value`` instead of 0;
    cropped before the cast to float, so no float buffer is larger than the crop."""
    image = tf.cast(_crop(image, size), tf.float32)
    shape = tf.shape(image)
    top, left = (size - shape[0]) // 2, (size - shape[1]) // 2
    padded = tf.pad(image, [[top, size - shape[0] - top], [left, size - shape[1] - left], [0, 0]],
                    constant_values=pad_value)
    padded.set_shape([size, size, 3])
    return padded


def normalizes_batch(params: dict[str, Any]) -> bool:
    """Whether the batch is normalized once, after the images are stacked: where no
    image is padded (central crop), or padding with the raw value that normalizes
    to 0 equals the notebook's order (normalize, then pad with zeros). Otherwise
    each image is normalized before it is padded. The numbers are the same either
    way; one pass over the batch is cheaper than two small ones per image."""
    return params["crop"] in ("central", "fraction") or _zero_value(params["normalization"]) is not None


def standard_image_fn(params: dict[str, Any]) -> Callable[[tf.Tensor], tf.Tensor]:
    """The per-image function for one config: a checked image's uint8 [H, W, 3] pixels ->
    [size, size, 3] float32, normalized unless :func:`normalizes_batch` (then in raw pixel values)."""
    size = params["image_size"]
    resize_side = params["resize_side"]
    crop = params["crop"]
    norm = params["normalization"]
    zero = _zero_value(norm)

    def preprocess_image(image: tf.Tensor) -> tf.Tensor:
        if crop == "fraction":
            return _resize_square(_central_fraction(image, params["crop_fraction"]), size)
        if resize_side is not None:
            image = _aspect_preserving_resize(image, resize_side)
        if crop == "central":
            return tf.cast(_central_crop(image, size), tf.float32)
        if zero is not None:
            return _crop_or_pad(image, size, zero)
        # Per-channel means: normalize before padding, so padding is 0 in normalized
        # units (the notebook's order); cropping first changes no pixel but keeps the
        # float buffer at the crop's size, not the decoded image's.
        return tf.image.resize_with_crop_or_pad(_normalize(_crop(image, size), norm), size, size)

    return preprocess_image


# The per-image functions are graph code already (tf.cond, no Python branch on a tensor):
# map_fn and Dataset.map would otherwise run AutoGraph's source transformation over them
# and everything they call, about 0.9 s at each process's first export, to the same graph.
_as_written = tf.autograph.experimental.do_not_convert


def _map_naming_failures(fn: Callable[[tf.Tensor], tf.Tensor], encoded: tf.Tensor, spec: tf.TensorSpec,
                         failure: str) -> tf.Tensor:
    """``fn`` over each of [N] images, stacked; or, where a kernel fails on one, an error
    that names the first such image (``failure``: a template for its index).

    Data that the checks cannot vouch for (a corrupt Huffman table, bad scan data) fails
    inside libjpeg or libpng, whose message names no image. tf.data is the graph's one
    way to catch a kernel error: the images that fail drop out of the dataset, and the
    missing index is the one to name.
    """
    count = tf.size(encoded)
    indices = tf.range(count)
    # The one batch of what decoded; where nothing did (or the request was empty), no
    # batch comes out and the empty one after it is taken instead.
    nothing = tf.data.Dataset.from_tensors((tf.zeros([0, *spec.shape], spec.dtype), tf.zeros([0], tf.int32)))
    dataset = (tf.data.Dataset.from_tensor_slices((encoded, indices))
               .map(_as_written(lambda image, index: (fn(image), index)), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
               .ignore_errors()
               .batch(_INT32_MAX)
               .concatenate(nothing)
               .take(1))
    results, done = dataset.get_single_element()
    kept = tf.size(done)
    out_of_place = tf.boolean_mask(indices[:kept], tf.not_equal(done, indices[:kept]))
    first_missing = tf.reduce_min(tf.concat([out_of_place, [kept]], 0))
    with tf.control_dependencies([_check(tf.equal(kept, count), failure, first_missing)]):
        return tf.identity(results)


_INT32_MAX = 2**31 - 1


def _map_with_index(fn: Callable[..., tf.Tensor], images: tf.Tensor, *more: tf.Tensor) -> tf.Tensor:
    """``fn(image, index, *more)`` over each image: the checks, which read no pixel."""
    return tf.map_fn(_as_written(lambda item: fn(*item)), (images, tf.range(tf.size(images)), *more),
                     fn_output_signature=tf.TensorSpec([], tf.string))


@PREPROCESSORS.register("standard")
def standard(images: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """[N] encoded images (or uint8 [N, H, W, 3] pixels, for the image_tensor signature)
    -> [N, size, size, 3] float32, NHWC.

    Every failure names its image: the format checks, then the header's size (read in
    a dataset: libjpeg fails on a corrupt header), the size checks, then the decode and
    the rest of the pipeline (in a dataset: libjpeg fails on corrupt pixel data).
    """
    if images.dtype == tf.uint8:
        return _standard_pixels(images, params)
    size = params["image_size"]
    encoded = _map_with_index(lambda image, index: check_format(image, index, params), images)
    sizes = _map_naming_failures(lambda image: header_size(image, params), encoded, tf.TensorSpec([2], tf.int64),
                                 "images[{}] has a corrupt header: its size cannot be read")
    encoded = _map_with_index(lambda image, index, hw: check_size(image, index, hw, params), encoded, sizes)
    image_fn = standard_image_fn(params)
    batch = _map_naming_failures(lambda image: image_fn(decode(image, params)), encoded,
                                 tf.TensorSpec([size, size, 3], tf.float32),
                                 "images[{}] could not be decoded: corrupt image data after a valid header")
    return _finish(batch, params)


def _finish(batch: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    size = params["image_size"]
    batch = tf.reshape(batch, [-1, size, size, 3])
    return _normalize(batch, params["normalization"]) if normalizes_batch(params) else batch


def _standard_pixels(pixels: tf.Tensor, params: dict[str, Any]) -> tf.Tensor:
    """uint8 [N, H, W, 3] (the image_tensor signature) -> the same batch as the encoded
    images' path gives for the same pixels: its checks from the tensor's shape, no decode."""
    shape = tf.shape(pixels, out_type=tf.int64)
    encoded_like = tf.fill([shape[0]], "")  # check_size passes its first argument through
    checked = _map_with_index(lambda empty, index, hw: check_size(empty, index, hw, params), encoded_like,
                              tf.tile(shape[None, 1:3], [shape[0], 1]))
    with tf.control_dependencies([checked]):
        pixels = tf.identity(pixels)
    size = params["image_size"]
    batch = tf.map_fn(_as_written(standard_image_fn(params)), pixels,
                      fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
    return _finish(batch, params)
