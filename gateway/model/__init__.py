"""The detector's model: a CfC step with explicit state, on LiteRT or numpy.

``load_model`` is the one entry point; the rest is exported for ``model info`` and the tests.
"""

from gateway.model.card import ModelCard, TensorSpec, load_card
from gateway.model.cell import NumpyCfc
from gateway.model.runtime import (
    RUNTIMES,
    StepModel,
    default_model_path,
    load_model,
    op_names,
)

__all__ = [
    "RUNTIMES",
    "ModelCard",
    "NumpyCfc",
    "StepModel",
    "TensorSpec",
    "default_model_path",
    "load_card",
    "load_model",
    "op_names",
]
