"""The ResNet plugin's config schema (no TensorFlow here: it is read at compose time)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from exportkit.config import ModelConfig

# The block layout of each size, as in tensorflow/models v1.4.0 resnet_model.py.
BLOCK_LAYERS = {
    18: ("building", (2, 2, 2, 2)),
    34: ("building", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}

# Named by their values so Hydra's error lists "18, 34, 50, ..." and
# "${model.size}" interpolates as the plain number.
ResNetSize = IntEnum("ResNetSize", [(str(size), size) for size in BLOCK_LAYERS])


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    size: ResNetSize = ResNetSize(50)
