"""The serving interface: which inputs a version takes and which signatures answer them.

TF Serving's clients speak several conventions. The main signature takes encoded
images under ``signature.input_key`` (``images``; ``image_bytes`` for TF Serving's
example clients and AI Platform), with ``signature.passthrough`` string inputs
(``key``) echoed back one per image. ``signature.extra`` adds, in the same version:

* ``image_tensor``: uint8 [N, H, W, 3] pixels, the preprocessing without the decode;
* ``tf_example``: Predict over serialized tf.Example, the image under
  ``signature.example_feature`` (``image/encoded``);
* ``classify``: the Classify API (``tensorflow/serving/classify``): serialized
  tf.Example in, string ``classes`` and float ``scores`` out, [N, k] each.

All of them feed one network, as the Estimator's ``receiver_tensors_alternatives``
fed points inside one input subgraph: every input is a placeholder with an empty
default, their images are concatenated into one batch, and a request, which feeds
only its signature's inputs, leaves the others empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from .estimator import (INPUT_KEY, PIXELS_KEY, ClassificationOutput, PredictOutput, ServingInputReceiver)

v1 = tf.compat.v1
IMAGE_TENSOR, TF_EXAMPLE, CLASSIFY = "image_tensor", "tf_example", "classify"
# Model Garden's exporter and TF Serving's Classify API both call their one input "inputs".
EXTRA_INPUT_KEY = "inputs"
BYTES = "bytes"
DEFAULT_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


@dataclass(frozen=True)
class Interface:
    """``signature.*`` as the graph and the checks need it."""

    name: str
    input_key: str
    passthrough: tuple[str, ...]
    extra: tuple[str, ...]
    names: Mapping[str, str]  # extra kind -> signature key
    example_feature: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Interface":
        """From the resolved ``signature`` config; its defaults live in the schema alone."""
        return cls(name=params["name"], input_key=params["input_key"], passthrough=tuple(params["passthrough"]),
                   extra=tuple(params["extra"]), names=dict(params["names"]),
                   example_feature=params["example_feature"])

    def signatures(self) -> dict[str, str]:
        """Signature key -> the kind of input it takes, the main signature first."""
        keys = {self.name: BYTES}
        if self.name != DEFAULT_KEY:
            keys[DEFAULT_KEY] = BYTES  # as the Estimator exported a single output
        keys.update({self.names[kind]: kind for kind in self.extra})
        return keys

    def keys_of(self, kind: str) -> list[str]:
        return [key for key, each in self.signatures().items() if each == kind]

    @property
    def takes_examples(self) -> bool:
        return TF_EXAMPLE in self.extra or CLASSIFY in self.extra


def _optional(dtype: tf.DType, shape: list[int | None], name: str) -> tf.Tensor:
    """An input a request may leave out: empty unless fed."""
    empty = tf.zeros([0 if dim is None else dim for dim in shape], dtype)
    return v1.placeholder_with_default(empty, shape, name=name)


def build_receiver(interface: Interface) -> ServingInputReceiver:
    """Every input the interface takes; ``features`` are what the model_fn reads: the
    encoded images of every bytes-like input in one [N] batch, and pixels if any."""
    if not interface.extra:  # one signature kind: a plain placeholder, the graph as before
        images = v1.placeholder(tf.string, [None], name=interface.input_key)
    else:
        images = _optional(tf.string, [None], interface.input_key)
    passthrough = {key: _optional(tf.string, [None], key) for key in interface.passthrough}
    receiver_tensors = {interface.input_key: images, **passthrough}
    alternatives: dict[str, dict[str, tf.Tensor]] = {}
    features = {INPUT_KEY: images, **passthrough}
    if IMAGE_TENSOR in interface.extra:
        pixels = _optional(tf.uint8, [None, None, None, 3], IMAGE_TENSOR)
        alternatives[interface.names[IMAGE_TENSOR]] = {EXTRA_INPUT_KEY: pixels, **passthrough}
        features[PIXELS_KEY] = pixels
    if interface.takes_examples:
        examples = _optional(tf.string, [None], TF_EXAMPLE)
        if TF_EXAMPLE in interface.extra:
            alternatives[interface.names[TF_EXAMPLE]] = {EXTRA_INPUT_KEY: examples, **passthrough}
        if CLASSIFY in interface.extra:
            alternatives[interface.names[CLASSIFY]] = {EXTRA_INPUT_KEY: examples}
        # A missing feature parses as "", which the image checks name by index ("images[2] is empty").
        parsed = tf.io.parse_example(examples, {
            interface.example_feature: tf.io.FixedLenFeature([], tf.string, default_value=""),
        })[interface.example_feature]
        features[INPUT_KEY] = tf.concat([images, parsed], 0)
    return ServingInputReceiver(features=features, receiver_tensors=receiver_tensors,
                                receiver_tensors_alternatives=alternatives)


def export_outputs(interface: Interface, predictions: Mapping[str, tf.Tensor], features: Mapping[str, tf.Tensor],
                   *, labels: list[str] | None) -> dict[str, Any]:
    """One export output per signature key, each answering from the same ``predictions``."""
    count = tf.shape(predictions["classes"])[0]
    echoed = {key: _one_per_image(features[key], key, count) for key in interface.passthrough}
    predict = PredictOutput({**predictions, **echoed})
    outputs: dict[str, Any] = {key: predict for key, kind in interface.signatures().items() if kind != CLASSIFY}
    if CLASSIFY in interface.extra:
        classes = predictions["classes"]
        names = (tf.gather(tf.constant(labels, tf.string), classes) if labels
                 else tf.strings.as_string(classes))
        outputs[interface.names[CLASSIFY]] = ClassificationOutput(
            classes=tf.identity(names, name="classify_classes"),
            scores=tf.identity(predictions["probabilities"], name="classify_scores"))
    return outputs


def _one_per_image(values: tf.Tensor, key: str, count: tf.Tensor) -> tf.Tensor:
    given = tf.size(values)
    check = tf.debugging.Assert(tf.equal(given, count), [tf.strings.format(
        "passthrough input " + key + " has {} values for {} images: send one per image", (given, count))])
    with tf.control_dependencies([check]):
        return tf.identity(values, name=f"passthrough_{key}")


# ------------------------------------------------------------------ requests
# What a client of each kind sends for a list of JPEGs: verification and warmup
# build their requests here, so they test what clients send.

def example_bytes(images: list[bytes], feature: str) -> list[bytes]:
    """Serialized tf.Examples holding each image under ``feature``."""
    return [tf.train.Example(features=tf.train.Features(feature={
        feature: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))})).SerializeToString()
        for image in images]


def decode_pixels(images: list[bytes]) -> list[np.ndarray]:
    """uint8 [H, W, 3] of each image, decoded as the graph decodes it."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        encoded = v1.placeholder(tf.string, [])
        pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return [sess.run(pixels, {encoded: image}) for image in images]


