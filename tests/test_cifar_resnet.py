"""The CIFAR-10 ResNet plugin against v1.4.0's own tf.layers code, and its preprocessing.

The reference generator below is v1.4.0 ``cifar10_resnet_v2_generator``
(official/resnet/resnet_model.py), verbatim but for ``tf.layers`` ->
``tf.compat.v1.layers``; its building blocks are the same file's, already in
tests/notebook_reference.py.
"""


import numpy as np
import pytest
import tensorflow as tf

from exportkit import runtime
from exportkit.config import ConfigError
from exportkit.registry import MODELS, PREPROCESSORS
from tests import notebook_reference as nb
from tests.helpers import REPO, compose_config

v1 = tf.compat.v1


def cifar10_resnet_v2_generator(resnet_size, num_classes, data_format=None):
  """v1.4.0, verbatim but for tf.layers -> tf.compat.v1.layers."""
  if resnet_size % 6 != 2:
    raise ValueError('resnet_size must be 6n + 2:', resnet_size)
  num_blocks = (resnet_size - 2) // 6

  def model(inputs, is_training):
    if data_format == 'channels_first':
      inputs = tf.transpose(inputs, [0, 3, 1, 2])
    inputs = nb.conv2d_fixed_padding(
        inputs=inputs, filters=16, kernel_size=3, strides=1, data_format=data_format)
    inputs = tf.identity(inputs, 'initial_conv')
    inputs = nb.block_layer(
        inputs=inputs, filters=16, block_fn=nb.building_block, blocks=num_blocks,
        strides=1, is_training=is_training, name='block_layer1', data_format=data_format)
    inputs = nb.block_layer(
        inputs=inputs, filters=32, block_fn=nb.building_block, blocks=num_blocks,
        strides=2, is_training=is_training, name='block_layer2', data_format=data_format)
    inputs = nb.block_layer(
        inputs=inputs, filters=64, block_fn=nb.building_block, blocks=num_blocks,
        strides=2, is_training=is_training, name='block_layer3', data_format=data_format)
    inputs = nb.batch_norm_relu(inputs, is_training, data_format)
    inputs = tf.compat.v1.layers.average_pooling2d(
        inputs=inputs, pool_size=8, strides=1, padding='VALID', data_format=data_format)
    inputs = tf.identity(inputs, 'final_avg_pool')
    inputs = tf.reshape(inputs, [-1, 64])
    inputs = tf.compat.v1.layers.dense(inputs=inputs, units=num_classes)
    inputs = tf.identity(inputs, 'final_dense')
    return inputs

  return model


def _params(size, data_format="channels_last"):
    return {"name": "cifar_resnet", "size": size, "num_classes": 10, "data_format": data_format}


def _reference_graph(size, data_format):
    graph = tf.Graph()
    with graph.as_default(), nb._quiet_legacy_warnings():
        inputs = v1.placeholder(tf.float32, [None, 32, 32, 3])
        logits = cifar10_resnet_v2_generator(size, 10, data_format)(inputs, is_training=False)
    return graph, inputs, logits


# One block a stage (n=1) and several (n=3): the generator repeats blocks the same way for any n.
@pytest.mark.parametrize("size", [8, 20])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_variable_names_shapes_and_order_match_tf_layers(size, data_format):
    from exportkit.export import network_variable_shapes

    ours = network_variable_shapes(_params(size, data_format), 32)
    graph, _, _ = _reference_graph(size, data_format)
    with graph.as_default():
        theirs = [(v.op.name, tuple(v.shape.as_list())) for v in v1.global_variables()]
    assert list(ours.items()) == theirs
    # 6n+2 weight layers (6n+1 convolutions and the dense layer), plus 3 projections.
    kernels = [name for name in ours if name.endswith("/kernel")]
    assert len(kernels) == size + 3 and kernels[-1] == "dense/kernel"


