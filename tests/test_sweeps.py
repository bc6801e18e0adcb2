"""Sweeps through Hydra's launcher plugins: parallel jobs into one model directory.

The jobs export a CIFAR-10 ResNet-8 (the smallest registered model) so that
each sweep costs little more than its processes' TensorFlow imports.
"""

import json
from pathlib import Path

import pytest

from tests.helpers import compose_config, export_metadata, integer_versions, run_cli


def _sweep(tmp_path: Path, model_dir: Path, *overrides: str):
    exports, sweep_dir = tmp_path / "exports" / "cifar_resnet", tmp_path / "sweep"
    run = run_cli("-m", "model=cifar_resnet", f"checkpoint.path={model_dir}", f"export.root={exports.parent}",
                  f"hydra.sweep.dir={sweep_dir}", *overrides, cwd=tmp_path, timeout=600)
    summary = sweep_dir / "sweep_summary.json"
    return run, exports, json.loads(summary.read_text()) if summary.exists() else None


@pytest.fixture(scope="module")
def parallel_sweep(cifar8_model_dir, tmp_path_factory):
    """Eight jobs on joblib's four workers into one model directory: four exports and, among
    them, four jobs with a size that is no CIFAR ResNet."""
    return _sweep(tmp_path_factory.mktemp("parallel"), cifar8_model_dir, "hydra/launcher=parallel",
                  "model.size=8,33", "head.k=1,5", "signature.name=predict_images,classify")


def _swept(job: dict) -> tuple[str, ...]:
    return tuple(o for o in job["overrides"] if o.startswith(("model.size=", "head.k=", "signature.name=")))


def test_parallel_sweep_publishes_every_job_once_and_verified(parallel_sweep):
    run, exports, jobs = parallel_sweep
    assert jobs is not None, run.stdout + run.stderr
    assert "Joblib.Parallel(n_jobs=4" in run.stdout + run.stderr  # the joblib launcher ran them
    assert integer_versions(exports) == ["1", "2", "3", "4"] and not list(exports.glob(".exportkit-staging*"))
    assert [job["job"] for job in jobs] == list(range(8))
    published = [job for job in jobs if "error" not in job]
    assert sorted(job["version_path"] for job in published) == [str(exports / str(v)) for v in (1, 2, 3, 4)]
    assert {_swept(job) for job in published} == {("model.size=8", f"head.k={k}", f"signature.name={s}")
                                                  for k in (1, 5) for s in ("predict_images", "classify")}
    for job in published:
        assert job["verification"]["passed"] is True and job["precision"] == {"value": "fp32"} and job["seconds"] > 0
        metadata = export_metadata(job["version_path"])
        _, k, signature = (o.split("=")[1] for o in _swept(job))
        assert metadata["config"]["head"]["k"] == int(k) and metadata["config"]["signature"]["name"] == signature
    assert "Sweep summary" in run.stdout and "precision" in run.stdout


def test_a_failing_parallel_job_does_not_stop_the_others(parallel_sweep):
    run, _, jobs = parallel_sweep
    assert run.returncode == 1
    failed = [job for job in jobs if "error" in job]
    assert len(failed) == 4 and all(_swept(job)[0] == "model.size=33" for job in failed)
    for job in failed:
        assert job["precision"] == {"value": "fp32"}
        assert job["error"].startswith("model.size=33 is not a CIFAR-10 ResNet size")
    assert "4 of 8 jobs failed" in run.stdout and "Traceback" not in run.stdout + run.stderr


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
    assert ray.ray.init.address == "auto" and ray.ray.remote.num_cpus == 1  # tests/test_ray_cluster.py runs it
    assert _launcher("parallel").n_jobs == 4


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


def test_a_sweep_whose_jobs_left_no_result_fails_instead_of_passing_empty(tmp_path, capsys):
    """Jobs that ran elsewhere (another working directory or file system) leave nothing
    in the sweep directory: the summary says so and exits 1, never an empty success."""
    from omegaconf import OmegaConf

    from exportkit.cli import SweepSummary

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as exited:
        SweepSummary().on_multirun_end(config)
    assert exited.value.code == 1
    printed = capsys.readouterr()
    assert f"error: no job of the sweep left a result under {tmp_path}" in printed.out + printed.err
