"""Serving benchmark (issue 7): exportkit's exports against the notebook export and OpenVINO.

    .venv/bin/pip install -e '.[bench]'          # openvino, the peer
    .venv/bin/python benchmarks/serving.py       # ResNet-50, the default VARIANTS, batches 1, 8, 32
    .venv/bin/python benchmarks/serving.py --size 18 --rounds 2 --batch-sizes 1,8 --export-cost-sizes ''
    .venv/bin/python benchmarks/serving.py --variant a='preprocessing=notebook' --variant b='preprocessing=notebook head.k=1'
    .venv/bin/python benchmarks/serving.py --versions mine=exports/resnet/3 --no-openvino
    .venv/bin/python benchmarks/serving.py --export-cost-only --export-cost-sizes 152 --variant 'bf16=preprocessing=notebook export.precision=bf16'

Each TF variant is a list of ``run_export.py`` overrides, exported in a
subprocess from one checkpoint (a fresh random-weight ResNet in Estimator
layout unless ``--checkpoint``), which also measures what the export costs.
Each contender (every TF version, OpenVINO f32 and bf16 on the same weights)
then runs in its own process: TF versions loaded as TF Serving loads them and
fed 224x224 JPEGs, OpenVINO fed the same images already preprocessed to
floats. The contenders take turns, round after round, on the same batches;
then each loads a second copy of itself, as TF Serving loads a new version
beside the one it serves (the reload peak). The result goes to the terminal,
``serving_benchmark.json`` and ``serving_benchmark.md``. Timings are the
machine's, never a test's. ``--export-cost-only`` runs the exports alone.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks import serving_workers  # noqa: E402
from exportkit import runtime  # noqa: E402
from benchmarks.serving_report import (  # noqa: E402
    OPENVINO_BF16, OPENVINO_F32, RELOAD_NOTE, RESULT_COLUMNS, UsageError, add_ratios, check_targets, cpu_info,
    latency_stats, parse_named, render_markdown, result_cells, target_line,
)

# The contenders exported by default: name -> run_export.py overrides. The
# first is the baseline the others are measured against.
VARIANTS = {
    "notebook": "preprocessing=notebook export.precision=fp32 export.freeze=false export.fold_batch_norm=false "
                "export.fuse_residual_add=false export.scale_shift_batch_norm=false",
    "exportkit fp32": "preprocessing=notebook export.precision=fp32",
    "exportkit bf16": "preprocessing=notebook export.precision=bf16",
}
# OpenVINO's best setting for what is measured here, one synchronous request
# at a time: LATENCY gives that request every core in one stream (THROUGHPUT
# splits the cores into streams that only parallel requests could fill).
OPENVINO_HINT = "LATENCY"
OPENVINO_PRECISIONS = {OPENVINO_F32: "f32", OPENVINO_BF16: "bf16"}
# oneDNN's own cap on the instructions it uses (TF's and OpenVINO's copies): recorded when set,
# e.g. ONEDNN_MAX_CPU_ISA=AVX2 to run oneDNN as on an AVX2-only CPU.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# --onednn -> the TF_ENABLE_ONEDNN_OPTS value the TF children get (None: unset).
ONEDNN_CHOICES = {"on": "1", "off": "0", "default": None}
IMAGE_SIZE = 224  # what the client sends: it resizes to the model's input before encoding
# Pause between turns, so the previous worker's spinning pool threads have gone
# idle before the next one starts its clock.
SETTLE_S = 0.2
# The terminal splits RESULT_COLUMNS in two tables that fit 80 columns: what
# each contender did per batch size, and what it cost to hold.
TERMINAL_RATES = ("contender", "batch", "images/s", "p50 ms", "p99 ms", "× baseline", "× OV f32", "× OV bf16")
TERMINAL_CONTENDER = ("load s", "warmup s", "peak RSS after load MiB", "peak RSS after serving MiB",
                      "peak RSS on reload MiB")


class BenchError(Exception):
    """Something failed on the way (an export, a worker): one line, and where its log is."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Default variants:\n" + "\n".join(f"  {k}: {v}" for k, v in VARIANTS.items()))
    parser.add_argument("--size", type=int, default=50, help="ResNet depth of the fresh checkpoint (default 50)")
    parser.add_argument("--checkpoint", help="a real checkpoint (model_dir or prefix) instead of a fresh random one")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME='OVERRIDE ...'",
                        help="a TF variant to export (repeatable); replaces the default variants")
    parser.add_argument("--versions", action="append", default=[], metavar="NAME=PATH",
                        help="an already exported version directory to benchmark as is (repeatable)")
    parser.add_argument("--no-openvino", action="store_true", help="leave out the OpenVINO peers")
    parser.add_argument("--openvino-precisions", default="f32,bf16",
                        help="OpenVINO's inference precisions to run (default f32,bf16; bf16 cannot compile under "
                             "ONEDNN_MAX_CPU_ISA=AVX2, which OpenVINO honours too)")
    parser.add_argument("--onednn", choices=ONEDNN_CHOICES, default="on",
                        help="TF's oneDNN kernels in the exports and TF contenders: on (TF_ENABLE_ONEDNN_OPTS=1, "
                             "the server setting exportkit recommends; the default), off (=0: TF's own kernels, "
                             "what an AVX2-only server runs by default) or default (unset: TF's default for this CPU)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    parser.add_argument("--rounds", type=int, default=5, help="turns per contender and batch size (default 5)")
    parser.add_argument("--requests", type=int, default=5, help="requests per turn (default 5)")
    parser.add_argument("--export-cost-sizes", default="50,152",
                        help="also export each variant at these ResNet sizes to measure the export's cost "
                             "(default 50,152; '' for none)")
    parser.add_argument("--export-cost-only", action="store_true",
                        help="only export each variant at the --export-cost-sizes and report what it cost (no serving; "
                             "e.g. --export-cost-only --export-cost-sizes 152 --variant 'bf16=export.precision=bf16')")
    parser.add_argument("--no-reload", action="store_true",
                        help="leave out the reload peak (each contender loading a second copy of itself)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "build" / "bench",
                        help="checkpoints, exports, logs (default build/bench)")
    parser.add_argument("--out", type=Path, help="where the JSON and markdown go (default: the work dir)")
    return parser.parse_args(argv)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} wants comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise UsageError(f"{flag} wants positive integers, got {text!r}")
    return values


