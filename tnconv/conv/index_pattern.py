"""``tnconv.index_pattern``: the dense 0/1 index pattern of a 1-d convolution.

``Pi[k, o, i] = 1`` iff ``i == stride*o + dilation*k - padding_left`` (for
``mode="zeros"``; the other padding modes fold outside positions back into
``[0, I)``). Inside a network the same tensor is the structured kind
``tnconv.ir.tensors.IndexPattern`` (hyper-parameters, never numbers); this
function materialises it as a torch tensor (the torch backend's ``dense``), for
inspection and tests. ``pattern`` builds that
structured tensor, whose input size may be symbolic (``pattern("H", 3)``: its
output size is a sympy expression, its positions exist once ``H`` is bound).
"""

from __future__ import annotations

import math

import torch

from tnconv.backends.choice import backend_named
from tnconv.conv.hyper import MAX_ELEMENTS, as_int, layer_size, padding_pairs
from tnconv.ir.sizes import is_le
from tnconv.ir.tensors import PADDING_MODES, IndexPattern


def pattern(
    I: object,  # noqa: E741 - the paper's name
    K: object,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    mode: object = "zeros",
) -> IndexPattern:
    """The structured ``IndexPattern`` of one spatial dim, validated.

    ``padding``: an int, ``"same"``, ``"valid"`` or a ``(left, right)`` pair. ``I`` may be
    symbolic (a symbol name or a sympy expression; see ``tnconv.ir.sizes.as_size``).
    Raises ValueError when the dilated kernel does not fit the padded input (for a
    symbolic ``I``: for no value of it).
    """
    size = layer_size(I, "I", symbolic=True)
    kernel = as_int(K, "K")
    step = as_int(stride, "stride")
    spacing = as_int(dilation, "dilation")
    if is_le(size, 0):
        raise ValueError(f"I must be >= 1, got {I!r}")
    if kernel < 1:
        raise ValueError(f"K must be >= 1, got {K!r}")
    if step < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    if spacing < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation!r}")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {mode!r}")
    if mode not in PADDING_MODES:
        raise ValueError(f"mode must be one of {PADDING_MODES}, got {mode!r}")
    pair = padding if isinstance(padding, str) else (padding,)
    ((left, right),) = padding_pairs(pair, 1, (kernel,), (spacing,), (step,))
    extent = spacing * (kernel - 1) + 1
    if is_le(size + left + right + 1, extent):
        raise ValueError(
            f"K={kernel} (dilation={spacing}) spans {extent} pixels, larger than the padded input "
            f"I={size} + {left} + {right} (padding={padding!r})"
        )
    return IndexPattern(size, kernel, step, left, right, spacing, mode)


def index_pattern(
    I: object,  # noqa: E741 - the paper's name
    K: object,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    *,
    mode: object = "zeros",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The dense ``(K, O, I)`` 0/1 tensor ``Pi[k, o, i] = [i == stride*o + dilation*k - padding_left]``.

    ``O = floor((I + padding_left + padding_right - dilation*(K-1) - 1) / stride) + 1``.
    ``padding`` is an int, ``"same"``, ``"valid"`` or a ``(left, right)`` pair; ``mode``
    (``"reflect"``, ``"replicate"``, ``"circular"``) maps padded positions back into the input
    as ``torch.nn.functional.pad`` does. ``dtype`` defaults to torch's default float dtype.
    A pattern of more than ``tnconv.conv.hyper.MAX_ELEMENTS`` elements is refused (ValueError), and
    so is a symbolic ``I`` (a dense tensor needs numbers; ``pattern`` gives the structured one).
    """
    kind = pattern(I, K, stride, padding, dilation, mode)
    if not isinstance(kind.input_size, int):
        raise ValueError(
            f"index_pattern builds the dense tensor, which needs an int I, got I={I!r}; "
            f"tnconv.conv.index_pattern.pattern({I!r}, ...) gives the structured (symbolic) pattern"
        )
    shape = tuple(int(s) for s in kind.implied_sizes())
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(
            f"index_pattern(I={kind.input_size}, K={kind.kernel_size}, ...) is a dense (K, O, I) = {shape} tensor of "
            f"{math.prod(shape)} elements, more than tnconv.conv.hyper.MAX_ELEMENTS = 2**40; inside a Network the "
            f"pattern stays structured (tnconv.IndexPattern) and is never built densely"
        )
    result: torch.Tensor = backend_named("torch").dense(kind, shape, dtype, device)
    return result
