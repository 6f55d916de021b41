"""Symmetric Gram products ``out = beta * out + alpha * sum_{s,t} R[s,g,:,t] R[s,g,:,t]^T``, by upper panels.

Every KFAC factor is the Gram of one tensor with itself: the patches (KFAC-expand's ``A``),
the patch sums (KFAC-reduce's ``A``), the columns at a layer's output (``B``). A dense
product ``R R^T`` computes every off-diagonal entry twice. Three ways, by shape:

- **Upper panels** (deep products, ``d * depth >= DENSE_BELOW``): the rows of ``R`` are cut
  into panels of ``PANEL`` rows; panel ``[s, e)`` is multiplied only with rows ``[s, d)``
  (one ``addmm_``/``baddbmm_`` writing into the upper part of ``out`` in place), so the
  products cost ``(p + 1) / (2 p)`` of the dense one for ``p`` panels (0.56x for
  ``d = 4,608``), and the strictly lower part is then copied from the upper one: symmetric
  bit for bit, whatever the matrix library does.
- **Symmetrized** (fewer than two full panels, ``d < 2 * PANEL``): ``P = R R^T`` is formed
  whole and ``out = beta * out + alpha/2 (P + P^T)``: symmetric bit for bit (a sum of two
  numbers is the same in either order) in three or four small calls, where a panel and its
  mirror take half a dozen small copies (a ``36 x 36`` factor: 112 us against 34 us). Two
  panels of which the second is partial save too little to pay for the mirror: measured,
  panels and mirror took 0.94-1.15x the dense product's time at ``d = 147`` with 1 thread and
  1.16-1.40x with 2 (4,096-50,176 summed columns), 1.10-1.19x at ``d = 192`` with 2 threads
  below 50,176 columns; from ``d = 256`` on they take 0.85-0.97x, from 576 on 0.55-0.81x.
- **One dense product** (shallow products, ``d * depth < DENSE_BELOW``: KFAC-reduce's ``A``
  and ``B``, whose depth is the batch): straight into ``out``, symmetric to rounding only
  (the matrix library may round ``x.y`` and ``y.x`` differently in its edge kernels).
  There the product is bound by writing ``out``, and the mirror's transposed copies cost
  more than the halved product saves: measured with 1 thread, panels and mirror take 3.0x
  the dense product's time at ``d = 256`` from 64 columns, 2.5x at ``d = 576``, 1.4x at
  ``d = 1,152``, 1.2x at ``d = 2,304``; at ``d * depth`` about 300,000 the two break even
  (``d = 256`` from 1,024 columns: 1.05x; ``d = 2,304`` from 256: 0.88x).

``R`` is ``(S, G, d, T)``, any strides (a transposed view costs no copy: the matrix
library reads either layout). With several ``S``, ``R`` is copied once into ``(G, d, S*T)``
and multiplied in one go (fewer, deeper products), unless each sample already has
``PER_SAMPLE_DEPTH`` locations.
float16/bfloat16 rows accumulate into a float32 ``out`` (their sums overflow float16). ``gram`` of rows
that require a gradient is one differentiable ``einsum`` instead.

``flops(shape)`` and ``strategy(shape)`` say what ``accumulate_gram`` runs on rows of a
shape without running it, from the same decisions (``products``, ``dense``, ``panels``):
``tnconv curvature`` prints them.
"""

from __future__ import annotations

import torch

PANEL = 128
"""Rows per panel: products of 128 rows run at the matrix library's full speed (measured 0.55-0.7x of the dense
product's time for d = 576..4,608 and 512..32,768 summed columns)."""
DENSE_BELOW = 300_000
"""``d * depth`` (rows times summed columns) below which one dense product beats upper panels and their mirror
(the break-even measured on this CPU, 1 thread, d = 256..2,304; module docstring)."""
PER_SAMPLE_DEPTH = 4096
"""Locations per sample from which ``S`` products are summed as they are, without laying ``R`` out anew (below it
the copy pays: KFAC-expand of a ResNet-18 3x3 layer, 32x32 locations, chunks of 7 samples: 0.84x the time of
per-sample products with 1 thread, 0.73x with 2 on the shared machine, where each of the many small products
waits for both threads)."""
HALF = (torch.float16, torch.bfloat16)
SYMMETRIZE_CHUNK = 1 << 20
"""Elements of diagonal blocks symmetrized at once (their temporaries stay about this small)."""


