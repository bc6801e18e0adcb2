"""Shared fixtures: Estimator-layout checkpoints, written once per session.

Nothing here downloads anything: every checkpoint is written by the tests, in the
layout a TF 1.x Estimator leaves in its model_dir. The helpers the tests share
(composing, exporting, run_export.py runs, loading a version) are tests/helpers.py's.
"""

from __future__ import annotations

import os

# Before TensorFlow is imported anywhere: the notebook reference needs legacy
# Keras for tf.compat.v1.layers, and TF's C++ INFO lines are noise here.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

from exportkit.config import register_configs
from exportkit.plugin import load_plugins

load_plugins()  # as the app does at start-up: the built-in and installed plugins, then the schemas
register_configs()


@pytest.fixture(scope="session")
def resnet18_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialized ResNet-18 in an Estimator model_dir (global_step, Momentum slots)."""
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    model_dir = tmp_path_factory.mktemp("resnet18_model_dir")
    write_fresh_checkpoint(
        model_dir,
        model_params={"name": "resnet", "size": 18, "num_classes": 1001, "data_format": "channels_last"},
        global_step=1234,
    )
    return model_dir


@pytest.fixture(scope="session")
def cifar8_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialized CIFAR-10 ResNet-8, the smallest registered network (1 MB, not ResNet-18's 90):
    for what is not ResNet-specific. The same Estimator layout and global_step as resnet18_model_dir."""
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    model_dir = tmp_path_factory.mktemp("cifar8_model_dir")
    write_fresh_checkpoint(
        model_dir,
        model_params={"name": "cifar_resnet", "size": 8, "num_classes": 10, "data_format": "channels_last"},
        image_size=32, global_step=1234,
    )
    return model_dir


class _NotebookCheckpoints(dict):
    """size -> prefix of a checkpoint the notebook's own tf.layers code wrote, made on first use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, size: int) -> str:
        from tests import notebook_reference

        self[size] = notebook_reference.write_notebook_checkpoint(
            self.factory.mktemp(f"notebook_resnet{size}"), resnet_size=size, global_step=500 + size)
        return self[size]


@pytest.fixture(scope="session")
def notebook_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Checkpoints written by the notebook's own tf.layers code (sizes 18 and 50 are used), each made once."""
    return _NotebookCheckpoints(tmp_path_factory)
