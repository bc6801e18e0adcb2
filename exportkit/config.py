"""The configuration schema: plain dataclasses, registered with Hydra's ConfigStore.

Hydra validates every composed config against these, so an unknown key or a bad
enum value fails at compose time with Hydra's own message naming the key, before
TensorFlow is imported. Checks that span two keys (``head.k`` against
``model.num_classes``) live in :func:`validate`, which also runs before TF.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from .errors import ConfigError
from .labels import load_labels

OFFICIAL_RESNET50_URL = (
    "http://download.tensorflow.org/models/official/resnet50_2017_11_30.tar.gz"
)


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
    fraction = "fraction"  # slim's inception eval: the central crop_fraction, resized to image_size square


class DecodeMode(Enum):
    jpeg = "jpeg"  # JPEG only, as the notebook's decode_jpeg
    image = "image"  # JPEG or PNG


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # the network in bfloat16: AVX512_BF16/AMX CPUs, recent GPUs


class VersionPolicy(Enum):
    latest = "latest"  # TF Serving's default: only the newest version is loaded
    all = "all"  # every version under the base path (e.g. a sweep's variants)
    specific = "specific"  # the versions in serving.specific_versions (pinned: a stable one and a canary)


@dataclass
class ModelConfig:
    name: str = MISSING  # the model plugin's registry key
    num_classes: int = 1001
    data_format: DataFormat = DataFormat.auto
    # Class names for the export's assets.extra/labels.txt and the client: a
    # built-in list (see exportkit/labels.py) or a text file, one name per line.
    labels: Optional[str] = None


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
    crop_fraction: float = 0.875  # crop=fraction: the share of each side kept (TF 1.x central_crop)
    # Larger images are rejected from their header, before any pixel buffer is
    # allocated (decompression bombs). 50 MP covers today's camera photos.
    max_pixels: int = 50_000_000
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)


@dataclass
class HeadConfig:
    name: str = "top_k"  # the head registry key
    k: int = 5
    probabilities: ProbabilityMode = ProbabilityMode.full
    class_names: bool = False  # also output the top k names (needs model.labels)


class SignatureKind(Enum):
    image_tensor = "image_tensor"  # uint8 [N, H, W, 3] pixels, the preprocessing without the decode
    tf_example = "tf_example"  # Predict over serialized tf.Example
    classify = "classify"  # the Classify API: tf.Example in, string classes and float scores out


@dataclass
class SignatureNames:
    image_tensor: str = "image_tensor"
    tf_example: str = "tf_example"
    classify: str = "classification"


@dataclass
class SignatureConfig:
    name: str = "predict_images"  # the export_outputs key the client calls
    input_key: str = "images"  # the encoded-image input of that signature and serving_default
    passthrough: list[str] = field(default_factory=list)  # string inputs echoed as outputs, one per image
    extra: list[SignatureKind] = field(default_factory=list)  # more signatures in the same version
    names: SignatureNames = field(default_factory=lambda: SignatureNames())  # their signature keys
    example_feature: str = "image/encoded"  # where tf_example and classify find the image bytes


@dataclass
class WarmupConfig:
    """assets.extra/tf_serving_warmup_requests, replayed by TF Serving at load."""

    enabled: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])


@dataclass
class BatchingConfig:
    """TF Serving's server-side batching (--enable_batching), written to
    ``<export.root>/batching_parameters.txt`` when enabled."""

    enabled: bool = False
    max_batch_size: int = 32
    batch_timeout_micros: int = 5000
    # null: left out of the files, so TF Serving takes the SERVER's core count (its
    # port::MaxParallelism(), what its batching guide recommends on CPU), not the export machine's.
    num_batch_threads: Optional[int] = None
    max_enqueued_batches: int = 100
    allowed_batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])


@dataclass
class MonitoringConfig:
    """``<export.root>/monitoring.config`` for TF Serving's --monitoring_config_file."""

    enabled: bool = False
    path: str = "/monitoring/prometheus/metrics"  # the Prometheus endpoint on the REST port


@dataclass
class ServingConfig:
    device: ServingDevice = ServingDevice.cpu
    # Where export.root is mounted for the server: models.config's base paths
    # start here (null: this machine's absolute paths).
    mount: Optional[str] = "/models"
    versions: VersionPolicy = VersionPolicy.latest
    specific_versions: list[int] = field(default_factory=list)  # versions=specific: the versions served
    # label -> version in this model's models.config entry (+serving.version_labels.stable=1).
    version_labels: dict[str, int] = field(default_factory=dict)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)


