"""A model plugin from outside this repository, installed as a user would install it.

tests/third_party_plugin is a package of its own: it registers ``tinynet``
through the ``exportkit.models`` entry point and ships its config group options
(model/tinynet, preprocessing/tiny) on Hydra's search path through a
SearchPathPlugin in the ``hydra_plugins`` namespace. It is installed offline
into a temporary directory (the environment stays clean) and used through
PYTHONPATH, with no edit to this repository.
"""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from exportkit.plugin import ENTRY_POINT_GROUP
from tests.helpers import REPO, checkout_options, help_options, integer_versions, run_cli

SOURCE = Path(__file__).parent / "third_party_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` of a copy of the package (so no build files land in the repo)."""
    source = tmp_path_factory.mktemp("source") / "tinynet"
    shutil.copytree(SOURCE, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return target


def test_installed_plugin_exports_with_no_edit_to_this_repo(site, tmp_path):
    env = {"PYTHONPATH": str(site)}
    model_dir = tmp_path / "tinynet_model_dir"
    # The fresh-checkpoint CLI finds the model through the entry point and its
    # defaults (7 classes, 48x48 input) through the plugin's search path.
    written = subprocess.run(
        [sys.executable, "-m", "exportkit.fresh_checkpoint", str(model_dir), "--model", "tinynet", "--set", "width=4"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )
    assert written.returncode == 0, written.stderr
    assert "'num_classes': 7" in written.stdout and "'width': 4" in written.stdout

    exports = tmp_path / "exports" / "tinynet"
    run = run_cli("model=tinynet", "model.width=4", "head.k=3", f"checkpoint.path={model_dir}",
                  f"export.root={exports.parent}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "✓ verify" in run.stdout and integer_versions(exports) == ["1"]
    metadata = json.loads((exports / "1" / "assets.extra" / "export_metadata.json").read_text())
    assert metadata["config"]["model"] == {"name": "tinynet", "num_classes": 7, "data_format": "auto", "labels": None, "width": 4}
    assert metadata["config"]["preprocessing"]["name"] == "tiny" and metadata["verification"]["passed"] is True

    shown = run_cli("--help", cwd=tmp_path, env=env)
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}  # any other plugin already installed
    assert help_options(shown.stdout, "model") == checkout_options("model") | installed | {"tinynet"}
    assert help_options(shown.stdout, "preprocessing") >= checkout_options("preprocessing") | {"tiny"}


def test_its_schema_checks_its_keys_at_compose_time(site, tmp_path):
    run = run_cli("model=tinynet", "model.width=wide", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert run.returncode == 1
    assert "Value 'wide' of type 'str' could not be converted to Integer" in run.stderr
    assert "full_key: model.width" in run.stderr


def test_without_the_package_the_model_is_unknown_and_the_env_is_clean(tmp_path):
    assert "tinynet" not in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    run = run_cli("model=tinynet", cwd=tmp_path)
    options = ", ".join(sorted(checkout_options("model") | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))
    assert run.returncode == 1 and f"error: model=tinynet is not a model option (options: {options})" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_the_registry_generated_tests_cover_it_once_installed(site):
    """tests/test_plugins.py parametrizes over the registry: nobody wrote a tinynet test."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plugins.py", "-k", "tinynet"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
