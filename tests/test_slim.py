"""The slim plugin (TF-slim model zoo) against TF-slim's own code.

The oracle is tf_slim 1.1.0's ``tf_slim.nets`` (resnet_v1, resnet_v2, vgg) and
tensorflow/models research/slim's mobilenet_v1.py and eval preprocessing, copied into
tests/slim_reference.py. Checkpoints are written by the tf_slim networks themselves
(randomized, with trained-like batch norms and calibrated logits), saved in the zoo's
V1 single-file format inside zoo-named tarballs, exported with ``model=slim
model.arch=...`` and compared with slim's eval pipeline: slim's preprocessing, then
the tf_slim network restored from the same file. The inception archs have their own
module (tests/test_slim_inception.py).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import slim_reference as ref  # first: the tf_keras alias tf_slim needs
from tests.helpers import compose_config, export_in_process, integer_versions, run_cli

import tensorflow as tf  # noqa: E402  (after the reference module set TF_USE_LEGACY_KERAS)

from exportkit.config import ConfigError, to_plain, validate  # noqa: E402
from exportkit.errors import CheckpointError, ExportError  # noqa: E402
from exportkit.plugin import load_plugins  # noqa: E402
from exportkit.registry import MODELS  # noqa: E402

# The plugin's import path, in one place (the built-in plugins are exportkit.models.*).
SLIM = "exportkit.models.slim"
load_plugins([SLIM])

v1 = tf.compat.v1

# What slim used for each arch, written out independently of the plugin's table
# (research/slim README and preprocessing_factory): (preset, eval size, classes).
SLIM_EVAL = {
    **{f"resnet_v1_{d}": ("vgg", 224, 1000) for d in (50, 101, 152, 200)},
    **{f"resnet_v2_{d}": ("inception", 299, 1001) for d in (50, 101, 152, 200)},
    "vgg_16": ("vgg", 224, 1000), "vgg_19": ("vgg", 224, 1000),
    **{a: ("inception", 224, 1001) for a in ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")},
    "inception_v1": ("inception", 224, 1001), "inception_v2": ("inception", 224, 1001),
    "inception_v3": ("inception", 299, 1001),
}
OURS = [arch for arch in SLIM_EVAL if not arch.startswith("inception")]


def _config(*overrides: str) -> dict:
    cfg = compose_config("model=slim", *overrides)
    validate(cfg)
    config = to_plain(cfg)
    MODELS.get("slim").validate(config["model"])
    return config


# ------------------------------------------------------------------------ config


@pytest.mark.parametrize("arch", list(SLIM_EVAL))
def test_each_arch_gets_slims_preprocessing_input_size_classes_and_labels(arch):
    from exportkit.labels import load_labels

    config = _config(f"model.arch={arch}")
    preset, size, classes = SLIM_EVAL[arch]
    assert (config["preprocessing"]["name"], config["preprocessing"]["image_size"]) == (preset, size)
    assert config["model"]["num_classes"] == classes
    labels = load_labels(config["model"]["labels"])
    assert len(labels) == classes
    assert labels[0] == ("background" if classes == 1001 else "tench, Tinca tinca")


@pytest.mark.parametrize("arch, preset", [("resnet_v1_50", "vgg"), ("resnet_v2_50", "inception")])
def test_the_arch_preprocessing_is_exportkits_preset_of_that_name(arch, preset):
    slim = _config(f"model.arch={arch}")["preprocessing"]
    alone = to_plain(compose_config(f"preprocessing={preset}", f"preprocessing.image_size={slim['image_size']}"))
    assert slim == alone["preprocessing"]


def test_command_line_settings_win_over_the_arch_defaults():
    config = _config("model.arch=mobilenet_v1_050", "preprocessing.image_size=160")
    assert config["preprocessing"]["image_size"] == 160 and config["preprocessing"]["name"] == "inception"
    fine_tuned = _config("model.arch=resnet_v2_50", "model.num_classes=5")
    assert fine_tuned["model"]["num_classes"] == 5 and fine_tuned["model"]["labels"] is None
    assert _config("model.arch=resnet_v2_50", "preprocessing=vgg")["preprocessing"]["name"] == "vgg"
    # The slim preset with a model that has no arch: the first arch's, vgg at 224 (resnet's own).
    assert to_plain(compose_config("preprocessing=slim"))["preprocessing"] == to_plain(compose_config())["preprocessing"]


def test_a_misspelt_arch_is_refused_with_the_arch_meant():
    with pytest.raises(ConfigError, match=r"model.arch=resnet_v1_5 is not a slim network; "
                                          r"did you mean model.arch=resnet_v1_50\?"):
        _config("model.arch=resnet_v1_5")


def test_a_misspelt_arch_on_the_command_line_is_one_line_before_tensorflow(tmp_path):
    run = run_cli("model=slim", "model.arch=mobilenet_v2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    lines = [line for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) <= 2, lines  # the error, and "no version was published"
    assert lines[0].startswith("error: model.arch=mobilenet_v2 is not a slim network; "
                               "did you mean model.arch=mobilenet_v1?")


def test_slim_networks_are_nhwc_only():
    with pytest.raises(ConfigError, match="NHWC only"):
        _config("model.data_format=channels_first")
    from exportkit.export import network_variable_shapes

    with pytest.raises(ConfigError, match="NHWC only"):
        network_variable_shapes({"name": "slim", "arch": "vgg_16", "num_classes": 1000,
                                 "data_format": "channels_first", "labels": None}, 224)


def test_the_plugin_builds_every_arch_its_config_names():
    from exportkit.models.slim import nets
    from exportkit.models.slim.config import ARCHS

    assert set(nets()) == set(ARCHS) == set(SLIM_EVAL)


# ------------------------------------------------------- variables against tf_slim


def _params(arch: str, classes: int | None = None) -> dict:
    return {"name": "slim", "arch": arch, "num_classes": classes or SLIM_EVAL[arch][2],
            "data_format": "channels_last", "labels": None}


def _size(arch: str) -> int:
    return 128 if arch.startswith("mobilenet") else 224  # the variables do not depend on it


def _tf_slim_variables(arch: str) -> list:
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, _size(arch), _size(arch), 3])
        ref.slim_logits(arch, images, SLIM_EVAL[arch][2])
        return [(v.op.name, tuple(v.shape.as_list())) for v in v1.global_variables()]


# The end-to-end tests' tf_slim graphs already hold these (built once per module).
FROM_ZOO = ("resnet_v1_50", "resnet_v2_50", "mobilenet_v1_025")


@pytest.mark.parametrize("arch", [a for a in OURS if a.endswith("_50") or not a.startswith("resnet")])
def test_variable_names_shapes_and_order_match_tf_slim(arch, zoo):
    from exportkit.export import network_variable_shapes

    ours = network_variable_shapes(_params(arch), _size(arch))
    theirs = zoo[arch].written.variables if arch in FROM_ZOO else _tf_slim_variables(arch)
    assert list(ours.items()) == theirs


@pytest.mark.parametrize("arch", [a for a in OURS if a.startswith("resnet") and not a.endswith("_50")])
def test_deeper_resnets_stack_the_blocks_tf_slim_stacks(arch, monkeypatch):
    """101, 152 and 200 differ from 50 only in the units per block, built by the same code
    that the 50s match tf_slim with; their full graphs take tf_slim 8 to 28 s each to build,
    so this compares the blocks that tf_slim's resnet_vX_D hands its generator."""
    from exportkit.models.slim import resnet

    version = arch[len("resnet_v")]
    module = ref.resnet_v1 if version == "1" else ref.resnet_v2
    captured = {}
    monkeypatch.setattr(module, f"resnet_v{version}", lambda inputs, blocks, *a, **k: captured.setdefault("blocks", blocks))
    getattr(module, arch)(None, 1000)
    theirs = [(b.scope, [(u["depth"], u["depth_bottleneck"], u["stride"]) for u in b.args]) for b in captured["blocks"]]
    units = resnet.UNITS[int(arch.rsplit("_", 1)[1])]
    ours = [(f"block{i + 1}", [(4 * base, base, stride if u == n - 1 else 1) for u in range(n)])
            for i, (n, base, stride) in enumerate(zip(units, (64, 128, 256, 512), (2, 2, 2, 1)))]
    assert ours == theirs


