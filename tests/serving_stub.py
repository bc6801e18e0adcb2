"""The tests' stand-ins for tensorflow_model_server, which cannot be installed here:
thin wrappers over exportkit.serve, so there is one implementation.

``LoadedModels`` loads the latest version under each base path (no models.config,
no warmup replay, to keep the tests fast) and can be slowed down for timeout
tests; ``start_grpc`` and ``start_rest`` serve it on free local ports.
"""

from __future__ import annotations

import json
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.config import model_server_config_pb2

from exportkit import serve
from exportkit.serve import ServingError

__all__ = ["LoadedModels", "ServingError", "decode_rest_request", "encode_rest_response", "start_grpc", "start_rest"]


class LoadedModels(serve.Servables):
    """name -> the latest version under its base path, served as exportkit.serve serves it."""

    def __init__(self, base_paths: Mapping[str, Path]):
        configs = [model_server_config_pb2.ModelConfig(name=name, base_path=str(base), model_platform="tensorflow")
                   for name, base in base_paths.items()]
        super().__init__(configs, warmup=False)
        self.delay_seconds = 0.0

    def predict(self, *args: Any, **kwargs: Any) -> tuple[dict[str, np.ndarray], int]:
        """Every Predict, gRPC and REST, comes through here: the delay makes clients time out."""
        time.sleep(self.delay_seconds)
        return super().predict(*args, **kwargs)


def start_grpc(models: LoadedModels) -> tuple[grpc.Server, int]:
    return serve.start_grpc(models)


def start_rest(models: LoadedModels) -> tuple[ThreadingHTTPServer, int, list]:
    """The server, its port, and the list of request bodies it received (for assertions)."""
    received: list = []

    def observe(body: bytes) -> None:
        try:
            received.append(json.loads(body))
        except ValueError:
            received.append(body)

    server, port = serve.start_rest(models, observe=observe)
    return server, port, received


def decode_rest_request(body: Any, input_names: list[str],
                        input_dtypes: Mapping[str, str]) -> tuple[str, dict[str, np.ndarray], bool]:
    """(signature_name, inputs, columnar) as the server reads a REST Predict body; raises
    ServingError where TF Serving (or the stand-in's stricter check) refuses it."""
    types = {name: tf.dtypes.as_dtype(input_dtypes[name]).as_datatype_enum for name in input_names}
    inputs, columnar = serve.rest_predict_inputs(body, types)
    return body.get("signature_name", ""), inputs, columnar


def encode_rest_response(outputs: Mapping[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    return serve.rest_predict_response(outputs, columnar=columnar)
