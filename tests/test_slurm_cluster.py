"""hydra/launcher=slurm on a real one-node SLURM cluster (Debian's slurm-wlm), and its fit check.

The module starts munged, slurmctld and slurmd as root, from a temporary directory, with
the node on 127.0.0.1 and its ports free ones, and stops them with every process they
started in the end. Without root or slurm-wlm (apt-get install slurmctld slurmd
slurm-client munge) it skips. SLURM's accounting is off, so submitit's sacct calls warn
("Bypassing sacct error") and it reads the jobs' results from their files instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from exportkit.launchers import LauncherCheck
from tests.helpers import (answers, compose_config, free_port, integer_versions, noise_jpegs, run_cli,
                           stop_session)

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scancel")
needs_slurm = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(name) for name in COMMANDS),
    reason="needs root and slurm-wlm: apt-get install slurmctld slurmd slurm-client munge")
START_TIMEOUT_S = 60
NODE_MEMORY_MB = 2048


def _slurm_conf(directory: Path, cpus: int) -> str:
    return f"""\
ClusterName=exportkit
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={directory}/munge.sock
CredType=cred/munge
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def cifar8_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exportkit.fresh_checkpoint import write_fresh_checkpoint

    model_dir = tmp_path_factory.mktemp("cifar8_model_dir")
    write_fresh_checkpoint(model_dir, image_size=32, model_params={
        "name": "cifar_resnet", "size": 8, "num_classes": 10, "data_format": "channels_last"})
    return model_dir


@pytest.fixture(scope="module")
def slurm_cluster(request: pytest.FixtureRequest):
    """munged, slurmctld and slurmd for one node; yields the environment that points at them.
    The sweep's checkpoint is written while they start."""
    directory = Path(tempfile.mkdtemp(prefix="exportkit-slurm-", dir="/tmp"))
    directory.chmod(0o700)  # munged refuses a key or socket directory others can write
    for sub in ("state", "spool"):
        (directory / sub).mkdir()
    key = directory / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    conf = directory / "slurm.conf"
    conf.write_text(_slurm_conf(directory, len(os.sched_getaffinity(0))))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    commands = [
        ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={directory}/munge.sock",
         f"--pid-file={directory}/munged.pid", f"--log-file={directory}/munged.log", f"--seed-file={directory}/seed"],
        ["slurmctld", "-D", "-c", "-i", "-f", str(conf)],
        ["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
    ]
    daemons = []
    try:
        for command in commands:
            daemons.append(subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
        request.getfixturevalue("cifar8_model_dir")
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip() \
                != "idle":
            logs = "".join(p.read_text()[-1500:] for p in directory.glob("*.log"))
            assert all(d.poll() is None for d in daemons) and time.monotonic() < deadline, logs
            time.sleep(0.5)
        yield {"SLURM_CONF": str(conf)}
    finally:
        try:
            subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30)
            for daemon in reversed(daemons):
                stop_session(daemon)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@needs_slurm
def test_slurm_sweep_publishes_every_job_once_and_loadable(slurm_cluster, cifar8_model_dir, tmp_path):
    run = run_cli("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                  "hydra.launcher.timeout_min=5", "model=cifar_resnet", "model.size=8", "head.k=1,5",
                  f"checkpoint.path={cifar8_model_dir}", "export.root=exports", "hydra.sweep.dir=sweep",
                  cwd=tmp_path, timeout=300, env=slurm_cluster)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "Submitit 'slurm' sweep output dir" in output
    exports = tmp_path / "exports" / "cifar_resnet"
    assert integer_versions(exports) == ["1", "2"] and not list(exports.glob(".exportkit-staging*"))
    jobs = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [job["job"] for job in jobs] == [0, 1]
    for job, k in zip(jobs, (1, 5)):
        assert job["verification"]["passed"] is True and "error" not in job
        metadata = json.loads((tmp_path / job["version_path"] / "assets.extra" / "export_metadata.json").read_text())
        assert metadata["config"]["head"]["k"] == k
        # Loaded as TF Serving loads it, and answering (a CIFAR-10 ResNet: 32x32 input).
        assert answers(tmp_path / job["version_path"], noise_jpegs([(32, 32)], seed=0))["classes"].shape == (1, k)


@needs_slurm
def test_jobs_that_fit_no_node_are_refused_in_one_line(slurm_cluster, tmp_path):
    # The config's own request (4 CPUs, 8 GB) against a node of 2048 MB: SLURM would leave the
    # jobs pending forever (reason PartitionConfig).
    assert compose_config("hydra/launcher=slurm", return_hydra_config=True).hydra.launcher.mem_gb * 1024 \
        > NODE_MEMORY_MB
    run = run_cli("-m", "hydra/launcher=slurm", "head.k=1,5", "checkpoint.path=/nonexistent", "export.root=exports",
                  cwd=tmp_path, timeout=60, env=slurm_cluster)  # unchecked, it would hang
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    [error] = [line for line in output.splitlines() if line.startswith("error:")]
    assert error.startswith("error: SLURM refuses each sweep job (--nodes=1 --ntasks-per-node=1 --cpus-per-task=4 "
                            "--mem=8G --time=30): Requested node configuration is not available; lower "
                            "hydra.launcher.cpus_per_task or mem_gb")
    assert "Traceback" not in output and "Submitit" not in output and not (tmp_path / "exports").exists()


def _check(monkeypatch, path: Path, *overrides: str) -> None:
    """LauncherCheck at the start of a slurm multirun, with PATH=path."""
    monkeypatch.setenv("PATH", str(path))
    LauncherCheck().on_multirun_start(config=compose_config("hydra/launcher=slurm", *overrides,
                                                            return_hydra_config=True))


def test_the_slurm_check_asks_sbatch_test_only_for_one_jobs_request(monkeypatch, tmp_path, capsys):
    """Without SLURM: an sbatch that records its arguments and refuses, as slurmctld would."""
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\n"
                      "echo 'allocation failure: Requested node configuration is not available' >&2\nexit 1\n")
    sbatch.chmod(0o755)
    with pytest.raises(SystemExit, match="1"):
        _check(monkeypatch, tmp_path, "hydra.launcher.partition=cpu", "hydra.launcher.mem_gb=64")
    assert (tmp_path / "args").read_text().split() == [
        "--test-only", "--partition=cpu", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=64G",
        "--time=30", "--wrap", "true"]
    assert capsys.readouterr().out.splitlines() == [
        "error: SLURM refuses each sweep job (--partition=cpu --nodes=1 --ntasks-per-node=1 --cpus-per-task=4 "
        "--mem=64G --time=30): Requested node configuration is not available; lower hydra.launcher.cpus_per_task "
        "or mem_gb, or pick another hydra.launcher.partition",
        "no version was published"]
    sbatch.write_text("#!/bin/sh\nexit 0\n")  # a request SLURM can meet: the sweep goes on
    _check(monkeypatch, tmp_path)
    assert capsys.readouterr().out == ""


def test_the_slurm_check_needs_sbatch(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit, match="1"):
        _check(monkeypatch, tmp_path)
    assert capsys.readouterr().out.startswith(
        "error: hydra/launcher=slurm submits with sbatch, which is not on PATH")