# ------------------------------------------------------------ zoo checkpoints, end to end


def _batch_norms_from_data(sess, graph, images, batch, *, seed: int) -> None:
    """Each batch norm's moving statistics near its input's own on ``batch``, in graph order.

    fresh_checkpoint's made-up statistics leave a random network's activations
    unnormalized; through ResNet's ReLUs that only grows the logits (which are then
    calibrated), but MobileNet's ReLU6 clips them to 0 or 6 everywhere, so every image
    would get the same answer.
    """
    rng = np.random.RandomState(seed)
    variables = {v.op.name: v for v in v1.global_variables()}
    for op in graph.get_operations():
        if not op.type.startswith("FusedBatchNorm"):
            continue
        moving_mean, moving_variance = (variables[_variable_behind(op.inputs[port])] for port in (3, 4))
        values = sess.run(op.inputs[0], {images: batch})
        mean, variance = values.mean(axis=(0, 1, 2)), values.var(axis=(0, 1, 2))
        _assign(sess, moving_mean, mean + rng.normal(0, 0.1, mean.shape) * np.sqrt(variance))
        _assign(sess, moving_variance, variance * rng.uniform(0.8, 1.25, variance.shape) + 1e-3)


def _assign(sess, variable, value) -> None:
    sess.run(variable.initializer, {variable.initial_value: np.asarray(value, np.float32)})


