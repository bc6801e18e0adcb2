"""The ResNet plugin creates exactly the variables the notebook's tf.layers code does."""

import pytest

from exportkit.config import ConfigError

from tests import notebook_reference


# Both building-block sizes and the smallest and largest bottleneck size in channels_last (101 and
# 152 differ from 50 and 200 only in how many blocks each layer repeats); channels_first (where only
# the batch norms' axis changes, not what they create) at one size per block kind.
@pytest.mark.parametrize("size, data_format", [(size, "channels_last") for size in (18, 34, 50, 200)]
                         + [(18, "channels_first"), (50, "channels_first")])
def test_variable_names_shapes_and_order_match_tf_layers(size, data_format):
    from exportkit.export import network_variable_shapes

    ours = network_variable_shapes(
        {"name": "resnet", "size": size, "num_classes": 1001, "data_format": data_format}, 224
    )
    theirs = notebook_reference.notebook_variable_shapes(resnet_size=size, data_format=data_format)
    assert list(ours.items()) == theirs


def test_other_image_sizes_are_refused_with_the_fix():
    from exportkit.export import network_variable_shapes

    with pytest.raises(ConfigError, match="needs 224x224 input .* got 256x256: set preprocessing.image_size=224"):
        network_variable_shapes({"name": "resnet", "size": 18, "num_classes": 1001, "data_format": "channels_last"}, 256)
