"""exportkit.runtime: which CPU runtime TF gives a process, and what the export does with it.

The CPU classes are modelled from /proc/cpuinfo text, so every class is tested on any
machine; the runtime itself is exercised for real in child processes with
TF_ENABLE_ONEDNN_OPTS=0 (what an AVX2-only server runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exportkit import runtime
from exportkit.errors import ExportError
from tests.helpers import (FAST, answers, compose_config, export_metadata, export_resnet18, integer_versions,
                           parity_jpegs, run_cli)

CPUINFO = """processor\t: 0
model name\t: {model}
flags\t\t: fpu sse sse2 {flags}

processor\t: 1
model name\t: {model}
flags\t\t: fpu sse sse2 {flags}
"""
CLASSES = {
    "AVX2": ("AMD EPYC 7B12", "avx avx2 fma"),
    "AVX-512": ("Intel Xeon Platinum 8168", "avx avx2 fma avx512f avx512bw"),
    "AVX-512 with VNNI": ("Intel Xeon Platinum 8280", "avx avx2 fma avx512f avx512_vnni"),
    "AVX-512 with BF16": ("AMD EPYC 9B14", "avx avx2 fma avx512f avx512_vnni avx512_bf16"),
    "AMX": ("Intel Xeon Platinum 8481C", "avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"),
}


def _cpu(cpu_class: str) -> runtime.Cpu:
    model, flags = CLASSES[cpu_class]
    return runtime.parse_cpuinfo(CPUINFO.format(model=model, flags=flags))


@pytest.mark.parametrize("cpu_class, onednn, bf16", [
    ("AVX2", False, "unavailable"),
    ("AVX-512", False, "unavailable"),  # Skylake: AVX-512 but none of the features TF's default looks for
    ("AVX-512 with VNNI", True, "emulated"),
    ("AVX-512 with BF16", True, "native"),
    ("AMX", True, "native"),
])
def test_tf_default_per_cpu_class(cpu_class, onednn, bf16):
    cpu = _cpu(cpu_class)
    assert (cpu.cpu_class, cpu.logical_cpus, cpu.model) == (cpu_class, 2, CLASSES[cpu_class][0])
    here = runtime.predict({}, cpu)
    assert (here.onednn, here.bf16, here.requested) == (onednn, bf16, None)
    assert here.source.startswith("TF's default with" if onednn else "TF's default without")
    forced = runtime.predict({"TF_ENABLE_ONEDNN_OPTS": "1"}, cpu)
    assert forced.onednn and forced.source == "TF_ENABLE_ONEDNN_OPTS=1" and forced.bf16 in ("native", "emulated")
    off = runtime.predict({"TF_ENABLE_ONEDNN_OPTS": "false"}, cpu)
    assert not off.onednn and off.bf16 == "unavailable" and off.requested is False


def test_the_variable_is_read_as_tf_reads_it():
    assert [runtime.onednn_request({"TF_ENABLE_ONEDNN_OPTS": v}) for v in ("1", "true", "TRUE", "0", "False", "yes", "")] \
        == [True, True, True, False, False, None, None]
    assert runtime.onednn_request({}) is None


@pytest.mark.runtime
def test_this_process_agrees_with_the_prediction():
    """TF's own answer (IsMklEnabled) matches what the model of its policy predicts here."""
    here = runtime.current()
    assert here.onednn == runtime.predict().onednn, here.source
    assert "predicted otherwise" not in here.source


def _plan(*overrides: str):
    from exportkit.config import to_plain
    from exportkit.export import ExportPlan

    return ExportPlan.from_config(to_plain(compose_config(*overrides)))


@pytest.mark.parametrize("cpu_class, environ, message", [
    ("AVX2", {}, "export.precision=bf16 needs TF's oneDNN kernels, which TF leaves off on this AVX2 CPU (TF's default "
                 "without AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX): export on a CPU with AVX512_BF16 or AMX, or set "
                 "TF_ENABLE_ONEDNN_OPTS=1 to export with bf16 emulated (slower than fp32 here)"),
    ("AMX", {"TF_ENABLE_ONEDNN_OPTS": "0"}, "export.precision=bf16 needs TF's oneDNN kernels, which "
                                           "TF_ENABLE_ONEDNN_OPTS=0 turns off in this process: unset "
                                           "TF_ENABLE_ONEDNN_OPTS or set it to 1"),
])
def test_bf16_is_refused_in_one_line_naming_cause_and_fix(cpu_class, environ, message):
    from exportkit.export import check_runtime

    with pytest.raises(ExportError) as error:
        check_runtime(_plan("export.precision=bf16"), runtime.predict(environ, _cpu(cpu_class)), notify=print)
    assert str(error.value) == message


