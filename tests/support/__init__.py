"""Shared test support (pytest puts ``tests/`` on ``sys.path``: import as ``from support.layers import ...``).

- ``support.layers``: ``ConvLayer`` and the strategies that draw conv layers.
- ``support.references``: PyTorch and autograd references (layer functions, patches, curvature).
- ``support.networks``: random networks and operands, and the dense oracle ``dense_value``.
- ``support.flops``: ``counted_products``, the multiply-adds of the Gram products that ran.
- ``support.examples``: ``load_example``, a script of ``examples/`` as a module.
"""
