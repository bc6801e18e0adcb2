"""Bad request content against the exported graph itself, as TF Serving runs it.

The export is served by the test PredictionService, so each case is what a
TF Serving client would get: INVALID_ARGUMENT with a message naming the image
and the problem, never a crash or other images' classes silently changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from exportkit.preprocessing import decode_checked
from tests.helpers import FAST, REPO, encode_image, export_resnet18, jpeg_claiming, smooth_pixels
from tests.serving_stub import LoadedModels, start_grpc


def corrupt_huffman_table(jpeg: bytes) -> bytes:
    """A JPEG whose header and end marker are intact but whose Huffman table is not: only
    the decode kernel finds out ("jpeg::Uncompress failed", naming no image)."""
    data = bytearray(jpeg)
    table = data.find(b"\xff\xc4")
    data[table + 4:table + 40] = b"\xff" * 36
    return bytes(data)


GOOD = encode_image(smooth_pixels(320, 240))


@pytest.fixture(scope="module")
def server(resnet18_model_dir, tmp_path_factory):
    """Two exports: JPEG only (the default) and decode=image (JPEG or PNG)."""
    root = tmp_path_factory.mktemp("bad_images")
    # FAST: the bad requests are the test
    export_resnet18(resnet18_model_dir, root, *FAST, "export.model_name=jpeg")
    export_resnet18(resnet18_model_dir, root, *FAST, "export.model_name=image", "preprocessing.decode=image")
    models = LoadedModels({"jpeg": root / "jpeg", "image": root / "image"})
    grpc_server, port = start_grpc(models)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)])
    yield {"stub": prediction_service_pb2_grpc.PredictionServiceStub(channel), "models": models, "root": root}
    channel.close()
    grpc_server.stop(None)
    models.close()


def predict(server, images: list[bytes], model: str = "jpeg") -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "predict_images"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
    response = server["stub"].Predict(request, timeout=60)
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


BAD = {
    "not an image": (b"GIF89a? not what it seems", "images[1] is not a JPEG (25 bytes)"),
    "truncated JPEG": (GOOD[: len(GOOD) // 2], "images[1] is a truncated JPEG (no end-of-image marker)"),
    "empty string": (b"", "images[1] is empty"),
    "decompression bomb": (jpeg_claiming(30000, 30000),
                           "images[1] is 30000x30000 pixels, over the limit of 50,000,000 pixels"),
    "PNG without decode=image": (encode_image(smooth_pixels(50, 50), "PNG"), "images[1] is not a JPEG"),
    "corrupt header": (corrupt_huffman_table(GOOD), "images[1] has a corrupt header: its size cannot be read"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_image_is_invalid_argument_naming_image_and_problem(server, case):
    data, message = BAD[case]
    with pytest.raises(grpc.RpcError) as error:
        predict(server, [GOOD, data, GOOD])  # the good ones around it get no answer, not a wrong one
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    predict(server, [GOOD])  # the server is still serving


def test_png_with_decode_image_and_its_own_bad_cases(server):
    pixels = smooth_pixels(300, 200)
    png = encode_image(pixels, "PNG")
    answer = predict(server, [png, GOOD], model="image")
    assert answer["classes"].shape == (2, 5)
    corrupt_png = png[:60] + bytes(len(png) - 60)  # IHDR intact, the pixel data zeroed
    for data, message in [(png[:20], "images[0] is a truncated PNG"),
                          (corrupt_png, "images[0] could not be decoded: corrupt image data after a valid header"),
                          (b"BM" + bytes(60), "images[0] is not a JPEG or PNG (62 bytes)")]:
        with pytest.raises(grpc.RpcError, match=None) as error:
            predict(server, [data], model="image")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()
    huge_png = bytearray(png)
    huge_png[16:24] = (40000).to_bytes(4, "big") + (40000).to_bytes(4, "big")  # IHDR width, height
    with pytest.raises(grpc.RpcError) as error:
        predict(server, [bytes(huge_png)], model="image")
    assert "images[0] is 40000x40000 pixels, over the limit" in error.value.details()


def _decode(data: bytes, decode: str = "jpeg") -> np.ndarray:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        image = decode_checked(tf.constant(data), tf.constant(0), {"decode": decode, "max_pixels": 10**8})
        return sess.run(image)


def test_grayscale_cmyk_and_progressive_jpegs_decode_to_three_channels(server):
    pixels = smooth_pixels(200, 150)
    gray = _decode(encode_image(pixels, mode="L", quality=95))
    assert gray.shape == (150, 200, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    reference = _decode(encode_image(pixels, quality=95)).astype(int)
    cmyk = _decode(encode_image(pixels, mode="CMYK", quality=95)).astype(int)
    progressive = _decode(encode_image(pixels, quality=95, progressive=True)).astype(int)
    assert cmyk.shape == progressive.shape == (150, 200, 3)
    assert np.abs(cmyk - reference).mean() < 4  # the same picture, not inverted or channel-swapped
    assert np.abs(progressive - reference).mean() < 2
    png = _decode(encode_image(pixels, "PNG", mode="RGBA"), decode="image")
    assert np.array_equal(png, pixels)  # lossless: exactly the pixels, alpha dropped
    kinds = [encode_image(pixels, mode="L"), encode_image(pixels, mode="CMYK"), encode_image(pixels, progressive=True)]
    assert predict(server, kinds)["classes"].shape == (3, 5)


def test_wide_photos_pass_and_the_images_after_a_corrupt_one_are_named_by_index(server):
    panorama = encode_image(smooth_pixels(4000, 500))  # 8:1, resized to 2048x256: well inside the resize budget
    assert predict(server, [panorama, GOOD])["classes"].shape == (2, 5)
    with pytest.raises(grpc.RpcError) as error:
        predict(server, [GOOD, GOOD, GOOD, corrupt_huffman_table(GOOD), corrupt_huffman_table(GOOD)])
    assert "images[3] has a corrupt header" in error.value.details()  # the first of the two


def test_an_empty_batch_returns_empty_outputs_of_the_right_shapes(server):
    answer = predict(server, [])
    assert answer["classes"].shape == (0, 5) and answer["classes"].dtype == np.int32
    assert answer["probabilities"].shape == (0, 5) and answer["probabilities"].dtype == np.float32


# The serving process's peak memory: a bomb must not raise it. Run in a fresh
# process so the peak belongs to this experiment alone. The
# "control" decodes a real large image under a limit that allows it, showing
# that the measurement does see a full-size decode.
_MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from tests.serving_stub import LoadedModels, ServingError

    def peak_mib():  # VmHWM: this process image's own peak (ru_maxrss would carry pytest's over exec)
        line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    good, real_big, header_bomb, thin, thinner, narrow = (open(p, "rb").read() for p in sys.argv[1:7])
    models = LoadedModels({{"strict": {strict!r}, "lenient": {lenient!r}}})
    run = lambda name, data: models.predict(name, "predict_images", {{"images": np.array([data], dtype=object)}})
    for name in ("strict", "lenient"):
        run(name, good)
    result = {{"baseline": peak_mib()}}
    # The thin JPEGs go to the default limit, where they passed the pixel check and the resize
    # to a shorter side of 256 made gigabytes of them.
    for label, name, data in (("real_big", "strict", real_big), ("header_bomb", "strict", header_bomb),
                              ("thin", "lenient", thin), ("thinner", "lenient", thinner),
                              ("narrow", "lenient", narrow)):
        try:
            run(name, data)
            result[label] = "accepted"
        except ServingError as e:
            result[label] = e.message.splitlines()[0]
    result["after_bombs"] = peak_mib()
    result["next_request"] = run("lenient", good)[0]["classes"].shape[1]  # the session keeps serving
    run("lenient", real_big)
    result["after_control"] = peak_mib()
    print(json.dumps(result))
""")