def request_inputs(interface: Interface, kind: str, images: list[bytes]) -> dict[str, np.ndarray]:
    """The inputs of a request of signature ``kind`` for ``images`` (one shape for image_tensor)."""
    keys = {key: np.array([f"{key}-{i}".encode() for i in range(len(images))], dtype=object)
            for key in interface.passthrough}
    if kind == BYTES:
        return {interface.input_key: np.array(images, dtype=object), **keys}
    if kind == IMAGE_TENSOR:
        pixels = decode_pixels(images)
        return {EXTRA_INPUT_KEY: np.stack(pixels) if pixels else np.zeros([0, 1, 1, 3], np.uint8), **keys}
    examples = np.array(example_bytes(images, interface.example_feature), dtype=object)
    return {EXTRA_INPUT_KEY: examples} if kind == CLASSIFY else {EXTRA_INPUT_KEY: examples, **keys}


def expected_answers(interface: Interface, kind: str, predictions: Mapping[str, np.ndarray],
                     inputs: Mapping[str, np.ndarray], *, labels: list[str] | None) -> dict[str, np.ndarray]:
    """What a signature of ``kind`` must answer to ``inputs``, given the bytes signature's
    ``predictions`` for the same images: the same outputs with the passthrough inputs
    echoed, or for Classify the class names (or ids as strings) and the probabilities."""
    if kind == CLASSIFY:
        classes = predictions["classes"]
        names = np.array(labels, dtype=object)[classes] if labels else classes.astype(str).astype(object)
        return {"classes": np.vectorize(_as_bytes, otypes=[object])(names) if names.size else names,
                "scores": predictions["probabilities"]}
    return {**predictions, **{key: inputs[key] for key in interface.passthrough}}


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
