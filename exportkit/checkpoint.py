"""Finding the checkpoint, reading its variable map, and explaining misfits.

``checkpoint.path`` may be an Estimator model_dir (its ``checkpoint`` file is
followed), a checkpoint prefix (``.../model.ckpt-1234``), a V1 single-file
checkpoint (``vgg_16.ckpt``, as the TF-slim model zoo ships them; no ``.index``)
or a ``.tar.gz`` holding either (the notebook's, the zoo's). With no path,
``checkpoint.url`` is downloaded once into ``checkpoint.cache_dir``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from .errors import CheckpointError, first_line

Notify = Callable[[str], None]
Shapes = Mapping[str, tuple[int, ...]]

_CKPT_STEP = re.compile(r"model\.ckpt-(\d+)\.index$")


@dataclass(frozen=True)
class Checkpoint:
    prefix: str
    global_step: int | None
    variables: dict[str, tuple[int, ...]]


def _is_prefix(path: Path) -> bool:
    return Path(f"{path}.index").is_file()


# A V1 checkpoint is one SSTable (TF's table format): its last 48 bytes are the footer,
# two block handles padded to 40 bytes and then this magic number (table/format.h,
# kTableMagicNumber 0xdb4775248b80fb57, little-endian). A V2 .index is an SSTable too,
# which is why its name is excluded; .meta, .pb, eval.graph and text files are not.
_SSTABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_SSTABLE_FOOTER = 48


def _is_v1(path: Path) -> bool:
    """Whether ``path`` is a V1 single-file checkpoint, by its SSTable footer (no TF)."""
    if path.name.endswith(".index") or ".data-" in path.name or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) < _SSTABLE_FOOTER:
                return False
            f.seek(-len(_SSTABLE_MAGIC), os.SEEK_END)
            return f.read() == _SSTABLE_MAGIC
    except OSError:
        return False


def _is_checkpoint(path: Path) -> bool:
    return _is_prefix(path) or _is_v1(path)


def _single_v1_in(directory: Path) -> Path | None:
    """The one V1 checkpoint file in a directory (a ``*.ckpt`` preferred), else None.

    Several, with no single ``*.ckpt`` among them, is an error naming them: which one
    is meant is the user's to say."""
    found = sorted(p for p in directory.iterdir() if _is_v1(p)) if directory.is_dir() else []
    if len(found) > 1:
        named = [p for p in found if p.name.endswith(".ckpt")]
        if len(named) != 1:
            raise CheckpointError(
                f"{directory} holds {len(found)} single-file (V1) checkpoints: "
                f"{', '.join(p.name for p in found)}; pass checkpoint.path=<one of these files>"
            )
        found = named
    return found[0] if found else None


def _newest_in(directory: Path) -> Path | None:
    """The highest-step ``model.ckpt-N`` in a directory, else any single prefix,
    else its single V1 checkpoint file."""
    steps = []
    for index in directory.glob("*.index"):
        match = _CKPT_STEP.search(index.name)
        steps.append((int(match.group(1)) if match else -1, index.name))
    if not steps:
        return _single_v1_in(directory)
    return directory / max(steps)[1][: -len(".index")]


def _from_model_dir(directory: Path, notify: Notify, *, unpacked: bool = False) -> Path:
    """Follow the model_dir's ``checkpoint`` file as TF does, or fall back.

    An unpacked archive's ``checkpoint`` file names paths on the machine that
    trained it; only a checkpoint inside the unpacked tree counts there.
    """
    state_file = directory / "checkpoint"
    if state_file.is_file():
        try:
            recorded = _recorded_prefix(state_file)
        except (OSError, UnicodeDecodeError) as e:
            # TF ignores a CheckpointState it cannot parse; the folder's own newest
            # checkpoint is what a missing state file gives here.
            reason = f"not text: invalid UTF-8 at byte {e.start}" if isinstance(e, UnicodeDecodeError) else e.strerror
            fallback = _newest_in(directory)
            if fallback is None:
                raise CheckpointError(
                    f"cannot read {state_file} ({reason}), and {directory} holds no "
                    f"model.ckpt-N.index to fall back to"
                ) from None
            notify(f"cannot read {state_file} ({reason}); using the newest checkpoint in the folder, {fallback.name}")
            return fallback
        if recorded is not None:
            candidate = Path(recorded) if os.path.isabs(recorded) else directory / recorded
            inside = candidate.resolve().parent == directory.resolve()
            if _is_checkpoint(candidate) and (inside or not unpacked):
                return candidate
            fallback = _newest_in(directory)
            if fallback is not None:
                notify(
                    f"{state_file} names {recorded}, which does not exist here "
                    f"(a model_dir copied from another machine?); using the newest "
                    f"checkpoint in the folder, {fallback.name}"
                )
                return fallback
            raise CheckpointError(
                f"{state_file} names {recorded}, which does not exist, and "
                f"{directory} holds no model.ckpt-N.index to fall back to"
            )
    found = _newest_in(directory)
    if found is None:
        raise CheckpointError(
            f"no checkpoint in {directory}: expected a 'checkpoint' file, "
            f"model.ckpt-N.index / .data-* files or a single-file (V1) checkpoint such as vgg_16.ckpt"
        )
    return found


