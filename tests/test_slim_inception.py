"""models/slim/inception.py against tf_slim 1.1.0's own Inception v1, v2 and v3.

tf_slim is the oracle: each network is built by ``tf_slim.nets.inception_vN``
under its default arg scope with ``is_training=False`` (v3 with its auxiliary head,
as the model zoo's checkpoint has it), filled with random, well-conditioned
values and saved; the module under test must have the same variables in the same
order, restore that checkpoint by name and compute the same logits.
"""

from __future__ import annotations

import os

# Before TensorFlow is first imported (conftest does the same): tf_slim's layers
# are Keras's legacy tf.layers.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import ast  # noqa: E402
import importlib  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parents[1]
AUX = "/AuxLogits/"
NUM_CLASSES = 11
# tf_slim's layers call Keras's deprecated Layer.apply on every use.
pytestmark = pytest.mark.filterwarnings("ignore:`layer.apply` is deprecated:UserWarning")


def _import_tf_slim_nets() -> dict[str, ModuleType]:
    """tf_slim 1.1.0's Inception modules on TF 2.21 (tests/slim_reference.py holds the shim)."""
    import tests.slim_reference  # noqa: F401  (aliases Keras's legacy tf.layers before tf_slim loads)
    from tf_slim.nets import inception_v1, inception_v2, inception_v3

    return {"inception_v1": inception_v1, "inception_v2": inception_v2, "inception_v3": inception_v3}


inception = importlib.import_module("exportkit.models.slim.inception")
SLIM_NETS = _import_tf_slim_nets()
ARCHS = sorted(inception.NETS)


def _slim_logits(arch: str, images: tf.Tensor, *, aux: bool) -> tf.Tensor:
    import tf_slim

    module = SLIM_NETS[arch]
    options = {} if arch != "inception_v3" else {"create_aux_logits": aux}
    with tf_slim.arg_scope(getattr(module, f"{arch}_arg_scope")()):
        logits, _ = getattr(module, arch)(images, num_classes=NUM_CLASSES, is_training=False, **options)
    return logits


def _build(arch: str, *, slim: bool, size: int, batch: int | None = 2,
           aux: bool = True) -> tuple[tf.Graph, tf.Tensor, tf.Tensor]:
    """``aux``: whether slim's v3 builds its auxiliary head (the zoo's did)."""
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [batch, size, size, 3])
        logits = _slim_logits(arch, images, aux=aux) if slim else inception.NETS[arch](images, NUM_CLASSES)
    return graph, images, logits


def _shapes(variables: list[tf.Variable]) -> list[tuple[str, tuple[int, ...]]]:
    return [(v.op.name, tuple(v.shape.as_list())) for v in variables]


