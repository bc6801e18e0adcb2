"""The TF-slim model zoo's networks (tensorflow/models research/slim), as one plugin.

    python run_export.py model=slim model.arch=resnet_v1_50 checkpoint.path=resnet_v1_50_2016_08_28.tar.gz

``model.arch`` takes slim's nets_factory names (see config.ARCHS and docs/slim.md). Each
family's module (resnet.py, vgg.py, mobilenet_v1.py, inception.py) has a ``NETS`` dict of
``fn(images, num_classes) -> logits``: a float32 NHWC batch in, [N, num_classes] out,
built for inference with slim's variable names, shapes and creation order, so the zoo's
checkpoints restore by name. Importing this package registers the schema
``model/base_slim``, the ``slim`` resolver the YAML files use to follow ``model.arch``
(preprocessing preset, input size, classes, labels), and the plugin. TensorFlow is
imported only when a graph is built.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from importlib import import_module
from typing import Any, Callable, Iterator

from omegaconf import OmegaConf

from exportkit.config import ConfigError, register_model_schema
from exportkit.plugin import ModelPlugin
from exportkit.registry import MODELS

from .config import ARCHS, LABELS, RESOLVER, SlimConfig, arch_default, validate

register_model_schema("slim", SlimConfig)
OmegaConf.register_new_resolver(RESOLVER, arch_default, replace=True)

_FAMILIES = ("resnet", "vgg", "mobilenet_v1", "inception")  # the modules with a NETS dict


def nets() -> dict[str, Callable[[Any, int], Any]]:
    """Every family's NETS, by arch name (imports TensorFlow)."""
    combined: dict[str, Callable[[Any, int], Any]] = {}
    for family in _FAMILIES:
        combined.update(import_module(f".{family}", __name__).NETS)
    return combined


def _build(images: Any, params: dict[str, Any]) -> Any:
    validate(params)
    if params["data_format"] != "channels_last":
        raise ConfigError(f"model.data_format resolved to {params['data_format']}, but slim's networks are NHWC "
                          "only; set model.data_format=channels_last")
    return nets()[params["arch"]](images, params["num_classes"])


def _build_cost(arch: str) -> int:
    """Roughly how long the graph takes to build: ResNets by depth, the rest alike."""
    return int(arch.rsplit("_", 1)[1]) // 50 if ARCHS[arch].family == "resnet" else 1


def _other_archs(params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The same arch with slim's other class count first (a 1000-class resnet_v2, say), then
    the same family's archs, most alike by name first (resnet_v1_101 -> resnet_v2_101), then
    the other families', cheapest to build first. Each has its zoo class count, unless
    model.num_classes was set (a fine-tuned checkpoint keeps it). A checkpoint that fits
    none costs a graph build of each (ResNet-200s take seconds)."""
    arch, classes = params["arch"], params["num_classes"]
    for other in LABELS:
        if other != classes:
            yield f"model.num_classes={other}", {**params, "num_classes": other, "labels": LABELS[other]}
    follows = classes == ARCHS[arch].num_classes
    family = ARCHS[arch].family

    def order(name: str) -> tuple[bool, float]:
        if ARCHS[name].family == family:
            return False, -SequenceMatcher(None, arch, name).ratio()
        return True, _build_cost(name)

    for name in sorted((name for name in ARCHS if name != arch), key=order):
        other = ARCHS[name].num_classes if follows else classes
        yield f"model.arch={name}", {**params, "arch": name, "num_classes": other, "labels": LABELS.get(other)}


MODELS.register(
    "slim",
    ModelPlugin(
        name="slim",
        build=_build,
        alternatives=_other_archs,
        validate=validate,
        test_overrides=("model.arch=mobilenet_v1_025", "preprocessing.image_size=128"),
        description="TF-slim model zoo: resnet_v1/v2 50-200, vgg_16/19, mobilenet_v1 (1.0-0.25), inception_v1-v3",
    ),
)
