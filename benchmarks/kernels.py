"""Convolution kernels, TF against OpenVINO, and what this CPU's matrix units can give.

    .venv/bin/python benchmarks/kernels.py                    # after benchmarks/serving.py
    .venv/bin/python benchmarks/kernels.py --tf build/bench/exports/exportkit-fp32/resnet/1 --precision f32 --batch 32
    .venv/bin/python benchmarks/kernels.py --threads 1         # both runtimes on one core

Four measurements, each in its own process, one after another:

* **Rates.** A chain of 2048x2048 matmuls in TF (oneDNN), fp32 and bf16: about
  the most this machine's cores compute, for comparison with what the network
  reaches (its multiply-adds are counted from the convolutions' shapes).
* **TF.** The served version, loaded as TF Serving loads it, at ``--batch``:
  its p50 latency, then one more process with ``ONEDNN_VERBOSE=1`` whose last
  run gives each oneDNN primitive's own time. Two inter-op threads can run two
  convolutions at once (a block's shortcut and its first convolution), so the
  summed kernel time can exceed the wall time.
* **TF's network alone.** The frozen network the IR was converted from (float
  NHWC in, no JPEG decode), with the export's default rewrites and, for
  bf16, its bfloat16 rewrite, fed OpenVINO's float batch: TF's own time for
  exactly what OpenVINO computes.
* **OpenVINO.** The IR ``benchmarks/serving.py`` converted (``<work>/openvino``),
  compiled as the harness compiles it, at ``--precision``, with ``PERF_COUNT``:
  its p50 latency and each layer's time, fed the same preprocessed batch.

``--threads N`` runs both runtimes on N threads instead of their defaults (TF
Serving's defaults are TF's), to tell the kernels' own speed from what
spreading each one over the cores costs. Prints one table and writes
``kernels.json`` beside the IR. Timings are never part of a test.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# oneDNN's verbose line: onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,...,<shape>,<ms>
_CONV_SHAPE = re.compile(r"mb(\d+)_ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+)\D.*_iw\d+ow(\d+)kw(\d+)")


def _child(code: str, *args: str, env: dict | None = None) -> str:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment)
    if done.returncode:
        raise SystemExit(f"error: a measuring process failed: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout


RATES = """
import json, time, tensorflow as tf
v1 = tf.compat.v1
rates = {}
for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
    graph = tf.Graph()
    with graph.as_default():
        n = 2048
        a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), dtype)
        b = v1.Variable(tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]), dtype))
        x = v1.Variable(a)
        y = x
        for _ in range(8):
            y = tf.matmul(y, b) * tf.cast(0.01, dtype)
        total = tf.reduce_sum(tf.cast(y, tf.float32))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(2):
                sess.run(total)
            start = time.perf_counter()
            for _ in range(5):
                sess.run(total)
            rates[name] = 8 * 2 * n ** 3 * 5 / (time.perf_counter() - start) / 1e9
print(json.dumps(rates))
"""

# Every measuring child: warm up, mark where the timed runs start (the verbose TF run's
# primitives are read from there on), and report the p50.
P50 = """
import json, time, numpy as np


def p50_ms(run, runs):
    for _ in range(3):
        run()
    print("@@start", flush=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000
"""

TF_RUN = P50 + """
import sys, tensorflow as tf
from exportkit.verify import input_size_jpegs
v1 = tf.compat.v1
version, batch, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)  # 0: TF's default
graph = tf.Graph()
with graph.as_default(), v1.Session(graph=graph, config=config) as sess:
    meta = v1.saved_model.loader.load(sess, ["serve"], version)
    signature = meta.signature_def["predict_images"]
    feeds = {signature.inputs["images"].name: np.array(input_size_jpegs(224, batch), dtype=object)}
    fetches = [t.name for t in signature.outputs.values()]
    p50 = p50_ms(lambda: sess.run(fetches, feeds), runs)
