"""Sweeps through Hydra's launcher plugins: parallel jobs into one model directory.

The jobs export a CIFAR-10 ResNet-8 (the smallest registered model) so that
each sweep costs little more than its processes' TensorFlow imports.
"""

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config, integer_versions, run_cli


@pytest.fixture(scope="module")
def cifar8_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    model_dir = tmp_path_factory.mktemp("cifar8_model_dir")
    write_fresh_checkpoint(
        model_dir, model_params={"name": "cifar_resnet", "size": 8, "num_classes": 10, "data_format": "channels_last"},
        image_size=32,
    )
    return model_dir


def _sweep(tmp_path: Path, model_dir: Path, *overrides: str):
    exports, sweep_dir = tmp_path / "exports" / "cifar_resnet", tmp_path / "sweep"
    run = run_cli("-m", "model=cifar_resnet", f"checkpoint.path={model_dir}", f"export.root={exports.parent}",
                  f"hydra.sweep.dir={sweep_dir}", *overrides, cwd=tmp_path, timeout=600)
    summary = sweep_dir / "sweep_summary.json"
    return run, exports, json.loads(summary.read_text()) if summary.exists() else None


def test_parallel_sweep_publishes_every_job_once_and_verified(cifar8_model_dir, tmp_path):
    run, exports, jobs = _sweep(tmp_path, cifar8_model_dir, "hydra/launcher=parallel", "model.size=8",
                                "head.k=1,5", "signature.name=predict_images,classify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Joblib.Parallel(n_jobs=4" in run.stdout + run.stderr  # the joblib launcher ran them
    assert integer_versions(exports) == ["1", "2", "3", "4"] and not list(exports.glob(".exportkit-staging*"))
    assert [job["job"] for job in jobs] == [0, 1, 2, 3]
    assert sorted(job["version_path"] for job in jobs) == [str(exports / str(v)) for v in (1, 2, 3, 4)]
    for job in jobs:
        assert job["verification"]["passed"] is True and job["precision"] == {"value": "fp32"} and job["seconds"] > 0
        metadata = json.loads((Path(job["version_path"]) / "assets.extra" / "export_metadata.json").read_text())
        k, signature = (o.split("=")[1] for o in job["overrides"][-2:])
        assert metadata["config"]["head"]["k"] == int(k) and metadata["config"]["signature"]["name"] == signature
    assert "Sweep summary" in run.stdout and "precision" in run.stdout


def test_a_failing_parallel_job_does_not_stop_the_others(cifar8_model_dir, tmp_path):
    run, exports, jobs = _sweep(tmp_path, cifar8_model_dir, "hydra/launcher=parallel", "model.size=8,33")
    assert run.returncode == 1
    assert integer_versions(exports) == ["1"]
    ok, failed = jobs
    assert ok["verification"]["passed"] is True and "error" not in ok
    assert failed["overrides"][-1] == "model.size=33" and failed["precision"] == {"value": "fp32"}
    assert failed["error"].startswith("model.size=33 is not a CIFAR-10 ResNet size")
    assert "1 of 2 jobs failed" in run.stdout and "Traceback" not in run.stdout + run.stderr


def test_submitit_local_sweep(cifar8_model_dir, tmp_path):
    run, exports, jobs = _sweep(tmp_path, cifar8_model_dir, "hydra/launcher=submitit_local", "model.size=8",
                                "head.k=1,5")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Submitit 'local' sweep output dir" in run.stdout + run.stderr
    assert integer_versions(exports) == ["1", "2"]
    assert all(job["verification"]["passed"] for job in jobs)


def _launcher(name: str):
    cfg = compose_config(f"hydra/launcher={name}", return_hydra_config=True)
    return cfg.hydra.launcher


def test_cluster_launcher_configs_compose():
    slurm = _launcher("slurm")
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (slurm.timeout_min, slurm.cpus_per_task, slurm.mem_gb) == (30, 4, 8)
    ray = _launcher("ray_cluster")
    assert ray._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert ray.ray.init.address == "auto" and ray.ray.remote.num_cpus == 4
    assert _launcher("parallel").n_jobs == 4


def test_readme_shows_the_launcher_options_that_exist():
    readme = (REPO / "README.md").read_text()
    for name in ("parallel", "slurm", "ray_cluster"):
        assert f"hydra/launcher={name}" in readme and (REPO / "conf/hydra/launcher" / f"{name}.yaml").is_file()


def test_a_sweep_into_one_name_under_latest_says_what_the_server_will_not_serve():
    from exportkit.cli import shadowed_versions

    def job(number, name="resnet", policy="latest", error=None):
        return {"job": number, "model_name": name, "version": number + 1, "version_policy": policy,
                **({"error": error} if error else {})}

    [notice] = shadowed_versions([job(0), job(1), job(2, error="boom")])
    assert notice.startswith("2 jobs published versions of model 'resnet' under serving.versions=latest: "
                             "TF Serving serves only version 2.")
    assert shadowed_versions([job(0, policy="all"), job(1, policy="all")]) == []
    assert shadowed_versions([job(0, name="resnet18"), job(1, name="resnet50")]) == []
