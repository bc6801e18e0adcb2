"""The fresh-checkpoint CLI writes what run_export.py model=<name> will build."""

import pytest
import tensorflow as tf

from exportkit.fresh_checkpoint import main


def test_the_model_config_supplies_classes_and_input_size(tmp_path, capsys):
    assert main([str(tmp_path), "--plugin", "models.cifar_resnet", "--model", "cifar_resnet",
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
    (["--model", "vit"], "no model plugin named 'vit'; registered: cifar_resnet, resnet"),
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
        assert main([str(tmp_path / name), "--plugin", "models.cifar_resnet", "--model", "cifar_resnet",
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
