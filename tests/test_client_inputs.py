"""client/resnet_client.py on inputs it must refuse or fix before any request:
decompression bombs, files that are not images, malformed --server and
--image-size, and EXIF-rotated photos. No server and no TensorFlow: each test
takes well under a second."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from exportkit import client
from tests.helpers import REPO, encode_image, jpeg_claiming

SCRIPT = REPO / "client" / "resnet_client.py"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _script(*argv: str) -> subprocess.CompletedProcess:
    """The entry point in its own process, on an 80-column terminal (where a
    long message would wrap if the client let it), importing this tree's
    exportkit rather than whichever checkout the venv was installed from."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60, env=env)


def _assert_one_line_error(run: subprocess.CompletedProcess, message: str) -> None:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {message}"], run.stderr
    assert run.stdout == ""


def test_a_decompression_bomb_is_refused_naming_the_file_and_the_limit(tmp_path):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_claiming(20000, 20000))
    assert bomb.stat().st_size < 1000
    run = _script(str(bomb), "--server", "127.0.0.1:9")
    limit = 2 * Image.MAX_IMAGE_PIXELS
    _assert_one_line_error(
        run, f"{bomb}: 400,000,000 pixels, over PIL's decompression-bomb limit of {limit:,} pixels; not decoding it")


@pytest.mark.parametrize("kind", ["text", "truncated jpeg"])
def test_a_file_that_is_not_an_image_is_named(tmp_path, kind):
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("not an image")
        message = f"{path}: not an image PIL can read (unknown format; 12 bytes starting b'not an i')"
    else:
        jpeg = encode_image((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
        path = tmp_path / "cut.jpg"
        path.write_bytes(jpeg[:len(jpeg) // 2])
        message = f"{path}: not an image PIL can read (image file is truncated"
    run = _script(str(path), "--server", "127.0.0.1:9")
    assert "BytesIO" not in run.stderr, run.stderr  # PIL's message names only its in-memory file
    if kind == "text":
        _assert_one_line_error(run, message)
    else:
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.startswith(f"error: {message}") and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_error_lines_keep_file_names_literal_and_unwrapped(tmp_path):
    """Rich would read [red] as markup and :abc: as an emoji, and wrap at 80 columns."""
    path = tmp_path / ("[red]photo:abc:" + "x" * 80 + ".jpg")
    path.write_text("not an image")
    err = io.StringIO()
    code = client.main([str(path)], console=Console(file=io.StringIO()), errors=Console(file=err, width=80))
    assert code == 1
    assert err.getvalue() == (f"error: {path}: not an image PIL can read "
                              "(unknown format; 12 bytes starting b'not an i')\n")


def _parse_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        client.build_parser().parse_args(["cat.jpg", *argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("server", ["localhost:", ":8500", "localhost:abc", "localhost:0", "localhost:65536",
                                    "localhost", "localhost:+80", ""])
def test_server_must_be_host_and_a_port_in_range(capsys, server):
    """gRPC dials 443 for 'localhost:' and REST port 80; the others fail as 'cannot reach'."""
    assert _parse_error(capsys, "--server", server).endswith(
        f"error: argument --server: {server!r} is not host:port with a port in 1..65535, e.g. localhost:8500")


@pytest.mark.parametrize(("server", "message"), [
    ("http://localhost:8501", "'http://localhost:8501' is a URL; give host:port, e.g. localhost:8500"),
    ("::1:8500", "'::1:8500': an IPv6 host goes in brackets, e.g. [::1]:8500"),
])
def test_server_urls_and_bare_ipv6_are_refused(capsys, server, message):
    assert _parse_error(capsys, "--server", server).endswith(f"error: argument --server: {message}")


@pytest.mark.parametrize("server", ["localhost:8500", "10.0.0.2:1", "[::1]:65535", "serving.example.com:8501"])
def test_good_servers_pass(server):
    assert client.build_parser().parse_args(["cat.jpg", "--server", server]).server == server


@pytest.mark.parametrize("size", ["0", "-1", "ten", "100000"])
def test_image_size_must_be_a_sane_number_of_pixels(capsys, size):
    """100000 would allocate 30 GB before PIL failed (MemoryError, or a silent OOM kill)."""
    assert _parse_error(capsys, "--image-size", size).endswith(
        f"error: argument --image-size: {size!r} is not a number of pixels in 1..4096")


@pytest.mark.parametrize("timeout", ["-1", "0", "inf", "soon"])
def test_timeout_must_be_positive(capsys, timeout):
    """urllib raised 'ValueError: Timeout value out of range' as a traceback for -1."""
    assert _parse_error(capsys, "--timeout", timeout).endswith(
        f"error: argument --timeout: {timeout!r} is not a positive number of seconds")


# ------------------------------------------------------------------- EXIF


def _sideways_photo(path: Path) -> Path:
    """What a phone held upright writes: 64x32 stored pixels, left half red and
    right half blue, with EXIF Orientation 6 (turn 90 degrees clockwise to
    view), so a viewer shows a 32x64 image, red on top and blue below."""
    pixels = np.zeros((32, 64, 3), dtype="uint8")
    pixels[:, :32], pixels[:, 32:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(pixels).save(path, format="JPEG", exif=exif, quality=95)
    return path


def _layout(jpeg: bytes) -> str:
    """'upright' when red is on top and blue below, 'sideways' when red is left and blue right."""
    with Image.open(io.BytesIO(jpeg)) as image:
        assert "exif" not in image.info  # nothing left for the server to turn again
        rgb = np.asarray(image.convert("RGB")).astype(int)
    h, w, _ = rgb.shape
    near = lambda y, x, colour: np.abs(rgb[y, x] - colour).max() < 40  # noqa: E731
    if near(h // 8, w // 2, RED) and near(h * 7 // 8, w // 2, BLUE):
        return "upright"
    if near(h // 2, w // 8, RED) and near(h // 2, w * 7 // 8, BLUE):
        return "sideways"
    return f"neither: {rgb[h // 8, w // 2]} {rgb[h // 2, w // 8]}"


def _sent(monkeypatch, *argv: str) -> list[bytes]:
    """The images main() hands to the gRPC call, with the call itself faked."""
    sent = []

    def predict(target, images, **_):
        sent.extend(images)
        return {"classes": np.array([[1, 2, 3, 4, 5]] * len(images)),
                "probabilities": np.full((len(images), 5), 0.2)}

    monkeypatch.setattr(client, "predict_grpc", predict)
    code = client.main([*argv, "--labels", "none", "--no-metadata"], console=Console(file=io.StringIO()),
                       errors=Console(file=io.StringIO()))
    assert code == 0
    return sent


def test_exif_orientation_is_applied_before_resizing(tmp_path, monkeypatch):
    photo = str(_sideways_photo(tmp_path / "phone.jpg"))
    [upright] = _sent(monkeypatch, photo, "--image-size", "32")
    assert _layout(upright) == "upright"
    [stored] = _sent(monkeypatch, photo, "--image-size", "32", "--no-exif-transpose")
    assert _layout(stored) == "sideways"
    # The library call does the same.
    [again] = client.prepare_images([photo], image_size=32, send_original=False, timeout=5)
    assert _layout(again) == "upright"


def test_no_exif_transpose_is_documented():
    help_text = " ".join(client.build_parser().format_help().split())
    assert "--no-exif-transpose send the pixels as stored; by default each image is first turned upright by its " \
           "EXIF Orientation tag" in help_text


# ------------------------------------------------------------ signatures, versions, keys


@pytest.mark.parametrize(("argv", "message"), [
    (["--version", "1", "--version-label", "stable"], "argument --version-label: not allowed with argument --version"),
    (["--version", "-1"], "argument --version: '-1' is not a version number (0..9223372036854775807)"),
    (["--version", "v2"], "argument --version: 'v2' is not a version number (0..9223372036854775807)"),
    (["--version-label", " "], "argument --version-label: an empty name"),
    (["--classify", "--key", "a"], "--key is for Predict: a Classify request carries only tf.Examples (--classify)"),
    (["--classify", "--input-key", "images"],
     "--input-key is for Predict: a Classify request carries only tf.Examples (--classify)"),
    (["--classify", "--rest", "--columnar"],
     "--columnar is for Predict: a Classify request carries only tf.Examples (--classify)"),
    (["--example-feature", "image/jpeg"], "--example-feature is for --classify"),
])
def test_contradicting_options_are_refused_by_argparse(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        client.main(["cat.jpg", *argv], console=Console(file=io.StringIO()), errors=Console(file=io.StringIO()))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_keys_are_repeatable_and_comma_lists():
    assert client.split_keys(["a,b", "c", ""]) == ["a", "b", "c", ""]
    assert client.split_keys(None) is None


def test_the_key_count_is_checked_before_anything_is_read(tmp_path):
    err = io.StringIO()
    code = client.main([str(tmp_path / "missing.jpg"), str(tmp_path / "other.jpg"), "--key", "a,b,c"],
                       console=Console(file=io.StringIO()), errors=Console(file=err, width=200))
    assert code == 1
    assert err.getvalue() == "error: 3 --key values for 2 images: give one per image\n"


def test_the_script_help_names_every_option():
    run = _script("--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())
    for option in ("--version VERSION | --version-label LABEL", "--signature-name NAME", "--input-key NAME",
                   "--key VALUE", "--key-name NAME", "--classify", "--example-feature NAME", "--no-metadata",
                   "--image-size IMAGE_SIZE", "--labels LABELS"):
        assert option in text, option
    assert "GetModelMetadata" in text and "(then: signature predict_images, input images)" in text
