"""The CIFAR-10 ResNet plugin's config schema and size rule (no TensorFlow here).

v1.4.0's ``cifar10_resnet_v2_generator`` takes any size of the form 6n+2:
three block layers of n building blocks (two 3x3 convolutions each), plus the
first convolution and the final dense layer. An enum cannot list infinitely
many sizes, so the schema takes an int and :func:`blocks_per_layer` checks it
before TensorFlow loads (the plugin's ``validate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from exportkit.config import ConfigError, ModelConfig

# Sizes tried when a checkpoint does not fit the chosen one: n = 1..9, and the
# ResNet-110 of the ResNet papers.
KNOWN_SIZES = (8, 14, 20, 26, 32, 38, 44, 50, 56, 110)
IMAGE_SIZE = 32  # CIFAR-10 images are 32x32x3; the final pool is 8x8


@dataclass
class CifarResNetConfig(ModelConfig):
    name: str = "cifar_resnet"
    num_classes: int = 10
    size: int = 32  # 6n+2: 8, 14, 20, 26, 32, ..., 110, ...


def blocks_per_layer(size: int) -> int:
    """n of a 6n+2 size; a ConfigError naming model.size for any other."""
    if size < 8 or (size - 2) % 6:
        raise ConfigError(
            f"model.size={size} is not a CIFAR-10 ResNet size: it must be 6n+2 with n >= 1 "
            f"({', '.join(map(str, KNOWN_SIZES[:5]))}, ..., 110, ...)"
        )
    return (size - 2) // 6
