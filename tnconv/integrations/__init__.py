"""``tnconv.integrations``: tnconv's routines inside other libraries.

- ``tnconv.integrations.singd``: ``SINGD``, the optimizer of the ``singd`` package
  (``pip install tnconv[singd]``) with its layer statistics from tnconv.
- ``tnconv.integrations.opacus``: ``register()``, tnconv's per-sample gradient and norm samplers in
  Opacus's registries (``pip install tnconv[opacus]``).

Each submodule imports its library; importing this package imports none of them.
"""
