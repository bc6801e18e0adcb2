"""What the tests share that is not a fixture (fixtures live in tests/conftest.py).

Composing and exporting as run_export.py does, run_export.py in a subprocess, loading a
version as TF Serving does and running its signatures, the images the tests send, and the
client's command line in this process. TensorFlow is imported only inside the functions
that need it, so config tests stay light.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# The graph saved as built, weights in variables, no rewrite: the notebook's export.
AS_BUILT = ("export.freeze=false", "export.fold_batch_norm=false", "export.fuse_residual_add=false",
            "export.scale_shift_batch_norm=false")
# For exports whose answers a test checks itself: no verification, no warmup records.
FAST = ("export.verify=false", "serving.warmup.enabled=false")
# The smallest registered network (tests/conftest.py's cifar8_model_dir), for what is not model-specific.
CIFAR8 = ("model=cifar_resnet", "model.size=8")


# ------------------------------------------------------------------ composing and exporting


def compose_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def export_in_process(*overrides: str) -> tuple[dict[str, Any], str]:
    """Compose like run_export.py and export; returns (summary, terminal output)."""
    from rich.console import Console

    from exportkit.config import to_plain, validate
    from exportkit.console import Reporter
    from exportkit.export import export_model

    cfg = compose_config(*overrides)
    validate(cfg)
    out = io.StringIO()
    result = export_model(to_plain(cfg), reporter=Reporter(Console(file=out, width=200)))
    return result, out.getvalue()


def export_resnet18(model_dir: Path, root: Path, *overrides: str) -> tuple[dict[str, Any], str]:
    """ResNet-18 from ``model_dir`` into the serving root ``root``, in this process."""
    return export_in_process("model.size=18", f"checkpoint.path={model_dir}", f"export.root={root}", *overrides)


def export_with_onednn(*overrides: str, run_dir: Path) -> dict[str, Any]:
    """An export that needs TF's oneDNN kernels (bf16): in this process where oneDNN is on,
    else in a child with TF_ENABLE_ONEDNN_OPTS=1, as the bf16 refusal tells a user to do."""
    from exportkit import runtime

    if runtime.current().onednn:
        return export_in_process(*overrides)[0]
    run = run_cli(*overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, env={runtime.ONEDNN_VAR: "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((run_dir / "exportkit_result.json").read_text())


def run_cli(*args: str, cwd: Path, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """run_export.py in a subprocess, as a user runs it; ``env`` adds variables."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "run_export.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def run_job_in_process(*overrides: str, run_dir: Path) -> tuple[int, str]:
    """exportkit.cli.run_job on a composed config, as run_export.py's Hydra main calls it,
    in this process: (exit code, what it printed on a 200-column terminal). Hydra's own
    compose errors come before run_job; run_cli shows those."""
    import contextlib
    import signal
    from unittest import mock

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from exportkit.cli import run_job

    cfg = compose_config(*overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # its own copy, with the hydra node
    with open_dict(cfg):
        del cfg["hydra"]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}  # run_job sets both
    out = io.StringIO()
    try:
        with mock.patch.dict(os.environ, {"COLUMNS": "200"}), contextlib.redirect_stdout(out):
            run_job(cfg)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        HydraConfig.instance().cfg = None
    return code, out.getvalue()


def integer_versions(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.isdigit()) if base.exists() else []


def export_metadata(version_path: str | Path) -> dict[str, Any]:
    """assets.extra/export_metadata.json of a written version."""
    return json.loads((Path(version_path) / "assets.extra" / "export_metadata.json").read_text())


def checkout_options(group: str) -> set[str]:
    """This checkout's options of a config group (conf/<group>/*.yaml, schemas aside)."""
    return {p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("base_")}


def help_options(stdout: str, group: str) -> set[str]:
    """The options ``--help`` lists for one config group."""
    line = next(line for line in stdout.splitlines() if line.startswith(f"{group}: "))
    return set(line[len(group) + 2:].split(", "))


# ------------------------------------------------------------------ a version as TF Serving loads it


