"""The serving benchmark's pure parts: CPU flags, statistics, ratios, targets, the report.

Nothing here exports, loads or times a model, and nothing needs openvino.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import serving
from benchmarks.serving_report import (
    OPENVINO_BF16, OPENVINO_F32, TARGETS, UsageError, add_ratios, check_targets, cpu_info, latency_stats,
    parse_named, percentile, render_markdown, target_line,
)

# Two logical CPUs of a Sapphire Rapids (AMX and AVX512_BF16), trimmed.
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_vnni

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_vnni
"""
ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx2 fma\n"


def test_cpu_info_reads_model_count_and_bf16_flags():
    info = cpu_info(SAPPHIRE_RAPIDS)
    assert (info["model"], info["logical_cpus"], info["class"]) == ("Intel(R) Xeon(R) Platinum 8480+", 2, "AMX")
    assert info["amx_bf16"] and info["amx_tile"] and info["avx512_bf16"] and info["amx"] and not info["fma"]


def test_cpu_info_without_bf16_support():
    info = cpu_info(ZEN2)
    assert (info["amx"], info["avx512_bf16"], info["logical_cpus"], info["class"]) == (False, False, 1, "AVX2")
    assert cpu_info("")["model"] == "unknown"


def test_percentile_interpolates_like_numpy():
    values = [0.4, 0.1, 0.3, 0.2]
    assert percentile(values, 50) == pytest.approx(0.25)
    assert percentile(values, 100) == pytest.approx(0.4)
    assert percentile([0.7], 99) == 0.7
    assert math.isnan(percentile([], 50))


def test_latency_stats_throughput_is_total_images_over_total_time():
    stats = latency_stats([0.1, 0.3], batch_size=8)
    assert stats["images_per_s"] == pytest.approx(16 / 0.4)
    assert stats["p50_ms"] == pytest.approx(200)
    assert stats["requests"] == 2


@pytest.mark.parametrize("text, expected", [
    ("exportkit fp32=preprocessing=notebook export.precision=fp32",
     ("exportkit fp32", "preprocessing=notebook export.precision=fp32")),
    ("mine=exports/resnet/3", ("mine", "exports/resnet/3")),
])
def test_parse_named_splits_at_the_first_equals(text, expected):
    assert parse_named(text, "--variant") == expected


@pytest.mark.parametrize("text", ["preprocessing", "=preprocessing=notebook", "name=", "  =x"])
def test_parse_named_rejects_what_is_not_name_value(text):
    with pytest.raises(UsageError, match="--variant wants NAME=VALUE"):
        parse_named(text, "--variant")


def _rows():
    rows = []
    for name, per_batch in {
        "notebook": {1: (20.0, 50.0), 32: (100.0, 320.0)},
        "exportkit fp32": {1: (25.0, 40.0), 32: (120.0, 266.0)},
        "exportkit bf16": {1: (40.0, 25.0), 32: (200.0, 160.0)},
        OPENVINO_F32: {1: (30.0, 33.0), 32: (125.0, 256.0)},
        OPENVINO_BF16: {1: (50.0, 20.0), 32: (250.0, 128.0)},
    }.items():
        for batch_size, (images_per_s, p50) in per_batch.items():
            rows.append({"contender": name, "batch_size": batch_size, "requests": 10,
                         "images_per_s": images_per_s, "p50_ms": p50, "p99_ms": p50 * 1.2})
    return add_ratios(rows, baseline="notebook")


def test_ratios_are_against_the_same_batch_size():
    row = next(r for r in _rows() if r["contender"] == "exportkit fp32" and r["batch_size"] == 32)
    assert row["ratio_baseline"] == pytest.approx(1.2)
    assert row["ratio_openvino_f32"] == pytest.approx(120 / 125)
    assert row["ratio_openvino_bf16"] == pytest.approx(120 / 250)


def test_ratios_missing_reference_is_none():
    rows = add_ratios([{"contender": "a", "batch_size": 1, "images_per_s": 5.0}], baseline="a")
    assert rows[0]["ratio_baseline"] == 1.0
    assert rows[0]["ratio_openvino_f32"] is None