@dataclass
class CheckpointConfig:
    path: Optional[str] = None  # model_dir, checkpoint prefix, V1 single-file .ckpt or .tar.gz (zoo tarballs too)
    url: Optional[str] = OFFICIAL_RESNET50_URL  # fetched once when path is null
    cache_dir: str = "~/.cache/exportkit"


@dataclass
class ExportOptions:
    root: str = "exports"  # the serving root: one directory per model, and models.config
    model_name: str = "${model.name}"  # what TF Serving serves it as; versions go in root/model_name
    verify: bool = True
    precision: Precision = Precision.fp32
    freeze: bool = False  # weights in variables (rewrites still apply); true: constants, faster at batch 1, 2x memory
    fold_batch_norm: bool = True  # batch norms after convolutions become filter scale + bias
    fuse_residual_add: bool = True  # residual additions computed inside the convolution before them
    scale_shift_batch_norm: bool = True  # the other batch norms as a scale and shift oneDNN fuses with the ReLU
    min_top1_agreement: float = 0.99  # bf16 against fp32 on the verification images


@dataclass
class ExportConfig:
    model: ModelConfig = MISSING
    preprocessing: PreprocessingConfig = MISSING
    head: HeadConfig = field(default_factory=HeadConfig)
    signature: SignatureConfig = field(default_factory=SignatureConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    export: ExportOptions = field(default_factory=ExportOptions)


# The schemas sit in their groups as ``base_*`` options so that a group's YAML files
# (and plugins' files) extend them with a plain ``- base_<name>`` default. They are not
# options: --help leaves them out, and run_export.py refuses GROUP=base_* (a bare schema
# exports with no preprocessing preset and a name of ???).
SCHEMA_PREFIX = "base_"


def is_schema_option(option: str) -> bool:
    return option.startswith(SCHEMA_PREFIX)


# A resize makes float32 pixels (12 bytes each), a decode uint8 ones (3 bytes): a resize may
# make max_pixels / 4 pixels, so its buffer is never larger than the largest decode's.
RESIZE_BUDGET_DIVISOR = 4


def resize_budget(max_pixels: int) -> int:
    """The most pixels an aspect-preserving resize may produce (checked from the header).
    With 50 MP, a resize to a shorter side of 256 keeps aspect ratios up to 190:1; only
    thin attack images go past it."""
    return max_pixels // RESIZE_BUDGET_DIVISOR


def register_configs() -> None:
    """Store the schemas under ``base_*`` names for the YAML files to extend."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=ExportConfig)
    cs.store(group="preprocessing", name="base_preprocessing", node=PreprocessingConfig)
    cs.store(group="head", name="base_head", node=HeadConfig)
    cs.store(group="signature", name="base_signature", node=SignatureConfig)
    # conf/hydra/help/exportkit.yaml lists the groups through this, not $APP_CONFIG_GROUPS.
    OmegaConf.register_new_resolver("exportkit.config_groups", _config_groups_help, replace=True)


def register_model_schema(name: str, schema: type) -> None:
    """Called by a model plugin: its YAML file extends ``base_<name>``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name=f"base_{name}", node=schema)


_GROUPS_HELP: dict[tuple[str, ...], str] = {}


def _config_groups_help() -> str:
    """--help's "GROUP: OPTION, ..." lines, as Hydra's $APP_CONFIG_GROUPS writes them,
    without the base_* schemas. Where Hydra is not running, Hydra's own list.

    Every compose resolves it (it sits in hydra.help.template), and listing every group
    is three quarters of a compose's CPU, so it is made once per config search path.
    """
    try:
        from hydra.core.global_hydra import GlobalHydra

        if not GlobalHydra.instance().is_initialized():
            return "$APP_CONFIG_GROUPS"
        loader = GlobalHydra.instance().config_loader()
        key = tuple(map(str, loader.get_search_path().get_path()))
        if key not in _GROUPS_HELP:
            _GROUPS_HELP[key] = _list_config_groups(loader)
        return _GROUPS_HELP[key]
    except Exception:  # the help must show whatever happens here
        return "$APP_CONFIG_GROUPS"


