"""Verification catches real differences and tolerates only float rounding."""

import numpy as np
import pytest

from exportkit.errors import ExportError
from exportkit.verify import _compare, sample_jpegs
from tests.helpers import AS_BUILT, CIFAR8, compose_config, export_in_process, integer_versions

# What verification checks is not ResNet-specific: the smallest registered network.


def _outputs(classes, probabilities):
    return {"classes": np.array(classes, np.int32), "probabilities": np.array(probabilities, np.float32)}


def test_identical_outputs_pass():
    out = _outputs([[3, 1]], [[0.6, 0.3]])
    assert _compare("s", out, out) == 0.0


def test_rounding_below_the_tolerance_passes_and_is_reported():
    want = _outputs([[3, 1]], [[0.6, 0.3]])
    got = _outputs([[3, 1]], [[0.60002, 0.3]])
    assert 0 < _compare("s", got, want) < 1e-4


def test_probability_drift_fails():
    with pytest.raises(ExportError, match="'probabilities' differs from the exporting graph by 0.01"):
        _compare("s", _outputs([[3, 1]], [[0.61, 0.3]]), _outputs([[3, 1]], [[0.6, 0.3]]))


def test_class_swap_between_near_ties_passes_but_a_real_change_fails():
    want = _outputs([[3, 1, 7]], [[0.5, 0.20001, 0.2]])
    assert _compare("s", _outputs([[3, 7, 1]], [[0.5, 0.20001, 0.2]]), want) == 0.0
    with pytest.raises(ExportError, match="'classes' differs"):
        _compare("s", _outputs([[1, 3, 7]], [[0.5, 0.20001, 0.2]]), want)


def test_wrong_dtype_or_shape_fails():
    want = _outputs([[3, 1]], [[0.6, 0.3]])
    with pytest.raises(ExportError, match=r"'classes' is int64\[1, 2\], expected int32\[1, 2\]"):
        _compare("s", {**want, "classes": want["classes"].astype(np.int64)}, want)
    with pytest.raises(ExportError, match="outputs"):
        _compare("s", {"classes": want["classes"]}, want)


def test_sample_jpegs_are_deterministic_and_cover_crop_and_pad():
    import tensorflow as tf

    first, second = sample_jpegs(224), sample_jpegs(224)
    assert first == second
    shapes = [tuple(tf.io.extract_jpeg_shape(j).numpy()[:2]) for j in first]
    assert (224, 224) in shapes and any(h > 224 and w > 224 for h, w in shapes) and any(h < 224 for h, w in shapes)


@pytest.mark.parametrize("optimized", [True, False])
def test_a_version_that_answers_differently_is_never_published(optimized, cifar8_model_dir, tmp_path, monkeypatch):
    """A graph rewrite that changes the answers (a sign flipped in folding), or weights
    that change after writing: the run fails, nothing is left."""
    import tensorflow as tf

    from exportkit import export, optimize

    if optimized:
        fold = optimize.fold_batch_norms

        def broken_fold(graph_def):
            folded, count = fold(graph_def)
            bias = next(n for n in folded.node if n.name.endswith("/folded_bias"))
            optimize._set_const(bias, optimize._const_value(bias) + 5.0)
            return folded, count

        monkeypatch.setattr(optimize, "fold_batch_norms", broken_fold)
    else:
        original = export._write

        def write_then_drift(exporting, target):
            defs = original(exporting, target)
            with exporting.graph.as_default():
                kernel = next(v for v in tf.compat.v1.global_variables() if v.op.name == "dense/kernel")
                exporting.session.run(kernel.assign(-kernel))  # every logit flips sign: other classes win
            return defs

        monkeypatch.setattr(export, "_write", write_then_drift)
    overrides = [] if optimized else AS_BUILT
    with pytest.raises(ExportError, match="verification: 'predict_images' output '(classes|probabilities)' differs"):
        export_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}", f"export.root={tmp_path}", *overrides)
    base = tmp_path / "cifar_resnet"
    assert integer_versions(base) == [] and list(base.glob(".exportkit-staging*")) == []


