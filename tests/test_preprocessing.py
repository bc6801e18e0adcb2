"""The preprocessing presets do what their v1.4.0 / notebook originals do."""

import numpy as np
import pytest
import tensorflow as tf

from exportkit.config import to_plain
from exportkit.preprocessing import standard
from tests.helpers import compose_config, noise_jpegs

MEANS = np.array([123.68, 116.78, 103.94], np.float32)


def _jpeg(height, width, seed=0):
    return noise_jpegs([(height, width)], seed=seed)[0]


def _decoded(jpeg):
    return tf.io.decode_jpeg(jpeg, channels=3).numpy().astype(np.float32)


def _run(params, jpegs):
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        images = tf.compat.v1.placeholder(tf.string, [None])
        out = standard(images, params)
        assert out.shape.as_list() == [None, params["image_size"], params["image_size"], 3]
        return sess.run(out, {images: np.array(jpegs, dtype=object)})


def _preset(name, *overrides):
    return to_plain(compose_config(f"preprocessing={name}", *overrides))["preprocessing"]


def test_vgg_crops_the_centre_and_subtracts_the_rgb_means():
    jpeg = _jpeg(256, 512)  # shorter side already 256: the resize keeps the pixels
    got = _run(_preset("vgg"), [jpeg])[0]
    want = _decoded(jpeg)[16:240, 144:368] - MEANS
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_vgg_resizes_the_shorter_side_to_256_keeping_the_aspect():
    jpeg = _jpeg(300, 200)  # -> 384 x 256, then the central 224 x 224
    got = _run(_preset("vgg"), [jpeg])[0]
    resized = tf.compat.v1.image.resize_bilinear(_decoded(jpeg)[None], [384, 256], align_corners=False)[0].numpy()
    np.testing.assert_allclose(got, resized[80:304, 16:240] - MEANS, atol=1e-3)


def test_notebook_scales_to_plus_minus_half_and_zero_pads_small_images():
    jpeg = _jpeg(100, 150)
    got = _run(_preset("notebook"), [jpeg])[0]
    top, left = (224 - 100) // 2, (224 - 150) // 2
    np.testing.assert_allclose(got[top:top + 100, left:left + 150], _decoded(jpeg) / 255.0 - 0.5, atol=1e-6)
    assert np.all(got[:top] == 0) and np.all(got[:, :left] == 0)


def test_notebook_crops_large_images_without_resizing():
    jpeg = _jpeg(400, 300)
    got = _run(_preset("notebook"), [jpeg])[0]
    np.testing.assert_allclose(got, _decoded(jpeg)[88:312, 38:262] / 255.0 - 0.5, atol=1e-6)


@pytest.mark.parametrize("mean", [[0.5, 0.5, 0.5], [0.485, 0.456, 0.406]])
@pytest.mark.parametrize("height, width", [(101, 150), (301, 226), (224, 224)])
def test_crop_or_pad_normalizes_then_pads_with_zeros_whichever_path(mean, height, width):
    """One channel-wide mean: the batch is normalized once after padding with the value
    that normalizes to 0; per-channel means: each image is normalized, then padded.
    Both give what normalizing, then tf.image.resize_with_crop_or_pad, gives."""
    from exportkit.preprocessing import normalizes_batch

    params = _preset("notebook", f"preprocessing.normalization.mean=[{','.join(map(str, mean))}]")
    assert normalizes_batch(params) == (len(set(mean)) == 1)
    jpeg = _jpeg(height, width, seed=height)
    normalized = _decoded(jpeg) / 255.0 - np.array(mean, np.float32)
    want = tf.image.resize_with_crop_or_pad(normalized, 224, 224).numpy()
    np.testing.assert_allclose(_run(params, [jpeg])[0], want, atol=1e-6)


def test_a_new_preset_is_config_only():
    params = _preset("vgg", "preprocessing.image_size=160", "preprocessing.resize_side=180",
                     "preprocessing.normalization.divisor=255.0",
                     "preprocessing.normalization.mean=[0.485,0.456,0.406]",
                     "preprocessing.normalization.std=[0.229,0.224,0.225]")
    jpeg = _jpeg(180, 240)
    got = _run(params, [jpeg, jpeg])
    assert got.shape == (2, 160, 160, 3)
    crop = _decoded(jpeg)[10:170, 40:200] / 255.0
    want = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got[1], want, atol=1e-4)


def test_central_crop_of_a_too_small_image_is_an_error_not_garbage():
    params = _preset("vgg", "preprocessing.resize_side=null")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images\[0\] is 300x100 pixels, smaller than the 224x224 central crop"):
        _run(params, [_jpeg(100, 300)])  # refused from the header, before decoding


def _slim_inception_eval(jpeg, height, width, central_fraction=0.875):
    """TF-slim's inception_preprocessing.preprocess_for_eval on TF 1.x, op for op: convert to
    float in [0, 1], TF 1.x central_crop (integer offsets), resize_bilinear, scale to [-1, 1]."""
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(jpeg, channels=3), dtype=tf.float32)
    shape = tf.shape(image)
    fraction_offset = int(1 / ((1 - central_fraction) / 2.0))
    bbox_h_start, bbox_w_start = shape[0] // fraction_offset, shape[1] // fraction_offset
    image = tf.slice(image, [bbox_h_start, bbox_w_start, 0],
                     [shape[0] - bbox_h_start * 2, shape[1] - bbox_w_start * 2, -1])
    image = tf.raw_ops.ResizeBilinear(images=tf.expand_dims(image, 0), size=[height, width], align_corners=False,
                                      half_pixel_centers=False)[0]
    return ((image - 0.5) * 2.0).numpy()


@pytest.mark.parametrize("height, width", [(299, 299), (375, 500), (200, 120), (1000, 37)])
def test_inception_is_slims_eval_preprocessing(height, width):
    params = _preset("inception")
    assert (params["image_size"], params["crop"], params["crop_fraction"]) == (299, "fraction", 0.875)
    jpeg = _jpeg(height, width, seed=height)
    got = _run(params, [jpeg])[0]
    want = _slim_inception_eval(jpeg, 299, 299)
    assert -1 <= got.min() and got.max() <= 1
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_crop_fraction_refuses_what_it_cannot_do():
    from exportkit.config import ConfigError, validate

    with pytest.raises(ConfigError, match="preprocessing.crop=fraction resizes the crop to image_size itself"):
        validate(compose_config("preprocessing=inception", "preprocessing.resize_side=320"))
    with pytest.raises(ConfigError, match=r"preprocessing.crop_fraction=0.3 must be in \(0.5, 1\]"):
        validate(compose_config("preprocessing=inception", "preprocessing.crop_fraction=0.3"))


@pytest.mark.parametrize("model", ["resnet", "cifar_resnet", "slim"])
def test_the_pipelines_are_built_as_written_without_autograph(model, monkeypatch):
    """map_fn and Dataset.map would run AutoGraph's conversion over the per-image functions
    (about a second at each process's first export); they are graph code already."""
    from tensorflow.python.autograph.impl import api

    from exportkit.registry import PREPROCESSORS

    def converted_call(f, *args, **kwargs):
        raise AssertionError(f"AutoGraph converts {getattr(f, '__qualname__', f)}")

    monkeypatch.setattr(api, "converted_call", converted_call)
    params = to_plain(compose_config(f"model={model}"))["preprocessing"]
    for dtype, shape in ((tf.string, [None]), (tf.uint8, [None, None, None, 3])):
        with tf.Graph().as_default():
            PREPROCESSORS.get(params["pipeline"])(tf.compat.v1.placeholder(dtype, shape), params)