def test_targets_checked_with_their_direction():
    checks = {c["target"]: c for c in check_targets(_rows())}
    assert len(checks) == len(TARGETS)
    vs_notebook = checks["exportkit fp32 vs notebook, throughput at batch 32"]
    assert vs_notebook["ratio"] == pytest.approx(1.2) and vs_notebook["met"]
    assert checks["exportkit fp32 vs openvino f32, throughput at batch 32"]["met"]  # 0.96 >= 0.9
    assert not checks["exportkit bf16 vs openvino bf16, throughput at batch 32"]["met"]  # 0.8 < 0.85
    latency = checks["exportkit bf16 vs openvino bf16, p50 latency at batch 1"]
    assert latency["ratio"] == pytest.approx(1.25) and not latency["met"]  # lower is better: 1.25 > 1.2
    assert target_line(latency) == "exportkit bf16 vs openvino bf16, p50 latency at batch 1: 1.25x (target ≤ 1.2x): NOT met"


def test_targets_skip_contenders_that_did_not_run():
    rows = [r for r in _rows() if not r["contender"].startswith("openvino")]
    assert [c["target"] for c in check_targets(rows)] == ["exportkit fp32 vs notebook, throughput at batch 32"]


def _fake_result():
    rows = _rows()
    contenders = {name: {"description": f"{name} described", "load_s": 1.5, "warmup_s": 0.5,
                         "peak_rss_after_load_mib": 600.0, "peak_rss_after_serving_mib": 700.0,
                         "peak_rss_reload_mib": 1300.0 if name.startswith("exportkit") else None,
                         "top1_agreement": 1.0, "top1_probability_max_rel_diff": 2.5e-7}
                  for name in dict.fromkeys(row["contender"] for row in rows)}
    return {
        "command": "python benchmarks/serving.py --rounds 5",
        "cpu": cpu_info(SAPPHIRE_RAPIDS),
        "versions": {"tensorflow": "2.21.0", "openvino": "2026.4.1", "python": "3.11.7"},
        "settings": {"model_size": 50, "checkpoint": "/ckpt", "rounds": 5, "requests_per_turn": 5,
                     "baseline": "notebook", "tf_runtime": "oneDNN on (TF_ENABLE_ONEDNN_OPTS=1); AMX CPU; bf16 native",
                     "isa_cap": {"ONEDNN_MAX_CPU_ISA": "AVX2"}},
        "contenders": contenders,
        "reference_top1_classes": [3, 848],
        "results": rows,
        "targets": check_targets(rows),
        "export_cost": [{"variant": "exportkit fp32", "model_size": 152, "wall_s": 20.25, "peak_rss_mib": 2048.4}],
        "notes": ["p99 is over 25 requests per contender and batch size."],
    }