def _recorded_prefix(state_file: Path) -> str | None:
    """model_checkpoint_path from a CheckpointState text proto, read without TF.

    Raises OSError or UnicodeDecodeError (a binary or unreadable file)."""
    text = state_file.read_bytes().decode("utf-8")
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    return match.group(1) if match else None


@contextlib.contextmanager
def _writing_cache(cache_dir: Path, place: Path) -> Iterator[None]:
    """An OSError while creating ``place`` in the cache names checkpoint.cache_dir."""
    try:
        yield
    except OSError as e:
        raise CheckpointError(
            f"checkpoint.cache_dir={cache_dir}: cannot write to {place} ({e.strerror or e}); "
            "set checkpoint.cache_dir to a writable directory"
        ) from None


# What a .tar.gz, .tgz or .tar holds, by its first bytes: tarfile's own "r:*" tries
# every method and joins their errors into several lines; one method gives one.
_COMPRESSION_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


def _unpack(archive: Path, staging: Path) -> None:
    with open(archive, "rb") as f:
        head = f.read(6)
    method = next((name for magic, name in _COMPRESSION_MAGIC if head.startswith(magic)), "")
    with tarfile.open(archive, f"r:{method}") as tar:
        # "data" refuses absolute paths, links out of the tree and devices.
        tar.extractall(staging, filter="data")
        # tarfile stops at the end-of-archive blocks, before gzip's trailer: read on to
        # the end so its CRC check runs, and a corrupted member is not unpacked silently.
        try:
            while tar.fileobj.read(1 << 20):
                pass
        except gzip.BadGzipFile as e:
            if not str(e).startswith("Not a gzipped file"):  # bytes after the stream: gzip -d ignores them too
                raise


def _extract(archive: Path, cache_dir: Path, notify: Notify) -> Path:
    """Unpack a .tar.gz once into the cache; a half-unpacked tree is never reused."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / "extracted" / f"{archive.name.split('.')[0]}-{key}"
    with _writing_cache(cache_dir, target.parent):
        unpacked = target.is_dir()
        if not unpacked:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    if not unpacked:
        notify(f"unpacking {archive} into {target}")
        try:
            _unpack(archive, staging)
            os.replace(staging, target)
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            if not target.is_dir():  # else a parallel job unpacked the same archive first
                # An OSError with an errno is the file system's (it names the path), a
                # FilterError a member the "data" filter refused; the rest is the archive.
                corrupt = not isinstance(e, tarfile.FilterError) and getattr(e, "errno", None) is None
                hint = " (a corrupt or truncated archive?)" if corrupt else ""
                raise CheckpointError(f"cannot unpack {archive}: {first_line(e)}{hint}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    directories = sorted({index.parent for index in target.rglob("*.index")})
    if not directories:  # the TF-slim zoo's older tarballs: one V1 file, e.g. resnet_v1_50.ckpt
        directories = sorted({path.parent for path in target.rglob("*") if _is_v1(path)})
    if not directories:
        raise CheckpointError(
            f"{archive} holds no checkpoint (no *.index file and no single-file (V1) checkpoint inside)"
        )
    return directories[0]


def _download(url: str, cache_dir: Path, notify: Notify) -> Path:
    target = cache_dir / "downloads" / url.rstrip("/").rsplit("/", 1)[-1]
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    with _writing_cache(cache_dir, target.parent):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(partial, "wb")
    notify(f"downloading {url} (once; cached in {target.parent})")
    try:
        with out, urllib.request.urlopen(url, timeout=30) as response:
            shutil.copyfileobj(response, out)
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointError(
            f"cannot download the default checkpoint {url} ({reason}); offline, pass "
            f"checkpoint.path=<model_dir, checkpoint prefix or .tar.gz>"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def locate(*, path: str | None, url: str | None, cache_dir: str, notify: Notify) -> Path:
    """The checkpoint prefix (or V1 file) that ``checkpoint.path`` (or the url) points at."""
    cache = Path(cache_dir).expanduser()
    if path is None:
        if not url:
            raise CheckpointError("no checkpoint: set checkpoint.path=<model_dir, prefix or .tar.gz>")
        return _from_model_dir(_extract(_download(url, cache, notify), cache, notify), notify, unpacked=True)
    given = Path(path).expanduser()
    if given.is_dir():
        return _from_model_dir(given, notify)
    if given.is_file() and given.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _from_model_dir(_extract(given, cache, notify), notify, unpacked=True)
    if _is_prefix(given):
        return given
    if given.name.endswith(".index") and given.is_file():
        return given.with_suffix("")
    if _is_v1(given):
        return given
    if given.is_file():
        raise CheckpointError(
            f"checkpoint.path={path}: not a checkpoint: neither a .tar.gz nor a single-file (V1) "
            f"checkpoint (no SSTable footer), and no {given.name}.index beside it"
        )
    raise CheckpointError(
        f"checkpoint.path={path}: no such model_dir, checkpoint prefix, V1 .ckpt file or .tar.gz"
    )


def read(prefix: Path) -> Checkpoint:
    """The checkpoint's variable map and global step (TF's reader, no graph)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {prefix}: {first_line(e)}") from None
    try:  # the first read of the data file: TF's reader raises IndexError where it is cut short
        step = int(reader.get_tensor("global_step")) if "global_step" in shapes else None
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {prefix}: {first_line(e)} (a corrupt or truncated data file?)"
        ) from None
    return Checkpoint(prefix=str(prefix), global_step=step, variables=shapes)


