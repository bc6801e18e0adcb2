"""exportkit's export answers exactly as the notebook's own graph does.

Checkpoints come from the notebook's tf.layers code; our export runs through
run_export's config composition, is written, and is loaded back as TF Serving
loads it (serve tag, fresh graph) before comparing.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import notebook_reference
from tests.helpers import FAST, answers, export_in_process, parity_jpegs, run_requests


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
        f"export.root={tmp_path}", *FAST,  # compared below
    )
    images = parity_jpegs()
    want = notebook_reference.run_notebook_graph(prefix, images, resnet_size=size, top_k=5)
    # Distinct top-5 per image, or the comparison would prove little.
    assert len({tuple(row) for row in want["classes"]}) > 1

    singles = (0, 4)
    batch, *each = run_requests(result["version_path"], [("predict_images", {"images": images})] + [
        ("serving_default", {"images": images[i : i + 1]}) for i in singles])
    np.testing.assert_array_equal(batch["classes"], want["classes"])
    np.testing.assert_allclose(batch["probabilities"], want["probabilities"], atol=1e-4, rtol=0)
    for i, single in zip(singles, each):
        np.testing.assert_array_equal(single["classes"], want["classes"][i : i + 1])
        np.testing.assert_allclose(single["probabilities"], want["probabilities"][i : i + 1], atol=1e-4, rtol=0)


def test_full_softmax_head_gives_true_class_probabilities(notebook_checkpoints, tmp_path):
    prefix = notebook_checkpoints[18]
    result, _ = export_in_process(
        "model.size=18", f"checkpoint.path={prefix}", "preprocessing=notebook",
        "head.probabilities=full", "head.k=3", f"export.root={tmp_path}", *FAST,
    )
    images = parity_jpegs()[:3]
    want = notebook_reference.run_notebook_graph(prefix, images, resnet_size=18, top_k=3)
    full = tf.nn.softmax(want["logits"]).numpy()
    got = answers(result["version_path"], images)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["probabilities"], np.take_along_axis(full, want["classes"], 1), atol=1e-5)
    assert (got["probabilities"].sum(1) < 1).all()