def _list_config_groups(loader: Any) -> str:
    from hydra.core.object_type import ObjectType

    # The loader's repository of the search path's sources, asked directly: each of the
    # loader's own get_group_options calls builds a repository anew (0.02 s, 40 calls here).
    repository = loader.repository

    def groups(parent: str) -> list[str]:
        found = []
        for child in repository.get_group_options(parent, ObjectType.GROUP):
            group = f"{parent}/{child}" if parent else child
            if repository.get_group_options(group, ObjectType.CONFIG):
                found.append(group)
            if repository.get_group_options(group, ObjectType.GROUP):
                found += groups(group)
        return found

    lines = []
    for group in sorted(g for g in groups("") if g != "hydra" and not g.startswith("hydra/")):
        options = [o for o in sorted(repository.get_group_options(group, ObjectType.CONFIG)) if not is_schema_option(o)]
        lines.append(f"{group}: {', '.join(options)}\n")
    return "".join(lines)


CONFIG_PACKAGE = "exportkit.conf"


def config_dir() -> Path:
    """The shipped configuration: package data of ``exportkit.conf``, which is the
    repository's ``conf/`` (pyproject maps it; an editable install reads it in place)."""
    from importlib.resources import files

    return Path(str(files(CONFIG_PACKAGE)))


def group_choice_error(args: Sequence[str], config_dir: str) -> str | None:
    """The one-line error for a GROUP=OPTION on the command line that names no option
    (``model=resnt``: did you mean model=resnet?) or a base_* schema; None if all do.

    For run_export.py, before Hydra composes. Anything this check does not understand
    (other config dirs, a search path override, an argument Hydra will refuse itself)
    gives None, and Hydra has its say.
    """
    try:
        from hydra import initialize_config_dir
        from hydra._internal.utils import get_args_parser
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.object_type import ObjectType
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import ChoiceSweep

        parsed = get_args_parser().parse_args(list(args))
        if parsed.config_path or parsed.config_name or parsed.config_dir:
            return None
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
        if any(o.key_or_group.startswith("hydra.searchpath") for o in overrides):
            return None
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for override in overrides:
                if override.is_delete():
                    continue
                if override.is_sweep_override():
                    if not isinstance(override.value(), ChoiceSweep):
                        continue
                    chosen = list(override.sweep_string_iterator())
                elif isinstance(override.value(), (str, int)):
                    chosen = [override.get_value_element_as_str(override.value())]
                else:
                    continue
                group = override.key_or_group
                options = loader.get_group_options(group, ObjectType.CONFIG)
                if not options:  # a key, not a group
                    continue
                real = sorted(o for o in options if not is_schema_option(o))
                for value in chosen:
                    if value in real:
                        continue
                    listed = f"(options: {', '.join(real)})"
                    if value in options:
                        return f"{group}={value} is the schema the {group} options extend, not an option {listed}"
                    meant = difflib.get_close_matches(value, real, n=1)
                    hint = f"; did you mean {group}={meant[0]}?" if meant else ""
                    return f"{group}={value} is not a {group} option{hint} {listed}"
    except (Exception, SystemExit):
        return None
    return None


def _unknown_keys(node: DictConfig, path: str = "") -> list[tuple[str, list[str]]]:
    """Keys that no schema declares, with the keys that were meant, at any depth.

    Hydra refuses ``head.kk=3`` itself, but ``+head.kk=3`` (the form its own error
    message suggests) opens the struct flag and adds the key, which nothing reads.
    """
    schema = OmegaConf.get_type(node)
    found: list[tuple[str, list[str]]] = []
    declared = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        name = f"{path}{key}"
        if declared is not None and key not in declared:
            found.append((name, [f"{path}{k}" for k in difflib.get_close_matches(str(key), declared, n=1)]))
            continue
        if OmegaConf.is_missing(node, key):
            continue
        child = node[key]  # None for an empty optional node
        if isinstance(child, DictConfig):
            found += _unknown_keys(child, f"{name}.")
    return found


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Where an integer key goes, and so the largest value it may take: (bound, type, why).
# TF Serving's BatchingParameters are int64 protobuf fields, but it hands all but the
# timeout to C++ ints (bundle_factory_util.{h,cc}: max_size, allowed_batch_sizes; TF's
# SharedBatchScheduler options: num_batch_threads, max_enqueued_batches), where a
# larger value silently wraps.
_SCHEDULER_INT = (INT32_MAX, "int32", "TF Serving's batch scheduler holds it in a C++ int")
_INT_BOUNDS = {
    "preprocessing.max_pixels": (INT64_MAX, "int64", "the serving graph compares pixel counts as tf.int64"),
    "serving.batching.max_batch_size": _SCHEDULER_INT,
    "serving.batching.allowed_batch_sizes": _SCHEDULER_INT,
    "serving.batching.num_batch_threads": _SCHEDULER_INT,
    "serving.batching.max_enqueued_batches": _SCHEDULER_INT,
    "serving.batching.batch_timeout_micros": (INT64_MAX, "int64", "TF Serving reads it as an int64"),
}
_DEFAULT_INT_BOUND = (INT64_MAX, "int64", "TensorFlow takes no larger integer")


