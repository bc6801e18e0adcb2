"""Version directories: staging, atomic publish, parallel writers, clean-up."""

import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from exportkit.errors import ExportError
from exportkit.versions import (existing_versions, locked, prepare_base, publish, remove_abandoned_staging, remove_if_empty,
                                staging_dir)


def _publish_one(base: str) -> str:
    base_path = Path(base)
    with staging_dir(base_path) as staging:
        version = staging / "version"
        version.mkdir()
        (version / "saved_model.pb").write_text(str(os.getpid()))
        return publish(version, base_path).name


def test_versions_count_up_and_leave_existing_ones_alone(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "keep").write_text("old")
    assert _publish_one(str(tmp_path)) == "8"
    assert _publish_one(str(tmp_path)) == "9"
    assert (tmp_path / "7" / "keep").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exportkit-staging")] == []


def test_parallel_publishers_never_collide(tmp_path):
    with ProcessPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(_publish_one, [str(tmp_path)] * 12))
    assert sorted(map(int, names)) == list(range(1, 13))
    assert existing_versions(tmp_path) == list(range(1, 13))


def test_staging_is_removed_when_the_export_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with staging_dir(tmp_path) as staging:
            (staging / "version").mkdir()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # the directory and its owner lock


@pytest.mark.parametrize("step", ["owner", "probe"])
def test_an_interrupt_while_staging_is_made_leaves_nothing(step, tmp_path, monkeypatch):
    """SIGINT (or run_export's SIGTERM) delivered just after the owner file or prepare_base's probe
    directory is created: the interrupt still comes, and neither is left behind."""
    import signal
    import tempfile

    from exportkit import versions

    name = {"owner": "mkstemp", "probe": "mkdtemp"}[step]
    make = getattr(tempfile, name)

    def interrupted(*args, **kwargs):
        made = make(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # Python's handler raises KeyboardInterrupt at the next bytecode
        return made

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(versions.tempfile, name, interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            if step == "owner":
                with staging_dir(tmp_path):
                    pass
            else:
                prepare_base(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []


def test_staging_of_a_killed_process_is_cleaned_next_time(tmp_path):
    code = (
        "import os, sys; from pathlib import Path; from exportkit.versions import staging_dir;"
        "ctx = staging_dir(Path(sys.argv[1])); s = ctx.__enter__(); (s / 'version').mkdir();"
        "os._exit(0)"  # dies without unwinding, like kill -9
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and leftovers[1] == leftovers[0] + ".lock"  # the directory and its owner lock
    prepare_base(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_live_staging_is_never_cleaned_whatever_its_name_says(tmp_path):
    """Ownership is a lock the owner holds, not a PID: an export in another PID namespace
    (containers sharing a hostname) has PIDs that mean nothing here, and keeps its work."""
    code = (
        "import sys, time; from pathlib import Path; from exportkit.versions import staging_dir;"
        "ctx = staging_dir(Path(sys.argv[1])); s = ctx.__enter__(); (s / 'version').mkdir();"
        "print(s, flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        staging = Path(owner.stdout.readline().strip())
        assert (staging / "version").is_dir()
        assert remove_abandoned_staging(tmp_path) == []
        prepare_base(tmp_path)
        assert (staging / "version").is_dir()
    finally:
        owner.kill()
        owner.wait()
    assert remove_abandoned_staging(tmp_path) == [staging]  # killed: the kernel let go of its lock
    assert list(tmp_path.iterdir()) == []


def test_a_held_lock_is_announced_and_given_up_on(tmp_path):
    said = []
    with locked(tmp_path):
        with pytest.raises(ExportError, match=r"gave up after 0.2 s waiting for .*\.exportkit\.lock, held by .* pid "):
            with locked(tmp_path, timeout_s=0.2, notify=said.append):
                pass
    assert said and said[0].startswith(f"waiting for {tmp_path / '.exportkit.lock'}, held by ")
    with locked(tmp_path, timeout_s=0.2):  # released: taken at once
        pass


def test_created_directories_go_again_only_while_empty(tmp_path):
    base = tmp_path / "exports" / "resnet"
    created = prepare_base(base)
    assert created == [base, base.parent] and prepare_base(base) == []
    (base / "1").mkdir()  # a parallel export published meanwhile
    remove_if_empty(created)
    assert (base / "1").is_dir()
    (base / "1").rmdir()
    remove_if_empty(created)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_base_fails_early(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="is not writable"):
            prepare_base(tmp_path / "exports")
    finally:
        tmp_path.chmod(0o700)


def test_base_under_a_file_fails_early(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match=r"file/exports is not writable"):
        prepare_base(tmp_path / "file" / "exports")