@dataclass
class Plan:
    """What this run benchmarks, resolved from the command line."""

    variants: dict[str, list[str]]  # name -> run_export.py overrides
    versions: dict[str, Path]  # name -> exported version directory
    batch_sizes: list[int]
    export_cost_sizes: list[int]
    openvino: bool
    openvino_precisions: list[str]  # of OPENVINO_PRECISIONS' values
    work: Path
    out: Path
    onednn: str  # a key of ONEDNN_CHOICES
    tf_runtime: runtime.Runtime  # what the TF children will run with
    export_cost_only: bool = False  # no serving: the exports' cost alone
    reload: bool = True  # measure each contender's peak with a second copy loaded
    notes: list[str] = field(default_factory=list)  # what the report should say about the plan

    def child_environment(self) -> dict[str, str]:
        """This process's environment with TF_ENABLE_ONEDNN_OPTS as --onednn says: what every child gets."""
        environ = {k: v for k, v in os.environ.items() if k != runtime.ONEDNN_VAR}
        if ONEDNN_CHOICES[self.onednn] is not None:
            environ[runtime.ONEDNN_VAR] = ONEDNN_CHOICES[self.onednn]
        return environ


def _named(items: Sequence[str], flag: str) -> dict[str, str]:
    named: dict[str, str] = {}
    for item in items:
        name, value = parse_named(item, flag)
        if name in named:
            raise UsageError(f"{flag} {name!r} is given twice")
        named[name] = value
    return named


def _overrides(name: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"--variant {name!r}: {e} in {text!r}") from None


