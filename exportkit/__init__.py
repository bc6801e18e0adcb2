"""exportkit: config-driven export of Estimator checkpoints to TF Serving SavedModels.

Importing the package imports no TensorFlow; ``exportkit.export`` does.
"""

__version__ = "0.1.0"
