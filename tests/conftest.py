"""Shared fixtures: composed configs, Estimator-layout checkpoints, run_export.py runs.

Nothing here downloads anything: every checkpoint is written by the tests,
in the layout a TF 1.x Estimator leaves in its model_dir.
"""

from __future__ import annotations

import io
import json
import os

# Before TensorFlow is imported anywhere: the notebook reference needs legacy
# Keras for tf.compat.v1.layers, and TF's C++ INFO lines are noise here.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from rich.console import Console

from exportkit.config import register_configs, to_plain, validate
from exportkit.plugin import load_plugins

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
load_plugins()  # as the app does at start-up: the built-in and installed plugins, then the schemas
register_configs()
# The graph saved as built, weights in variables, no rewrite: the notebook's export.
AS_BUILT = ("export.freeze=false", "export.fold_batch_norm=false", "export.fuse_residual_add=false",
            "export.scale_shift_batch_norm=false")


def compose_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def export_in_process(*overrides: str) -> tuple[dict[str, Any], str]:
    """Compose like run_export.py and export; returns (summary, terminal output)."""
    from exportkit.console import Reporter
    from exportkit.export import export_model

    cfg = compose_config(*overrides)
    validate(cfg)
    out = io.StringIO()
    result = export_model(to_plain(cfg), reporter=Reporter(Console(file=out, width=200)))
    return result, out.getvalue()


def export_with_onednn(*overrides: str, run_dir: Path) -> dict[str, Any]:
    """An export that needs TF's oneDNN kernels (bf16): in this process where oneDNN is on,
    else in a child with TF_ENABLE_ONEDNN_OPTS=1, as the bf16 refusal tells a user to do."""
    from exportkit import runtime

    if runtime.current().onednn:
        return export_in_process(*overrides)[0]
    run = run_cli(*overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, env={runtime.ONEDNN_VAR: "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((run_dir / "exportkit_result.json").read_text())


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """run_export.py in a subprocess, as a user runs it; ``env`` adds variables."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "run_export.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def integer_versions(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.isdigit()) if base.exists() else []


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
