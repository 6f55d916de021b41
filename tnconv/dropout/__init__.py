"""Tensor dropout: unbiased randomized weight VJPs of conv layers (``weight_vjp_dropout``).

Below ``tnconv.nn`` (whose approximate backprop runs them in training) and
``tnconv.curvature`` (which offers ``weight_vjp_dropout`` among its per-layer
functions): ``weight_vjp`` (the estimate and its checks), ``slices`` (channel and
row dropout by slices of the input), ``pixels`` (spatial dropout through the
kept-pixels network) and ``op`` (the estimate as a torch custom op with a fixed
output shape, for ``torch.compile``).
"""
