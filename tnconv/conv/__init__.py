"""Convolutions as tensor networks: hyper-parameters (``hyper``), index patterns (``index_pattern``)
and routine builders (``networks``)."""

from tnconv.conv.hyper import ConvHyper, conv_hyper

__all__ = ["ConvHyper", "conv_hyper"]
