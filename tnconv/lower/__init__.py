"""Lowering: networks -> contraction plans -> programs that run with torch."""

from tnconv.lower.compile import compile
from tnconv.lower.program import Program

__all__ = ["compile", "Program"]
