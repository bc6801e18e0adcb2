"""Terminal output: TF's start-up chatter is dropped, nothing else is."""

import pytest

from exportkit.console import _TF_STARTUP_NOISE


@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795576112.248070    8663 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1795573890.361457    2125 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, ...",
])
def test_start_up_info_is_noise(line):
    assert _TF_STARTUP_NOISE.match(line)


@pytest.mark.parametrize("line", [
    "E0000 00:00:1795574211.454546    3237 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    "W0000 00:00:1795574211.454546    3237 something.cc:1] a warning worth reading",
    "Traceback (most recent call last):",
    "ImportError: libcudart.so.12: cannot open shared object file",
])
def test_errors_and_warnings_still_show(line):
    assert not _TF_STARTUP_NOISE.match(line)


def test_the_sweep_summary_shows_overrides_as_typed_not_as_hydra_escaped_them():
    from rich.console import Console

    from exportkit.console import sweep_summary

    job = {"error": "boom", "precision": {"value": "fp32"}}
    jobs = [{**job, "job": n, "overrides": [f"model.size={size}", r"checkpoint.path=/ckpt/resnet$\{model.size\}"]}
            for n, size in enumerate((18, 50))]
    console = Console(width=200, record=True)
    console.print(sweep_summary(jobs))
    text = console.export_text()
    assert "checkpoint.path=/ckpt/resnet${model.size}" in text and "\\{" not in text
    assert "model.size=18" in text and "model.size=50" in text
