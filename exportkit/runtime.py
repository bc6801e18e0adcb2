"""The CPU runtime TensorFlow gives a process, and what follows from it.

TF 2.21 on Linux x86 runs its oneDNN kernels only where the CPU has one of
AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (``DefaultOneDnnPolicy`` in TF's
``util/port.cc``), unless ``TF_ENABLE_ONEDNN_OPTS`` says otherwise; TF Serving
is built on the same runtime. What depends on it:

- NCHW graphs: TF's own (Eigen) CPU kernels take only NHWC convolutions and
  pooling; oneDNN's take both.
- bf16: TF's bfloat16 rewrite is oneDNN's; it is native (fast) only with
  AVX512_BF16 or AMX, emulated (slower than fp32) on other CPUs with oneDNN on.

:func:`predict` says what a process with a given environment will get, without
importing TensorFlow (``python -m exportkit.runtime``, ``make test`` and the
serving benchmark use it); :func:`current` asks TensorFlow what this process has. Every session that runs
an exported graph in exportkit takes :func:`session_config`.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"
# TF 2.21's DefaultOneDnnPolicy on Linux: oneDNN on by default with any of these.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags that tell the CPU classes apart, as /proc/cpuinfo spells them.
RECORDED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class Cpu:
    model: str
    logical_cpus: int
    flags: frozenset[str]

    @property
    def cpu_class(self) -> str:
        """The classes that behave differently under TF: docs/performance.md's per-class table uses these names."""
        if {"amx_tile", "amx_bf16"} <= self.flags:
            return "AMX"
        if "avx512_bf16" in self.flags:
            return "AVX-512 with BF16"
        if "avx512_vnni" in self.flags:
            return "AVX-512 with VNNI"
        if "avx512f" in self.flags:
            return "AVX-512"
        if "avx2" in self.flags:
            return "AVX2"
        return "no AVX2" if self.flags else "unknown"

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    @property
    def onednn_by_default(self) -> bool:
        return any(flag in self.flags for flag in ONEDNN_DEFAULT_FLAGS)

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "logical_cpus": self.logical_cpus, "class": self.cpu_class,
                **{flag: flag in self.flags for flag in RECORDED_FLAGS}}


def parse_cpuinfo(text: str) -> Cpu:
    """The first processor's model name and flags, and the count of processors, from /proc/cpuinfo text."""
    model, flags, count = "unknown", None, 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return Cpu(model=model, logical_cpus=count, flags=flags or frozenset())


def this_cpu() -> Cpu:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: TF's oneDNN default is then not the one modelled here
        return Cpu(model="unknown", logical_cpus=os.cpu_count() or 0, flags=frozenset())


def onednn_request(environ: Mapping[str, str] = os.environ) -> bool | None:
    """What TF_ENABLE_ONEDNN_OPTS asks for, read as TF reads it; None when unset or not a boolean."""
    value = environ.get(ONEDNN_VAR, "").strip().lower()
    return {"1": True, "true": True, "0": False, "false": False}.get(value)


@dataclass(frozen=True)
class Runtime:
    """oneDNN on or off in a process, why, and what bf16 can be there."""

    cpu: Cpu
    onednn: bool
    source: str  # why oneDNN is on or off
    requested: bool | None = None  # what TF_ENABLE_ONEDNN_OPTS asked for, if anything

    @property
    def bf16(self) -> str:
        """native (AVX512_BF16/AMX), emulated (oneDNN without them) or unavailable (oneDNN off)."""
        if not self.onednn:
            return "unavailable"
        return "native" if self.cpu.native_bf16 else "emulated"

    @property
    def nchw_kernels(self) -> bool:
        """Whether this process's CPU kernels take NCHW convolutions and pooling (oneDNN's do, Eigen's don't)."""
        return self.onednn

    def describe(self) -> str:
        state = "on" if self.onednn else "off"
        return f"oneDNN {state} ({self.source}); {self.cpu.cpu_class} CPU; bf16 {self.bf16}"

    def record(self) -> dict[str, Any]:
        return {"onednn": self.onednn, "source": self.source, "requested": self.requested, "bf16": self.bf16,
                "cpu": self.cpu.record()}


def _source(requested: bool | None, cpu: Cpu) -> str:
    if requested is not None:
        return f"{ONEDNN_VAR}={int(requested)}"
    if cpu.onednn_by_default:
        found = [flag.upper() for flag in ONEDNN_DEFAULT_FLAGS if flag in cpu.flags]
        return f"TF's default with {', '.join(found)}"
    return "TF's default without AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX"


def predict(environ: Mapping[str, str] = os.environ, cpu: Cpu | None = None) -> Runtime:
    """The runtime TF 2.21 will give a process started with ``environ`` on ``cpu``; imports no TF."""
    cpu = cpu or this_cpu()
    requested = onednn_request(environ)
    onednn = cpu.onednn_by_default if requested is None else requested
    return Runtime(cpu=cpu, onednn=onednn, source=_source(requested, cpu), requested=requested)


@functools.lru_cache(maxsize=None)
def current() -> Runtime:
    """This process's runtime, as TensorFlow reports it (imports TF). TF settles it once per
    process, on first use, so it is read once."""
    from tensorflow.python.util import _pywrap_util_port

    predicted = predict()
    onednn = bool(_pywrap_util_port.IsMklEnabled())
    if onednn == predicted.onednn:
        return predicted
    # A TF build other than the one modelled (no oneDNN at all, another platform): TF's answer stands.
    return Runtime(cpu=predicted.cpu, onednn=onednn, requested=predicted.requested,
                   source=f"this TensorFlow build ({predicted.source} predicted otherwise)")


def session_config() -> Any:
    """A ConfigProto for sessions that run exported graphs in this process.

    Where oneDNN is off, grappler's CPU layout conversion runs NCHW graphs as
    NHWC (transposes at the edges), so a GPU-targeted or channels_first export
    still verifies here; where it is on, the graph runs as built.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.compat.v1.ConfigProto()
    if not current().nchw_kernels:
        config.graph_options.rewrite_options.cpu_layout_conversion = rewriter_config_pb2.RewriterConfig.NCHW_TO_NHWC
    return config


def session(graph: Any) -> Any:
    """A v1 Session on ``graph`` with :func:`session_config`."""
    import tensorflow as tf

    return tf.compat.v1.Session(graph=graph, config=session_config())


def main(argv: list[str] | None = None) -> int:
    """``python -m exportkit.runtime``: what TF will run here; ``--opposite`` prints the other setting (0 or 1)."""
    args = sys.argv[1:] if argv is None else argv
    runtime = predict()
    if args == ["--opposite"]:
        print(0 if runtime.onednn else 1)
        return 0
    if args:
        print("usage: python -m exportkit.runtime [--opposite]", file=sys.stderr)
        return 2
    cpu = runtime.cpu
    print(f"{cpu.model}, {cpu.logical_cpus} logical CPUs: {cpu.cpu_class}")
    print(runtime.describe())
    if not runtime.onednn:
        print(f"TF's own kernels: NHWC only, no bf16. {ONEDNN_VAR}=1 turns oneDNN on (see docs/troubleshooting.md).")
    print("flags: " + (" ".join(flag for flag in RECORDED_FLAGS if flag in cpu.flags) or "none of " + ", ".join(RECORDED_FLAGS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