def signature_defs(version_path: str | Path) -> dict[str, Any]:
    """The serve tag's SignatureDefs, read from saved_model.pb as saved_model_cli reads them."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(version_path) / "saved_model.pb").read_bytes())
    [meta_graph] = [m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags]
    return dict(meta_graph.signature_def)


def run_requests(version_path: str | Path, requests: Sequence[tuple[str, Mapping[str, Any]]], *,
                 signatures: set[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Load a version with the serve tag into a fresh graph, as TF Serving does, and run each
    (signature, inputs) request in turn; lists of bytes go in as string tensors.
    ``signatures``: the keys the version must have, exactly."""
    import tensorflow as tf

    from exportkit import runtime
    from exportkit.verify import run_signature

    def tensor(value: Any) -> Any:
        is_bytes = isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes)
        return np.array(value, dtype=object) if is_bytes else value

    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tf.saved_model.SERVING], str(version_path))
        if signatures is not None:
            assert set(meta.signature_def) == signatures, sorted(meta.signature_def)
        return [run_signature(sess, meta.signature_def[name], {key: tensor(value) for key, value in inputs.items()})
                for name, inputs in requests]


def run_signatures(version_path: str | Path, requests: Mapping[str, Mapping[str, Any]], *,
                   signatures: set[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """:func:`run_requests` with one request per signature: signature -> its outputs."""
    return dict(zip(requests, run_requests(version_path, list(requests.items()), signatures=signatures)))


def answers(version_path: str | Path, images: Sequence[bytes],
            signature: str = "predict_images") -> dict[str, np.ndarray]:
    """One signature's outputs for encoded images sent as its ``images`` input."""
    return run_requests(version_path, [(signature, {"images": list(images)})])[0]


# ------------------------------------------------------------------ images


def noise_jpegs(shapes: Iterable[tuple[int, int]], *, seed: int) -> list[bytes]:
    """JPEGs of uniform noise (height, width each), through TF's encoder at quality 95."""
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    return [tf.io.encode_jpeg(rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8), quality=95).numpy()
            for h, w in shapes]


def parity_jpegs() -> list[bytes]:
    """Six JPEGs with distinct answers: the smooth verification samples (exact size, larger,
    smaller) and noise at the input size, tall and wide."""
    from exportkit.verify import sample_jpegs

    return sample_jpegs(224, seed=3) + noise_jpegs([(224, 224), (300, 180), (120, 500)], seed=7)


def smooth_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like picture (overlapping waves), so JPEG sizes and decodes are realistic."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.RandomState(seed)
    channels = [127 + 100 * np.sin(x / rng.uniform(5, 30) + c) * np.cos(y / rng.uniform(5, 30)) for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: str = "JPEG", mode: str = "RGB", **options: Any) -> bytes:
    """``pixels`` in ``fmt`` through PIL, converted to ``mode`` first (L, CMYK, RGBA, P...)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt, **options)
    return out.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 frame header is edited to claim width x height pixels:
    a decompression bomb of a few hundred bytes."""
    data = bytearray(encode_image(smooth_pixels(16, 16)))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def write_photos(directory: Path, kinds: Sequence[tuple[str, str, tuple[int, int]]], *, seed: int) -> list[Path]:
    """Image files of (PIL mode, format, (width, height)) each, noise pixels: photoN.<format>."""
    rng = np.random.RandomState(seed)
    paths = []
    for i, (mode, fmt, (width, height)) in enumerate(kinds):
        path = directory / f"photo{i}.{fmt.lower()}"
        path.write_bytes(encode_image((rng.rand(height, width, 3) * 255).astype("uint8"), fmt, mode))
        paths.append(path)
    return paths


def b64(data: bytes) -> dict[str, str]:
    """A bytes value as TF Serving's REST API writes it."""
    return {"b64": base64.b64encode(data).decode()}


# ------------------------------------------------------------------ the client, in this process


def run_client(*argv: str, width: int = 200) -> tuple[int, str, str]:
    """client/resnet_client.py's main in this process: (exit code, stdout, stderr)."""
    from rich.console import Console

    from exportkit import client

    out, err = io.StringIO(), io.StringIO()
    code = client.main(list(argv), console=Console(file=out, width=width), errors=Console(file=err, width=width))
    return code, out.getvalue(), err.getvalue()


def table_rows(table_text: str) -> list[list[str]]:
    """The body rows of a table the client printed, as stripped cells."""
    return [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in table_text.splitlines() if line.startswith("│")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ cluster daemons (Ray, SLURM)


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a daemon started with start_new_session=True)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def stop_session(proc: subprocess.Popen, *, grace_s: float = 2.0) -> None:
    """SIGTERM to the daemon's process group, then SIGKILL to whatever of its session is left
    after ``grace_s`` (on SIGTERM, `ray start --block` drains for up to 30 s first)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    term_until, deadline = time.monotonic() + grace_s, time.monotonic() + grace_s + 10
    while (left := session_pids(proc.pid)) and time.monotonic() < deadline:
        if time.monotonic() > term_until:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    assert not session_pids(proc.pid), f"processes of {proc.args[0]} left running"
