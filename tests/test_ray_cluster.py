"""hydra/launcher=ray_cluster on a real Ray cluster, and the checks it makes before a sweep.

The module starts one ``ray start --head`` on loopback with this machine's CPUs, in a
temporary directory, on ports nobody else holds (pytest-xdist runs modules in parallel),
and kills it with every process it started in the end, whatever the tests did. It costs
about 10 s of wall time to start; the sweep exports a CIFAR-10 ResNet-8 and -14 so the jobs
cost little more than their workers' TensorFlow imports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from exportkit.launchers import ClusterError, connect, job_resources, misfit
from tests.helpers import (answers, compose_config, free_port, integer_versions, noise_jpegs, run_cli,
                           stop_session)

RAY_INSTALLED = all(importlib.util.find_spec(name) for name in ("ray", "hydra_plugins.hydra_ray_launcher"))
needs_ray = pytest.mark.skipif(not RAY_INSTALLED, reason="needs the ray extra: pip install -e '.[ray]'")

# Ray takes 127.0.0.1 for "this node" and publishes the machine's own address instead, unless
# told it is a single-node cluster (this flag, named for the platforms where that is the default):
# the cluster and its drivers then stay on loopback.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
CLUSTER_START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest):
    """``ray start --head`` on 127.0.0.1; yields (address, CPUs). The sweep's checkpoints are
    written while it starts."""
    cpus = len(os.sched_getaffinity(0))
    # Ray's unix sockets live under the temp dir: a short path, not pytest's deep one.
    temp_dir = tempfile.mkdtemp(prefix="exportkit-ray-", dir="/tmp")
    port = free_port()
    ports = {option: free_port() for option in (
        "--object-manager-port", "--node-manager-port", "--ray-client-server-port", "--runtime-env-agent-port",
        "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port")}
    env = {**os.environ, **LOOPBACK_ENV, "RAY_USAGE_STATS_ENABLED": "0",
           "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
           # no idle workers started ahead of the jobs: each one imports Ray on a busy machine
           "RAY_prestart_worker_first_driver": "0", "RAY_enable_worker_prestart": "0"}
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
               "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
               f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=false",
               f"--object-store-memory={80 * 2**20}", "--min-worker-port=0", "--max-worker-port=0",
               *(f"{option}={value}" for option, value in ports.items())]
    log_path = Path(temp_dir) / "ray_start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=temp_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        request.getfixturevalue("cifar_model_dirs")
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT_S
        while "Ray runtime started" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", cpus
    finally:
        try:
            stop_session(proc)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cifar_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<dir>/cifar8 and <dir>/cifar14: two sizes of one model, for a sweep over model.size."""
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    root = tmp_path_factory.mktemp("cifar_model_dirs")
    for size in (8, 14):
        write_fresh_checkpoint(root / f"cifar{size}", image_size=32, model_params={
            "name": "cifar_resnet", "size": size, "num_classes": 10, "data_format": "channels_last"})
    return root


def _ray_sweep(address: str, cwd: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
                   "model=cifar_resnet", *overrides, cwd=cwd, timeout=timeout, env=LOOPBACK_ENV)