def _contenders(args: argparse.Namespace, tf_runtime: runtime.Runtime,
                notes: list[str]) -> tuple[dict[str, list[str]], dict[str, Path]]:
    """TF variants to export and versions to take as they are; VARIANTS when neither is given
    (less the bf16 variant where the TF children's runtime has no bf16, with a note why)."""
    variants = _named(args.variant, "--variant")
    versions = {name: Path(path).resolve() for name, path in _named(args.versions, "--versions").items()}
    if not variants and not versions:
        variants = dict(VARIANTS)
        if tf_runtime.bf16 == "unavailable":
            del variants["exportkit bf16"]
            notes.append(f"exportkit bf16 left out: TF's oneDNN kernels, which bf16 needs, are off in the TF "
                         f"contenders ({tf_runtime.source}).")
    for name, path in versions.items():
        if not (path / "saved_model.pb").is_file():
            raise UsageError(f"--versions {name}={path}: no saved_model.pb there (give a version directory, e.g. exports/resnet/1)")
    names = [*variants, *versions]
    if len(set(names)) < len(names) or set(names) & set(OPENVINO_PRECISIONS) or len({slug(n) for n in names}) < len(names):
        raise UsageError(f"contender names must be distinct (also as file names) and not {sorted(OPENVINO_PRECISIONS)}: {names}")
    return {name: _overrides(name, text) for name, text in variants.items()}, versions


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the command line and the environment before anything slow starts."""
    onednn = ONEDNN_CHOICES[args.onednn]
    tf_runtime = runtime.predict({runtime.ONEDNN_VAR: onednn} if onednn is not None else {})
    notes: list[str] = []
    variants, versions = _contenders(args, tf_runtime, notes)
    if args.export_cost_only:
        if versions:
            raise UsageError("--export-cost-only exports the variants; --versions has nothing to export")
        if not _int_list(args.export_cost_sizes, "--export-cost-sizes"):
            raise UsageError("--export-cost-only needs --export-cost-sizes (e.g. --export-cost-sizes 152)")
    elif not args.no_openvino and importlib.util.find_spec("openvino") is None:
        raise UsageError("openvino is not installed: pip install -e '.[bench]' (or pass --no-openvino)")
    if args.rounds < 1 or args.requests < 1:
        raise UsageError("--rounds and --requests must be at least 1")
    precisions = [p.strip() for p in args.openvino_precisions.split(",") if p.strip()]
    if not precisions or set(precisions) - set(OPENVINO_PRECISIONS.values()):
        raise UsageError(f"--openvino-precisions wants f32, bf16 or both, got {args.openvino_precisions!r}")
    batch_sizes = _int_list(args.batch_sizes, "--batch-sizes")
    if not batch_sizes:
        raise UsageError("--batch-sizes names no batch size")
    return Plan(variants=variants, versions=versions, batch_sizes=sorted(set(batch_sizes)),
                export_cost_sizes=_int_list(args.export_cost_sizes, "--export-cost-sizes"),
                openvino=not args.no_openvino, openvino_precisions=precisions, work=args.work_dir.resolve(), out=(args.out or args.work_dir).resolve(),
                onednn=args.onednn, tf_runtime=tf_runtime, notes=notes, export_cost_only=args.export_cost_only,
                reload=not args.no_reload)


def use_child_environment(plan: Plan) -> None:
    """Make this process's environment the children's (exports, workers inherit it); the parent itself
    never imports TensorFlow, so TF_ENABLE_ONEDNN_OPTS changes nothing here."""
    environment = plan.child_environment()
    os.environ.clear()
    os.environ.update(environment)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "variant"


def _failure(log: Path) -> str:
    """The gist of a failed child's log: exportkit's ``error:`` line, Hydra's message, or the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1].removeprefix("error:").strip()
    if any("HYDRA_FULL_ERROR" in line for line in lines):  # a config error: Hydra's first lines say it
        return " ".join(line for line in lines[:3] if not line.startswith("To append"))
    return lines[-1] if lines else "(no output)"


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    peak_rss_mib: float
    parent_rss_mib: float


