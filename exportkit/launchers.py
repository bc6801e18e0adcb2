"""Cluster launchers (hydra/launcher=ray_cluster, slurm): checked before a sweep sends any job.

:class:`LauncherCheck` is a Hydra callback (conf/config.yaml) that acts at the start of a
multirun whose launcher is a cluster's:

- **Fit.** A job asking more CPUs, GPUs, memory or custom resources than any node has is
  never scheduled: Ray keeps such a task pending forever (it only logs "No available node
  types can fulfill resource request"), and SLURM leaves the job pending (PartitionConfig).
  The sweep would hang; instead it is refused in one line, before any job is sent. Ray's
  fit is read from the live nodes' resources; SLURM's is asked of SLURM (sbatch --test-only).
- **Connecting to Ray.** hydra-ray-launcher's ``RayLauncher`` calls
  ``ray.init(**hydra.launcher.ray.init)`` and runs each job as
  ``ray.remote(**hydra.launcher.ray.remote)``. At an address where nothing answers,
  ``ray.init`` retries for minutes; and the plugin adds ``object_store_memory``, which Ray
  refuses when it joins a running cluster. The check connects first (the launcher then finds
  Ray initialized and keeps that connection) and says in one line when no cluster answers.
- **Working directory on Ray.** Ray's workers run where ``ray start`` ran, so relative paths
  (``export.root=exports``, ``checkpoint.path``, ``hydra.sweep.dir``) would resolve there: the
  versions land elsewhere and the sweep summary finds no job. Each worker enters the
  sweep's directory first (Ray's ``worker_process_setup_hook``). On several machines that
  directory must exist on each of them: a shared file system, as export.root needs anyway
  for its lock. (sbatch already runs a job in the directory it was submitted from.)

Ray is imported only when a Ray sweep starts, so the configs compose without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .console import Reporter

RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SWEEP_DIRECTORY_VAR = "EXPORTKIT_SWEEP_DIRECTORY"
PLUGIN_OBJECT_STORE_BYTES = 78643200  # what the plugin gives a Ray it starts itself (address: null)
PROBE_TIMEOUT_S = 5.0
SBATCH_TIMEOUT_S = 30.0

# hydra-submitit-launcher's SLURM keys -> sbatch's flags for one job's request.
_SBATCH_FLAG = {"partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
                "nodes": "--nodes", "tasks_per_node": "--ntasks-per-node", "cpus_per_task": "--cpus-per-task",
                "gpus_per_node": "--gpus-per-node", "mem_gb": "--mem", "timeout_min": "--time"}
_SBATCH_VALUE = {"mem_gb": lambda gb: f"{gb}G"}

# ray.remote() options -> the node resources Ray schedules them against.
_RESOURCE_OF_OPTION = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
_OPTION_OF_RESOURCE = {resource: option for option, resource in _RESOURCE_OF_OPTION.items()}


class ClusterError(Exception):
    """No cluster to run on, or none of its nodes can run a job: the user's to fix."""


def enter_sweep_directory() -> None:
    """Ray's worker_process_setup_hook: run the job where the sweep was started."""
    directory = os.environ.get(SWEEP_DIRECTORY_VAR)
    if directory:
        os.chdir(directory)


def job_resources(remote: dict[str, Any]) -> dict[str, float]:
    """What one job asks of a node (``hydra.launcher.ray.remote``), in Ray's resource names."""
    asked = {_RESOURCE_OF_OPTION[option]: float(value)
             for option, value in remote.items() if option in _RESOURCE_OF_OPTION and value}
    asked.update({name: float(value) for name, value in (remote.get("resources") or {}).items() if value})
    return asked