@pytest.mark.runtime
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_a_tf_layers_checkpoint_restores_by_name_and_answers_the_same(data_format, tmp_path):
    rng = np.random.RandomState(0)
    batch = rng.normal(size=[4, 32, 32, 3]).astype(np.float32)
    graph, inputs, logits = _reference_graph(20, data_format)
    with graph.as_default(), runtime.session(graph) as sess:
        sess.run(v1.global_variables_initializer())
        for var in v1.global_variables():  # batch-norm statistics that are not the identity
            if "batch_normalization" in var.op.name:
                sess.run(var.assign(rng.uniform(0.5, 1.5, var.shape.as_list()).astype(np.float32)))
        expected = sess.run(logits, {inputs: batch})
        prefix = v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))

    ours = tf.Graph()
    with ours.as_default(), runtime.session(ours) as sess:
        images = v1.placeholder(tf.float32, [None, 32, 32, 3])
        out = MODELS.get("cifar_resnet").build(images, _params(20, data_format))
        v1.train.Saver({v.op.name: v for v in v1.global_variables()}).restore(sess, prefix)
        got = sess.run(out, {images: batch})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.std(expected) > 0.1  # the comparison is not between two constants


@pytest.mark.parametrize("size", [33, 2, 0, 30])
def test_a_size_that_is_not_6n_plus_2_fails_before_tensorflow_naming_model_size(size):
    with pytest.raises(ConfigError, match=rf"model.size={size} is not a CIFAR-10 ResNet size: it must be 6n\+2"):
        MODELS.get("cifar_resnet").validate(_params(size))


def test_other_sizes_are_offered_for_the_misfit_hint():
    offered = [override for override, _ in MODELS.get("cifar_resnet").alternatives(_params(32))]
    assert "model.size=32" not in offered and {"model.size=20", "model.size=56", "model.size=110"} <= set(offered)
    for override, params in MODELS.get("cifar_resnet").alternatives(_params(32)):
        assert (params["size"] - 2) % 6 == 0 and override == f"model.size={params['size']}"


def test_other_input_sizes_are_refused_with_the_fix():
    from exportkit.export import network_variable_shapes

    with pytest.raises(ConfigError, match="needs 32x32 input .* got 224x224: set preprocessing.image_size=32"):
        network_variable_shapes(_params(8), 224)


def test_model_cifar_resnet_alone_selects_what_fits_it():
    from exportkit.config import to_plain

    plain = to_plain(compose_config("model=cifar_resnet"))
    assert plain["model"] == {"name": "cifar_resnet", "num_classes": 10, "data_format": "auto", "labels": None,
                              "size": 32}
    pre = plain["preprocessing"]
    assert (pre["name"], pre["pipeline"], pre["image_size"], pre["crop"]) == (
        "cifar", "per_image_standardization", 32, "crop_or_pad")
    assert pre["normalization"] == {"divisor": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3}


def _v140_eval(encoded, size=32):
    """cifar10_main.py's eval path on a decoded JPEG, crop-or-padded to 32 first."""
    image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    return tf.image.per_image_standardization(tf.image.resize_with_crop_or_pad(image, size, size))


def test_preprocessing_is_cifar10_mains_eval_path():
    from exportkit.config import to_plain
    from exportkit.verify import sample_jpegs

    params = to_plain(compose_config("model=cifar_resnet"))["preprocessing"]
    jpegs = sample_jpegs(32)  # 32x32, larger and smaller than 32
    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        images = v1.placeholder(tf.string, [None])
        ours = sess.run(PREPROCESSORS.get("per_image_standardization")(images, params), {images: jpegs})
        theirs = [sess.run(_v140_eval(tf.constant(jpeg))) for jpeg in jpegs]
    assert ours.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(ours, np.stack(theirs), atol=1e-5)
    np.testing.assert_allclose(ours.mean(axis=(1, 2, 3)), 0, atol=1e-4)  # standardized per image


def test_exportkit_knows_nothing_of_cifar():
    """The plugin is a folder plus config files: adding it needed no edit to exportkit/."""
    mentions = [p.name for p in (REPO / "exportkit").glob("*.py") if "cifar" in p.read_text().lower()]
    assert mentions == []
    assert (REPO / "conf/model/cifar_resnet.yaml").is_file() and (REPO / "conf/preprocessing/cifar.yaml").is_file()
