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

INPUT_KEY = "images"


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


@dataclass(frozen=True)
class EstimatorSpec:
    mode: str
    predictions: Mapping[str, tf.Tensor]
    export_outputs: Mapping[str, PredictOutput] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingInputReceiver:
    features: Mapping[str, tf.Tensor]
    receiver_tensors: Mapping[str, tf.Tensor]


def build_raw_serving_input_receiver() -> ServingInputReceiver:
    """A 1-D string placeholder of encoded images, any batch size, fed as is."""
    images = tf.compat.v1.placeholder(tf.string, shape=[None], name=INPUT_KEY)
    return ServingInputReceiver(features={INPUT_KEY: images}, receiver_tensors={INPUT_KEY: images})


ModelFn = Callable[[Mapping[str, tf.Tensor], Any, str, Mapping[str, Any]], EstimatorSpec]


def assemble_model_fn(*, model: str, preprocessing: str, head: str, signature_name: str) -> ModelFn:
    """A model_fn from the registered parts, keyed by their registry names.

    ``params`` carries each part's resolved config under "model",
    "preprocessing" and "head". Only PREDICT is built: exportkit exports, it
    does not train.
    """
    plugin = MODELS.get(model)
    preprocess = PREPROCESSORS.get(preprocessing)
    make_predictions = HEADS.get(head)

    def model_fn(features: Mapping[str, tf.Tensor], labels: Any, mode: str, params: Mapping[str, Any]) -> EstimatorSpec:
        if mode != ModeKeys.PREDICT:
            raise ValueError(f"exportkit builds the PREDICT graph only, not {mode!r}")
        images = preprocess(features[INPUT_KEY], params["preprocessing"])
        count = tf.shape(images)[0]
        logits = plugin.build(_never_empty(images, count), params["model"])[:count]
        predictions = make_predictions(logits, params["head"])
        return EstimatorSpec(
            mode=mode,
            predictions=predictions,
            export_outputs={signature_name: PredictOutput(predictions)},
        )

    return model_fn


def _never_empty(images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The batch, or one zero image when it is empty: oneDNN's batch norm rejects
    an empty batch, and a client sending none must get empty outputs, not an error.
    The logits are cut back to ``count`` rows."""
    return tf.cond(count > 0, lambda: images, lambda: tf.zeros([1, *images.shape[1:]], images.dtype))


def signature_defs(spec: EstimatorSpec, receiver: ServingInputReceiver) -> dict[str, Any]:
    """One SignatureDef per export output; a single one is also ``serving_default``,
    as the Estimator exported it."""
    defs = {key: out.as_signature_def(receiver.receiver_tensors) for key, out in spec.export_outputs.items()}
    default_key = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    if len(defs) == 1 and default_key not in defs:
        defs[default_key] = next(iter(defs.values()))
    return defs