def _integer_out_of_range(node: DictConfig, path: str = "") -> str | None:
    """The error for the first integer, at any depth, that its consumer cannot hold."""
    for key in node.keys():
        name = f"{path}{key}"
        if OmegaConf.is_missing(node, key):
            continue
        child = node[key]
        if isinstance(child, DictConfig):
            found = _integer_out_of_range(child, f"{name}.")
            if found:
                return found
            continue
        values = list(child) if isinstance(child, ListConfig) else [child]
        bound, kind, why = _INT_BOUNDS.get(name, _DEFAULT_INT_BOUND)
        for value in values:
            if isinstance(value, bool) or isinstance(value, Enum) or not isinstance(value, int):
                continue
            if -bound - 1 <= value <= bound:
                continue
            shown = f"{name}={list(child)}: {value}" if isinstance(child, ListConfig) else f"{name}={value}"
            side = f"over {bound}, the largest" if value > bound else f"below {-bound - 1}, the smallest"
            return f"{shown} is {side} {kind}: {why}"
    return None


def _validate_choices(cfg: DictConfig) -> None:
    """A group left without an option, or a base_* schema chosen as one (the compose
    API and YAML defaults lists; run_export.py refuses GROUP=base_* on the command line)."""
    for group in ("model", "preprocessing", "head", "signature"):
        if OmegaConf.is_missing(cfg, group):
            raise ConfigError(f"{group} is not chosen (a base_* schema selected instead of an option?): "
                              f"choose {group}=<option>")
        if OmegaConf.is_missing(cfg[group], "name"):
            raise ConfigError(f"{group}.name is not set (a base_* schema selected instead of an option?): "
                              f"choose {group}=<option>, or set {group}.name")


def validate(cfg: DictConfig) -> None:
    """Checks across keys that a schema cannot express; raises ConfigError."""
    unknown = _unknown_keys(cfg)
    if unknown:
        name, meant = unknown[0]
        hint = f"; did you mean {meant[0]}?" if meant else ""
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown config key {name}{more}: nothing reads it{hint}")
    _validate_choices(cfg)
    out_of_range = _integer_out_of_range(cfg)
    if out_of_range:
        raise ConfigError(out_of_range)
    _validate_names(cfg)
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
    if pre.crop.name == "fraction":
        if pre.resize_side is not None:
            raise ConfigError("preprocessing.crop=fraction resizes the crop to image_size itself: "
                              "set preprocessing.resize_side=null")
        if not 0.5 < pre.crop_fraction <= 1:  # TF 1.x's integer offset needs (1 - f) / 2 < 1/2
            raise ConfigError(f"preprocessing.crop_fraction={pre.crop_fraction} must be in (0.5, 1]")
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
    if pre.max_pixels < pre.image_size**2:
        raise ConfigError(f"preprocessing.max_pixels={pre.max_pixels} is below one {pre.image_size}x{pre.image_size} image")
    if pre.resize_side is not None and resize_budget(pre.max_pixels) < pre.resize_side**2:
        raise ConfigError(
            f"preprocessing.max_pixels={pre.max_pixels} leaves a resize budget of {resize_budget(pre.max_pixels):,} "
            f"pixels (max_pixels / {RESIZE_BUDGET_DIVISOR}), below one {pre.resize_side}x{pre.resize_side} image "
            "(preprocessing.resize_side)"
        )
    _validate_labels(cfg)
    _validate_serving(cfg)
    _validate_signature(cfg)
    _validate_export(cfg)


# TF Serving reads at most this many warmup records (kMaxNumRecords in its
# saved_model_warmup_util.cc).
MAX_WARMUP_RECORDS = 1000
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _validate_labels(cfg: DictConfig) -> None:
    if cfg.model.labels is None:
        if cfg.head.class_names:
            raise ConfigError("head.class_names=true needs model.labels (a label list or file)")
        return
    count = len(load_labels(cfg.model.labels))
    if count != cfg.model.num_classes:
        raise ConfigError(
            f"model.labels={cfg.model.labels} has {count} names, model.num_classes={cfg.model.num_classes}"
        )