def run_measured(command: Sequence[str], log: Path) -> ChildRun:
    """Run ``command``; its wall time and peak RSS (ru_maxrss from wait4).

    A child's ru_maxrss also counts the parent's pages it inherited before
    exec, so this parent never imports TensorFlow; its own RSS at the start
    is recorded beside the result to show how small that floor is.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    parent_rss = serving_workers.memory_mib()["rss_mib"]
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(child.returncode, wall, usage.ru_maxrss / 1024, parent_rss)  # ru_maxrss is in KiB on Linux


def fresh_checkpoint(work: Path, size: int, console: Console) -> Path:
    """A random-weight ResNet-``size`` in Estimator layout, written once per work dir."""
    model_dir = work / "checkpoints" / f"resnet{size}"
    if (model_dir / "checkpoint").is_file():
        return model_dir
    with console.status(f"writing a fresh ResNet-{size} checkpoint…"):
        run = run_measured([sys.executable, "-m", "exportkit.fresh_checkpoint", str(model_dir), "--plugin",
                            "exportkit.models.resnet", "--model", "resnet", "--set", f"size={size}"],
                           work / "logs" / f"fresh_checkpoint-{size}.log")
    if run.returncode:
        raise BenchError(f"writing the ResNet-{size} checkpoint failed: {_failure(work / 'logs' / f'fresh_checkpoint-{size}.log')}")
    console.print(f"[green]✓[/] fresh ResNet-{size} checkpoint (random weights) in {model_dir}")
    return model_dir


def export_variant(name: str, overrides: Sequence[str], *, checkpoint: Path, size: int, root: Path,
                   logs: Path) -> dict[str, Any]:
    """One ``run_export.py`` run in a subprocess, into an emptied export root; what it wrote and cost."""
    shutil.rmtree(root, ignore_errors=True)
    run_dir = root / "hydra"
    log = logs / f"export-{root.name}.log"
    command = [sys.executable, "run_export.py", f"checkpoint.path={checkpoint}", f"model.size={size}",
               f"export.root={root}", f"hydra.run.dir={run_dir}", *overrides]
    run = run_measured(command, log)
    if run.returncode:
        raise BenchError(f"exporting variant {name!r} failed (exit {run.returncode}): {_failure(log)}  [log: {log}]")
    record = json.loads((run_dir / "exportkit_result.json").read_text())
    return {"variant": name, "model_size": size, "overrides": list(overrides), "version_path": record["version_path"],
            "wall_s": run.wall_s, "peak_rss_mib": run.peak_rss_mib, "parent_rss_mib": run.parent_rss_mib}


def export_all(plan: Plan, checkpoint: Path, size: int, console: Console) -> dict[str, dict[str, Any]]:
    exports = {}
    for name, overrides in plan.variants.items():
        with console.status(escape(f"exporting {name}: run_export.py {' '.join(overrides)}…")):
            exports[name] = export_variant(name, overrides, checkpoint=checkpoint, size=size,
                                           root=plan.work / "exports" / slug(name), logs=plan.work / "logs")
        console.print(f"[green]✓[/] exported {escape(name)} → {exports[name]['version_path']}  "
                      f"[dim]{exports[name]['wall_s']:.1f}s, peak RSS {exports[name]['peak_rss_mib']:.0f} MiB[/]")
    return exports


def measure_export_cost(plan: Plan, done: Mapping[str, Mapping[str, Any]], size: int | None,
                        console: Console, *, checkpoint: str | None = None) -> list[dict[str, Any]]:
    """Each variant's export cost at the other ``--export-cost-sizes`` (from ``checkpoint``, else a fresh
    one per size); the exports are then removed."""
    costs = [dict(record) for record in done.values()]
    for cost_size in (s for s in plan.export_cost_sizes if s != size):
        model_dir = Path(checkpoint).resolve() if checkpoint else fresh_checkpoint(plan.work, cost_size, console)
        for name, overrides in plan.variants.items():
            root = plan.work / "export_cost" / f"{slug(name)}-{cost_size}"
            with console.status(escape(f"export cost: {name} at ResNet-{cost_size}…")):
                costs.append(export_variant(name, overrides, checkpoint=model_dir, size=cost_size, root=root,
                                            logs=plan.work / "logs"))
            shutil.rmtree(root, ignore_errors=True)
            console.print(f"[green]✓[/] export cost {escape(name)} ResNet-{cost_size}: "
                          f"{costs[-1]['wall_s']:.1f}s, peak RSS {costs[-1]['peak_rss_mib']:.0f} MiB")
    return costs


def smooth_jpegs(count: int, *, size: int = IMAGE_SIZE, seed: int = 1) -> list[bytes]:
    """``count`` different smooth photos-like JPEGs at the input size (quality 90), made with PIL."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:size, 0:size]
    jpegs = []
    for _ in range(count):
        channels = [127 + 100 * np.sin(x / rng.uniform(5, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(5, 40))
                    for _ in range(3)]
        pixels = np.clip(np.stack(channels, -1) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def read_metadata(version: Path) -> dict[str, Any]:
    path = version / "assets.extra" / "export_metadata.json"
    if not path.is_file():
        raise UsageError(f"{version} has no assets.extra/export_metadata.json: is it an exportkit export?")
    return json.loads(path.read_text())


@dataclass
class Worker:
    """The parent's handle on one contender's process."""

    name: str
    spec: dict[str, Any]
    description: str
    process: Any = None
    conn: Any = None
    loaded: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no memory shared with the parent
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=serving_workers.worker_main, args=(child_end, self.spec), daemon=True)
        self.process.start()
        child_end.close()
        self.loaded = self.receive()

    def call(self, *command: Any) -> Any:
        self.conn.send(command)
        return self.receive()

    def receive(self) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise BenchError(f"{self.name}: the worker died (exit {self.process.exitcode})  [log: {self.spec['log']}]") from None
        if status == "error":
            raise BenchError(f"{self.name}: {payload}  [log: {self.spec['log']}]")
        return payload

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.terminate()


def convert_for_openvino(metadata: Mapping[str, Any], jpegs: Sequence[bytes], work: Path,
                         console: Console) -> dict[str, Any]:
    """Float batch, TF reference answers and OpenVINO IR from the baseline's checkpoint and config."""
    config = metadata["config"]
    job = {
        "checkpoint": metadata["checkpoint"]["prefix"],
        "model": {**config["model"], "data_format": "channels_last"},  # OpenVINO is fed NHWC
        "preprocessing": config["preprocessing"],
        "head": config["head"],
        "jpegs": list(jpegs),
        "out": str(work / "openvino"),
        "log": str(work / "logs" / "openvino-convert.log"),
    }
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=serving_workers.convert_main, args=(child_end, job))
    with console.status("freezing the network and converting it to OpenVINO IR…"):
        process.start()
        child_end.close()
        try:
            status, payload = parent_end.recv()
        except EOFError:
            status, payload = "error", f"the conversion process died (exit {process.exitcode})"
        process.join()
    if status == "error":
        raise BenchError(f"OpenVINO conversion failed: {payload}  [log: {job['log']}]")
    console.print(f"[green]✓[/] OpenVINO IR {payload['xml']} from {job['checkpoint']}")
    return payload