def _amount(resource: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if resource == "memory" else f"{value:g}"


def misfit(asked: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """None if some node has all a job asks; else a one-line refusal naming what the nodes have."""
    if any(all(node.get(name, 0.0) >= amount for name, amount in asked.items()) for node in nodes):
        return None
    wanted = ", ".join(f"{_OPTION_OF_RESOURCE.get(name, name)}={_amount(name, amount)}" for name, amount in asked.items())
    largest = ", ".join(f"{name} {_amount(name, max((node.get(name, 0.0) for node in nodes), default=0.0))}"
                        for name in asked)
    options = " or ".join(f"hydra.launcher.ray.remote.{_OPTION_OF_RESOURCE.get(name, 'resources.' + name)}"
                          for name in asked)
    return (f"each sweep job asks for {wanted}, more than any of the Ray cluster's {len(nodes)} node(s) has "
            f"(at most {largest}); Ray would leave the jobs pending forever: lower {options}")


def _explicit_address(address: str | None) -> tuple[str, int] | None:
    """HOST:PORT of the GCS when the config or RAY_ADDRESS names one; None for auto-discovery."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def connect(init: dict[str, Any]) -> None:
    """ray.init as the launcher would, but failing in one line where no cluster answers, and with
    every worker set to enter this directory first (see the module docstring)."""
    try:
        import ray
    except ImportError:
        raise ClusterError("hydra/launcher=ray_cluster needs Ray and hydra-ray-launcher: "
                           "pip install -e '.[ray]'") from None
    init = {key: value for key, value in init.items() if value is not None}
    address = init.get("address")
    if not address:
        init.setdefault("object_store_memory", PLUGIN_OBJECT_STORE_BYTES)  # starts a Ray of its own
    gcs = _explicit_address(address)
    if gcs is not None:
        try:
            socket.create_connection(gcs, timeout=PROBE_TIMEOUT_S).close()
        except OSError as e:
            raise ClusterError(
                f"no Ray cluster answers at {gcs[0]}:{gcs[1]} ({e.strerror or e}): start one with "
                "`ray start --head` or point hydra.launcher.ray.init.address at it") from None
    runtime_env = dict(init.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), SWEEP_DIRECTORY_VAR: os.getcwd()}
    runtime_env.setdefault("worker_process_setup_hook", f"{__name__}.{enter_sweep_directory.__name__}")
    try:
        ray.init(**init, runtime_env=runtime_env)
    except ConnectionError as e:  # auto-discovery found no running cluster
        raise ClusterError(f"no running Ray cluster found (address={address}): start one with "
                           f"`ray start --head` or set hydra.launcher.ray.init.address ({e})") from None


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected cluster."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def refuse_ray_misfit(launcher: DictConfig, *, check_fit: bool) -> None:
    """Connect as the Ray launcher would, and refuse jobs that fit no node of the cluster."""
    ray_cfg = OmegaConf.to_container(launcher.ray, resolve=True)
    connect(ray_cfg.get("init") or {})
    refusal = misfit(job_resources(ray_cfg.get("remote") or {}), cluster_nodes()) if check_fit else None
    if refusal:
        raise ClusterError(refusal)


def refuse_slurm_misfit(launcher: DictConfig) -> None:
    """``sbatch --test-only`` with one job's request: SLURM itself says whether any node of the
    partition can ever run it (else the jobs would pend forever)."""
    options = [f"{flag}={_SBATCH_VALUE.get(key, str)(launcher[key])}"
               for key, flag in _SBATCH_FLAG.items() if launcher.get(key)]
    command = ["sbatch", "--test-only", *options, "--wrap", "true"]
    if shutil.which("sbatch") is None:
        raise ClusterError("hydra/launcher=slurm submits with sbatch, which is not on PATH: "
                           "run the sweep where SLURM's commands are (a login node)")
    try:
        test = subprocess.run(command, capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"sbatch --test-only did not answer in {SBATCH_TIMEOUT_S:g} s: is slurmctld up?") from None
    if test.returncode != 0:
        lines = [line.split(": ", 1)[-1].strip() for line in test.stderr.splitlines() if line.strip()]
        asked = " ".join(options)
        raise ClusterError(f"SLURM refuses each sweep job ({asked}): {lines[-1] if lines else 'sbatch failed'}; "
                           "lower hydra.launcher.cpus_per_task or mem_gb, or pick another hydra.launcher.partition")


class LauncherCheck(Callback):
    """At the start of a multirun on a cluster launcher (Ray, SLURM), before any job is sent:
    refuse in one line a sweep whose jobs no node can run, or with no cluster to run on.
    ``check_fit=false`` skips the fit check (an autoscaling cluster that grows on demand)."""

    def __init__(self, check_fit: bool = True) -> None:
        self.check_fit = check_fit

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        try:
            if launcher.get("_target_") == RAY_LAUNCHER:
                refuse_ray_misfit(launcher, check_fit=self.check_fit)
            elif launcher.get("_target_") == SLURM_LAUNCHER and self.check_fit:
                refuse_slurm_misfit(launcher)
        except ClusterError as e:
            Reporter().refused(str(e))
            sys.exit(1)