def test_markdown_report_heading_table_targets_and_export_cost():
    text = render_markdown(_fake_result())
    assert text.startswith("# Serving benchmark: ResNet-50\n")
    assert "Intel(R) Xeon(R) Platinum 8480+, 2 logical CPUs, class AMX; AMX: yes" in text
    assert ("- TF runtime of the TF contenders: oneDNN on (TF_ENABLE_ONEDNN_OPTS=1); AMX CPU; bf16 native; "
            "ONEDNN_MAX_CPU_ISA=AVX2\n") in text
    assert "AVX512_BF16: yes" in text
    assert "TensorFlow 2.21.0, OpenVINO 2026.4.1" in text
    assert "`python benchmarks/serving.py --rounds 5`" in text
    assert "| exportkit fp32 | 32 | 120.0 | 266.0 | 319.2 | 1.50 | 0.50 | 600 | 700 | 1300 | 1.20x | 0.96x | 0.48x |" in text
    assert "- exportkit fp32 vs notebook, throughput at batch 32: 1.20x (target ≥ 1.1x): met" in text
    assert "| exportkit fp32 | 152 | 20.2 | 2048 |" in text
    assert "spans 2 distinct classes (random weights: a weak check)" in text
    assert "top-1 agrees with TF f32 on 100% of the images, its probability within 2.5e-07 (relative)" in text
    results = text.split("## Results")[1].split("## Targets")[0]
    table = [line for line in results.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 10 and len({line.count("|") for line in table}) == 1  # every row, every column


def test_markdown_without_openvino_shows_dashes():
    result = _fake_result()
    result["results"] = add_ratios([r for r in result["results"] if not r["contender"].startswith("openvino")],
                                   baseline="notebook")
    result["versions"]["openvino"] = None
    text = render_markdown(result)
    assert "OpenVINO not run" in text
    assert "| notebook | 1 | 20.0 | 50.0 | 60.0 | 1.50 | 0.50 | 600 | 700 | – | 1.00x | – | – |" in text


def test_export_cost_only_report_has_no_serving_sections():
    result = {**_fake_result(), "contenders": {}, "results": [], "targets": []}
    text = render_markdown(result)
    assert text.startswith("# Export cost\n")
    assert "## Results" not in text and "## Contenders" not in text and "rounds x" not in text
    assert "| exportkit fp32 | 152 | 20.2 | 2048 |" in text
    assert "the largest resident set it reached" in text


def test_the_harness_parent_imports_neither_tensorflow_nor_openvino():
    """An export's peak RSS (the child's ru_maxrss) would count the parent's pages
    inherited before exec; the parent stays small by never importing either."""
    probe = "import sys, benchmarks.serving; print(sorted({'tensorflow', 'openvino'} & set(sys.modules)))"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _plan(*argv, openvino_installed=True, monkeypatch):
    monkeypatch.setattr(serving.importlib.util, "find_spec",
                        lambda name: object() if openvino_installed or name != "openvino" else None)
    return serving.make_plan(serving.parse_args(list(argv)))


def test_default_variants_when_none_given(monkeypatch):
    plan = _plan(monkeypatch=monkeypatch)
    assert list(plan.variants) == list(serving.VARIANTS) and plan.versions == {}
    assert plan.variants["exportkit bf16"] == ["preprocessing=notebook", "export.precision=bf16"]
    assert plan.batch_sizes == [1, 8, 32] and plan.export_cost_sizes == [50, 152]
    assert plan.openvino_precisions == ["f32", "bf16"]
    assert _plan("--openvino-precisions", "f32", monkeypatch=monkeypatch).openvino_precisions == ["f32"]


def test_onednn_sets_the_tf_childrens_runtime(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    plan = _plan(monkeypatch=monkeypatch)  # on by default: the server setting exportkit recommends
    assert plan.child_environment()["TF_ENABLE_ONEDNN_OPTS"] == "1" and plan.tf_runtime.onednn
    assert "exportkit bf16" in plan.variants or plan.tf_runtime.bf16 == "unavailable"
    off = _plan("--onednn", "off", monkeypatch=monkeypatch)
    assert off.child_environment()["TF_ENABLE_ONEDNN_OPTS"] == "0" and not off.tf_runtime.onednn
    assert list(off.variants) == ["notebook", "exportkit fp32"]  # no bf16 without oneDNN
    assert off.notes == ["exportkit bf16 left out: TF's oneDNN kernels, which bf16 needs, are off in the TF "
                         "contenders (TF_ENABLE_ONEDNN_OPTS=0)."]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    serving.use_child_environment(off)  # monkeypatch.setenv restores the environment afterwards
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "PATH" in os.environ
    default = _plan("--onednn", "default", monkeypatch=monkeypatch)
    assert "TF_ENABLE_ONEDNN_OPTS" not in default.child_environment()
    assert default.tf_runtime.source.startswith("TF's default")


def test_variant_replaces_the_defaults(monkeypatch):
    plan = _plan("--variant", "a=preprocessing=notebook", "--variant", "b=preprocessing=notebook head.k=1",
                 "--batch-sizes", "8,1", "--export-cost-sizes", "", monkeypatch=monkeypatch)
    assert plan.variants == {"a": ["preprocessing=notebook"], "b": ["preprocessing=notebook", "head.k=1"]}
    assert plan.batch_sizes == [1, 8] and plan.export_cost_sizes == []


@pytest.mark.parametrize("argv, message", [
    (["--variant", "a"], "--variant wants NAME=VALUE"),
    (["--variant", "a=x", "--variant", "a=y"], "--variant 'a' is given twice"),
    (["--variant", "a=x 'y"], "No closing quotation"),
    (["--variant", "openvino f32=x"], "contender names must be distinct"),
    (["--versions", "v=/nonexistent/version"], "no saved_model.pb there"),
    (["--batch-sizes", "1,x"], "--batch-sizes wants comma-separated integers"),
    (["--rounds", "0"], "--rounds and --requests must be at least 1"),
    (["--openvino-precisions", "f16"], "--openvino-precisions wants f32, bf16 or both, got 'f16'"),
])
def test_command_line_mistakes_are_one_line_errors(argv, message, monkeypatch):
    with pytest.raises(serving.UsageError, match=message):
        _plan(*argv, monkeypatch=monkeypatch)


def test_missing_openvino_says_how_to_install_it(monkeypatch):
    with pytest.raises(serving.UsageError, match=r"pip install -e '\.\[bench\]' \(or pass --no-openvino\)"):
        _plan(openvino_installed=False, monkeypatch=monkeypatch)
    assert not _plan("--no-openvino", openvino_installed=False, monkeypatch=monkeypatch).openvino


def test_export_cost_only_needs_sizes_and_no_versions(monkeypatch, tmp_path):
    plan = _plan("--export-cost-only", "--export-cost-sizes", "152", "--variant", "bf16=export.precision=bf16",
                 openvino_installed=False, monkeypatch=monkeypatch)  # no OpenVINO needed: nothing is served
    assert plan.export_cost_only and plan.export_cost_sizes == [152] and list(plan.variants) == ["bf16"]
    assert plan.reload and not _plan("--no-reload", monkeypatch=monkeypatch).reload
    with pytest.raises(serving.UsageError, match="--export-cost-only needs --export-cost-sizes"):
        _plan("--export-cost-only", "--export-cost-sizes", "", monkeypatch=monkeypatch)
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(serving.UsageError, match="--versions has nothing to export"):
        _plan("--export-cost-only", "--versions", f"v={tmp_path}", monkeypatch=monkeypatch)


def test_failed_export_is_summarized_from_its_log(tmp_path):
    log = tmp_path / "export.log"
    log.write_text("Could not override 'export.precision'.\nTo append to your config use +export.precision=bf16\n"
                   "Key 'precision' not in 'ExportOptions'\n    full_key: export.precision\n\n"
                   "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n")
    assert serving._failure(log) == "Could not override 'export.precision'. Key 'precision' not in 'ExportOptions'"
    log.write_text("✓ checkpoint ...\nerror: checkpoint.path=/x: no such model_dir\nno version was published\n")
    assert serving._failure(log) == "checkpoint.path=/x: no such model_dir"


def test_agreement_with_the_tf_reference():
    reference = {"classes": [3, 5, 7, 9], "probabilities": [0.5, 0.25, 0.125, 0.5]}
    mine = {"classes": [3, 5, 8, 9], "probabilities": [0.5, 0.25, 0.25, 0.375]}
    assert serving.agreement(mine, reference) == {"top1_agreement": 0.75, "top1_probability_max_rel_diff": 1.0}
    assert serving.agreement(mine, None)["top1_agreement"] is None


def test_jpegs_are_deterministic_and_at_the_input_size():
    import io

    from PIL import Image

    jpegs = serving.smooth_jpegs(3)
    assert jpegs == serving.smooth_jpegs(3) and len(set(jpegs)) == 3
    assert Image.open(io.BytesIO(jpegs[0])).size == (224, 224)


# Lines of ONEDNN_VERBOSE=1 from a bf16 ResNet-50 at batch 1, trimmed.
ONEDNN_VERBOSE = """\
onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,forward_training,src:bf16::blocked:acdb::f0 dst:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb1_ic3oc64_ih224oh112kh7sh2dh0ph3_iw224ow112kw7sw2dw0pw3,0.871094
onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_bf16,forward_training,src:bf16::blocked:acdb::f0 dst:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb1_ic256oc512_ih56oh28kh1sh2dh0ph0_iw56ow28kw1sw2dw0pw0,1.07202
onednn_verbose,v1,primitive,exec,cpu,batch_normalization,bnorm_tbb_jit:avx512_core_bf16,forward_inference,data:bf16::blocked:acdb::f0,,flags:GCHR,mb1ic256ih56iw56,0.0991211
onednn_verbose,v1,primitive,exec,cpu,convolution,brdgmm_dw:avx512_core_bf16,forward_inference,src:bf16::blocked:acdb::f0,attr-post-ops:eltwise_relu,alg:convolution_direct,g256mb1_ic256oc256_ih56oh56kh1sh1dh0ph0_iw56ow56kw1sw1dw0pw0,0.193115
"""


def test_kernels_sums_onednn_primitives_and_counts_multiply_adds():
    from benchmarks.kernels import _conv_ms, onednn_kernels

    kernels, macs = onednn_kernels(ONEDNN_VERBOSE)
    assert kernels == {
        "convolution (brg_conv_fwd:avx512_core_bf16)": [1, 0.871094],
        "convolution 1x1 (brgconv_1x1:avx512_core_bf16)": [1, 1.07202],
        "batch_normalization (bnorm_tbb_jit:avx512_core_bf16)": [1, 0.0991211],
        "depthwise convolution (brdgmm_dw:avx512_core_bf16)": [1, 0.193115],  # not counted as a convolution
    }
    assert macs == 3 * 64 * 112 * 112 * 7 * 7 + 256 * 512 * 28 * 28
    assert _conv_ms(kernels, only_1x1=True) == (1, 1.07202)
    assert _conv_ms(kernels, only_1x1=False) == (2, 0.871094 + 1.07202)
    # OpenVINO's layer types and implementations, as its profiling names them
    openvino = {"Convolution brgconv_avx512_1x1_bf16": [36, 10.0], "Convolution brgconv_avx512_bf16": [17, 8.8],
                "MulAdd jit_avx512_bf16": [13, 0.5]}
    assert _conv_ms(openvino, only_1x1=True) == (36, 10.0) and _conv_ms(openvino, only_1x1=False) == (53, 18.8)


def test_reload_loads_a_second_copy_beside_the_first_and_reports_the_peak(monkeypatch):
    from benchmarks import serving_workers

    made, ran = [], []

    class Fake:
        def __init__(self, spec):
            self.weights = bytearray(64 << 20)  # 64 MiB, resident once written
            self.weights[::4096] = b"\x01" * len(self.weights[::4096])
            made.append(len(made))  # a count: a reference here would keep the copy alive

        def batch(self, size):
            return size

        def run(self, batch):
            ran.append((len(made), batch))

    monkeypatch.setitem(serving_workers.SERVABLES, "fake", Fake)
    first = Fake({})
    reload = serving_workers._reload({"kind": "fake"}, [1, 32])
    assert len(made) == 2 and ran == [(2, 1), (2, 32)]  # the copy was warmed up at every batch size
    assert reload["peak_rss_mib"] >= reload["rss_with_both_mib"] >= 2 * 64
    assert reload["rss_after_unload_mib"] < reload["rss_with_both_mib"] - 32  # the copy went again
    del first


def test_stage_trace_records_each_stage_and_its_own_peak(capsys):
    from benchmarks.export_memory import StageTrace

    trace = StageTrace()

    def inner():
        block = bytearray(96 << 20)
        block[::4096] = b"\x01" * len(block[::4096])
        return len(block)

    def outer():
        return traced_inner()

    traced_inner = trace.wrap("inner", inner)
    assert trace.wrap("outer", outer)() == 96 << 20
    records = {record["stage"]: record for record in trace.records}
    assert [r["stage"] for r in trace.records] == ["outer", "inner"] and records["inner"]["depth"] == 1
    for name in ("inner", "outer"):  # the enclosing stage keeps the peak of what it called
        assert records[name]["peak_mib"] >= records[name]["before_mib"] + 90
    assert trace.overall_mib >= records["inner"]["peak_mib"]
    assert "[memory]   inner: before" in capsys.readouterr().err