def tensorflow_workers(versions: Mapping[str, Path], exports: Mapping[str, Mapping[str, Any]],
                       jpegs: Sequence[bytes], plan: Plan) -> list[Worker]:
    workers = []
    for name, version in versions.items():
        metadata = read_metadata(version)
        signature = metadata.get("config", {}).get("signature", {}).get("name", "predict_images")
        origin = (f"run_export.py {' '.join(exports[name]['overrides'])}" if name in exports
                  else f"exported version {version}")
        spec = {"kind": "tensorflow", "path": str(version), "signature": signature, "jpegs": list(jpegs),
                "batch_sizes": plan.batch_sizes, "log": str(plan.work / "logs" / f"worker-{slug(name)}.log")}
        workers.append(Worker(name, spec, f"{origin}; TF Serving's loader, JPEG input"))
    return workers


def openvino_workers(converted: Mapping[str, Any], plan: Plan) -> list[Worker]:
    workers = []
    for name, precision in OPENVINO_PRECISIONS.items():
        if precision not in plan.openvino_precisions:
            continue
        spec = {"kind": "openvino", "xml": converted["xml"], "float_batch": converted["float_batch"],
                "precision": precision, "hint": OPENVINO_HINT, "batch_sizes": plan.batch_sizes,
                "log": str(plan.work / "logs" / f"worker-{slug(name)}.log")}
        workers.append(Worker(name, spec, "IR of the frozen network (same checkpoint), one synchronous request, "
                                          "dynamic batch, float NHWC input"))
    return workers