def _well_conditioned(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values that keep activations O(1) through the network (He-scaled weights, BN near identity)."""
    if name.endswith("moving_variance"):
        return rng.uniform(0.7, 1.3, shape)
    if name.endswith(("moving_mean", "beta", "biases")):
        return 0.1 * rng.standard_normal(shape)
    # HWIO; a depthwise kernel [h, w, in, multiplier] sums over h * w only.
    fan_in = int(np.prod(shape[:2])) if name.endswith("depthwise_weights") else int(np.prod(shape[:-1]))
    gain = 1.0 if "/Logits/" in name else 2.0
    return rng.standard_normal(shape) * np.sqrt(gain / fan_in)


# Sizes at which slim's final map is larger than its pool where it can be (v2: 8x8,
# v3: 9x9, the pool's stride deciding whether the logits squeeze); v1 takes 224 at
# most. v3's 331 also suits its auxiliary head, which slim builds only for sides
# 107..346. Variable names and shapes do not depend on the size.
NUMERICS_SIZE = {"inception_v1": 224, "inception_v2": 256, "inception_v3": 331}


class Pair:
    """One arch built twice at NUMERICS_SIZE: by tf_slim (filled with random values,
    saved, run) and by the module under test (restored from that checkpoint, run)."""

    def __init__(self, arch: str, checkpoint_dir: Path, seed: int) -> None:
        size = NUMERICS_SIZE[arch]
        rng = np.random.default_rng(seed)
        self.images = rng.uniform(-1.0, 1.0, (2, size, size, 3)).astype(np.float32)

        graph, images, logits = _build(arch, slim=True, size=size)
        with graph.as_default(), v1.Session(graph=graph) as sess:
            variables = v1.global_variables()
            self.slim_variables = _shapes(variables)
            self.slim_trainable = [v.op.name for v in v1.trainable_variables()]
            sess.run([v.initializer for v in variables], {
                v.initial_value: _well_conditioned(name, shape, rng).astype(np.float32)
                for v, (name, shape) in zip(variables, self.slim_variables)
            })
            self.slim_logits = sess.run(logits, {images: self.images})
            self.checkpoint = v1.train.Saver().save(sess, str(checkpoint_dir / "model.ckpt"), write_meta_graph=False)

        graph, images, logits = _build(arch, slim=False, size=size)
        self.logits_shape = logits.shape.as_list()
        with graph.as_default(), v1.Session(graph=graph) as sess:
            self.variables = _shapes(v1.global_variables())
            self.trainable = [v.op.name for v in v1.trainable_variables()]
            # A saver over this graph's variables alone: checkpoint entries it lacks (AuxLogits) are not needed.
            v1.train.Saver().restore(sess, self.checkpoint)
            self.logits = sess.run(logits, {images: self.images})


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    """arch -> Pair, each made on first use."""

    class Pairs(dict):
        def __missing__(self, arch: str) -> Pair:
            self[arch] = Pair(arch, tmp_path_factory.mktemp(arch), seed=ARCHS.index(arch) + 7)
            return self[arch]

    return Pairs()


def test_nets_are_the_three_inceptions_and_need_no_tf_slim() -> None:
    assert sorted(inception.NETS) == ["inception_v1", "inception_v2", "inception_v3"]
    tree = ast.parse((REPO / "models/slim/inception.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "numpy", "tensorflow"}


@pytest.mark.parametrize("arch", ARCHS)
def test_variables_match_slim_in_name_shape_and_order(arch: str, pairs: dict[str, Pair]) -> None:
    pair = pairs[arch]
    assert pair.variables == [(name, shape) for name, shape in pair.slim_variables if AUX not in name]
    assert pair.trainable == [name for name in pair.slim_trainable if AUX not in name]
    assert pair.logits_shape == [2, NUM_CLASSES]
    # Only v3 has an auxiliary head (slim builds it by default; the zoo checkpoint has it).
    assert any(AUX in name for name, _ in pair.slim_variables) == (arch == "inception_v3")


@pytest.mark.parametrize("arch", ARCHS)
def test_restores_slim_checkpoint_and_matches_its_logits(arch: str, pairs: dict[str, Pair]) -> None:
    pair = pairs[arch]
    # The comparison means something only if the logits are O(1) and differ between images.
    assert 0.1 < np.abs(pair.slim_logits).max() < 100
    assert np.abs(pair.slim_logits[0] - pair.slim_logits[1]).max() > 1e-2
    np.testing.assert_allclose(pair.logits, pair.slim_logits, rtol=0, atol=1e-4)


def test_v3_checkpoint_holds_aux_logits_the_graph_does_not_need(pairs: dict[str, Pair]) -> None:
    pair = pairs["inception_v3"]
    in_checkpoint = {name for name, _ in tf.train.list_variables(pair.checkpoint)}
    ours = {name for name, _ in pair.variables}
    assert ours < in_checkpoint
    aux = in_checkpoint - ours
    assert all(AUX in name for name in aux)
    assert len(aux) == 10  # AuxLogits: two convolutions with batch norm, and the 1x1 logits


def _edges() -> list[tuple[str, int]]:
    """Each side of each edge of INPUT_SIZES."""
    edges = []
    for arch, (low, high) in inception.INPUT_SIZES.items():
        edges += [(arch, side) for side in (low - 1, low, high, high + 1) if side > 0]
    return edges


@pytest.mark.parametrize(("arch", "side"), _edges())
def test_takes_the_input_sizes_slim_takes(arch: str, side: int) -> None:
    """INPUT_SIZES is slim's: tf_slim 1.1.0 takes those sides and refuses these (v3
    without its auxiliary head, which narrows them to 107..346). Checked against
    tf_slim when the sizes were written; built here for the module alone, as a
    tf_slim build per side would double the module's time."""
    low, high = inception.INPUT_SIZES[arch]
    if low <= side <= high:
        assert _build(arch, slim=False, size=side, batch=1)[2].shape.as_list() == [1, NUM_CLASSES]
    else:  # too small, TensorFlow's shape inference may refuse first, as it does for slim
        with pytest.raises(ValueError):
            _build(arch, slim=False, size=side, batch=1)


def test_refuses_an_unsupported_size_with_the_sizes_it_takes() -> None:
    with pytest.raises(ValueError, match=r"inception_v1 cannot classify a 256x256 image.*from 193 to 224 pixels"):
        _build("inception_v1", slim=False, size=256)
