"""Heads: logits -> the prediction tensors a client receives."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .registry import HEADS


@HEADS.register("top_k")
def top_k(logits: tf.Tensor, params: dict[str, Any]) -> dict[str, tf.Tensor]:
    """The k most likely classes and their probabilities, highest first.

    ``probabilities=full``: softmax over all classes, then the top k (true class
    probabilities). ``probabilities=top_k``: the notebook's softmax over the k
    largest logits only (they sum to 1 across the k). ``class_names=true`` adds
    the names of the k classes from ``labels`` (the model's label list).
    """
    k = params["k"]
    if params["probabilities"] == "full":
        probabilities, classes = tf.nn.top_k(tf.nn.softmax(logits), k=k)
    else:
        top_logits, classes = tf.nn.top_k(logits, k=k)
        probabilities = tf.nn.softmax(top_logits)
    predictions = {
        "classes": tf.identity(classes, name="classes"),  # top_k indices are int32
        "probabilities": tf.identity(probabilities, name="probabilities"),
    }
    if params.get("class_names"):
        names = tf.constant(params["labels"], tf.string)
        predictions["class_names"] = tf.gather(names, classes, name="class_names")
    return predictions
