"""The ResNet plugin creates exactly the variables the notebook's tf.layers code does."""

import pytest

from exportkit.config import ConfigError

from tests import notebook_reference


# Both building-block sizes and the smallest bottleneck size, built, in channels_last; channels_first
# (where only the batch norms' axis changes, not what they create) at one size per block kind. The
# larger sizes differ from 50 only in how many blocks each layer repeats: the tables are compared below.
@pytest.mark.parametrize("size, data_format", [(size, "channels_last") for size in (18, 34, 50)]
                         + [(18, "channels_first"), (50, "channels_first")])
def test_variable_names_shapes_and_order_match_tf_layers(size, data_format):
    from exportkit.export import network_variable_shapes

    ours = network_variable_shapes(
        {"name": "resnet", "size": size, "num_classes": 1001, "data_format": data_format}, 224
    )
    theirs = notebook_reference.notebook_variable_shapes(resnet_size=size, data_format=data_format)
    assert list(ours.items()) == theirs


def test_every_size_has_the_notebooks_block_kind_and_repeats(monkeypatch):
    """The notebook's own size table (imagenet_resnet_v2's model_params), read by stopping short of
    building: each size's block function and blocks per layer are ours."""
    from exportkit.models.resnet.config import BLOCK_LAYERS, ResNetSize

    monkeypatch.setattr(notebook_reference, "imagenet_resnet_v2_generator",
                        lambda block_fn, layers, num_classes, data_format: (block_fn, layers))
    kinds = {notebook_reference.building_block: "building", notebook_reference.bottleneck_block: "bottleneck"}
    assert sorted(BLOCK_LAYERS) == sorted(size.value for size in ResNetSize) == [18, 34, 50, 101, 152, 200]
    for size, (kind, layers) in BLOCK_LAYERS.items():
        block_fn, theirs = notebook_reference.imagenet_resnet_v2(size, 1001)
        assert (kinds[block_fn], tuple(theirs)) == (kind, layers), size


def test_other_image_sizes_are_refused_with_the_fix():
    from exportkit.export import network_variable_shapes

    with pytest.raises(ConfigError, match="needs 224x224 input .* got 256x256: set preprocessing.image_size=224"):
        network_variable_shapes({"name": "resnet", "size": 18, "num_classes": 1001, "data_format": "channels_last"}, 256)
