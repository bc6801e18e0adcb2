"""The small part of the Estimator contract exportkit needs.

``tf.estimator`` left TensorFlow in 2.16. An export needs only its PREDICT path:
a serving input receiver, ``model_fn(features, labels, mode, params)`` returning
an ``EstimatorSpec`` with predictions and export_outputs, and each export output
turned into a SignatureDef. The names follow ``tf.estimator`` so code written
against it reads the same here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import tensorflow as tf

from . import heads as _heads, preprocessing as _preprocessing  # noqa: F401  (register the built-ins)
from .registry import HEADS, MODELS, PREPROCESSORS

INPUT_KEY = "images"  # features: the encoded images of every bytes-like input
PIXELS_KEY = "image_tensor"  # features: uint8 [N, H, W, 3], where the interface takes pixels

Same = Callable[[tf.Tensor], tf.Tensor]


class ModeKeys:
    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"  # the value tf.estimator used


@dataclass(frozen=True)
class PredictOutput:
    """An export output served by TF Serving's Predict API."""

    outputs: Mapping[str, tf.Tensor]

    def as_signature_def(self, receiver_tensors: Mapping[str, tf.Tensor]) -> Any:
        return tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
            inputs=dict(receiver_tensors), outputs=dict(self.outputs)
        )

    def map(self, same: Same) -> "PredictOutput":
        return PredictOutput({key: same(tensor) for key, tensor in self.outputs.items()})


@dataclass(frozen=True)
class ClassificationOutput:
    """An export output served by TF Serving's Classify API: string ``classes`` and float
    ``scores``, [N, k], for one string input of serialized tf.Example."""

    classes: tf.Tensor
    scores: tf.Tensor

    @property
    def outputs(self) -> dict[str, tf.Tensor]:
        return {"classes": self.classes, "scores": self.scores}

    def as_signature_def(self, receiver_tensors: Mapping[str, tf.Tensor]) -> Any:
        (examples,) = receiver_tensors.values()  # the Classify API feeds exactly one tensor
        return tf.compat.v1.saved_model.signature_def_utils.classification_signature_def(
            examples, self.classes, self.scores)

    def map(self, same: Same) -> "ClassificationOutput":
        return ClassificationOutput(classes=same(self.classes), scores=same(self.scores))


ExportOutput = PredictOutput | ClassificationOutput


@dataclass(frozen=True)
class EstimatorSpec:
    mode: str
    predictions: Mapping[str, tf.Tensor]
    export_outputs: Mapping[str, ExportOutput] = field(default_factory=dict)

    def map(self, same: Same) -> "EstimatorSpec":
        """The same spec in another graph, tensor by tensor (after a rewrite)."""
        return EstimatorSpec(mode=self.mode, predictions={k: same(t) for k, t in self.predictions.items()},
                             export_outputs={k: out.map(same) for k, out in self.export_outputs.items()})


@dataclass(frozen=True)
class ServingInputReceiver:
    """``features`` for the model_fn, ``receiver_tensors`` that a request feeds, and, as the
    Estimator's ``receiver_tensors_alternatives``, other inputs that feed points inside the
    same input subgraph, keyed here by the signature that takes them."""

    features: Mapping[str, tf.Tensor]
    receiver_tensors: Mapping[str, tf.Tensor]
    receiver_tensors_alternatives: Mapping[str, Mapping[str, tf.Tensor]] = field(default_factory=dict)

    def map(self, same: Same) -> "ServingInputReceiver":
        return ServingInputReceiver(
            features={k: same(t) for k, t in self.features.items()},
            receiver_tensors={k: same(t) for k, t in self.receiver_tensors.items()},
            receiver_tensors_alternatives={key: {k: same(t) for k, t in tensors.items()}
                                           for key, tensors in self.receiver_tensors_alternatives.items()})


ModelFn = Callable[[Mapping[str, tf.Tensor], Any, str, Mapping[str, Any]], EstimatorSpec]


def assemble_model_fn(*, model: str, preprocessing: str, head: str) -> ModelFn:
    """A model_fn from the registered parts, keyed by their registry names.

    ``params`` carries each part's resolved config under "model", "preprocessing",
    "head" and "signature". Only PREDICT is built: exportkit exports, it does not
    train. Preprocessing, network and head meet here and nowhere else; what needs the
    network alone (checkpoint checks, fresh checkpoints, benchmarks) calls :func:`network`.
    """
    from . import signatures  # it builds on this module's outputs and receiver

    preprocess = PREPROCESSORS.get(preprocessing)

    def model_fn(features: Mapping[str, tf.Tensor], labels: Any, mode: str, params: Mapping[str, Any]) -> EstimatorSpec:
        if mode != ModeKeys.PREDICT:
            raise ValueError(f"exportkit builds the PREDICT graph only, not {mode!r}")
        images = preprocess(features[INPUT_KEY], params["preprocessing"])
        if PIXELS_KEY in features:  # only one input is fed per request: the other part is empty
            images = tf.concat([images, preprocess(features[PIXELS_KEY], params["preprocessing"])], 0)
        predictions = predict(images, model=model, head=head, params=params)
        interface = signatures.Interface.from_params(params["signature"])
        return EstimatorSpec(mode=mode, predictions=predictions,
                             export_outputs=signatures.export_outputs(interface, predictions, features,
                                                                      labels=params["head"].get("labels")))

    return model_fn


def predict(images: tf.Tensor, *, model: str, head: str, params: Mapping[str, Any],
            empty_batches: bool = True) -> dict[str, tf.Tensor]:
    """Network and head on a preprocessed float batch: the predictions every signature
    answers (``params`` holds "model" and "head")."""
    logits = network(images, model=model, params=params["model"], empty_batches=empty_batches)
    return HEADS.get(head)(logits, params["head"])


def network(images: tf.Tensor, *, model: str, params: Mapping[str, Any], empty_batches: bool = True) -> tf.Tensor:
    """The model plugin's logits for a float batch. ``empty_batches``: an empty batch
    answers empty logits (a cond around the network; OpenVINO's converter wants none)."""
    plugin = MODELS.get(model)
    if not empty_batches:
        return plugin.build(images, dict(params))
    count = tf.shape(images)[0]
    return plugin.build(_never_empty(images, count), dict(params))[:count]


def _never_empty(images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The batch, or one zero image when it is empty: oneDNN's batch norm rejects
    an empty batch, and a client sending none must get empty outputs, not an error.
    The logits are cut back to ``count`` rows."""
    return tf.cond(count > 0, lambda: images, lambda: tf.zeros([1, *images.shape[1:]], images.dtype))


def signature_defs(spec: EstimatorSpec, receiver: ServingInputReceiver) -> dict[str, Any]:
    """One SignatureDef per export output, fed by the receiver's alternative of the same key
    where it has one; a single output is also ``serving_default``, as the Estimator exported it."""
    defs = {key: out.as_signature_def(receiver.receiver_tensors_alternatives.get(key, receiver.receiver_tensors))
            for key, out in spec.export_outputs.items()}
    default_key = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    if len(defs) == 1 and default_key not in defs:
        defs[default_key] = next(iter(defs.values()))
    return defs