def test_bombs_are_refused_before_any_pixel_buffer_so_memory_stays_bounded(server, resnet18_model_dir, tmp_path):
    export_resnet18(resnet18_model_dir, tmp_path, *FAST, "export.model_name=strict", "preprocessing.max_pixels=4000000")
    lenient = server["root"] / "jpeg"  # the default 50 MP limit
    files = {"good": GOOD,
             # a real photo-sized picture, tiled from a smaller one (computing every pixel takes 10 s)
             "real_big": encode_image(np.tile(smooth_pixels(600, 600), (10, 10, 1)), quality=80),
             "header_bomb": jpeg_claiming(30000, 30000),
             "thin": encode_image(smooth_pixels(60000, 4)),  # 48 KB
             "thinner": encode_image(smooth_pixels(20000, 8)),  # 18 KB
             "narrow": encode_image(smooth_pixels(12207, 16))}

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    probe = _MEMORY_PROBE.format(repo=str(REPO), strict=str(tmp_path / "strict"), lenient=str(lenient))
    run = subprocess.run([sys.executable, "-c", probe, *(str(tmp_path / n) for n in files)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(result)  # the figures the docs quote, with -s
    assert result["real_big"] == "assertion failed: [images[0] is 6000x6000 pixels, over the limit of 4,000,000 pixels]"
    assert result["header_bomb"].startswith("assertion failed: [images[0] is 30000x30000 pixels")
    assert result["thin"] == ("assertion failed: [images[0] is 60000x4 pixels: resized to a shorter side of 256 it "
                              "would be 3840000x256, over the resize budget of 12,500,000 pixels]")
    # Under the old budget (max_pixels itself) this one passed and made a 600 MB float buffer.
    assert result["narrow"] == ("assertion failed: [images[0] is 12207x16 pixels: resized to a shorter side of 256 "
                                "it would be 195312x256, over the resize budget of 12,500,000 pixels]")
    assert result["thinner"].startswith("assertion failed: [images[0] is 20000x8 pixels: resized to a shorter side")
    assert result["next_request"] == 5
    # A 6000x6000 decode holds 103 MiB of pixels: the refusals must not come near it...
    assert result["after_bombs"] - result["baseline"] < 20, result
    # ...and the measurement sees it when a limit lets the same image through.
    assert result["after_control"] - result["after_bombs"] > 60, result