def _variable_behind(tensor) -> str:
    while tensor.op.type in ("Identity", "ReadVariableOp"):
        tensor = tensor.op.inputs[0]
    return tensor.op.name


def _trained_like_batch_norms(sess, *, seed: int) -> None:
    """exportkit.fresh_checkpoint's draws for every batch-norm variable, in one session run
    (one run per variable costs seconds on a ResNet-50)."""
    from exportkit.fresh_checkpoint import _BATCH_NORM_DRAWS

    rng = np.random.RandomState(seed)
    feeds = {}
    for variable in v1.global_variables():
        leaf = variable.op.name.rsplit("/", 1)[-1]
        if leaf in _BATCH_NORM_DRAWS:
            feeds[variable] = _BATCH_NORM_DRAWS[leaf](rng, variable.shape.as_list()).astype(np.float32)
    sess.run([v.initializer for v in feeds], {v.initial_value: value for v, value in feeds.items()})


def _tarball(ckpt: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # random weights do not compress
        tar.add(ckpt, arcname=ckpt.name)
    ckpt.unlink()  # only the tarball is exported
    return archive


@dataclass(frozen=True)
class ZooCheckpoint:
    archive: Path  # <arch>_2016_08_28.tar.gz holding the V1 file <arch>.ckpt
    expected: np.ndarray  # slim's eval pipeline on the jpegs: softmax [N, classes]
    variables: list  # the tf_slim graph's (name, shape), in creation order
    degenerate: Path | None  # the same with the last layer zeroed: every image gets one answer


def write_zoo_tarball(directory: Path, arch: str, *, jpegs: list[bytes], seed: int = 0,
                      degenerate: bool = False) -> ZooCheckpoint:
    """A checkpoint written by tf_slim's own network, as the zoo ships it, with slim's eval
    pipeline's answers for ``jpegs`` from the same weights (slim's preprocessing, then the
    tf_slim network) and the tf_slim graph's variables.

    Batch norms get trained-like statistics and the logits a spread of about 3 on images
    through the arch's preprocessing, as exportkit.fresh_checkpoint does. ``degenerate``
    also writes a copy whose last layer is zero."""
    from exportkit.fresh_checkpoint import _calibrate_logits, _calibration_batch, last_layer_variables

    config = _config(f"model.arch={arch}", *(["preprocessing.image_size=128"] if arch.startswith("mobilenet") else []))
    size, classes = config["preprocessing"]["image_size"], config["model"]["num_classes"]
    preset = SLIM_EVAL[arch][0]
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, size, size, 3])
        logits = ref.slim_logits(arch, images, classes)
        variables = [(v.op.name, tuple(v.shape.as_list())) for v in v1.global_variables()]
        # slim's eval_image_classifier: decode, then the arch's preprocessing, image by image.
        decoded = [tf.io.decode_jpeg(tf.constant(jpeg), channels=3) for jpeg in jpegs]
        preprocessed = tf.stack([ref.vgg_preprocess_for_eval(image, size, size) if preset == "vgg"
                                 else ref.inception_preprocess_for_eval(image, size, size) for image in decoded])
        probabilities = tf.nn.softmax(logits)
        saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)
    for folder in ("", "degenerate"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    ckpt = directory / f"{arch}.ckpt"
    with graph.as_default(), v1.Session(graph=graph) as sess:
        v1.set_random_seed(seed)
        sess.run(v1.global_variables_initializer())
        _trained_like_batch_norms(sess, seed=seed)
        if arch.startswith("mobilenet"):
            batch = _calibration_batch(size, config["preprocessing"], seed=seed)
            _batch_norms_from_data(sess, graph, images, batch, seed=seed)
        _calibrate_logits(sess, graph, images, logits, seed=seed, preprocessing=config["preprocessing"])
        saver.save(sess, str(ckpt), write_meta_graph=False, write_state=False)
        expected = sess.run(probabilities, {images: sess.run(preprocessed)})
        if degenerate:
            for variable in last_layer_variables(logits):
                _assign(sess, variable, np.zeros(variable.shape.as_list()))
            saver.save(sess, str(directory / "degenerate" / ckpt.name), write_meta_graph=False, write_state=False)
    name = f"{arch}_2016_08_28.tar.gz"
    return ZooCheckpoint(
        archive=_tarball(ckpt, directory / name), expected=expected, variables=variables,
        degenerate=_tarball(directory / "degenerate" / ckpt.name, directory / "degenerate" / name) if degenerate else None)


def served_answers(version_path: str, jpegs: list[bytes]) -> tuple[dict[str, np.ndarray], Any]:
    from exportkit import runtime
    from exportkit.verify import run_signature

    graph = tf.Graph()
    with graph.as_default(), runtime.session(graph) as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], version_path)
        answers = run_signature(sess, meta.signature_def["predict_images"], {"images": np.array(jpegs, dtype=object)})
    return answers, meta.graph_def


