"""Version directories that TF Serving can never see half-written.

Work happens in a staging directory inside the model base path
(``export.root/export.model_name``) whose name is not an
integer (TF Serving ignores those). Publishing renames it to the next integer
under an exclusive lock on ``<base>/.exportkit.lock``, so parallel jobs of a
sweep never pick the same number and existing versions are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ExportError

_STAGING_PREFIX = ".exportkit-staging-"
_LOCK_NAME = ".exportkit.lock"


def _staging_prefix() -> str:
    return f"{_STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def prepare_base(base: Path) -> None:
    """Create the model base path if needed; fail early if nothing can be written there."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=_staging_prefix(), dir=base)
        os.rmdir(probe)
    except OSError as e:
        raise ExportError(f"{base} is not writable: {e.strerror or e} (export.root, export.model_name)") from None
    _remove_abandoned_staging(base)


def _remove_abandoned_staging(base: Path) -> None:
    """Staging directories of this host's processes that died (kill -9, power loss)."""
    host_prefix = f"{_STAGING_PREFIX}{socket.gethostname()}-"
    for entry in base.glob(f"{host_prefix}*"):
        pid_text = entry.name[len(host_prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staging_dir(base: Path) -> Iterator[Path]:
    """A private directory in ``base``, removed on exit whatever happens."""
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=base))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def existing_versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.exportkit.lock`` shared by every process
    that follows it (a sweep's jobs, on this host or over NFS with flock)."""
    with open(directory / _LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def publish(written: Path, base: Path) -> Path:
    """Rename a finished version into place as the next integer version."""
    with locked(base):
        version = max(existing_versions(base), default=0) + 1
        target = base / str(version)
        while target.exists():  # written by something that does not take our lock
            version += 1
            target = base / str(version)
        os.rename(written, target)
        return target
