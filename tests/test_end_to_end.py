"""run_export.py as a user runs it: subprocesses, real exit codes, real output."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, integer_versions, run_cli

LOADER = """
import json, sys
import numpy as np, tensorflow as tf
from exportkit.verify import run_signature, sample_jpegs
images = np.array(sample_jpegs(224)[:2], dtype=object)
graph = tf.Graph()
with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sys.argv[1])
    out = {}
    for key in ("predict_images", "serving_default"):
        sig = meta.signature_def[key]
        got = run_signature(sess, sig, {"images": images})
        out[key] = {"method": sig.method_name, "inputs": sorted(sig.inputs),
                    **{k: [str(v.dtype), list(v.shape)] for k, v in got.items()}}
print(json.dumps(out))
"""


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

    # A fresh process, TF Serving's loader call.
    loaded = subprocess.run([sys.executable, "-c", LOADER, str(version)], capture_output=True, text=True,
                            cwd=REPO, check=True)
    signatures = json.loads(loaded.stdout.strip().splitlines()[-1])
    for sig in signatures.values():
        assert sig["method"] == "tensorflow/serving/predict" and sig["inputs"] == ["images"]
        assert sig["classes"] == ["int32", [2, 5]] and sig["probabilities"] == ["float32", [2, 5]]

    metadata = json.loads((version / "assets.extra" / "export_metadata.json").read_text())
    assert metadata["checkpoint"] == {"prefix": str(resnet18_model_dir / "model.ckpt-1234"), "global_step": 1234}
    assert metadata["config"]["model"]["size"] == 18 and metadata["config"]["head"]["k"] == 5
    assert metadata["data_format"] == {"value": "channels_last", "source": "auto, from serving.device=cpu"}
    assert metadata["verification"]["passed"] is True
    assert set(metadata["signatures"]) == {"predict_images", "serving_default"}
    assert metadata["tensorflow"].startswith("2.")

    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent))
    shown = subprocess.run([cli, "show", "--all", "--dir", str(version)], capture_output=True, text=True, check=True)
    assert "signature_def['predict_images']" in shown.stdout
    assert "signature_def['serving_default']" in shown.stdout
    assert "dtype: DT_STRING" in shown.stdout and "shape: (-1)" in shown.stdout
    assert "shape: (-1, 5)" in shown.stdout and "Method name is: tensorflow/serving/predict" in shown.stdout

    # A second run adds version 2 and leaves version 1 alone.
    before = (version / "saved_model.pb").read_bytes()
    again = run_cli(f"checkpoint.path={resnet18_model_dir}", "model.size=18", "export.verify=false",
                    "signature.name=classify", f"export.root={exports.parent}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert integer_versions(exports) == ["1", "2"] and (version / "saved_model.pb").read_bytes() == before
    assert "skipped (export.verify=false)" in again.stdout
    second = json.loads((exports / "2" / "assets.extra" / "export_metadata.json").read_text())
    assert set(second["signatures"]) == {"classify", "serving_default"}


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


BAD_INPUTS = {
    "unknown key": (["head.kk=3"], "Could not override 'head.kk'"),
    "bad enum value": (["head.probabilities=sofmax"], "expected one of [full, top_k]"),
    "bad data_format spelling": (["model.data_format=NCWH"],
                                 "expected one of [auto, channels_first, channels_last, NCHW, NHWC]"),
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
    exports = tmp_path / "exports" / "resnet"
    if not any(a.startswith("export.root=") for a in args):
        args.append(f"export.root={exports.parent}")

    run = run_cli(*args, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert expected.format(**places) in output, output
    assert "Traceback" not in output
    assert integer_versions(exports) == []
    assert not [p for p in exports.glob(".exportkit-staging*")] if exports.exists() else True


def test_interrupted_run_leaves_no_version(resnet18_model_dir, tmp_path):
    exports = tmp_path / "exports" / "resnet"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run_export.py"), f"checkpoint.path={resnet18_model_dir}", "model.size=18",
         f"export.root={exports.parent}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(exports.glob(".exportkit-staging*/version")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted: no version was published" in output
    assert integer_versions(exports) == [] and not list(exports.glob(".exportkit-staging*"))


def test_sweep_writes_one_version_per_job_and_a_summary(resnet18_model_dir, tmp_path):
    exports = tmp_path / "exports" / "resnet"
    run = run_cli("-m", "head.k=1,5", "preprocessing=notebook,vgg", "model.size=18",
                  f"checkpoint.path={resnet18_model_dir}", f"export.root={exports.parent}",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert integer_versions(exports) == ["1", "2", "3", "4"]
    assert "Sweep summary" in run.stdout
    # Four variants under one name and the latest policy: the run says that only one is served.
    assert "4 jobs published versions of model 'resnet' under serving.versions=latest: TF Serving serves only " \
           "version 4" in run.stdout
    jobs = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [job["job"] for job in jobs] == [0, 1, 2, 3]
    assert sorted(job["version_path"] for job in jobs) == [str(exports / str(v)) for v in (1, 2, 3, 4)]
    assert all(job["verification"]["passed"] for job in jobs)
    combos = {(o["overrides"][0], o["overrides"][1]) for o in jobs}
    assert combos == {(f"head.k={k}", f"preprocessing={p}") for k in (1, 5) for p in ("notebook", "vgg")}


def test_sweep_with_a_failing_job_runs_the_others_and_exits_nonzero(resnet18_model_dir, tmp_path):
    exports = tmp_path / "exports" / "resnet"
    run = run_cli("-m", "model.size=18,34", f"checkpoint.path={resnet18_model_dir}", f"export.root={exports.parent}",
                  "export.verify=false", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=600)
    assert run.returncode == 1
    assert integer_versions(exports) == ["1"]
    assert "1 of 2 jobs failed" in run.stdout and "it fits model.size=18" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def _help_options(stdout: str, group: str) -> set[str]:
    """The options ``--help`` lists for one config group."""
    line = next(line for line in stdout.splitlines() if line.startswith(f"{group}: "))
    return set(line[len(group) + 2:].split(", "))


def test_help_and_cfg_job_work_as_in_any_hydra_app(tmp_path):
    from importlib.metadata import entry_points

    from exportkit.plugin import ENTRY_POINT_GROUP

    shown = run_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert "exportkit: export a checkpoint" in shown.stdout
    # The checkout's options are all listed; an installed plugin may add its own
    # (a model named as its entry point, presets from its package).
    built_in = {group: {p.stem for p in (REPO / "conf" / group).glob("*.yaml") if not p.stem.startswith("base_")}
                for group in ("model", "preprocessing")}
    assert {"cifar_resnet", "resnet"} <= built_in["model"] and {"cifar", "notebook", "vgg"} <= built_in["preprocessing"]
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert _help_options(shown.stdout, "model") == built_in["model"] | installed
    assert _help_options(shown.stdout, "preprocessing") >= built_in["preprocessing"]
    cfg = run_cli("--cfg", "job", "model.size=101", "head.k=3", cwd=tmp_path)
    assert cfg.returncode == 0 and "size: '101'" in cfg.stdout and "k: 3" in cfg.stdout
