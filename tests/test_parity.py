"""exportkit's export answers exactly as the notebook's own graph does.

Checkpoints come from the notebook's tf.layers code; our export runs through
run_export's config composition, is written, and is loaded back as TF Serving
loads it (serve tag, fresh graph) before comparing.
"""

import numpy as np
import pytest
import tensorflow as tf

from exportkit import runtime
from exportkit.verify import run_signature, sample_jpegs
from tests import notebook_reference
from tests.conftest import export_in_process


def _jpegs():
    rng = np.random.RandomState(7)
    images = sample_jpegs(224, seed=3)
    for shape in [(224, 224, 3), (300, 180, 3), (120, 500, 3)]:
        pixels = rng.randint(0, 256, size=shape).astype(np.uint8)
        images.append(tf.io.encode_jpeg(pixels).numpy())
    return images


def load_and_run(version_path, signature, images):
    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_path)
        return run_signature(sess, meta.signature_def[signature], {"images": np.array(images, dtype=object)})


@pytest.mark.parametrize("size, data_format", [
    pytest.param(18, "channels_last", marks=pytest.mark.runtime),
    (50, "channels_last"),
    pytest.param(18, "channels_first", marks=pytest.mark.runtime),
])
def test_top5_matches_the_notebook_for_single_images_and_batches(size, data_format, notebook_checkpoints, tmp_path):
    """The checkpoint (trained channels_last) restores unchanged in either layout."""
    prefix = notebook_checkpoints[size]
    result, _ = export_in_process(
        f"model.size={size}", f"checkpoint.path={prefix}", "preprocessing=notebook",
        "head.probabilities=top_k", "head.k=5", f"model.data_format={data_format}",
        f"export.root={tmp_path}", "export.verify=false", "serving.warmup.enabled=false",  # compared below
    )
    images = _jpegs()
    want = notebook_reference.run_notebook_graph(prefix, images, resnet_size=size, top_k=5)
    # Distinct top-5 per image, or the comparison would prove little.
    assert len({tuple(row) for row in want["classes"]}) > 1

    batch = load_and_run(result["version_path"], "predict_images", images)
    np.testing.assert_array_equal(batch["classes"], want["classes"])
    np.testing.assert_allclose(batch["probabilities"], want["probabilities"], atol=1e-4, rtol=0)
    for i in (0, 4):
        single = load_and_run(result["version_path"], "serving_default", images[i : i + 1])
        np.testing.assert_array_equal(single["classes"], want["classes"][i : i + 1])
        np.testing.assert_allclose(single["probabilities"], want["probabilities"][i : i + 1], atol=1e-4, rtol=0)


def test_full_softmax_head_gives_true_class_probabilities(notebook_checkpoints, tmp_path):
    prefix = notebook_checkpoints[18]
    result, _ = export_in_process(
        "model.size=18", f"checkpoint.path={prefix}", "preprocessing=notebook",
        "head.probabilities=full", "head.k=3", f"export.root={tmp_path}", "export.verify=false",
        "serving.warmup.enabled=false",
    )
    images = _jpegs()[:3]
    want = notebook_reference.run_notebook_graph(prefix, images, resnet_size=18, top_k=3)
    full = tf.nn.softmax(want["logits"]).numpy()
    got = load_and_run(result["version_path"], "predict_images", images)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["probabilities"], np.take_along_axis(full, want["classes"], 1), atol=1e-5)
    assert (got["probabilities"].sum(1) < 1).all()