def main_warmup_sizes(warmup_sizes: Sequence[int], batching: Any) -> list[int]:
    """The batch sizes of the main signature's warmup records: with batching on, every
    allowed batch size (TF Serving pads each batch up to one of them, so these are the
    shapes the session runs), else serving.warmup.batch_sizes."""
    if batching["enabled"] and batching["allowed_batch_sizes"]:
        return list(batching["allowed_batch_sizes"])
    return list(warmup_sizes)


_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _validate_versions(cfg: DictConfig) -> None:
    """serving.versions, specific_versions and version_labels that TF Serving would refuse or
    that nothing reads. Whether the labelled versions exist is checked at export time."""
    serving = cfg.serving
    policy = serving.versions.name
    specific = list(serving.specific_versions)
    if policy == "specific":
        if not specific or min(specific) < 1 or len(set(specific)) != len(specific):
            raise ConfigError(f"serving.specific_versions={specific}: serving.versions=specific needs one or more "
                              "distinct version numbers, each at least 1")
    elif specific:
        raise ConfigError(f"serving.specific_versions={specific} is read only with serving.versions=specific "
                          f"(serving.versions={policy})")
    for label, version in serving.version_labels.items():
        if not _LABEL.fullmatch(str(label)):
            raise ConfigError(f"serving.version_labels: label {label!r}: use letters, digits, '_', '.' or '-', "
                              "starting with a letter (clients send it in REST paths)")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"serving.version_labels.{label}={version!r} must be a version number (at least 1)")
        if policy == "specific" and version not in specific:
            raise ConfigError(f"serving.version_labels.{label}={version}: version {version} is not in "
                              f"serving.specific_versions={specific}, and TF Serving only labels a version it loads")


def _validate_serving(cfg: DictConfig) -> None:
    mount = cfg.serving.mount
    if mount is not None and not mount.startswith("/"):
        raise ConfigError(f"serving.mount={mount} must be an absolute path (or null)")
    _validate_versions(cfg)
    monitoring = cfg.serving.monitoring
    if monitoring.enabled and not re.fullmatch(r"/[A-Za-z0-9_./-]*", monitoring.path):
        raise ConfigError(f"serving.monitoring.path={monitoring.path!r} must be a URL path starting with '/'")
    batching = cfg.serving.batching
    if batching.enabled:
        allowed = list(batching.allowed_batch_sizes)
        if allowed and (allowed != sorted(set(allowed)) or allowed[0] < 1 or allowed[-1] != batching.max_batch_size):
            raise ConfigError(
                f"serving.batching.allowed_batch_sizes={allowed} must increase and end with "
                f"serving.batching.max_batch_size={batching.max_batch_size}, as TF Serving requires"
            )
        for key in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if batching[key] is not None and batching[key] < 1:
                raise ConfigError(f"serving.batching.{key}={batching[key]} must be at least 1")
        if batching.batch_timeout_micros < 0:
            raise ConfigError(f"serving.batching.batch_timeout_micros={batching.batch_timeout_micros} is negative")
    warmup = cfg.serving.warmup
    if warmup.enabled:
        _validate_warmup(cfg)


