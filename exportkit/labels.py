"""Class names: the label list an export carries in ``assets.extra/labels.txt``.

``model.labels`` names a built-in list or a text file with one name per line,
index 0 first. No TensorFlow here: the list is checked at compose time against
``model.num_classes``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError

LABELS_FILE = "labels.txt"


def _imagenet_with_background() -> list[str]:
    """The 1001 classes of the v1.4.0 ImageNet checkpoints: background, then the
    1000 synsets in sorted-id order (see exportkit/data/README.md)."""
    text = resources.files(__package__).joinpath("data/imagenet_synsets.tsv").read_text(encoding="utf-8")
    return ["background"] + [line.split("\t", 1)[1] for line in text.splitlines()]


def _imagenet_without_background() -> list[str]:
    """The 1000 classes of checkpoints converted from Caffe (TF-slim's resnet_v1 and vgg):
    the same synsets in the same order, without background (slim's labels_offset=1)."""
    return _imagenet_with_background()[1:]


BUILTIN = {"imagenet": _imagenet_with_background, "imagenet_1000": _imagenet_without_background}


def load_labels(option: str) -> list[str]:
    """The names for ``model.labels``: a built-in list's name or a file path."""
    if option in BUILTIN:
        return BUILTIN[option]()
    path = Path(option).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.labels={option}: no such file, and not a built-in list ({', '.join(BUILTIN)})"
        )
    names = path.read_text(encoding="utf-8").splitlines()
    while names and not names[-1].strip():
        names.pop()
    return names


def write_labels(names: list[str], directory: Path) -> Path:
    path = directory / LABELS_FILE
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path
