"""Version directories that TF Serving can never see half-written.

Work happens in a staging directory inside the model base path
(``export.root/export.model_name``) whose name is not an integer (TF Serving
ignores those). Publishing renames it to the next integer under an exclusive
lock on ``<base>/.exportkit.lock``, so parallel jobs of a sweep never pick the
same number and existing versions are never touched.

A staging directory is owned by a lock, not by a process id: its process holds
an exclusive ``flock`` on the ``.lock`` file beside it for as long as it works
there, and the kernel lets go when that process dies however it dies. Clean-up
removes only staging whose lock it can take, so no process removes another's
live work, whatever host or PID namespace that process runs in.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import ExportError

_STAGING_PREFIX = ".exportkit-staging-"
_OWNER_SUFFIX = ".lock"
_LOCK_NAME = ".exportkit.lock"
LOCK_TIMEOUT_S = 120.0  # publishing and models.config hold the lock for milliseconds
_POLL_S = 0.05


def prepare_base(base: Path) -> list[Path]:
    """Create the model base path if needed; fail early if nothing can be written there.

    Returns the directories this call created, deepest first, so a failed export can take
    them away again.
    """
    created = list(itertools.takewhile(lambda path: not path.exists(), [base, *base.parents]))
    try:
        base.mkdir(parents=True, exist_ok=True)
        with signals_held():  # an interrupt between the two would leave the probe behind
            os.rmdir(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=base))
    except OSError as e:
        raise ExportError(f"{base} is not writable: {e.strerror or e} (export.root, export.model_name)") from None
    remove_abandoned_staging(base)
    return created


def remove_if_empty(created: list[Path]) -> None:
    """The directories an export created (:func:`prepare_base`), while nothing else has come
    to live in them: rmdir refuses a directory that a parallel export has started to use."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


def _take(lock: int) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def remove_abandoned_staging(base: Path) -> list[Path]:
    """Staging directories whose owner is gone (kill -9, power loss): their lock is free."""
    removed = []
    for owner in base.glob(f"{_STAGING_PREFIX}*{_OWNER_SUFFIX}"):
        try:
            lock = os.open(owner, os.O_RDWR)
        except FileNotFoundError:  # its export finished meanwhile
            continue
        try:
            if _take(lock):
                staging = owner.with_name(owner.name[: -len(_OWNER_SUFFIX)])
                shutil.rmtree(staging, ignore_errors=True)
                owner.unlink(missing_ok=True)
                removed.append(staging)
        finally:
            os.close(lock)
    return removed


@contextlib.contextmanager
def staging_dir(base: Path) -> Iterator[Path]:
    """A private directory in ``base``, owned by a lock this process holds, removed on exit
    whatever happens (and by the next export's clean-up if this process is killed)."""
    fd, owner, staging = None, None, None
    try:
        # Made and recorded with interrupts held, and inside the try: one between the owner
        # file's creation and its record would leave it behind.
        with signals_held():
            fd, owner_path = tempfile.mkstemp(prefix=_STAGING_PREFIX, suffix=_OWNER_SUFFIX, dir=base)
            owner = Path(owner_path)
            fcntl.flock(fd, fcntl.LOCK_EX)  # before the directory exists, so clean-up never sees it unowned
            staging = owner.with_name(owner.name[: -len(_OWNER_SUFFIX)])
        staging.mkdir()
        yield staging
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if owner is not None:
            owner.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)


def existing_versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


@contextlib.contextmanager
def locked(directory: Path, *, timeout_s: float = LOCK_TIMEOUT_S,
           notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """An exclusive lock on ``directory/.exportkit.lock`` shared by every process
    that follows it (a sweep's jobs, on this host or over NFS with flock).

    A lock held by another process is waited for, said once, and given up on after
    ``timeout_s`` with an error naming the holder (it writes its host and PID in the file).
    """
    path = directory / _LOCK_NAME
    with open(path, "a+") as lock:
        if not _take(lock.fileno()):
            if notify is not None:
                notify(f"waiting for {path}, held by {_holder(lock)}")
            deadline = time.monotonic() + timeout_s
            while not _take(lock.fileno()):
                if time.monotonic() > deadline:
                    raise ExportError(f"gave up after {timeout_s:g} s waiting for {path}, held by {_holder(lock)} "
                                      "(a stopped or hung export? the lock goes when its process exits)")
                time.sleep(_POLL_S)
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"{socket.gethostname()} pid {os.getpid()}\n")
            lock.flush()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder(lock) -> str:
    lock.seek(0)
    return lock.read().strip() or "another process"


# The interrupts (SIGINT, SIGTERM) this job took, recorded by the handler exportkit.cli installs
# beside the KeyboardInterrupt it raises: where TensorFlow has called back into Python from C++,
# that exception can be swallowed (printed as a SystemError) and the export go on.
_INTERRUPTS: list[int] = []


def record_interrupt(signum: int) -> None:
    _INTERRUPTS.append(signum)


def forget_interrupts() -> None:
    _INTERRUPTS.clear()


def interrupted() -> bool:
    """Whether an interrupt came during this job, whether or not its exception got through."""
    return bool(_INTERRUPTS)


def stop_if_interrupted() -> None:
    """Raise the interrupt again where its first exception was swallowed: called before publishing."""
    if _INTERRUPTS:
        raise KeyboardInterrupt(f"signal {_INTERRUPTS[-1]}")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, so a rename and the record
    of it are never separated by an interrupt (delivered right after, as usual)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(written: Path, base: Path, *, notify: Callable[[str], None] | None = None) -> Path:
    """Rename a finished version into place as the next integer version."""
    with locked(base, notify=notify):
        version = max(existing_versions(base), default=0) + 1
        target = base / str(version)
        while target.exists():  # written by something that does not take our lock
            version += 1
            target = base / str(version)
        os.rename(written, target)
        return target
