"""The eval preprocessing of v1.4.0 ``cifar10_main.py``, for JPEG input.

``preprocess_image(image, is_training=False)`` there is only
``tf.image.per_image_standardization`` of the 32x32 image: each image minus its
own mean, over its own standard deviation. A served JPEG may have any size, so
this pipeline first runs exportkit's ``standard`` one (decode, crop-or-pad to
``image_size``) with identity normalization, then standardizes. With identity
normalization, padding before or after normalizing is the same.
"""

from __future__ import annotations

from typing import Any

from exportkit.config import ConfigError
from exportkit.registry import PREPROCESSORS

PIPELINE = "per_image_standardization"
_IDENTITY = {"divisor": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


@PREPROCESSORS.register(PIPELINE)
def per_image_standardization(images: Any, params: dict[str, Any]) -> Any:
    """[N] encoded images -> [N, size, size, 3] float32, each standardized on its own."""
    import tensorflow as tf

    from exportkit.preprocessing import standard

    if params["normalization"] != _IDENTITY:
        # A per-channel shift or scale before standardizing would change the
        # answers, and the standardization is this pipeline's normalization.
        raise ConfigError(
            f"preprocessing.pipeline={PIPELINE} standardizes each image itself; "
            f"leave preprocessing.normalization at divisor 1, mean 0, std 1"
        )
    return tf.image.per_image_standardization(standard(images, params))
