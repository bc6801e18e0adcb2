"""The slim plugin's config: which TF-slim network ``model.arch`` names, and what slim
evaluated each with (no TensorFlow here).

Hydra cannot choose a config group option from a key's value, so ``model.arch``
reaches the rest of the config through the ``slim`` resolver:
conf/model/slim.yaml and conf/preprocessing/slim.yaml write the arch-dependent
fields as ``${slim:FIELD,${model.arch}}``, and :func:`arch_default` answers from
:data:`ARCHS` and :data:`PRESETS`. A key set on the command line
(``preprocessing.image_size=160``, ``model.num_classes=1001``) replaces the
interpolation, so it wins over the arch's default as any override does.

The table follows TF-slim's nets_factory names and its model zoo
(research/slim/README.md): resnet_v1 and vgg were converted from Caffe with 1000
classes and evaluate with vgg_preprocessing at 224; resnet_v2 (at 299), the
inceptions and mobilenet_v1 were trained in TF with 1001 classes (0 is
background) and evaluate with inception_preprocessing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from exportkit.config import ConfigError, ModelConfig

RESOLVER = "slim"


@dataclass(frozen=True)
class Arch:
    family: str  # its module in models/slim (misfit hints try the same family first)
    preset: str  # a key of PRESETS: the eval preprocessing slim used
    image_size: int  # slim's eval image size for the zoo checkpoint
    num_classes: int  # 1000 (Caffe conversions) or 1001 (background at 0)


_VGG = ("vgg", 224, 1000)

ARCHS: dict[str, Arch] = {
    **{f"resnet_v1_{depth}": Arch("resnet", *_VGG) for depth in (50, 101, 152, 200)},
    # The zoo's resnet_v2 checkpoints were trained with inception preprocessing at 299
    # (slim README: "use --preprocessing_name inception --eval_image_size 299").
    **{f"resnet_v2_{depth}": Arch("resnet", "inception", 299, 1001) for depth in (50, 101, 152, 200)},
    "vgg_16": Arch("vgg", *_VGG),
    "vgg_19": Arch("vgg", *_VGG),
    # nets_factory's depth multipliers 1.0, 0.75, 0.5, 0.25; the zoo's 192/160/128 inputs
    # are preprocessing.image_size (slim's --eval_image_size).
    **{name: Arch("mobilenet_v1", "inception", 224, 1001)
       for name in ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")},
    "inception_v1": Arch("inception", "inception", 224, 1001),
    "inception_v2": Arch("inception", "inception", 224, 1001),
    "inception_v3": Arch("inception", "inception", 299, 1001),
}

# The two eval preprocessings of slim's preprocessing_factory, as exportkit's presets
# conf/preprocessing/{vgg,inception}.yaml spell them (tests/test_slim.py checks that
# they stay equal). image_size comes from the arch.
PRESETS: dict[str, dict[str, Any]] = {
    "vgg": {  # vgg_preprocessing.preprocess_for_eval
        "resize_side": 256,
        "crop": "central",
        "divisor": 1.0,
        "mean": [123.68, 116.78, 103.94],
        "std": [1.0, 1.0, 1.0],
    },
    "inception": {  # inception_preprocessing.preprocess_for_eval: central 87.5%, resize, [-1, 1]
        "resize_side": None,
        "crop": "fraction",
        "divisor": 255.0,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    },
}

# model.labels for each class count: background + the 1000 ILSVRC-2012 names, or the 1000 alone.
LABELS = {1001: "imagenet", 1000: "imagenet_1000"}


@dataclass
class SlimConfig(ModelConfig):
    name: str = "slim"
    # A TF-slim nets_factory name; checked by the plugin (with a did-you-mean), since the
    # preprocessing and class count follow it.
    arch: str = "resnet_v1_50"


def unknown_arch(arch: str) -> str | None:
    """The one-line error for a name that is not one of ARCHS, or None."""
    if arch in ARCHS:
        return None
    meant = difflib.get_close_matches(arch, list(ARCHS), n=1, cutoff=0.5)
    hint = f"; did you mean model.arch={meant[0]}?" if meant else ""
    return f"model.arch={arch} is not a slim network{hint} (archs: {', '.join(ARCHS)})"


def arch_default(field: str, arch: Any) -> Any:
    """``${slim:FIELD,ARCH}``: what slim used for ``arch``; ``${slim:labels,NUM_CLASSES}``: the
    built-in label list of that many classes (none for a fine-tuned count). An unknown arch
    answers with the first arch's value, so the config still resolves and the plugin's
    validate names the typo with a did-you-mean (a resolver's own error is a traceback)."""
    if field == "labels":
        return LABELS.get(arch)
    spec = ARCHS.get(arch, next(iter(ARCHS.values())))
    if field == "num_classes":
        return spec.num_classes
    if field == "image_size":
        return spec.image_size
    if field == "preset":
        return spec.preset
    if field in PRESETS[spec.preset]:
        return PRESETS[spec.preset][field]
    raise ConfigError(f"${{{RESOLVER}:{field},...}}: no such field (known: num_classes, labels, image_size, "
                      f"preset, {', '.join(PRESETS['vgg'])})")


def depth_multiplier(arch: str) -> float:
    """mobilenet_v1_075 -> 0.75 (nets_factory's names)."""
    digits = arch.removeprefix("mobilenet_v1").lstrip("_")
    return float(f"{digits[0]}.{digits[1:]}") if digits else 1.0


def validate(params: dict[str, Any]) -> None:
    error = unknown_arch(params["arch"])
    if error:
        raise ConfigError(error)
    if params["data_format"] in ("channels_first", "NCHW"):
        raise ConfigError(f"model.data_format={params['data_format']}: slim's networks are NHWC only "
                          "(their checkpoints and ops are channels_last); set model.data_format=channels_last")