def start_workers(workers: Sequence[Worker], console: Console) -> None:
    """One at a time, so each load is timed on a quiet machine; then one warmup call per batch size."""
    for worker in workers:
        with console.status(escape(f"loading {worker.name}…")):
            worker.start()
            worker.loaded.update(worker.call("warmup"))
        console.print(f"[green]✓[/] loaded {escape(worker.name)}  [dim]{worker.loaded['load_s']:.2f}s, "
                      f"warmup {worker.loaded['warmup_s']:.2f}s, "
                      f"peak RSS {worker.loaded['memory']['peak_rss_mib']:.0f} MiB[/]")


def run_rounds(workers: Sequence[Worker], plan: Plan, *, rounds: int, requests: int,
               console: Console) -> dict[tuple[str, int], list[float]]:
    """Round-robin: every round, every batch size, every contender takes one turn of ``requests``.

    The order rotates each round, so no contender always follows the same one,
    and drift over the run falls on all of them alike.
    """
    latencies: dict[tuple[str, int], list[float]] = {(w.name, b): [] for w in workers for b in plan.batch_sizes}
    with console.status("timing…") as status:
        for number in range(rounds):
            order = list(workers[number % len(workers):]) + list(workers[:number % len(workers)])
            for batch_size in plan.batch_sizes:
                for worker in order:
                    status.update(escape(f"round {number + 1}/{rounds}, batch {batch_size}: {worker.name}"))
                    time.sleep(SETTLE_S)
                    latencies[worker.name, batch_size] += worker.call("run", batch_size, requests)
    return latencies


def agreement(top1: Mapping[str, list], reference: Mapping[str, list] | None) -> dict[str, float | None]:
    """How often the top-1 class matches the TF f32 reference, and how far its probability is off."""
    if not reference:
        return {"top1_agreement": None, "top1_probability_max_rel_diff": None}
    pairs = list(zip(top1["classes"], reference["classes"]))
    # Relative: random weights give near-uniform probabilities (about 1/1001), where an absolute
    # difference says nothing.
    diffs = [abs(a - b) / b if b else abs(a) for a, b in zip(top1["probabilities"], reference["probabilities"])]
    return {"top1_agreement": sum(a == b for a, b in pairs) / len(pairs), "top1_probability_max_rel_diff": max(diffs)}


def reload_peaks(workers: Sequence[Worker], console: Console) -> dict[str, dict[str, float]]:
    """Each contender's process loads its servable a second time and warms it up, as TF Serving
    loads a new version beside the one it serves; one at a time."""
    peaks = {}
    for worker in workers:
        with console.status(escape(f"reload peak: {worker.name}…")):
            peaks[worker.name] = worker.call("reload")
    return peaks