def gram(rows: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``alpha * sum_{s,t} R[s,g,:,t] R[s,g,:,t]^T`` as a new ``(G, d, d)`` tensor (float32 for half ``rows``).

    Where ``rows`` require a gradient (and grad mode is on) it is one ``einsum`` that autograd
    differentiates, symmetric to rounding (``accumulate_gram`` writes into its ``out`` in place,
    which autograd cannot follow).
    """
    dtype = torch.float32 if rows.dtype in HALF else rows.dtype
    if rows.requires_grad and torch.is_grad_enabled():
        wide = rows.to(dtype)
        return torch.einsum("sgat,sgbt->gab", wide, wide) * alpha
    out = rows.new_empty((rows.shape[1], rows.shape[2], rows.shape[2]), dtype=dtype)
    return accumulate_gram(rows, out, alpha, 0.0)


def accumulate_gram(rows: torch.Tensor, out: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """``out = beta * out + alpha * sum_{s,t} R[s,g,:,t] R[s,g,:,t]^T`` in place; returns ``out``.

    Symmetric bit for bit, except where one dense product runs (``dense``): there to rounding.

    Args:
        rows: ``R`` ``(S, G, d, T)``, any strides; float16/bfloat16 when ``out`` is float32.
        out: ``(G, d, d)``, symmetric, rows contiguous in memory (a view with row stride ``>= d``
            works, e.g. the leading block of a larger factor); not read when ``beta == 0`` (so
            ``torch.empty`` will do).
        alpha, beta: the scales of the product and of ``out``.
    """
    samples, groups, d, depth = rows.shape
    if out.shape != (groups, d, d):
        raise ValueError(f"out must have shape {(groups, d, d)} for rows of shape {tuple(rows.shape)}, got "
                         f"{tuple(out.shape)}")
    if out.stride(-1) != 1:
        raise ValueError(f"out must have contiguous rows (last stride 1), got strides {out.stride()}")
    if rows.dtype != out.dtype:
        if not (rows.dtype in HALF and out.dtype == torch.float32):
            raise TypeError(f"rows ({rows.dtype}) must have out's dtype ({out.dtype}), or be half with float32 out")
    count, deep = products(samples, depth)
    if count != samples:  # thin products: one layout copy, then one deep product
        rows = rows.permute(1, 2, 0, 3).reshape(1, groups, d, deep)
    samples, depth = count, deep
    rows = rows.to(out.dtype)
    if symmetrized(d):
        _small_product(out, rows, alpha, beta)
        return out
    if dense(d, depth):
        for s in range(samples):
            _product(out, rows[s], rows[s], alpha, beta if s == 0 else 1.0)
        return out
    for start, stop in panels(d):
        for s in range(samples):
            panel = out[:, start:stop, start:]
            _product(panel, rows[s, :, start:stop], rows[s, :, start:], alpha, beta if s == 0 else 1.0)
    mirror(out)
    return out


def products(samples: int, depth: int) -> tuple[int, int]:
    """The number and depth (summed columns) of the products ``accumulate_gram`` runs on ``samples`` samples of
    ``depth`` columns: one deep product after one layout copy, unless each has ``PER_SAMPLE_DEPTH`` columns."""
    return (1, samples * depth) if samples > 1 and depth < PER_SAMPLE_DEPTH else (samples, depth)


def symmetrized(d: int) -> bool:
    """Whether ``accumulate_gram`` forms the Gram of ``d`` rows whole and symmetrizes it: fewer than two full
    panels."""
    return d < 2 * PANEL


def dense(d: int, depth: int) -> bool:
    """Whether ``accumulate_gram`` multiplies ``d >= 2 * PANEL`` rows of ``depth`` summed columns in one dense product
    (not by upper panels and a mirror)."""
    return d * depth < DENSE_BELOW


def panels(d: int) -> list[tuple[int, int]]:
    """The upper panels of ``d`` rows: ``[start, stop)`` of ``PANEL`` rows each (the last one shorter), each
    multiplied with the rows ``[start, d)``."""
    return [(start, min(start + PANEL, d)) for start in range(0, d, PANEL)]


def flops(shape: tuple[int, int, int, int]) -> int:
    """The FLOPs (2 per multiply-add) of ``accumulate_gram`` on rows of ``shape`` ``(S, G, d, T)``: the products it
    runs, as it runs them (laid out into one deep product, whole or by upper panels); the mirror and the
    symmetrizing sum of a one-panel factor are not counted."""
    samples, groups, d, depth = shape
    samples, depth = products(samples, depth)
    if symmetrized(d) or dense(d, depth):
        return 2 * samples * groups * d * d * depth
    return 2 * samples * groups * depth * sum((stop - start) * (d - start) for start, stop in panels(d))


def strategy(shape: tuple[int, int, int, int]) -> str:
    """How ``accumulate_gram`` multiplies rows of ``shape`` ``(S, G, d, T)``, in words (``gram by 5 panels``)."""
    _, depth = products(shape[0], shape[3])
    d = shape[2]
    count = len(panels(d))
    if symmetrized(d):
        return "gram symmetrized"
    return "gram dense" if dense(d, depth) else f"gram by {count} panel" + ("" if count == 1 else "s")


def _product(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float, beta: float) -> None:
    """``out = beta * out + alpha * left @ right^T`` in place (``(G, a, T) x (G, b, T)``)."""
    if out.shape[0] == 1:
        out[0].addmm_(left[0], right[0].T, beta=beta, alpha=alpha)
    else:
        out.baddbmm_(left, right.mT, beta=beta, alpha=alpha)


def _small_product(out: torch.Tensor, rows: torch.Tensor, alpha: float, beta: float) -> None:
    """``out = beta * out + alpha/2 (P + P^T)`` for ``P = sum_s R[s] R[s]^T`` (``R`` ``(S, G, d, T)``,
    ``d < 2 * PANEL``): exactly symmetric without a mirror (the whole product is a temporary of under four panels
    per group)."""
    product = out.new_empty(out.shape)
    for s in range(rows.shape[0]):
        _product(product, rows[s], rows[s], 1.0, 0.0 if s == 0 else 1.0)
    blend_symmetrized(out, product, alpha, beta)


def blend_symmetrized(out: torch.Tensor, product: torch.Tensor, alpha: float, beta: float) -> None:
    """``out = beta * out + alpha/2 (P + P^T)`` in place for a Gram ``P`` ``(G, d, d)`` that is symmetric up to
    rounding: ``out`` exactly symmetric (a sum of two numbers is the same in either order); not read when
    ``beta == 0``."""
    symmetric = product + product.mT
    if beta == 0.0:
        torch.mul(symmetric, alpha / 2, out=out)
    else:
        out.mul_(beta).add_(symmetric, alpha=alpha / 2)


def mirror(out: torch.Tensor) -> None:
    """Copy the strictly lower part of ``out`` ``(G, d, d)`` from its upper part: panel by panel below the
    diagonal blocks, then all diagonal blocks of ``PANEL`` rows at once by ``triu`` (strided views of them;
    temporaries of at most ``SYMMETRIZE_CHUNK`` elements or one group's blocks, ``d * PANEL``)."""
    groups, d = out.shape[0], out.shape[-1]
    for start in range(PANEL, d, PANEL):
        out[:, start:, start - PANEL : start].copy_(out[:, start - PANEL : start, start:].mT)
    full = d // PANEL
    blocks = []
    if full:
        rows = out.stride(1)
        shape, strides = (groups, full, PANEL, PANEL), (out.stride(0), PANEL * (rows + 1), rows, 1)
        blocks.append(out.as_strided(shape, strides, out.storage_offset()))
    if d % PANEL:
        blocks.append(out[:, full * PANEL :, full * PANEL :].unsqueeze(1))
    for block in blocks:
        step = max(1, SYMMETRIZE_CHUNK // block[0].numel())
        for part in block.split(step):
            part.copy_(part.triu() + part.triu(1).mT)