@needs_ray
def test_ray_sweep_over_model_sizes_publishes_both_and_warns_of_the_shadowed_one(
        ray_cluster, cifar_model_dirs, tmp_path):
    address, _ = ray_cluster
    # Relative export.root and sweep dir: Ray's workers start where `ray start` ran, and must
    # still write here, where the sweep summary looks.
    run = _ray_sweep(address, tmp_path, "model.size=8,14", f"checkpoint.path={cifar_model_dirs}/cifar${{model.size}}",
                     "export.root=exports", "hydra.sweep.dir=sweep")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "Ray Launcher is launching 2 jobs" in output and "Ray is already running" in output  # on our connection
    exports = tmp_path / "exports" / "cifar_resnet"
    assert integer_versions(exports) == ["1", "2"] and not list(exports.glob(".exportkit-staging*"))
    jobs = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    sizes = [next(o for o in job["overrides"] if o.startswith("model.size=")) for job in jobs]
    assert [job["job"] for job in jobs] == [0, 1] and sizes == ["model.size=8", "model.size=14"]
    for job, size in zip(jobs, sizes):
        assert job["verification"]["passed"] is True and "error" not in job
        version = tmp_path / job["version_path"]
        metadata = json.loads((version / "assets.extra" / "export_metadata.json").read_text())
        assert f"model.size={metadata['config']['model']['size']}" == size
        # Loaded as TF Serving loads it, and answering (a CIFAR-10 ResNet: 32x32 input).
        answered = answers(version, noise_jpegs([(32, 32)], seed=0))
        assert answered["classes"].shape == (1, metadata["config"]["head"]["k"])
    # Two sizes of the model under one name and the latest policy: only one would be served.
    assert ("2 jobs published versions of model 'cifar_resnet' under serving.versions=latest: "
            "TF Serving serves only version 2") in run.stdout


@needs_ray
def test_jobs_that_fit_no_node_are_refused_in_one_line(ray_cluster, tmp_path):
    address, cpus = ray_cluster
    run = _ray_sweep(address, tmp_path, "head.k=1,5", "checkpoint.path=/nonexistent", "export.root=exports",
                     f"hydra.launcher.ray.remote.num_cpus={cpus + 1}", timeout=60)  # unchecked, it would hang
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert f"error: each sweep job asks for num_cpus={cpus + 1}, more than any of the Ray cluster's 1 node(s) " \
           f"has (at most CPU {cpus})" in output
    assert "Traceback" not in output and "launching" not in output and not (tmp_path / "exports").exists()


@needs_ray
@pytest.mark.timeout(60)  # unprobed, ray.init retries for minutes
def test_no_cluster_at_the_address_fails_at_once():
    address = f"127.0.0.1:{free_port()}"  # nothing listens: ray.init would retry for minutes
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"^no Ray cluster answers at {address} \(Connection refused\): "
                                           r"start one with `ray start --head`"):
        connect({"address": address})
    assert time.monotonic() - start < 10


def test_ray_cluster_config_asks_one_cpu_per_job_and_is_checked():
    cfg = compose_config("hydra/launcher=ray_cluster", return_hydra_config=True).hydra
    assert cfg.launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert cfg.launcher.ray.init.address == "auto"
    assert dict(cfg.launcher.ray.remote) == {"num_cpus": 1, "memory": None}
    assert cfg.callbacks.launcher_check._target_ == "exportkit.launchers.LauncherCheck"
    assert cfg.callbacks.launcher_check.check_fit is True


def test_a_job_fits_if_one_node_has_everything_it_asks():
    small, big = {"CPU": 2.0, "memory": 8 * 2**30}, {"CPU": 16.0, "memory": 64 * 2**30, "GPU": 1.0}
    assert job_resources({"num_cpus": 1, "memory": None}) == {"CPU": 1.0}
    assert misfit(job_resources({"num_cpus": 1, "memory": None}), [small]) is None
    assert misfit(job_resources({"num_cpus": 4, "num_gpus": 1}), [small, big]) is None
    # Each resource is on some node, but no node has both.
    refusal = misfit(job_resources({"num_cpus": 4, "memory": 16 * 2**30}), [small, {"CPU": 8.0, "memory": 4 * 2**30}])
    assert refusal.startswith("each sweep job asks for num_cpus=4, memory=16.0 GiB, more than any of the Ray "
                              "cluster's 2 node(s) has (at most CPU 8, memory 8.0 GiB)")
    assert refusal.endswith("lower hydra.launcher.ray.remote.num_cpus or hydra.launcher.ray.remote.memory")
    assert "hydra.launcher.ray.remote.resources.tpu" in misfit(job_resources({"resources": {"tpu": 1}}), [big])