def unreadable(prefix: str, error: BaseException) -> CheckpointError:
    """The error for a checkpoint whose index reads but whose data does not."""
    return CheckpointError(f"cannot restore from {prefix}: {first_line(error)} (a corrupt or truncated data file?)")


def check_finite(checkpoint: Checkpoint, names: Iterable[str]) -> None:
    """Raise CheckpointError naming the variables among ``names`` that hold NaN or Inf.

    A diverged training run saves them as readily as good weights; exported, they answer
    every image with NaN probabilities. Read one tensor at a time, so the check holds
    no more than the largest variable in memory.
    """
    import numpy as np
    import tensorflow as tf

    bad = []
    try:
        reader = tf.train.load_checkpoint(checkpoint.prefix)
        for name in names:
            value = reader.get_tensor(name)
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                bad.append(f"{name} ({np.isnan(value).sum()} NaN, {np.isinf(value).sum()} Inf of {value.size})")
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise unreadable(checkpoint.prefix, e) from None
    if bad:
        raise CheckpointError(
            f"checkpoint {checkpoint.prefix} holds non-finite weights in {len(bad)} variable"
            f"{'s' if len(bad) > 1 else ''}: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
            "(a diverged training run? export an earlier step)"
        )


def misfits(checkpoint: Shapes, graph: Shapes) -> tuple[list[str], list[str]]:
    """(missing variables, mis-shaped variables) of the graph against a checkpoint.

    Entries only the checkpoint has (global_step, Momentum slots) are ignored.
    """
    missing = [f"{name} {list(shape)}" for name, shape in graph.items() if name not in checkpoint]
    misshaped = [
        f"{name}: network {list(shape)}, checkpoint {list(checkpoint[name])}"
        for name, shape in graph.items()
        if name in checkpoint and tuple(checkpoint[name]) != tuple(shape)
    ]
    return missing, misshaped


def check_fits(
    checkpoint: Checkpoint,
    graph: Shapes,
    *,
    describe: str,
    alternatives: Iterable[tuple[str, Callable[[], Shapes]]] = (),
) -> None:
    """Raise CheckpointError naming the misfits, and the variant that fits, if any."""
    missing, misshaped = misfits(checkpoint.variables, graph)
    if not missing and not misshaped:
        return
    fits = next(
        (override for override, shapes in alternatives if not any(misfits(checkpoint.variables, shapes()))),
        None,
    )
    problems = []
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped (e.g. {'; '.join(misshaped[:2])})")
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    hint = f"; it fits {fits}" if fits else ""
    raise CheckpointError(
        f"checkpoint {checkpoint.prefix} does not fit {describe}{hint}\n"
        f"  {' and '.join(problems)}"
    )
