"""Preprocess stage: turn a display image into an encoder's input array."""

from medsort.preprocess.config import PreprocessConfig
from medsort.preprocess.transforms import to_model_input, to_tensor_batch

__all__ = ["PreprocessConfig", "to_model_input", "to_tensor_batch"]
