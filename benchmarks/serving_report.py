"""The serving benchmark's arithmetic and its report: no TensorFlow, no OpenVINO.

Everything here is a pure function of text or of the result dict that
``benchmarks/serving.py`` builds, so the tests exercise it without timing
anything: CPU flags from /proc/cpuinfo, latency statistics, ratios, the
issue's targets, and the markdown report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from exportkit import runtime

OPENVINO_F32 = "openvino f32"
OPENVINO_BF16 = "openvino bf16"


class UsageError(Exception):
    """A mistake in the command line or the environment: one line, no traceback."""


@dataclass(frozen=True)
class Target:
    """One of issue 7's goals: ``contender``'s ``metric`` over ``reference``'s, at ``batch_size``."""

    contender: str
    reference: str
    metric: str  # "images_per_s" (higher is better) or "p50_ms" (lower is better)
    batch_size: int
    bound: float

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "images_per_s"

    def describe(self) -> str:
        what = "throughput" if self.higher_is_better else "p50 latency"
        return f"{self.contender} vs {self.reference}, {what} at batch {self.batch_size}"


# Issue 7's targets, for ResNet-50 (they are checked whatever the size, and
# the report says which size was run).
TARGETS = (
    Target("exportkit fp32", "notebook", "images_per_s", 32, 1.1),
    Target("exportkit fp32", OPENVINO_F32, "images_per_s", 32, 0.9),
    Target("exportkit bf16", OPENVINO_BF16, "images_per_s", 32, 0.85),
    Target("exportkit bf16", OPENVINO_BF16, "p50_ms", 1, 1.2),
)


def parse_named(text: str, flag: str) -> tuple[str, str]:
    """``NAME=VALUE`` from ``--variant``/``--versions``; only the first ``=`` splits."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"{flag} wants NAME=VALUE (e.g. {flag} 'fp32=preprocessing=notebook'), got {text!r}")
    return name.strip(), value.strip()


def cpu_info(cpuinfo: str) -> dict[str, Any]:
    """Model name, logical CPU count, CPU class and the runtime-relevant flags from /proc/cpuinfo text."""
    info = runtime.parse_cpuinfo(cpuinfo).record()
    info["amx"] = info["amx_bf16"] and info["amx_tile"]
    return info


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(latencies_s: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Throughput as total images over total request time; per-request p50/p99."""
    total = sum(latencies_s)
    return {
        "requests": len(latencies_s),
        "images_per_s": batch_size * len(latencies_s) / total if total > 0 else math.nan,
        "p50_ms": 1000 * percentile(latencies_s, 50),
        "p99_ms": 1000 * percentile(latencies_s, 99),
    }


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not reference or math.isnan(reference):
        return None
    return value / reference


def add_ratios(rows: list[dict[str, Any]], *, baseline: str | None) -> list[dict[str, Any]]:
    """Each row's throughput over the baseline's and OpenVINO's at the same batch size."""
    by_key = {(row["contender"], row["batch_size"]): row["images_per_s"] for row in rows}
    references = {"ratio_baseline": baseline, "ratio_openvino_f32": OPENVINO_F32, "ratio_openvino_bf16": OPENVINO_BF16}
    for row in rows:
        for column, reference in references.items():
            row[column] = _ratio(row["images_per_s"], by_key.get((reference, row["batch_size"])))
    return rows


