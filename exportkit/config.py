"""The configuration schema: plain dataclasses, registered with Hydra's ConfigStore.

Hydra validates every composed config against these, so an unknown key or a bad
enum value fails at compose time with Hydra's own message naming the key, before
TensorFlow is imported. Checks that span two keys (``head.k`` against
``model.num_classes``) live in :func:`validate`, which also runs before TF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from .errors import ExportkitError

OFFICIAL_RESNET50_URL = (
    "http://download.tensorflow.org/models/official/resnet50_2017_11_30.tar.gz"
)


class ConfigError(ExportkitError):
    """A composed config whose values contradict each other."""


class DataFormat(Enum):
    """Layout of the network's activations.

    TensorFlow's names and the design's NCHW/NHWC both work; the aliases are the
    same members, so a config always resolves to one spelling.
    """

    auto = "auto"
    channels_first = "channels_first"
    channels_last = "channels_last"
    NCHW = "channels_first"
    NHWC = "channels_last"


class ServingDevice(Enum):
    cpu = "cpu"
    gpu = "gpu"


class ProbabilityMode(Enum):
    full = "full"  # softmax over every class, then the top k
    top_k = "top_k"  # the notebook's softmax over the k largest logits


class CropMode(Enum):
    central = "central"  # cut the centre; the image must be at least that large
    crop_or_pad = "crop_or_pad"  # centre crop, zero-pad where the image is smaller


class DecodeMode(Enum):
    jpeg = "jpeg"


@dataclass
class ModelConfig:
    name: str = MISSING  # the model plugin's registry key
    num_classes: int = 1001
    data_format: DataFormat = DataFormat.auto


@dataclass
class NormalizationConfig:
    """pixel = (value / divisor - mean) / std, per RGB channel."""

    divisor: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])


@dataclass
class PreprocessingConfig:
    name: str = MISSING  # the preset's name, recorded in the export's metadata
    pipeline: str = "standard"  # the preprocessing registry key
    decode: DecodeMode = DecodeMode.jpeg
    image_size: int = 224
    resize_side: Optional[int] = None  # shorter side after an aspect-preserving resize
    crop: CropMode = CropMode.crop_or_pad
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)


@dataclass
class HeadConfig:
    name: str = "top_k"  # the head registry key
    k: int = 5
    probabilities: ProbabilityMode = ProbabilityMode.full


@dataclass
class SignatureConfig:
    name: str = "predict_images"  # the export_outputs key the client calls


@dataclass
class ServingConfig:
    device: ServingDevice = ServingDevice.cpu


@dataclass
class CheckpointConfig:
    path: Optional[str] = None  # model_dir, checkpoint prefix or .tar.gz
    url: Optional[str] = OFFICIAL_RESNET50_URL  # fetched once when path is null
    cache_dir: str = "~/.cache/exportkit"


@dataclass
class ExportOptions:
    dir: str = "exports/${model.name}"
    verify: bool = True


@dataclass
class ExportConfig:
    model: ModelConfig = MISSING
    preprocessing: PreprocessingConfig = MISSING
    head: HeadConfig = field(default_factory=HeadConfig)
    signature: SignatureConfig = field(default_factory=SignatureConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    export: ExportOptions = field(default_factory=ExportOptions)


def register_configs() -> None:
    """Store the schemas under ``base_*`` names for the YAML files to extend."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=ExportConfig)
    cs.store(group="preprocessing", name="base_preprocessing", node=PreprocessingConfig)
    cs.store(group="head", name="base_head", node=HeadConfig)
    cs.store(group="signature", name="base_signature", node=SignatureConfig)


def register_model_schema(name: str, schema: type) -> None:
    """Called by a model plugin: its YAML file extends ``base_<name>``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name=f"base_{name}", node=schema)


def validate(cfg: DictConfig) -> None:
    """Checks across keys that a schema cannot express; raises ConfigError."""
    k, classes = cfg.head.k, cfg.model.num_classes
    if classes < 1:
        raise ConfigError(f"model.num_classes={classes} must be at least 1")
    if not 1 <= k <= classes:
        raise ConfigError(
            f"head.k={k} must be between 1 and model.num_classes={classes}"
        )
    pre = cfg.preprocessing
    if pre.image_size < 1:
        raise ConfigError(f"preprocessing.image_size={pre.image_size} must be positive")
    if pre.resize_side is not None and pre.resize_side < pre.image_size:
        raise ConfigError(
            f"preprocessing.resize_side={pre.resize_side} is smaller than "
            f"preprocessing.image_size={pre.image_size}, so the crop would not fit"
        )
    norm = pre.normalization
    for key in ("mean", "std"):
        if len(norm[key]) != 3:
            raise ConfigError(
                f"preprocessing.normalization.{key} needs 3 values (R, G, B), "
                f"got {len(norm[key])}"
            )
    if norm.divisor == 0 or any(s == 0 for s in norm.std):
        raise ConfigError("preprocessing.normalization: divisor and std must not be 0")


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python values: numeric enums (model.size) as
    their numbers, other enums as their names."""
    return _plain(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, Enum):
        return value.name
    return value


def resolve_data_format(data_format: str, device: str) -> tuple[str, str]:
    """The concrete layout and where it came from.

    ``auto`` follows the device the model will be served on, never the machine
    doing the export (a CUDA build exporting for a CPU server must not pick NCHW).
    """
    value = DataFormat[data_format].value
    if value != "auto":
        return value, "given"
    resolved = "channels_first" if device == "gpu" else "channels_last"
    return resolved, f"auto, from serving.device={device}"
