"""The glue between Hydra and the export: run one job, summarize a sweep.

run_export.py's ``@hydra.main`` calls :func:`run_job`. Errors that are the
user's to fix print as one or two lines and exit 1; in a multirun a failed job
is recorded and the others go on, and :class:`SweepSummary` prints one table
at the end (and exits 1 if any job failed).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, Iterable, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import to_plain, validate
from .console import Reporter, export_summary, import_tensorflow_quietly, sweep_summary
from .errors import ExportkitError, PublishedButIncomplete
from .plugin import load_plugins
from .registry import MODELS, RegistryError
from .versions import forget_interrupts, interrupted, record_interrupt

RESULT_FILE = "exportkit_result.json"
SWEEP_FILE = "sweep_summary.json"


def _interrupt_on_sigterm() -> None:
    """kill (SIGTERM) unwinds like Ctrl-C, so staging directories are removed. Both are also
    recorded (versions.record_interrupt): TensorFlow can swallow the exception, and the record
    still stops the export before it publishes and tells its error as the interrupt it was."""

    def handler(signum: int, frame: Any) -> None:
        record_interrupt(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    forget_interrupts()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_job(cfg: DictConfig, *, plugins: Iterable[str] = ()) -> dict[str, Any] | None:
    """One export from a composed config.

    The plugins (built-in, ``plugins`` and the entry points) are imported here
    too: a launcher may run the job in a fresh worker process (joblib, Ray,
    submitit) where the app's start-up never ran. Unpickling the config there happens to import the
    schema's package; registration should not hang on that.
    """
    _interrupt_on_sigterm()
    try:
        return _run_job(cfg, plugins=plugins)
    finally:
        forget_interrupts()  # this job's: an export after it in this process starts clean


def _run_job(cfg: DictConfig, *, plugins: Iterable[str]) -> dict[str, Any] | None:
    reporter = Reporter()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    record: dict[str, Any] = {
        "job": hydra_cfg.job.num if multirun else 0,
        "overrides": list(hydra_cfg.overrides.task),
        "precision": {"value": cfg.export.precision.name},  # the export adds its bf16 gate result
    }
    try:
        validate(cfg)
        config = to_plain(cfg)
        load_plugins(plugins)
        MODELS.get(config["model"]["name"]).validate(config["model"])
        import_tensorflow_quietly()
        from .export import export_model  # TensorFlow loads here, after the config is known good

        result = export_model(config, reporter=reporter)
    except PublishedButIncomplete as e:  # a live version and a failure: both told
        reporter.error(str(e))
        _write_record(hydra_cfg, {**record, **e.result, "error": str(e).splitlines()[0]})
        if multirun and not e.interrupted:
            return None
        sys.exit(130 if e.interrupted else 1)
    except (ExportkitError, RegistryError) as e:  # the user's to fix: no traceback
        if interrupted():  # an error that followed an interrupt TensorFlow swallowed
            _exit_interrupted(reporter)
        reporter.refused(str(e))
        _write_record(hydra_cfg, {**record, "error": str(e).splitlines()[0]})
        if multirun:
            return None
        sys.exit(1)
    except KeyboardInterrupt:
        _exit_interrupted(reporter)
    reporter.console.print(export_summary(result))
    _write_record(hydra_cfg, {**record, **result})
    return result


def _exit_interrupted(reporter: Reporter) -> NoReturn:
    reporter.error("interrupted: no version was published")
    sys.exit(130)


def _write_record(hydra_cfg: Any, record: dict[str, Any]) -> None:
    out = Path(hydra_cfg.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def shadowed_versions(jobs: Iterable[dict[str, Any]]) -> list[str]:
    """A line for each model that got several versions in this sweep under the ``latest``
    policy: TF Serving would serve only the newest, and the others silently never."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if not job.get("error") and job.get("version_policy", "latest") == "latest":
            by_model.setdefault(job["model_name"], []).append(job)
    notices = []
    for name, published in sorted(by_model.items()):
        if len(published) > 1:
            newest = max(job["version"] for job in published)
            notices.append(
                f"{len(published)} jobs published versions of model '{name}' under serving.versions=latest: "
                f"TF Serving serves only version {newest}. Give each variant its own name "
                "(e.g. 'export.model_name=resnet${model.size}') or serve them all (serving.versions=all)")
    return notices


class SweepSummary(Callback):
    """At the end of a multirun: one table of what each job wrote, and a JSON file."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{RESULT_FILE}")]
        jobs.sort(key=lambda job: job["job"])
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(jobs, indent=2, default=str) + "\n")
        reporter = Reporter()
        if not jobs:  # e.g. workers that ran in another working directory: never a silent success
            reporter.error(f"no job of the sweep left a result under {sweep_dir}: did the jobs run on "
                           "another file system or in another working directory?")
            sys.exit(1)
        reporter.console.print(sweep_summary(jobs))
        for notice in shadowed_versions(jobs):
            reporter.notice(notice)
        failed = [job for job in jobs if job.get("error")]
        reporter.console.print(f"[dim]{sweep_dir / SWEEP_FILE}[/]")
        if failed:
            reporter.error(f"{len(failed)} of {len(jobs)} jobs failed")
            sys.exit(1)
