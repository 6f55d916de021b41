"""The numpy backend: plans (``tnconv.lower.nodes``) run on numpy arrays, with no torch.

- ``arrays``: view chains, taps, scatters, window sums and structured constants as numpy calls;
- ``einsum``: einsum and sliced plans (reads, preparations, pairwise steps by ``numpy.einsum``, folds);
- ``runner``: ``Runner``, what a ``Program`` called with numpy arrays runs (operand checks, constants per dtype);
- ``backend``: the ``Backend`` (no native kernels: a network a torch kernel runs runs its einsum plan here).
"""