def _validate_warmup(cfg: DictConfig) -> None:
    """Within TF Serving's 1000 records, and no record larger than one request may be."""
    sizes = list(cfg.serving.warmup.batch_sizes)
    batching = cfg.serving.batching
    others = len(cfg.signature.extra)  # a record per size for each other signature
    main = main_warmup_sizes(sizes, batching)
    from_batching = bool(batching.enabled and batching.allowed_batch_sizes)
    if from_batching and len(main) + (1 if others else 0) > MAX_WARMUP_RECORDS:
        raise ConfigError(f"serving.batching.allowed_batch_sizes: {len(main)} sizes, each a warmup record, over TF "
                          f"Serving's {MAX_WARMUP_RECORDS} (or serving.warmup.enabled=false)")
    if from_batching:  # the main signature takes one record per allowed batch size
        most = (MAX_WARMUP_RECORDS - len(main)) // others if others else MAX_WARMUP_RECORDS
    else:
        most = MAX_WARMUP_RECORDS // (1 + others)
    if not sizes or len(sizes) > most or min(sizes) < 1:
        per = f" ({1 + others} signatures with signature.extra)" if others else ""
        after = f", after the {len(main)} records for serving.batching.allowed_batch_sizes" if from_batching else ""
        raise ConfigError(
            f"serving.warmup.batch_sizes={sizes}: 1 to {most} positive sizes{per}{after} "
            "(or serving.warmup.enabled=false)"
        )
    # Each record is replayed at every load and verified by the export: a batch of
    # input-size images may hold no more pixels than one request image may.
    pre = cfg.preprocessing
    pixels = (max(1, pre.max_pixels // pre.image_size**2),
              f"preprocessing.max_pixels={pre.max_pixels:,} over {pre.image_size}x{pre.image_size} images")
    limits = [pixels]
    if batching.enabled:  # first, so it names the bound when the two agree
        limits.insert(0, (batching.max_batch_size, "serving.batching.max_batch_size"))
    largest, bound = min(limits, key=lambda limit: limit[0])
    if max(sizes) > largest:
        raise ConfigError(f"serving.warmup.batch_sizes={sizes}: at most {largest} image"
                          f"{'s' if largest > 1 else ''} a request ({bound})")
    if from_batching and max(main) > pixels[0]:
        raise ConfigError(
            f"serving.batching.allowed_batch_sizes={main}: with warmup on, each allowed size gets a record, which may "
            f"hold at most {pixels[0]} images ({pixels[1]}); lower them, or serving.warmup.enabled=false")


def _validate_names(cfg: DictConfig) -> None:
    """Names and paths that are empty or blank: Path('') is the current directory, and
    an empty signature name is what a client sends to mean serving_default."""
    for key, need in (
        ("export.root", "name the serving root directory (export.root=. for the current one)"),
        ("checkpoint.cache_dir", "name a directory (checkpoint.cache_dir=. for the current one)"),
        ("checkpoint.path", "pass a model_dir, checkpoint prefix or .tar.gz, or null to use checkpoint.url"),
        ("signature.name", "it is the signature name clients call (the default is predict_images)"),
        ("export.model_name", "it is the name TF Serving serves the model under, and its directory in export.root"),
    ):
        value = OmegaConf.select(cfg, key)
        if value is not None and not value.strip():
            raise ConfigError(f"{key}={value!r} is {'blank' if value else 'empty'}: {need}")
    name = cfg.signature.name
    if name != name.strip():
        raise ConfigError(f"signature.name={name!r} has spaces around it: clients would have to send them too")


_INPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_OUTPUT_NAMES = ("classes", "probabilities", "class_names")


def _validate_signature(cfg: DictConfig) -> None:
    """Keys a client sends and signature names must be distinct and plain (they name graph
    inputs, JSON keys of REST requests and outputs)."""
    sig = cfg.signature
    for key in [sig.input_key, *sig.passthrough]:
        if not _INPUT_NAME.fullmatch(key):
            raise ConfigError(f"signature input {key!r} (signature.input_key, signature.passthrough): use letters, "
                              "digits and '_', starting with a letter")
    taken = {sig.input_key: "signature.input_key", "inputs": "the extra signatures' input",
             **{name: "an output" for name in _OUTPUT_NAMES}}
    for key in sig.passthrough:
        if key in taken:
            raise ConfigError(f"signature.passthrough={list(sig.passthrough)}: {key!r} is already {taken[key]}")
        taken[key] = "signature.passthrough"
    extra = [kind.name for kind in sig.extra]
    if len(set(extra)) != len(extra):
        raise ConfigError(f"signature.extra={extra} names a kind twice")
    keys = {sig.name: "signature.name"}
    if sig.name != "serving_default":
        keys["serving_default"] = "serving_default"
    for kind in extra:
        key = sig.names[kind]
        if not key.strip():
            raise ConfigError(f"signature.names.{kind} is empty")
        if key in keys:
            raise ConfigError(f"signature.names.{kind}={key!r} is already the key of {keys[key]}")
        keys[key] = f"signature.names.{kind}"


def _validate_export(cfg: DictConfig) -> None:
    if not 0 <= cfg.export.min_top1_agreement <= 1:
        raise ConfigError(f"export.min_top1_agreement={cfg.export.min_top1_agreement} must be between 0 and 1")
    name = cfg.export.model_name
    if not _MODEL_NAME.fullmatch(name) or name.isdigit():
        raise ConfigError(
            f"export.model_name={name!r}: use letters, digits, '_', '.' or '-', starting with a letter or "
            "digit (it names a directory, and an all-digit name would look like a version)"
        )


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