@pytest.mark.parametrize("cpu_class, notices", [("AVX2", 1), ("AVX-512 with VNNI", 1), ("AMX", 0)])
def test_bf16_forced_on_says_it_is_emulated(cpu_class, notices):
    from exportkit.export import check_runtime

    said: list[str] = []
    check_runtime(_plan("export.precision=bf16"), runtime.predict({"TF_ENABLE_ONEDNN_OPTS": "1"}, _cpu(cpu_class)),
                  notify=said.append)
    assert len(said) == notices
    if notices:
        assert said[0].startswith(f"bf16 is emulated on this {cpu_class} CPU (no AVX512_BF16 or AMX)")


def test_channels_first_notices_name_the_runtime():
    from exportkit.export import check_runtime

    said: list[str] = []
    check_runtime(_plan("model.data_format=NCHW"), runtime.predict({}, _cpu("AVX2")), notify=said.append)
    assert len(said) == 2
    assert said[0].startswith("channels_first: TF's own CPU kernels take NHWC only and oneDNN is off here (TF's default")
    assert said[1].startswith("channels_first on a CPU server needs oneDNN there (TF_ENABLE_ONEDNN_OPTS=1")
    said.clear()
    check_runtime(_plan("serving.device=gpu"), runtime.predict({}, _cpu("AVX2")), notify=said.append)
    assert len(said) == 1 and "layout conversion" in said[0]  # a GPU server runs NCHW natively
    said.clear()
    check_runtime(_plan("model.data_format=NHWC"), runtime.predict({}, _cpu("AVX2")), notify=said.append)
    assert said == []


def _export_cli(tmp_path: Path, model_dir: Path, onednn: str, *overrides: str):
    run = run_cli("model.size=18", f"checkpoint.path={model_dir}", f"export.root={tmp_path / 'exports'}",
                  f"hydra.run.dir={tmp_path / 'run'}", "serving.warmup.enabled=false", *overrides,
                  cwd=tmp_path, env={"TF_ENABLE_ONEDNN_OPTS": onednn})
    return run


def test_an_nchw_export_verifies_where_onednn_is_off_and_answers_as_nhwc(resnet18_model_dir, tmp_path):
    """What an AVX2-only build host does: TF's own kernels, NCHW graph verified through the layout conversion."""
    run = _export_cli(tmp_path, resnet18_model_dir, "0", "model.data_format=NCHW", "serving.device=gpu")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "NCHW->NHWC layout conversion" in run.stdout and "✓ verify" in run.stdout
    record = json.loads((tmp_path / "run" / "exportkit_result.json").read_text())
    assert record["data_format"] == "channels_first"
    assert record["runtime"].startswith("oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)")
    metadata = export_metadata(record["version_path"])
    assert metadata["runtime"]["onednn"] is False and metadata["runtime"]["requested"] is False
    assert metadata["runtime"]["cpu"]["class"] == runtime.this_cpu().cpu_class

    nhwc, _ = export_resnet18(resnet18_model_dir, tmp_path / "nhwc", *FAST)  # its answers are compared here
    images = parity_jpegs()
    got = answers(record["version_path"], images)
    want = answers(nhwc["version_path"], images)
    assert (got["classes"] == want["classes"]).all()
    assert abs(got["probabilities"] - want["probabilities"]).max() < 1e-5


def test_bf16_where_onednn_is_off_refuses_in_one_line(resnet18_model_dir, tmp_path):
    run = _export_cli(tmp_path, resnet18_model_dir, "0", "export.precision=bf16")
    assert run.returncode == 1
    errors = [line for line in run.stdout.splitlines() if line.startswith("error:")]
    assert errors == ["error: export.precision=bf16 needs TF's oneDNN kernels, which TF_ENABLE_ONEDNN_OPTS=0 turns "
                      "off in this process: unset TF_ENABLE_ONEDNN_OPTS or set it to 1"]
    assert "Traceback" not in run.stdout + run.stderr
    assert integer_versions(tmp_path / "exports" / "resnet") == []


def test_the_command_line_says_what_tf_will_run(monkeypatch, capsys):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert runtime.main([]) == 0
    out = capsys.readouterr().out
    assert "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)" in out and "TF_ENABLE_ONEDNN_OPTS=1 turns oneDNN on" in out
    assert runtime.main(["--opposite"]) == 0 and capsys.readouterr().out == "1\n"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert runtime.main(["--opposite"]) == 0 and capsys.readouterr().out == "0\n"
