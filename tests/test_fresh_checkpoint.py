"""The fresh-checkpoint CLI writes what run_export.py model=<name> will build."""

from importlib.metadata import entry_points

import pytest
import tensorflow as tf

from exportkit.fresh_checkpoint import main
from exportkit.plugin import ENTRY_POINT_GROUP

# The built-ins and any plugin installed through the entry point (named as its model).
_MODELS = sorted({"cifar_resnet", "resnet"} | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def test_the_model_config_supplies_classes_and_input_size(tmp_path, capsys):
    assert main([str(tmp_path), "--plugin", "exportkit.models.cifar_resnet", "--model", "cifar_resnet",
                 "--set", "size=8", "--global-step", "77"]) == 0
    shapes = dict(tf.train.list_variables(str(tmp_path)))
    assert shapes["dense/kernel"] == [64, 10]  # num_classes from conf/model/cifar_resnet.yaml
    assert shapes["global_step"] == [] and "dense/kernel/Momentum" in shapes
    assert len([name for name in shapes if name.endswith("/kernel")]) == 8 + 3  # size 8: 6n+1 convolutions, dense, 3 projections
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-77")
    assert "'size': 8" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--model", "cifar_resnet", "--set", "size=33"], "model.size=33 is not a CIFAR-10 ResNet size"),
    (["--model", "resnet", "--set", "sise=18"], "Could not override 'model.sise'"),
    (["--model", "vit"], f"no model plugin named 'vit'; registered: {', '.join(_MODELS)}"),
    (["--model", "cifar_resnet", "--image-size", "224"], "needs 32x32 input (its final pool is 8x8); got 224x224"),
])
def test_bad_input_is_one_clear_error(args, message, tmp_path, capsys):
    assert main([str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Config search path" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_batch_norms_look_trained_and_follow_the_seed(tmp_path):
    """Initial batch norms (mean 0, variance 1, gamma 1, beta 0) would fold into zero
    biases, which grappler drops at load: the served graph would not be a trained one's."""
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main([str(tmp_path / name), "--plugin", "exportkit.models.cifar_resnet", "--model", "cifar_resnet",
                     "--set", "size=8", "--seed", seed]) == 0
    a, b, c = (tf.train.load_checkpoint(str(tmp_path / name)) for name in "abc")
    leaves = {"gamma": (0.5, 1.5), "beta": (-1.0, 1.0), "moving_mean": (-1.0, 1.0), "moving_variance": (0.5, 1.5)}
    names = [name for name, _ in tf.train.list_variables(str(tmp_path / "a"))
             if name.rsplit("/", 1)[-1] in leaves and "batch_normalization" in name]
    assert len(names) == 4 * 7  # size 8: 7 batch norms
    for name in names:
        value = a.get_tensor(name)
        low, high = leaves[name.rsplit("/", 1)[-1]]
        assert value.std() > 0.01 and low <= value.min() and value.max() <= high, name
        assert (value == b.get_tensor(name)).all() and not (value == c.get_tensor(name)).all(), name


def test_the_last_layer_is_found_from_the_graph_not_by_name():
    """A plugin need not name its variables ``*/kernel``: the weights of the last MatMul or
    convolution before the logits are the last layer, through reads, casts and pooling."""
    from exportkit.fresh_checkpoint import last_layer_variables

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 8, 8, 3])
        first = v1.get_variable("stem/weights", [3, 3, 3, 4])
        features = tf.nn.relu(tf.nn.conv2d(images, first, 1, "SAME"))
        dense = v1.get_variable("classifier/w", [4, 5])
        logits = tf.matmul(tf.reduce_mean(features, [1, 2]), tf.cast(dense, tf.float32)) + v1.get_variable("b", [5])
        assert last_layer_variables(logits) == [dense]
        # a 1x1 convolution as the classifier (mobilenet's Conv2d_1c_1x1), then pooled and squeezed
        head = v1.get_variable("Logits/Conv2d_1c_1x1/weights", [1, 1, 4, 5])
        conv_logits = tf.squeeze(tf.reduce_mean(tf.nn.conv2d(features, head, 1, "SAME"), [1, 2], keepdims=True), [1, 2])
        assert last_layer_variables(conv_logits) == [head]


@pytest.mark.parametrize("plugin, model, settings", [
    ("exportkit.models.cifar_resnet", "cifar_resnet", ["size=8"]),
    ("exportkit.models.resnet", "resnet", ["size=18"]),
])
def test_logits_are_calibrated_through_the_models_preprocessing(plugin, model, settings, tmp_path):
    """Smooth JPEGs through the preset the model picks: logits spread about 3, and the
    answers differ from image to image (verification fails a network that ignores its input)."""
    import numpy as np

    from exportkit.estimator import network
    from exportkit.fresh_checkpoint import DEFAULT_CONFIG_DIR, composed_config, composed_model
    from exportkit.registry import PREPROCESSORS
    from exportkit.verify import check_answers_depend_on_input, sample_jpegs

    assert main([str(tmp_path), "--plugin", plugin, "--model", model, *(f"--set={s}" for s in settings)]) == 0
    config = composed_config(model, settings, config_dir=DEFAULT_CONFIG_DIR)
    params, size = composed_model(model, settings, config_dir=DEFAULT_CONFIG_DIR, config=config)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        jpegs = tf.constant(sample_jpegs(size))
        pipeline = PREPROCESSORS.get(config["preprocessing"]["pipeline"])
        logits = network(pipeline(jpegs, config["preprocessing"]), model=model, params=params, empty_batches=False)
        tf.compat.v1.train.Saver().restore(sess, tf.train.latest_checkpoint(str(tmp_path)))
        values = sess.run(logits)
    spread = float(np.std(values, axis=1).mean())
    assert 1.0 < spread < 9.0, spread
    probabilities = np.exp(values - values.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    check_answers_depend_on_input({"classes": np.argsort(-values, 1)[:, :5], "probabilities": np.sort(probabilities, 1)[:, ::-1][:, :5]})