def contender_record(worker: Worker, after: Mapping[str, float], reference: Mapping[str, list] | None,
                     export: Mapping[str, Any] | None, reload: Mapping[str, float] | None = None) -> dict[str, Any]:
    loaded = worker.loaded
    return {
        "kind": worker.spec["kind"],
        "description": f"{worker.description}; {_runtime_text(loaded['info'])}",
        "load_s": loaded["load_s"],
        "warmup_s": loaded["warmup_s"],
        "rss_after_load_mib": loaded["memory"]["rss_mib"],
        "peak_rss_after_load_mib": loaded["memory"]["peak_rss_mib"],
        "rss_after_serving_mib": after["rss_mib"],
        "peak_rss_after_serving_mib": after["peak_rss_mib"],
        "peak_rss_reload_mib": reload["peak_rss_mib"] if reload else None,
        **agreement(loaded["top1"], reference),
        "runtime": loaded["info"],
        "export": dict(export) if export else None,
    }


def _runtime_text(info: Mapping[str, Any]) -> str:
    return ", ".join(str(value) if key == "runtime" else f"{key} {value}" for key, value in info.items())


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict[str, Any]:
    try:
        return cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        return cpu_info("")


def build_result(argv: Sequence[str], plan: Plan, args: argparse.Namespace, checkpoint: str,
                 contenders: Mapping[str, dict[str, Any]], latencies: Mapping[tuple[str, int], list[float]],
                 export_cost: list[dict[str, Any]], reference: Mapping[str, list] | None) -> dict[str, Any]:
    baseline = next(iter([*plan.variants, *plan.versions]), None)
    rows = [{"contender": name, "batch_size": size, **latency_stats(values, size),
             "latencies_ms": [round(1000 * value, 3) for value in values]}
            for (name, size), values in latencies.items()]
    rows.sort(key=lambda row: (row["batch_size"], list(contenders).index(row["contender"])))
    add_ratios(rows, baseline=baseline)
    notes = [] if not contenders else [f"p99 is over {args.rounds * args.requests} requests per contender and batch size.",
             "OpenVINO is fed preprocessed floats (no JPEG decode); the TF contenders decode JPEGs in the graph.",
             "load s is the loader's call (TF: loader.load; OpenVINO: read_model + compile_model); the first call "
             "of each batch size, where both runtimes still prepare kernels for the shape, is warmup s."]
    notes += plan.notes
    if contenders and plan.reload:
        notes.append(RELOAD_NOTE)
    if args.size != 50 and contenders:
        notes.append(f"The targets are stated for ResNet-50; this run used ResNet-{args.size}.")
    return {
        "command": "python benchmarks/serving.py " + shlex.join(argv),
        "cpu": machine(),
        "versions": {"tensorflow": _package_version("tensorflow-cpu", "tensorflow"),
                     "openvino": _package_version("openvino") if plan.openvino else None,
                     "python": platform.python_version()},
        "settings": {"model_size": args.size, "checkpoint": checkpoint, "batch_sizes": plan.batch_sizes,
                     "rounds": args.rounds, "requests_per_turn": args.requests, "baseline": baseline,
                     "image_size": IMAGE_SIZE, "openvino_hint": OPENVINO_HINT if plan.openvino else None,
                     "onednn": plan.onednn, "tf_runtime": plan.tf_runtime.describe(),
                     "isa_cap": {key: os.environ[key] for key in ISA_CAPS if key in os.environ}},
        "contenders": contenders,
        "reference_top1_classes": sorted(set(reference["classes"])) if reference else None,
        "results": rows,
        "targets": check_targets(rows),
        "export_cost": export_cost,
        "notes": notes,
    }


def _rates_table(result: Mapping[str, Any]) -> Table:
    table = Table(title=f"Serving benchmark, ResNet-{result['settings']['model_size']} "
                        f"({result['cpu']['model']}, {result['cpu']['logical_cpus']} CPUs)", title_justify="left")
    for column in TERMINAL_RATES:
        table.add_column(column, justify="left" if column == "contender" else "right", no_wrap=column == "contender")
    previous = None
    for row in result["results"]:
        if previous is not None and row["batch_size"] != previous:
            table.add_section()
        previous = row["batch_size"]
        cells = dict(zip(RESULT_COLUMNS, result_cells(row, result["contenders"][row["contender"]])))
        table.add_row(*(cells[column] for column in TERMINAL_RATES))
    return table


