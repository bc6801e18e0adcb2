"""`pip install .` gives an `exportkit` command that exports from any directory and adds
no top-level package but exportkit (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

SOURCES = ("pyproject.toml", "README.md", "exportkit", "conf", "models")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built offline from a copy (pip builds in the tree it is given)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--wheel-dir", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = out.glob("exportkit-*.whl")
    return wheel


def test_the_wheel_holds_every_config_file_and_plugin_and_no_other_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.startswith("exportkit-")} == {"exportkit"}
    shipped_conf = {name.removeprefix("exportkit/conf/") for name in names if name.startswith("exportkit/conf/")}
    assert {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")} <= shipped_conf
    plugins = {p.parent.name for p in (REPO / "models").glob("*/__init__.py")}
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {f"exportkit.models.{name}" for name in plugins} <= set(listed), "a models/ plugin missing from pyproject"
    assert {f"exportkit/models/{name}/__init__.py" for name in plugins} <= set(names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "exportkit = exportkit.app:main" in entry


def test_the_installed_command_exports_from_outside_the_checkout(wheel, resnet18_model_dir, tmp_path):
    """A fresh venv holding only the wheel; its dependencies (TensorFlow and the rest) are
    this environment's, seen through a .pth, so nothing is downloaded or reinstalled."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (site / "dependencies.pth").write_text(ours + "\n")  # a plain path: its own .pth (our editable finder) stay unread
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                              "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([python, "-c", "import exportkit, importlib.util as u; print(exportkit.__file__);"
                            "print(u.find_spec('models'))"], cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.splitlines() == [str(site / "exportkit" / "__init__.py"), "None"], where.stderr[-2000:]

    run = subprocess.run(
        [env_dir / "bin" / "exportkit", "model.size=18", f"checkpoint.path={resnet18_model_dir}",
         "export.root=exports", "hydra.run.dir=run"],
        cwd=work, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((work / "run" / "exportkit_result.json").read_text())
    assert result["version_path"] == "exports/resnet/1"  # export.root as given, from where the command ran
    assert "✓ verify" in run.stdout and (work / "exports" / "resnet" / "1" / "saved_model.pb").is_file()
