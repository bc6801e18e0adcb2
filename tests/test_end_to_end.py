"""run_export.py as a user runs it: subprocesses where only a real process shows the
behaviour (exit codes, what reaches the terminal, signals, Hydra's own flags), and the
error paths of run_job in this process, as run_export.py calls it."""

import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from exportkit.console import export_summary
from exportkit.verify import sample_jpegs
from tests.helpers import (CIFAR8, FAST, REPO, checkout_options, export_in_process, export_metadata, help_options, integer_versions,
                           run_cli, run_job_in_process, run_signatures, signature_defs)


def test_export_writes_a_verified_version_that_loads_as_tf_serving_loads_it(resnet18_model_dir, tmp_path):
    exports = tmp_path / "exports" / "resnet"
    run = run_cli(f"checkpoint.path={resnet18_model_dir}", "model.size=18", "head.k=5",
                  f"export.root={exports.parent}", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    for stage in ("checkpoint", "graph", "restore", "write", "verify"):
        assert f"✓ {stage}" in run.stdout
    assert "Exported version 1" in run.stdout and "int32 [N, 5]" in run.stdout
    assert "I0000" not in run.stderr and "absl::InitializeLog" not in run.stderr  # TF's start-up chatter
    assert integer_versions(exports) == ["1"]
    version = exports / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()

    # What saved_model_cli shows, and TF Serving's loader call in a fresh graph.
    defs = signature_defs(version)
    assert set(defs) == {"predict_images", "serving_default"}
    images = sample_jpegs(224)[:2]
    answers = run_signatures(version, {key: {"images": images} for key in defs})
    for key, sig in defs.items():
        assert sig.method_name == "tensorflow/serving/predict" and list(sig.inputs) == ["images"]
        assert sig.inputs["images"].dtype == 7  # DT_STRING
        assert [d.size for d in sig.inputs["images"].tensor_shape.dim] == [-1]
        for name, dtype in (("classes", np.int32), ("probabilities", np.float32)):
            assert [d.size for d in sig.outputs[name].tensor_shape.dim] == [-1, 5]
            assert answers[key][name].dtype == dtype and answers[key][name].shape == (2, 5)

    metadata = export_metadata(version)
    assert metadata["checkpoint"] == {"prefix": str(resnet18_model_dir / "model.ckpt-1234"), "global_step": 1234}
    assert metadata["config"]["model"]["size"] == 18 and metadata["config"]["head"]["k"] == 5
    assert metadata["data_format"] == {"value": "channels_last", "source": "auto, from serving.device=cpu"}
    assert metadata["verification"]["passed"] is True
    assert set(metadata["signatures"]) == {"predict_images", "serving_default"}
    assert metadata["tensorflow"].startswith("2.")

    # A second export adds version 2 and leaves version 1 alone.
    before = (version / "saved_model.pb").read_bytes()
    second, _ = export_in_process(f"checkpoint.path={resnet18_model_dir}", "model.size=18", "export.verify=false",
                                  "signature.name=classify", f"export.root={exports.parent}")
    assert integer_versions(exports) == ["1", "2"] and (version / "saved_model.pb").read_bytes() == before
    summary = Console(file=io.StringIO(), width=200)
    summary.print(export_summary(second))  # the table run_export.py prints at the end
    assert "skipped (export.verify=false)" in summary.file.getvalue()
    assert set(export_metadata(exports / "2")["signatures"]) == {"classify", "serving_default"}


def _corrupt_copy(model_dir: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "corrupt_model_dir"
    shutil.copytree(model_dir, broken)
    data = next(broken.glob("model.ckpt-1234.data-*"))
    raw = bytearray(data.read_bytes())
    for i in range(1000, len(raw), 4096):
        raw[i] ^= 0xFF
    data.write_bytes(bytes(raw))
    return broken


def _stale_copy(model_dir: Path, tmp_path: Path) -> Path:
    stale = tmp_path / "stale_model_dir"
    stale.mkdir()
    (stale / "checkpoint").write_text('model_checkpoint_path: "/mnt/train-host/model.ckpt-1234"\n')
    return stale


def _nothing_published(exports_root: Path) -> bool:
    return not [p for p in exports_root.glob("*/*") if p.name.isdigit() or p.name.startswith(".exportkit-staging")]


# What composes but cannot be exported: run_job's one-line errors. Values Hydra refuses at
# compose time (unknown keys, enum typos such as data_format=NCWH) are tests/test_config.py's.
BAD_INPUTS = {
    "k too large": (["head.k=1002"], "head.k=1002 must be between 1 and model.num_classes=1001"),
    "missing checkpoint": (["checkpoint.path={tmp}/nowhere"], "checkpoint.path={tmp}/nowhere: no such model_dir"),
    "checkpoint of another size": (["model.size=34"], "does not fit model=resnet model.num_classes=1001 model.size=34; it fits model.size=18"),
    "corrupt checkpoint data": (["checkpoint.path={corrupt}"], "cannot restore from"),
    "unwritable export.root": (["export.root={tmp}/a_file/exports"], "is not writable"),
    "unknown preprocessing pipeline": (["preprocessing.pipeline=fancy"],
                                       "no preprocessing pipeline named 'fancy'; registered: "),
    "image size the network cannot take": (["preprocessing.image_size=256", "preprocessing.resize_side=256"],
                                            "needs 224x224 input (its final pool is 7x7); got 256x256"),
    "CIFAR size not 6n+2": (["model=cifar_resnet", "model.size=33"],
                            "model.size=33 is not a CIFAR-10 ResNet size: it must be 6n+2 with n >= 1"),
    "stale checkpoint file": (["checkpoint.path={stale}"], "names /mnt/train-host/model.ckpt-1234, which does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_a_clear_error_and_writes_nothing(case, resnet18_model_dir, tmp_path):
    overrides, expected = BAD_INPUTS[case]
    (tmp_path / "a_file").write_text("not a directory")
    places = {"tmp": tmp_path, "corrupt": None, "stale": None}
    if case == "corrupt checkpoint data":
        places["corrupt"] = _corrupt_copy(resnet18_model_dir, tmp_path)
    if case == "stale checkpoint file":
        places["stale"] = _stale_copy(resnet18_model_dir, tmp_path)
    args = [o.format(**places) for o in overrides]
    if not any(a.startswith("checkpoint.path=") for a in args):
        args.append(f"checkpoint.path={resnet18_model_dir}")
    if not any(a.startswith("model.size=") for a in args):
        args.append("model.size=18")
    if not any(a.startswith("export.root=") for a in args):
        args.append(f"export.root={tmp_path / 'exports'}")

    code, output = run_job_in_process(*args, run_dir=tmp_path / "run")
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected.format(**places) in errors[0], output
    assert output.rstrip().endswith("no version was published")
    record = json.loads((tmp_path / "run" / "exportkit_result.json").read_text())
    assert expected.format(**places) in record["error"]
    assert _nothing_published(tmp_path / "exports")


@pytest.mark.parametrize("override, stream, messages", [
    # Refused by validate inside run_job: its one-line error.
    ("head.k=1002", "stdout", ["error: head.k=1002 must be between 1 and model.num_classes=1001",
                               "no version was published"]),
    # Refused by Hydra while composing: its own message, naming the key.
    ("head.probabilities=sofmax", "stderr", ["expected one of [full, top_k]", "full_key: head.probabilities"]),
])
def test_a_config_error_exits_1_without_a_traceback(resnet18_model_dir, tmp_path, override, stream, messages):
    run = run_cli(f"checkpoint.path={resnet18_model_dir}", "model.size=18", override,
                  f"export.root={tmp_path / 'exports'}", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    text = getattr(run, stream)
    if stream == "stdout":
        assert text.strip().splitlines() == messages
    else:
        assert all(message in text for message in messages), text
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "exports").exists()


def test_interrupted_run_leaves_no_version(resnet18_model_dir, tmp_path):
    exports = tmp_path / "exports" / "resnet"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run_export.py"), f"checkpoint.path={resnet18_model_dir}", "model.size=18",
         f"export.root={exports.parent}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # As soon as staging exists: mid-export, with the write, the verification and the publishing
    # still to come (waiting for the written version raced a quick export's verification).
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(exports.glob(".exportkit-staging*")):
        time.sleep(0.01)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted: no version was published" in output
    assert integer_versions(exports) == [] and not list(exports.glob(".exportkit-staging*"))


@pytest.fixture(scope="module")
def sweep(cifar8_model_dir, tmp_path_factory):
    """A four-job sweep with Hydra's default launcher: two CIFAR ResNet-8 exports under one
    name and the latest policy, and two jobs with a size that is no CIFAR ResNet."""
    tmp = tmp_path_factory.mktemp("sweep")
    exports = tmp / "exports" / "cifar_resnet"
    run = run_cli("-m", "model.size=8,33", "signature=default,ai_platform", "model=cifar_resnet",
                  f"checkpoint.path={cifar8_model_dir}", f"export.root={exports.parent}",
                  f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp, timeout=600)
    summary = tmp / "sweep" / "sweep_summary.json"
    return run, exports, json.loads(summary.read_text()) if summary.exists() else None


def _swept(job: dict) -> tuple[str, ...]:
    return tuple(o for o in job["overrides"] if o.startswith(("model.size=", "signature=")))


def test_sweep_writes_one_version_per_job_and_a_summary(sweep):
    run, exports, jobs = sweep
    assert jobs is not None, run.stdout + run.stderr
    assert integer_versions(exports) == ["1", "2"]
    assert "Sweep summary" in run.stdout
    # Two variants under one name and the latest policy: the run says that only one is served.
    assert "2 jobs published versions of model 'cifar_resnet' under serving.versions=latest: TF Serving serves " \
           "only version 2" in run.stdout
    assert [job["job"] for job in jobs] == [0, 1, 2, 3]
    published = [job for job in jobs if "error" not in job]
    assert sorted(job["version_path"] for job in published) == [str(exports / str(v)) for v in (1, 2)]
    assert all(job["verification"]["passed"] for job in published)
    assert {_swept(job) for job in published} == {("model.size=8", f"signature={s}") for s in ("default", "ai_platform")}
    assert {_swept(job) for job in jobs} == {(f"model.size={n}", f"signature={s}")
                                             for n in (8, 33) for s in ("default", "ai_platform")}


def test_sweep_with_failing_jobs_runs_the_others_and_exits_nonzero(sweep):
    run, _, jobs = sweep
    assert run.returncode == 1
    failed = [job for job in jobs if "error" in job]
    assert [_swept(job)[0] for job in failed] == ["model.size=33", "model.size=33"]
    assert all(job["error"].startswith("model.size=33 is not a CIFAR-10 ResNet size") for job in failed)
    assert "2 of 4 jobs failed" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_help_and_cfg_job_work_as_in_any_hydra_app(tmp_path):
    from importlib.metadata import entry_points

    from exportkit.plugin import ENTRY_POINT_GROUP

    shown = run_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert "exportkit: export a checkpoint" in shown.stdout
    # The checkout's options are all listed; an installed plugin may add its own
    # (a model named as its entry point, presets from its package).
    built_in = {group: checkout_options(group) for group in ("model", "preprocessing")}
    assert {"cifar_resnet", "resnet"} <= built_in["model"] and {"cifar", "notebook", "vgg"} <= built_in["preprocessing"]
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert help_options(shown.stdout, "model") == built_in["model"] | installed
    assert help_options(shown.stdout, "preprocessing") >= built_in["preprocessing"]
    cfg = run_cli("--cfg", "job", "model.size=101", "head.k=3", cwd=tmp_path)
    assert cfg.returncode == 0 and "size: '101'" in cfg.stdout and "k: 3" in cfg.stdout


def test_each_graph_is_released_before_the_next_stage_holds_the_weights(resnet18_model_dir, tmp_path, monkeypatch):
    """Issue 18: the restored session is gone before the rewrites copy the weights, and the
    optimized one before the written version is reloaded (the export's peak memory)."""
    from exportkit import export, optimize, runtime

    sessions, seen = [], {}
    make_session, rewrite, verify = runtime.session, optimize.rewrite, export.verify_saved_model

    def tracked(graph):
        sessions.append(make_session(graph))
        return sessions[-1]

    def deleted():
        return [session._session is None for session in sessions]  # TF_DeleteSession done

    monkeypatch.setattr(runtime, "session", tracked)
    monkeypatch.setattr(optimize, "rewrite", lambda *a, **k: (seen.setdefault("rewrite", deleted()), rewrite(*a, **k))[1])
    monkeypatch.setattr(export, "verify_saved_model",
                        lambda *a, **k: (seen.setdefault("verify", deleted()), verify(*a, **k))[1])
    export_in_process("model.size=18", f"checkpoint.path={resnet18_model_dir}", f"export.root={tmp_path}")
    assert seen == {"rewrite": [True], "verify": [True, True]}


def test_an_export_sets_aside_what_was_alive_and_hands_it_back(cifar8_model_dir, tmp_path, monkeypatch):
    """Its collections walk only what the export made (TensorFlow's modules are frozen out of them
    meanwhile), and the collector is as it was afterwards, after a failure too."""
    import gc

    from exportkit import optimize
    from exportkit.errors import CheckpointError

    alive_before = gc.get_freeze_count()
    assert alive_before == 0  # nothing in this process freezes objects for good
    seen = []
    rewrite = optimize.rewrite
    monkeypatch.setattr(optimize, "rewrite", lambda *a, **k: (seen.append(gc.get_freeze_count()), rewrite(*a, **k))[1])
    export_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}", f"export.root={tmp_path}", *FAST)
    assert seen and seen[0] > 100_000  # TensorFlow alone, set aside while the export ran
    assert gc.get_freeze_count() == alive_before
    with pytest.raises(CheckpointError, match="it fits model.size=8"):
        export_in_process("model=cifar_resnet", "model.size=14", f"checkpoint.path={cifar8_model_dir}",
                          f"export.root={tmp_path}")
    assert gc.get_freeze_count() == alive_before