def _contenders_table(result: Mapping[str, Any]) -> Table:
    table = Table(title="Load and memory (VmHWM of each contender's process)", title_justify="left")
    table.add_column("contender", no_wrap=True)
    for column in (*TERMINAL_CONTENDER, "top-1 = TF f32", "top-1 p rel. diff"):
        table.add_column(column.replace(" MiB", ", MiB"), justify="right")
    first_rows = {row["contender"]: row for row in reversed(result["results"])}
    for name, contender in result["contenders"].items():
        cells = dict(zip(RESULT_COLUMNS, result_cells(first_rows[name], contender)))
        agreement, diff = contender["top1_agreement"], contender["top1_probability_max_rel_diff"]
        table.add_row(name, *(cells[column] for column in TERMINAL_CONTENDER),
                      "–" if agreement is None else f"{agreement:.0%}", "–" if diff is None else f"{diff:.1e}")
    return table


def print_result(result: Mapping[str, Any], console: Console) -> None:
    if result["contenders"]:
        console.print(_rates_table(result))
        console.print(_contenders_table(result))
    for check in result["targets"]:
        console.print(("[green]✓[/] " if check["met"] else "[red]✗[/] ") + target_line(check))
    agreement_f32 = result["contenders"].get(OPENVINO_F32, {}).get("top1_agreement")
    if agreement_f32 is not None and agreement_f32 < 1:
        console.print(f"[yellow]![/] {OPENVINO_F32}: top-1 agrees with TF f32 on only {agreement_f32:.0%} of the images")


def benchmark(argv: Sequence[str], console: Console) -> tuple[dict[str, Any], Path]:
    """The whole run; returns the result and where to write it."""
    args = parse_args(argv)
    plan = make_plan(args)
    use_child_environment(plan)
    if plan.export_cost_only:
        export_cost = measure_export_cost(plan, {}, None, console, checkpoint=args.checkpoint)
        return build_result(argv, plan, args, args.checkpoint or "fresh, per size", {}, {}, export_cost, None), plan.out
    if args.checkpoint:
        checkpoint: Path | str = Path(args.checkpoint).resolve()
    else:  # only exports need one: --versions alone are benchmarked as they are
        checkpoint = fresh_checkpoint(plan.work, args.size, console) if plan.variants else "–"
    exports = export_all(plan, checkpoint, args.size, console)
    export_cost = measure_export_cost(plan, exports, args.size, console)
    versions = {**{name: Path(e["version_path"]) for name, e in exports.items()}, **plan.versions}
    jpegs = smooth_jpegs(max(plan.batch_sizes))
    workers = tensorflow_workers(versions, exports, jpegs, plan)
    reference = None
    if plan.openvino:
        converted = convert_for_openvino(read_metadata(next(iter(versions.values()))), jpegs, plan.work, console)
        reference = converted["reference_top1"]
        workers += openvino_workers(converted, plan)
    try:
        start_workers(workers, console)
        latencies = run_rounds(workers, plan, rounds=args.rounds, requests=args.requests, console=console)
        after = {w.name: w.call("memory") for w in workers}
        # Last, as it leaves each process's peak at two loaded copies.
        reloads = reload_peaks(workers, console) if plan.reload else {}
        contenders = {w.name: contender_record(w, after[w.name], reference, exports.get(w.name), reloads.get(w.name))
                      for w in workers}
    finally:
        for worker in workers:
            worker.stop()
    return build_result(argv, plan, args, str(checkpoint), contenders, latencies, export_cost,
                        reference), plan.out


def write_result(result: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "serving_benchmark.json", out / "serving_benchmark.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(highlight=False)
    try:
        result, out = benchmark(argv, console)
    except (UsageError, BenchError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]error:[/] interrupted")
        return 130
    print_result(result, console)
    for path in write_result(result, out):
        console.print(f"[dim]{path}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
