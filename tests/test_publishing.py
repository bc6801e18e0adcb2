"""What a run reports against what it left on disk, when the end of an export goes wrong.

Once a version is renamed into place it is live for TF Serving; whatever happens after
(a signal, a models.config that cannot be written), the run names that version, exits
non-zero and says what is stale. Before that point nothing is left behind.
"""

import json
import resource
import signal
import subprocess
import sys
import time

import pytest

from exportkit.errors import PublishedButIncomplete
from exportkit.versions import locked
from tests.helpers import CIFAR8, FAST, REPO, export_resnet18, integer_versions


def test_sigterm_after_the_rename_reports_the_live_version(cifar8_model_dir, tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    run_dir = tmp_path / "run"
    with locked(root):  # another export writing models.config: this one publishes, then waits
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "run_export.py"), "model=cifar_resnet", "model.size=8",
             "export.model_name=resnet", f"checkpoint.path={cifar8_model_dir}", *FAST, f"export.root={root}",
             f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline and not (root / "resnet" / "1").is_dir() and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.3)  # into the wait for the root's lock
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert f"version 1 was published ({root / 'resnet' / '1'}), then the run interrupted" in output
    assert f"regenerate it: python -m exportkit.serving {root} --mount /models --versions latest" in output
    assert "no version was published" not in output and "Traceback" not in output
    assert f"waiting for {root / '.exportkit.lock'}, held by " in output
    record = json.loads((run_dir / "exportkit_result.json").read_text())
    assert record["version"] == 1 and record["version_path"] == str(root / "resnet" / "1")
    assert record["error"].startswith("version 1 was published")
    assert not (root / "models.config").exists()
    from exportkit import serving  # the command the message gives (python -m exportkit.serving), in this process

    assert serving.main([str(root), "--mount", "/models", "--versions", "latest"]) == 0
    assert 'base_path: "/models/resnet"' in (root / "models.config").read_text()


def test_a_models_config_that_cannot_be_written_after_publishing_names_the_version(resnet18_model_dir, tmp_path,
                                                                                    monkeypatch):
    from exportkit import serving

    def full_disk(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(serving, "_write_atomically", full_disk)  # the disk fills after the rename
    root = tmp_path / "exports"
    with pytest.raises(PublishedButIncomplete) as raised:
        export_resnet18(resnet18_model_dir, root, *FAST)
    error = raised.value
    assert not error.interrupted and error.result["version"] == 1
    assert str(error).startswith(f"version 1 was published ({root / 'resnet' / '1'}), then the run failed (")
    assert "No space left on device" in str(error) and f"{root / 'models.config'} may be stale" in str(error)
    assert integer_versions(root / "resnet") == ["1"]  # run_export.py's handling: the SIGTERM test above


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as a full disk gives ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_the_file_system_refuses_is_one_line_and_leaves_no_directory(resnet18_model_dir, tmp_path):
    root = tmp_path / "exports"
    run = subprocess.run(
        [sys.executable, str(REPO / "run_export.py"), "model.size=18", f"checkpoint.path={resnet18_model_dir}", *FAST,
         f"export.root={root}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4 << 20),
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert f"error: cannot write the version under {root / 'resnet'}: " in output and "File too large" in output
    assert "no version was published" in output and "Traceback" not in output
    assert not root.exists()  # neither the model directory nor the root it created


def test_sigterm_during_start_up_exits_130_without_a_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "run_export.py"), "model.size=18"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # inside the imports
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted: no version was published" in err and "Traceback" not in out + err


@pytest.mark.parametrize("then", ["the export goes on", "a later stage fails"])
def test_an_interrupt_tensorflow_swallowed_still_stops_the_run_before_publishing(then, cifar8_model_dir, tmp_path,
                                                                                  monkeypatch):
    """Where TensorFlow has called back into Python from C++, the KeyboardInterrupt that SIGTERM
    raises can be swallowed (it prints a SystemError) and the export go on, or fail oddly for it.
    The handler's record still stops it before the rename and names the interrupt."""
    from exportkit import export, versions
    from exportkit.errors import ExportError
    from tests.helpers import run_job_in_process

    write = export._write

    def swallowed(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # as TensorFlow's C++ does with an exception it did not expect
        return write(*args, **kwargs)

    def fails(*args, **kwargs):
        raise ExportError("verification: Could not find variable weights/conv2d/kernel")

    monkeypatch.setattr(export, "_write", swallowed)
    if then == "a later stage fails":
        monkeypatch.setattr(export, "verify_saved_model", fails)
    root = tmp_path / "exports"
    code, out = run_job_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}",
                                   f"export.root={root}", run_dir=tmp_path / "run")
    assert code == 130, out
    assert out.strip().splitlines()[-1] == "error: interrupted: no version was published"
    assert "verification" not in out.split("✗")[-1]  # told as the interrupt, not as what it broke
    assert integer_versions(root / "cifar_resnet") == [] and not list((root / "cifar_resnet").glob(".exportkit-staging*"))
    assert not versions.interrupted()  # the job's record ends with the job
    monkeypatch.undo()  # the export as it is
    code, out = run_job_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}",
                                   f"export.root={root}", run_dir=tmp_path / "run2")
    assert code == 0 and integer_versions(root / "cifar_resnet") == ["1"]