print("@@" + json.dumps({"p50_ms": p50}))
"""

# The network alone, as the OpenVINO IR was converted from it (float NHWC in, the head out),
# with the export's own rewrites: TF's time without the JPEG decode, fed what OpenVINO is fed.
TF_NETWORK_RUN = P50 + """
import sys, tensorflow as tf
from tensorflow.core.framework import graph_pb2
from exportkit import optimize
v1 = tf.compat.v1
pb, batch_file, precision, batch, runs, threads = sys.argv[1:4] + [int(a) for a in sys.argv[4:7]]
config = v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
v1.Session(config=config).close()  # the process's thread pools take the first session's sizes, not grappler's
graph_def = graph_pb2.GraphDef.FromString(open(pb, "rb").read())
outputs = ["classes", "probabilities"]
built = tf.Graph()
with built.as_default():
    tf.graph_util.import_graph_def(graph_def, name="")
options = {"fold_batch_norm": True, "fuse_residual_add": True, "scale_shift_batch_norm": True,
           "precision": "bf16" if precision == "bf16" else "fp32"}  # the export's defaults
graph_def, _ = optimize.rewrite(graph_def, options=options, outputs=outputs,
                                addition_shapes=optimize.addition_input_shapes(built))
graph = tf.Graph()
with graph.as_default():
    tf.graph_util.import_graph_def(graph_def, name="")
images = np.load(batch_file)[:batch]
with v1.Session(graph=graph, config=config) as sess:
    fetches, feeds = [name + ":0" for name in outputs], {"images:0": images}
    p50 = p50_ms(lambda: sess.run(fetches, feeds), runs)
print("@@" + json.dumps({"p50_ms": p50}))
"""

OV_RUN = P50 + """
import collections, sys, openvino as ov
xml, batch_file, precision, batch, runs, threads = sys.argv[1:4] + [int(a) for a in sys.argv[4:7]]
core = ov.Core()
config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": "YES"}
compiled = core.compile_model(core.read_model(xml), "CPU", {**config, **({"INFERENCE_NUM_THREADS": threads} if threads else {})})
request = compiled.create_infer_request()
images = np.ascontiguousarray(np.load(batch_file)[:batch])
p50 = p50_ms(lambda: request.infer({0: images}), runs)
layers = collections.defaultdict(lambda: [0, 0.0])
for info in request.get_profiling_info():
    key = info.node_type + " " + info.exec_type
    layers[key][0] += 1
    layers[key][1] += info.real_time.total_seconds() * 1000  # the last inference's time
print("@@" + json.dumps({"p50_ms": p50, "layers": layers}))
"""


def _last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("@@{")][-1][2:])


def onednn_kernels(verbose: str) -> tuple[dict[str, list], int]:
    """oneDNN's verbose lines -> {"<kind> (<implementation>)": [count, summed ms]} and the
    convolutions' multiply-adds (from their shapes: mb, ic, oc, oh, ow, kh, kw)."""
    kernels: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
    macs = 0
    for line in verbose.splitlines():
        if not line.startswith("onednn_verbose,v1,primitive,exec"):
            continue
        fields = line.strip().split(",")
        kind, implementation = fields[5], fields[6]
        if kind == "convolution" and fields[-2].startswith("g"):  # grouped: the depthwise scale and shift
            kind = "depthwise convolution"
        elif kind == "convolution":
            mb, ic, oc, oh, kh, ow, kw = (int(g) for g in _CONV_SHAPE.search(fields[-2]).groups())
            macs += mb * ic * oc * oh * ow * kh * kw
            kind = "convolution 1x1" if kh == kw == 1 else "convolution"
        kernels[f"{kind} ({implementation})"][0] += 1
        kernels[f"{kind} ({implementation})"][1] += float(fields[-1])
    return dict(kernels), macs


def tensorflow_kernels(version: str, batch: int, runs: int, threads: int) -> dict:
    """p50 in a quiet process; the last run's oneDNN primitives in a verbose one."""
    timed = _last_json(_child(TF_RUN, version, str(batch), str(runs), str(threads)))
    verbose = _child(TF_RUN, version, str(batch), "1", str(threads), env={"ONEDNN_VERBOSE": "1"})
    kernels, macs = onednn_kernels(verbose.split("@@start", 1)[1])
    return {**timed, "kernels": kernels, "conv_gmac_per_image": macs / batch / 1e9}


def openvino_kernels(work: Path, precision: str, batch: int, runs: int, threads: int) -> dict:
    xml, images = work / "openvino" / "model.xml", work / "openvino" / "float_batch.npy"
    if not xml.exists():
        raise SystemExit(f"error: no OpenVINO IR at {xml}; run benchmarks/serving.py first (or pass --work-dir)")
    return _last_json(_child(OV_RUN, str(xml), str(images), precision, str(batch), str(runs), str(threads)))