def check_targets(rows: Iterable[Mapping[str, Any]], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """Every target whose two contenders and batch size were run, with its ratio and verdict."""
    by_key = {(row["contender"], row["batch_size"]): row for row in rows}
    checked = []
    for target in targets:
        mine = by_key.get((target.contender, target.batch_size))
        theirs = by_key.get((target.reference, target.batch_size))
        if mine is None or theirs is None:
            continue
        ratio = _ratio(mine[target.metric], theirs[target.metric])
        met = ratio is not None and (ratio >= target.bound if target.higher_is_better else ratio <= target.bound)
        checked.append({"target": target.describe(), "ratio": ratio, "bound": target.bound,
                        "comparison": "≥" if target.higher_is_better else "≤", "met": met})
    return checked


def target_line(check: Mapping[str, Any]) -> str:
    ratio = "n/a" if check["ratio"] is None else f"{check['ratio']:.2f}x"
    verdict = "met" if check["met"] else "NOT met"
    return f"{check['target']}: {ratio} (target {check['comparison']} {check['bound']}x): {verdict}"


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


RESULT_COLUMNS = ("contender", "batch", "images/s", "p50 ms", "p99 ms", "load s", "warmup s",
                  "peak RSS after load MiB", "peak RSS after serving MiB", "peak RSS on reload MiB",
                  "× baseline", "× OV f32", "× OV bf16")


def result_cells(row: Mapping[str, Any], contender: Mapping[str, Any]) -> list[str]:
    """One row of the results table as text; the terminal table and the markdown share it."""
    return [
        row["contender"], str(row["batch_size"]), _fmt(row["images_per_s"]), _fmt(row["p50_ms"]),
        _fmt(row["p99_ms"]), _fmt(contender.get("load_s"), ".2f"), _fmt(contender.get("warmup_s"), ".2f"),
        _fmt(contender.get("peak_rss_after_load_mib"), ".0f"), _fmt(contender.get("peak_rss_after_serving_mib"), ".0f"),
        _fmt(contender.get("peak_rss_reload_mib"), ".0f"),
        _fmt(row.get("ratio_baseline"), ".2f", "x"), _fmt(row.get("ratio_openvino_f32"), ".2f", "x"),
        _fmt(row.get("ratio_openvino_bf16"), ".2f", "x"),
    ]


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def _heading(result: Mapping[str, Any]) -> list[str]:
    cpu, versions, settings = result["cpu"], result["versions"], result["settings"]
    yes = {True: "yes", False: "no"}
    title = f"# Serving benchmark: ResNet-{settings['model_size']}" if result["contenders"] else "# Export cost"
    return [
        title,
        "",
        f"- CPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, class {cpu.get('class', '–')}; AMX: {yes[cpu['amx']]} "
        f"(amx_bf16 {yes[cpu['amx_bf16']]}, amx_tile {yes[cpu['amx_tile']]}); AVX512_BF16: {yes[cpu['avx512_bf16']]}",
        f"- TF runtime of the TF contenders: {settings.get('tf_runtime') or '–'}"
        + "".join(f"; {key}={value}" for key, value in (settings.get("isa_cap") or {}).items()),
        f"- TensorFlow {versions.get('tensorflow') or '–'}, OpenVINO {versions.get('openvino') or 'not run'}, "
        f"Python {versions.get('python')}",
        f"- command: `{result['command']}`",
        f"- checkpoint: {settings['checkpoint']}",
    ] + ([] if not result["contenders"] else [
        f"- {settings['rounds']} rounds x {settings['requests_per_turn']} requests per contender and batch size, "
        f"in turns; baseline: {settings['baseline'] or '–'}; TF inputs: 224x224 JPEGs (decoded in the graph); "
        f"OpenVINO inputs: the same images as preprocessed float NHWC",
    ])


def _contender_lines(result: Mapping[str, Any]) -> list[str]:
    classes = result.get("reference_top1_classes")
    lines = [] if not classes else [
        f"Top-1 agreement is with TF f32 on the same float batch, whose top-1 spans {len(classes)} "
        f"distinct class{'es' if len(classes) > 1 else ''}{' (random weights: a weak check)' if len(classes) < 3 else ''}.",
        ""]
    for name, contender in result["contenders"].items():
        agreement, diff = contender.get("top1_agreement"), contender.get("top1_probability_max_rel_diff")
        agree = "" if agreement is None else f"; top-1 agrees with TF f32 on {agreement:.0%} of the images"
        agree += "" if diff is None else f", its probability within {diff:.1e} (relative)"
        lines.append(f"- {name}: {contender['description']}{agree}")
    return lines


RELOAD_NOTE = ("peak RSS on reload is each contender's process after it loaded and warmed up a second copy "
               "of its servable beside the first, as TF Serving loads a new version before it unloads the "
               "old one: what a server needs to roll a version out.")


def _export_cost_lines(result: Mapping[str, Any]) -> list[str]:
    costs = result.get("export_cost") or []
    if not costs:
        return []
    rows = [[cost["variant"], str(cost["model_size"]), _fmt(cost["wall_s"], ".1f"), _fmt(cost["peak_rss_mib"], ".0f")]
            for cost in costs]
    return ["", "## Export cost (`run_export.py` in a subprocess)", "",
            *_markdown_table(("variant", "ResNet", "wall s", "peak RSS MiB"), rows), "",
            "Peak RSS is the export process's own (`ru_maxrss` from `wait4`: the largest resident set it "
            "reached, its children's included)."]


def render_markdown(result: Mapping[str, Any]) -> str:
    """The report: machine and versions, contenders, results with ratios, targets, export cost."""
    rows = [result_cells(row, result["contenders"][row["contender"]]) for row in result["results"]]
    lines = _heading(result)
    if result["contenders"]:
        lines += ["", "## Contenders", "", *_contender_lines(result),
                  "", "## Results", "", *_markdown_table(RESULT_COLUMNS, rows)]
    if result.get("targets"):
        lines += ["", "## Targets", "", *(f"- {target_line(check)}" for check in result["targets"])]
    lines += _export_cost_lines(result)
    for note in result.get("notes", []):
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"