def test_a_version_that_does_not_load_is_an_export_error(tmp_path):
    from exportkit.config import to_plain
    from exportkit.signatures import Interface
    from exportkit.verify import verify_saved_model

    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
    interface = Interface.from_params(to_plain(compose_config())["signature"])
    with pytest.raises(ExportError, match="verification: the written version does not load"):
        verify_saved_model(tmp_path, interface=interface, labels=None, images=[], expected={})


def test_answers_alike_for_every_image_fail_and_different_ones_pass():
    from exportkit.verify import check_answers_depend_on_input

    alike = _outputs([[3, 1]] * 3, [[0.6, 0.3]] * 3)
    with pytest.raises(ExportError, match=r"^verification: the network answers every image alike \(3 different sample "
                       r"JPEGs: top class 3 at probability 0\.6 for each, classes identical, float outputs within 0\): "
                       r"its answers do not depend on the input; a degenerate or untrained checkpoint\?$"):
        check_answers_depend_on_input(alike)
    # float noise far below any real dependence on the input is still "alike"
    with pytest.raises(ExportError, match="answers every image alike"):
        check_answers_depend_on_input(_outputs([[3, 1]] * 3, [[0.6, 0.3], [0.6000001, 0.3], [0.6, 0.2999999]]))
    # the same classes with different probabilities, or other classes: the input matters
    check_answers_depend_on_input(_outputs([[3, 1]] * 3, [[0.6, 0.3], [0.61, 0.3], [0.6, 0.3]]))
    check_answers_depend_on_input(_outputs([[3, 1], [3, 1], [1, 3]], [[0.6, 0.3]] * 3))
    # one image, or none, cannot tell
    check_answers_depend_on_input(_outputs([[3, 1]], [[0.6, 0.3]]))
    check_answers_depend_on_input({})


def _degenerate_copy(model_dir, target):
    """The checkpoint with its final dense kernel zeroed: every image gets the bias's logits."""
    import tensorflow as tf

    v1 = tf.compat.v1
    reader = tf.train.load_checkpoint(str(model_dir))
    prefix = tf.train.latest_checkpoint(str(model_dir))
    step = int(prefix.rsplit("-", 1)[1])
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        variables = []
        for name, _ in tf.train.list_variables(str(model_dir)):
            value = reader.get_tensor(name)
            if name == "dense/kernel":
                value = np.zeros_like(value)
            elif name == "dense/bias":  # a real spread of logits, the same for every image
                value = rng.normal(0, 2, value.shape).astype(value.dtype)
            variables.append(v1.Variable(value, name=name))
        sess.run(v1.global_variables_initializer())
        v1.train.Saver(variables).save(sess, str(target / "model.ckpt"), global_step=step)
    return target


def test_a_checkpoint_whose_answers_ignore_the_input_fails_verification(cifar8_model_dir, tmp_path):
    """Zeroed final kernel: reload and export agree exactly, yet the export proves nothing."""
    degenerate = _degenerate_copy(cifar8_model_dir, tmp_path / "degenerate")
    with pytest.raises(ExportError) as err:
        export_in_process(*CIFAR8, f"checkpoint.path={degenerate}", f"export.root={tmp_path / 'a'}")
    message = str(err.value)
    assert message.startswith("verification: the network answers every image alike (3 different sample JPEGs: top class")
    assert message.endswith("its answers do not depend on the input; a degenerate or untrained checkpoint?")
    base = tmp_path / "a" / "cifar_resnet"
    assert integer_versions(base) == [] and list(base.glob(".exportkit-staging*")) == []

    result, _ = export_in_process(*CIFAR8, f"checkpoint.path={cifar8_model_dir}", f"export.root={tmp_path / 'b'}")
    assert result["verification"]["passed"] is True and integer_versions(tmp_path / "b" / "cifar_resnet") == ["1"]
