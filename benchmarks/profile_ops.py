"""Where a served version spends its time: TF's own step trace, summed by kernel.

    .venv/bin/python benchmarks/profile_ops.py exports/resnet/1 --batch 1 --batch 32

Loads the version as TF Serving does (fresh graph, default session options,
``serve`` tag), runs JPEG batches at the input size once to warm up, then
traces ``--runs`` runs with RunOptions(FULL_TRACE) and sums each kernel's time.
Kernel names are what actually ran after grappler and oneDNN's rewrites
(``_MklNativeFusedConv2D`` is a convolution with its batch norm or bias and ReLU
fused in; oneDNN's layout reorders happen inside those kernels). Times are
summed over the two inter-op threads' kernels, so shares, not wall time, are
the point.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from exportkit.verify import input_size_jpegs, run_signature  # noqa: E402

v1 = tf.compat.v1

# Kernel name -> what it is, for the summary line.
GROUPS = {
    "convolution": ("Conv2D",),
    "batch norms (block inputs; as scale and shift)": ("FusedBatchNorm", "DepthwiseConv2dNative"),
    "JPEG decode and preprocessing": ("DecodeJpeg", "ExtractJpegShape", "DecodeRaw", "Assert", "StringFormat",
                                      "Substr", "TensorList", "While", "Sub", "Mul", "Cast", "Slice"),
    "residual additions": ("AddV2", "Add"),
}


def _group(kernel: str) -> str:
    for group, keys in GROUPS.items():
        if any(key in kernel for key in keys):
            return group
    return "other"


def step_kernels(version: str, batch: int, runs: int = 1) -> list[list[tuple[str, float]]]:
    """For each of ``runs`` traced runs (after one untraced): (kernel, microseconds) per node that ran."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], version)
        signature = meta.signature_def["predict_images"]
        images = np.array(input_size_jpegs(224, batch), dtype=object)
        run_signature(sess, signature, {"images": images})
        feeds = {signature.inputs["images"].name: images}
        fetches = [t.name for t in signature.outputs.values()]
        traced = []
        for _ in range(runs):
            metadata = v1.RunMetadata()
            sess.run(fetches, feeds, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                     run_metadata=metadata)
            traced.append([(_kernel(node), node.all_end_rel_micros)
                           for device in metadata.step_stats.dev_stats for node in device.node_stats])
    return traced


def _kernel(node) -> str:
    label = node.timeline_label
    return label.split(" = ", 1)[1].split("(")[0] if " = " in label else node.node_name


def profile(version: str, batch: int, runs: int) -> collections.Counter:
    totals: collections.Counter = collections.Counter()
    for run in step_kernels(version, batch, runs):
        for kernel, micros in run:
            totals[kernel] += micros / runs
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version")
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 1 and 32)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    console = Console()
    for batch in args.batch or [1, 32]:
        totals = profile(args.version, batch, args.runs)
        whole = sum(totals.values())
        table = Table(title=f"{args.version}, batch {batch}: {whole / 1000:.0f} ms of kernel time per run",
                      title_justify="left")
        for column in ("kernel", "ms", "share"):
            table.add_column(column, justify="left" if column == "kernel" else "right")
        for kernel, micros in totals.most_common(args.top):
            table.add_row(kernel, f"{micros / 1000:.1f}", f"{micros / whole:.1%}")
        console.print(table)
        groups: collections.Counter = collections.Counter()
        for kernel, micros in totals.items():
            groups[_group(kernel)] += micros
        console.print("  " + "; ".join(f"{group} {micros / whole:.1%}" for group, micros in groups.most_common()))


if __name__ == "__main__":
    main()
