"""Where an export's peak RSS comes from: one ``run_export.py`` run, in this process,
with every stage's resident memory recorded (issue 18).

    .venv/bin/python benchmarks/export_memory.py checkpoint.path=build/mem/checkpoints/resnet152 model.size=152
    .venv/bin/python benchmarks/export_memory.py --json build/mem/stages.json checkpoint.path=... export.precision=bf16

Every argument but ``--json PATH`` is a ``run_export.py`` override. Each traced call
(the export's stages and the graph rewrites inside them) prints the RSS before it,
its own peak (VmHWM, reset to the current RSS as it starts, through
``/proc/self/clear_refs``) and the RSS after it, so a stage's peak is its own and
not an earlier one's. Nested calls are indented. The last line is the process's
peak over the whole run (the largest VmHWM read between resets): what
``benchmarks/serving.py``'s export cost reports for the same overrides, give or
take the few MiB of the tracing itself.
"""

from __future__ import annotations

import functools
import json
import runpy
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving_workers import memory_mib  # noqa: E402

# (module, function) pairs traced: the export's stages, then what they call.
TRACED = (
    ("exportkit.export", "build_serving_graph"),
    ("exportkit.export", "_restore"),
    ("exportkit.export", "_answers"),
    ("exportkit.export", "_optimize"),
    ("exportkit.optimize", "freeze"),
    ("exportkit.optimize", "fold_batch_norms"),
    ("exportkit.optimize", "_fold_batch_norms"),
    ("exportkit.optimize", "fuse_residual_adds"),
    ("exportkit.optimize", "scale_shift_batch_norms"),
    ("exportkit.optimize", "_grappler"),
    ("exportkit.optimize", "split_weights"),
    ("exportkit.export", "_write"),
    ("exportkit.export", "_write_assets_extra"),
    ("exportkit.export", "_verify"),
    ("exportkit.export", "_bf16_gate"),
)


def reset_peak() -> None:
    """VmHWM back to the current RSS (Linux 4.0+), so the next peak read is from here on."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class StageTrace:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.depth = 0
        self.overall_mib = 0.0  # the resets clear VmHWM (and so ru_maxrss): the peak is kept here

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            before = memory_mib()["rss_mib"]
            # An enclosing call's peak must survive the reset: fold it into the enclosing record first.
            peak_so_far = memory_mib()["peak_rss_mib"]
            self.overall_mib = max(self.overall_mib, peak_so_far)
            for record in self.records:
                if record.get("open"):
                    record["peak_mib"] = max(record["peak_mib"], peak_so_far)
            reset_peak()
            record = {"stage": name, "depth": self.depth, "before_mib": before, "peak_mib": before, "open": True}
            self.records.append(record)
            self.depth += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.depth -= 1
                now = memory_mib()
                record["peak_mib"] = max(record["peak_mib"], now["peak_rss_mib"])
                self.overall_mib = max(self.overall_mib, now["peak_rss_mib"])
                record["after_mib"] = now["rss_mib"]
                del record["open"]
                for other in self.records:
                    if other.get("open"):
                        other["peak_mib"] = max(other["peak_mib"], record["peak_mib"])
                print(f"[memory] {'  ' * record['depth']}{name}: before {before:.0f} MiB, peak {record['peak_mib']:.0f}, "
                      f"after {record['after_mib']:.0f}", file=sys.stderr, flush=True)

        return traced

    def install(self) -> None:
        import importlib

        for module_name, attribute in TRACED:
            module = importlib.import_module(module_name)
            if not hasattr(module, attribute):
                continue  # renamed since: traced no more
            setattr(module, attribute, self.wrap(attribute, getattr(module, attribute)))


def main(argv: list[str]) -> int:
    out = None
    if "--json" in argv:
        at = argv.index("--json")
        out, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2:]
    trace = StageTrace()
    trace.install()
    sys.argv = [str(REPO / "run_export.py"), *argv]
    code = 0
    try:
        runpy.run_path(str(REPO / "run_export.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    peak = max(trace.overall_mib, memory_mib()["peak_rss_mib"])
    print(f"[memory] process peak: {peak:.0f} MiB", file=sys.stderr, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"overrides": argv, "stages": trace.records, "peak_rss_mib": peak}, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
