"""Flax shells over the pure ELM functions: they own parameters, nothing else."""

from .linen import ELMCell, ELMSequence
from .nnx import NNXELM

__all__ = ["ELMCell", "ELMSequence", "NNXELM"]