class _Zoo(dict):
    """arch -> Zoo entry: its tarball, slim's answers, tf_slim's variables, the export; made on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, arch: str):
        size = 128 if arch.startswith("mobilenet") else SLIM_EVAL[arch][1]
        jpegs = _jpegs(size)
        written = write_zoo_tarball(self.root / arch, arch, jpegs=jpegs, degenerate=arch.startswith("mobilenet"))
        extra = ["preprocessing.image_size=128"] if arch.startswith("mobilenet") else []
        result, output = export_in_process(
            "model=slim", f"model.arch={arch}", *extra, f"checkpoint.path={written.archive}",
            f"checkpoint.cache_dir={self.root / 'cache'}", f"export.root={self.root / 'exports' / arch}",
            "serving.warmup.batch_sizes=[1]")
        self[arch] = ZooExport(written, jpegs, result, output)
        return self[arch]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> _Zoo:
    return _Zoo(tmp_path_factory.mktemp("slim_zoo"))


@dataclass(frozen=True)
class ZooExport:
    written: ZooCheckpoint
    jpegs: list[bytes]
    result: dict  # export_model's summary
    output: str  # what the export printed


def _jpegs(size: int) -> list[bytes]:
    from exportkit.verify import encode_jpegs

    return encode_jpegs([(size + 76, size + 21), (size, size + 120)], seed=7)


def _assert_answers_match(export: ZooExport) -> Any:
    """The export's top 5 are slim's, at slim's probabilities within 1e-4; returns its graph."""
    got, graph_def = served_answers(export.result["version_path"], export.jpegs)
    top = np.argsort(-export.written.expected, axis=1)[:, :5]
    np.testing.assert_array_equal(got["classes"], top)
    np.testing.assert_allclose(got["probabilities"], np.take_along_axis(export.written.expected, top, axis=1), atol=1e-4)
    assert np.ptp(export.written.expected, axis=0).max() > 1e-3  # the two images get different answers
    return graph_def


