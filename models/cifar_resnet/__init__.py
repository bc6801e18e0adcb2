"""CIFAR-10 ResNet v2 from tensorflow/models v1.4.0 (official/resnet), as a plugin.

Importing this package registers the config schema ``model/base_cifar_resnet``,
the preprocessing pipeline ``per_image_standardization`` (cifar10_main.py's eval
path) and the model plugin ``cifar_resnet``. Its config files are
conf/model/cifar_resnet.yaml and conf/preprocessing/cifar.yaml. TensorFlow is
imported only when a graph is built.
"""

from __future__ import annotations

from typing import Any, Iterator

from exportkit.config import register_model_schema
from exportkit.plugin import ModelPlugin
from exportkit.registry import MODELS

from . import preprocessing  # noqa: F401  (registers the pipeline)
from .config import KNOWN_SIZES, CifarResNetConfig, blocks_per_layer

register_model_schema("cifar_resnet", CifarResNetConfig)


def _build(images: Any, params: dict[str, Any]) -> Any:
    from .network import cifar10_resnet_v2

    network = cifar10_resnet_v2(
        params["size"], num_classes=params["num_classes"], data_format=params["data_format"]
    )
    return network(images)


def _other_sizes(params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for size in KNOWN_SIZES:
        if size != params["size"]:
            yield f"model.size={size}", {**params, "size": size}


def _validate(params: dict[str, Any]) -> None:
    blocks_per_layer(params["size"])


MODELS.register(
    "cifar_resnet",
    ModelPlugin(
        name="cifar_resnet",
        build=_build,
        alternatives=_other_sizes,
        validate=_validate,
        test_overrides=("model.size=8",),
        description="CIFAR-10 ResNet v2 (tensorflow/models v1.4.0), sizes 6n+2: 8, 14, 20, ..., 56, 110, ...",
    ),
)
