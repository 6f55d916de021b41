"""The ``tnconv`` command line (``tnconv derive ROUTINE``, ``tnconv layers``); see ``tnconv.cli.main``."""

from tnconv.cli.main import main

__all__ = ["main"]