# resnet_v1_50: vgg preprocessing, 1000 classes, 224; resnet_v2_50: inception, 1001, 299.
@pytest.mark.parametrize("arch", ["resnet_v1_50", "resnet_v2_50"])
def test_a_zoo_tarball_exports_and_answers_as_slims_eval_pipeline(zoo, arch):
    export = zoo[arch]
    _assert_answers_match(export)
    classes = SLIM_EVAL[arch][2]
    assert export.written.expected.shape == (2, classes) and export.result["verification"]["passed"] is True
    labels = (Path(export.result["version_path"]) / "assets.extra" / "labels.txt").read_text().splitlines()
    assert len(labels) == classes
    # A zoo checkpoint has no global step: said so, not printed as "None".
    assert "(no global step)" in export.output and "None" not in export.output


def test_mobilenet_exports_with_its_depthwise_batch_norms_folded(zoo):
    export = zoo["mobilenet_v1_025"]
    graph_def = _assert_answers_match(export)
    ops = {node.name: node for node in graph_def.node}
    depthwise = {n.name for n in ops.values() if n.op == "DepthwiseConv2dNative"}
    assert len(depthwise) == 13
    assert not [n.name for n in ops.values() if n.op.startswith("FusedBatchNorm")]
    # Each depthwise convolution is read by its folded bias alone, not by a batch norm.
    for name in depthwise:
        readers = [n for n in ops.values() if any(i.split(":")[0] == name for i in n.input)]
        assert [n.op for n in readers] == ["BiasAdd"], name
    folded = "27 batch norms folded (13 into depthwise convolutions)"
    assert folded in export.result["optimizations"] and folded in export.output


def test_a_checkpoint_of_another_arch_names_the_arch_it_fits(zoo, tmp_path):
    archive = zoo["mobilenet_v1_025"].written.archive
    with pytest.raises(CheckpointError, match=r"does not fit model=slim .*model.arch=mobilenet_v1_050; "
                                              r"it fits model.arch=mobilenet_v1_025\n"):
        export_in_process("model=slim", "model.arch=mobilenet_v1_050", "preprocessing.image_size=128",
                          f"checkpoint.path={archive}", f"checkpoint.cache_dir={tmp_path / 'cache'}",
                          f"export.root={tmp_path / 'exports'}")


def test_a_degenerate_checkpoint_fails_verification_and_publishes_nothing(zoo, tmp_path):
    # The same weights as the mobilenet export that passes, but for a zero last layer.
    degenerate = zoo["mobilenet_v1_025"].written.degenerate
    with pytest.raises(ExportError, match="answers every image alike"):
        export_in_process("model=slim", "model.arch=mobilenet_v1_025", "preprocessing.image_size=128",
                          f"checkpoint.path={degenerate}", f"checkpoint.cache_dir={tmp_path / 'cache'}",
                          f"export.root={tmp_path / 'exports'}", "serving.warmup.batch_sizes=[1]")
    assert integer_versions(tmp_path / "exports" / "slim") == []


# ----------------------------------------------------------- the depthwise fold itself


def test_a_batch_norm_after_a_depthwise_convolution_folds_per_output_channel():
    """Channel multiplier 2: output channel i * 2 + m comes from input channel i."""
    from exportkit import optimize

    rng = np.random.RandomState(0)
    x = rng.standard_normal([2, 9, 9, 3]).astype(np.float32)
    filt = rng.standard_normal([3, 3, 3, 2]).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(6).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2, 6).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 9, 9, 3], name="images")
        conv = tf.nn.depthwise_conv2d(images, tf.constant(filt), [1, 1, 1, 1], "SAME")
        out, _, _ = v1.nn.fused_batch_norm(conv, tf.constant(gamma), tf.constant(beta), mean=tf.constant(mean),
                                          variance=tf.constant(variance), epsilon=1e-3, is_training=False)
        out = tf.identity(out, "out")
    folded, count = optimize.fold_batch_norms(graph.as_graph_def())
    assert count == {"Conv2D": 0, "DepthwiseConv2dNative": 1}
    assert not [n for n in folded.node if n.op.startswith("FusedBatchNorm")]

    def run(graph_def):
        g = tf.Graph()
        with g.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
            with v1.Session(graph=g) as sess:
                return sess.run("out:0", {"images:0": x})

    np.testing.assert_allclose(run(folded), run(graph.as_graph_def()), rtol=1e-5, atol=1e-5)
