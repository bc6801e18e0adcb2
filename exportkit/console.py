"""What the terminal shows: stage progress, notices, summary tables (rich)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# What TF's C++ side prints while it loads, before its logging is set up and so
# whatever TF_CPP_MIN_LOG_LEVEL says: absl's pre-init banner and INFO lines.
_TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .*)$"
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without its start-up INFO lines; anything else it prints still shows."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING after start-up
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _TF_STARTUP_NOISE.match(line.rstrip("\n")):
                    sys.stderr.write(line)


@dataclass
class Stage:
    name: str
    detail: str = ""


class Reporter:
    """Shows each stage with a spinner while it runs and a line when it is done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        step = Stage(name)
        start = time.perf_counter()
        with self.console.status(f"[bold]{name}[/]…", spinner="dots"):
            try:
                yield step
            except BaseException:
                self.console.print(f"[red]✗[/] {name:<10} failed after {time.perf_counter() - start:.1f}s")
                raise
        self.console.print(
            f"[green]✓[/] {name:<10} {step.detail}  [dim]{time.perf_counter() - start:.1f}s[/]"
        )

    def notice(self, message: str) -> None:
        # One line whatever the width: a terminal wraps it for the eye, a log keeps it whole.
        self.console.print(f"[yellow]![/] {message}", soft_wrap=True)

    def error(self, message: str) -> None:
        first, *rest = message.splitlines() or [""]
        self.console.print(f"[bold red]error:[/] {first}", highlight=False)
        for line in rest:
            self.console.print(line, highlight=False)

    def refused(self, message: str) -> None:
        """The error of a run that stopped before publishing anything, and that it did not."""
        self.error(message)
        self.console.print("[dim]no version was published[/]")


def _shape(spec: Mapping[str, Any]) -> str:
    shape = spec["shape"]
    return "?" if shape is None else "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def export_summary(result: Mapping[str, Any]) -> Table:
    """One export: where it went, what a client sends and gets back."""
    table = Table(title=f"Exported version {result['version']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("version path", result["version_path"])
    table.add_row("served as", f"model {result['model_name']!r}, signature {result['signature_name']!r}")
    table.add_row("signatures", ", ".join(result["signatures"]))
    signature = result["signature"]
    for kind in ("inputs", "outputs"):
        for key, spec in signature[kind].items():
            table.add_row(f"{kind[:-1]} {key}", f"{spec['dtype']} {_shape(spec)}")
    table.add_row("data_format", f"{result['data_format']} ({result['data_format_source']})")
    table.add_row("precision", _precision(result))
    table.add_row("export runtime", result["runtime"])
    table.add_row("graph", ", ".join(result["optimizations"]) or "as built (variables restored at load)")
    step = result["global_step"]
    table.add_row("checkpoint", f"{result['checkpoint']}" + (f" (step {step})" if step is not None else ""))
    verification = result["verification"]
    table.add_row("verified", "yes" if verification.get("passed") else "skipped (export.verify=false)")
    if "warmup_requests" in verification:
        table.add_row("warmup", f"{verification['warmup_requests']} requests, replayed")
    for key, path in result["serving_files"].items():
        table.add_row(key.replace("_", " "), path)
    table.add_row("size on disk", _size(result["bytes"]))
    table.add_row("wall time", f"{result['seconds']:.1f}s")
    return table


def as_typed(override: str) -> str:
    """A sweep job's override as the user typed it: Hydra's sweeper escapes the special
    characters of each value it hands a job (``resnet$\\{model.size\\}``); rich markup escaped."""
    return escape(re.sub(r"\\(.)", r"\1", override))


def sweep_summary(jobs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per job of a multirun, showing the overrides that differ between jobs."""
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if jobs else set()
    table = Table(title="Sweep summary", title_justify="left",
                  caption=" ".join(as_typed(o) for o in sorted(shared)) or None, caption_justify="left")
    for column in ("job", "overrides", "result", "version path", "verified", "precision", "time"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        varying = " ".join(as_typed(o) for o in job["overrides"] if o not in shared)
        if job.get("error"):
            table.add_row(str(job["job"]), varying, "[red]failed[/]", job["error"], "", _precision(job), "")
            continue
        table.add_row(
            str(job["job"]),
            varying,
            "[green]ok[/]",
            job["version_path"],
            "yes" if job["verification"].get("passed") else "skipped",
            _precision(job),
            f"{job['seconds']:.1f}s",
        )
    return table


def _precision(record: Mapping[str, Any]) -> str:
    """An export's or a sweep job's precision, with the bf16 gate's agreement where it ran."""
    precision = record.get("precision") or {"value": "fp32"}
    if "top1_agreement_near_ties_aside" in precision:
        return (f"{precision['value']} (top-1 agreement with fp32 "
                f"{precision['top1_agreement_near_ties_aside']:.0%}, near-ties aside)")
    return precision["value"]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