def tensorflow_network(work: Path, precision: str, batch: int, runs: int, threads: int) -> dict:
    pb, images = work / "openvino" / "frozen.pb", work / "openvino" / "float_batch.npy"
    return _last_json(_child(TF_NETWORK_RUN, str(pb), str(images), precision, str(batch), str(runs), str(threads)))


def _conv_ms(kernels: dict, *, only_1x1: bool) -> tuple[int, float]:
    """(count, summed ms) of the convolutions, or of the 1x1 ones alone ("1x1" names
    oneDNN's and OpenVINO's 1x1 implementations, and TF's rows here)."""
    rows = [value for key, value in kernels.items()
            if key.lower().startswith("convolution") and ("1x1" in key or not only_1x1)]
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tf", default="build/bench/exports/exportkit-bf16/resnet/1",
                        help="a served version (default: the harness's bf16 export)")
    parser.add_argument("--precision", default="bf16", choices=("f32", "bf16"), help="OpenVINO's inference precision")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30, help="timed runs for the p50 (default 30)")
    parser.add_argument("--work-dir", default="build/bench", help="where benchmarks/serving.py left its OpenVINO IR")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both runtimes (TF's intra- and inter-op pools, OpenVINO's "
                             "INFERENCE_NUM_THREADS); default 0: each runtime's own default, as served")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    work = Path(args.work_dir)
    with console.status("matmul rates…"):
        rates = _last_json("@@" + _child(RATES).strip())
    with console.status(f"TF {args.tf} at batch {args.batch}…"):
        tf_result = tensorflow_kernels(args.tf, args.batch, args.runs, args.threads)
    with console.status(f"OpenVINO {args.precision} at batch {args.batch}…"):
        ov_result = openvino_kernels(work, args.precision, args.batch, args.runs, args.threads)
    with console.status(f"TF's network alone, {args.precision}, at batch {args.batch}…"):
        network = tensorflow_network(work, args.precision, args.batch, args.runs, args.threads)

    gflop = 2 * tf_result["conv_gmac_per_image"] * args.batch
    rate = rates["bf16" if args.precision == "bf16" else "fp32"]
    threads = f"{args.threads} thread{'s' * (args.threads > 1)}" if args.threads else "default threads"
    table = Table(title=f"batch {args.batch}, {threads}, ms per request ({args.precision}); "
                        f"convolutions {gflop:.2f} GFLOP per request", title_justify="left")
    for column in ("", "TF", "OpenVINO"):
        table.add_column(column, justify="left" if not column else "right")
    tf_1x1, ov_1x1 = (_conv_ms(r, only_1x1=True) for r in (tf_result["kernels"], ov_result["layers"]))
    tf_all, ov_all = (_conv_ms(r, only_1x1=False) for r in (tf_result["kernels"], ov_result["layers"]))
    rows = [
        ("p50 latency", tf_result["p50_ms"], ov_result["p50_ms"]),
        ("p50 latency, TF's network alone on OpenVINO's float input", network["p50_ms"], ov_result["p50_ms"]),
        (f"1x1 convolutions ({tf_1x1[0]} / {ov_1x1[0]}), summed", tf_1x1[1], ov_1x1[1]),
        (f"other convolutions ({tf_all[0] - tf_1x1[0]} / {ov_all[0] - ov_1x1[0]}), summed",
         tf_all[1] - tf_1x1[1], ov_all[1] - ov_1x1[1]),
        ("all convolutions, summed", tf_all[1], ov_all[1]),
        ("convolution time at the matmul rate", gflop / rate * 1000, gflop / rate * 1000),
    ]
    for label, ours, theirs in rows:
        table.add_row(label, f"{ours:.1f}", f"{theirs:.1f}")
    console.print(table)
    console.print(f"matmul rate (2048x2048 chain, TF/oneDNN): fp32 {rates['fp32']:.0f} GFLOP/s, "
                  f"bf16 {rates['bf16']:.0f} GFLOP/s")
    out = work / "openvino" / "kernels.json"
    out.write_text(json.dumps({"args": vars(args), "rates_gflops": rates, "tensorflow": tf_result,
                               "tensorflow_network_alone": network, "openvino": ov_result}, indent=2))
    console.print(str(out))


if __name__ == "__main__":
    main()
