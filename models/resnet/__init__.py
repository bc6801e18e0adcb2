"""ImageNet ResNet v2 from tensorflow/models v1.4.0 (official/resnet), as a plugin.

Importing this package registers the config schema ``model/base_resnet`` and the
model plugin ``resnet``. TensorFlow is imported only when a graph is built.
"""

from __future__ import annotations

from typing import Any, Iterator

from exportkit.config import register_model_schema
from exportkit.registry import MODELS
from exportkit.plugin import ModelPlugin

from .config import BLOCK_LAYERS, ResNetConfig

register_model_schema("resnet", ResNetConfig)


def _build(images: Any, params: dict[str, Any]) -> Any:
    from .network import imagenet_resnet_v2

    network = imagenet_resnet_v2(
        params["size"],
        num_classes=params["num_classes"],
        data_format=params["data_format"],
    )
    return network(images)


def _other_sizes(params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for size in BLOCK_LAYERS:
        if size != params["size"]:
            yield f"model.size={size}", {**params, "size": size}


MODELS.register(
    "resnet",
    ModelPlugin(
        name="resnet",
        build=_build,
        alternatives=_other_sizes,
        test_overrides=("model.size=18",),
        description="ImageNet ResNet v2 (tensorflow/models v1.4.0), sizes "
        + ", ".join(map(str, BLOCK_LAYERS)),
    ),
)
