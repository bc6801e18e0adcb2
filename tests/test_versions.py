"""Version directories: staging, atomic publish, parallel writers, clean-up."""

import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from exportkit.errors import ExportError
from exportkit.versions import existing_versions, prepare_base, publish, staging_dir


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
    assert list(tmp_path.iterdir()) == []


def test_staging_of_a_killed_process_is_cleaned_next_time(tmp_path):
    code = (
        "import os, sys; from pathlib import Path; from exportkit.versions import staging_dir;"
        "ctx = staging_dir(Path(sys.argv[1])); s = ctx.__enter__(); (s / 'version').mkdir();"
        "os._exit(0)"  # dies without unwinding, like kill -9
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".exportkit-staging")]
    assert len(leftovers) == 1 and not leftovers[0].name.isdigit()
    prepare_base(tmp_path)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".exportkit-staging")] == []


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
