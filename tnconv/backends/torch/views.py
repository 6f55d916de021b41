"""Views as torch calls: a data tensor's view chain, and taps (``Taps`` views and the einsum stage's gathers).

A chain of views (``tnconv.ir.views``) is turned into one callable once. Taps
``(o, k)`` of an axis are read by the cheapest torch views: a strided slice
(``K == 1`` or ``O == 1``), an unflatten and a slice where the blocks tile the
axis, else ``Tensor.unfold`` and a dilation slice; reading zero padding pads
(a copy: one ``F.pad`` for all the padded axes of a run of taps), reading a
padding mode's fold selects through an index map. A ``Taps`` view puts ``k``
right after ``o``; a gather (``tnconv.lower.nodes.Gather``) puts it last.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from typing_extensions import assert_never

from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View
from tnconv.lower import einsum
from tnconv.lower.window import Window

Call = Callable[[torch.Tensor], torch.Tensor]


def chain(views: Sequence[View]) -> Call | None:
    """The callable that applies ``views`` in order (None for no views)."""
    calls: list[Call] = []
    n = 0
    while n < len(views):
        if isinstance(views[n], Taps):
            end = n
            while end < len(views) and isinstance(views[end], Taps):
                end += 1
            run = [(view.axis, Window.of(view.pattern)) for view in views[n:end]]  # type: ignore[union-attr]
            calls.append(_taps_view_run(run))
            n = end
        else:
            calls.append(_view(views[n]))
            n += 1
    if not calls:
        return None
    if len(calls) == 1:
        return calls[0]

    def apply(tensor: torch.Tensor) -> torch.Tensor:
        for call in calls:
            tensor = call(tensor)
        return tensor

    return apply


def apply_views(views: Sequence[View], tensor: torch.Tensor) -> torch.Tensor:
    """``views`` applied to ``tensor`` (for references and tests; programs prepare ``chain`` once)."""
    call = chain(views)
    return tensor if call is None else call(tensor)


def _view(view: View) -> Call:
    """One view other than ``Taps`` (runs of those are read together: ``chain``)."""
    match view:
        case Unflatten():
            axis, sizes = view.axis, tuple(int(s) for s in view.sizes)
            if not sizes:  # a size-1 axis split into no axes at all
                return lambda tensor: tensor.squeeze(axis)
            return lambda tensor: tensor.unflatten(axis, sizes)
        case Slice():
            start, step, count = int(view.start), int(view.step), int(view.count)
            index = (slice(None),) * view.axis + (slice(start, start + step * (count - 1) + 1, step),)
            return lambda tensor: tensor[index]
        case Squeeze():
            squeezed = view.axis
            return lambda tensor: tensor.squeeze(squeezed)
        case Flatten():
            first, last = view.axis, view.axis + len(view.sizes) - 1
            return lambda tensor: tensor.flatten(first, last)
        case Taps():
            return _taps_view_run([(view.axis, Window.of(view.pattern))])
        case _:
            assert_never(view)


def signed_pad(x: torch.Tensor, pad: Sequence[int], mode: str = "constant") -> torch.Tensor:
    """``F.pad`` (``pad`` in its order: last dim first) where negative amounts crop - also when a
    crop reaches past the other side's padding, which ``F.pad`` refuses."""
    grow = [max(amount, 0) for amount in pad]
    if any(grow):
        x = F.pad(x, grow, mode=mode)
    for n in range(len(pad) // 2):
        left, right = pad[2 * n], pad[2 * n + 1]
        if left < 0 or right < 0:
            dim = x.ndim - 1 - n
            x = x.narrow(dim, max(-left, 0), x.shape[dim] - grow[2 * n] - grow[2 * n + 1] + left + right)
    return x


def _tiles(window: Window) -> bool:
    """Whether the taps are blocks of ``S`` pixels (one output's taps end before the next begins)."""
    return window.kernel_size > 1 and window.output_size > 1 and window.span <= window.stride


def _length(window: Window) -> int:
    """The pixels a padded read covers, from ``-P_left``: whole blocks where they tile (so that an unflatten
    reads them), else up to the last tap."""
    w = window
    return w.stride * w.output_size if _tiles(w) else w.stride * (w.output_size - 1) + w.span


def reads_padding(window: Window) -> bool:
    """Whether some tap reads a position outside ``[0, I)``."""
    last = window.stride * (window.output_size - 1) + window.span - 1 - window.pad_left
    return window.pad_left > 0 or last >= window.input_size


def _taps_call(axis: int, window: Window, k_last: bool, size: int, from_input: bool) -> Call:
    """A tensor with axis ``axis`` read as the taps ``(o, k)`` of ``window``: ``o`` at ``axis``, ``k`` after it
    or last (``k_last``), every choice made once.

    The axis has ``size`` pixels: the input's ``I``, read from pixel 0 without padding, when
    ``from_input`` (``reads_padding`` is False); else it starts at position ``-P_left``
    (padded, or selected through an index map).
    """
    w = window
    start = -w.pad_left if from_input else 0
    available = size - start
    blocks = _tiles(w) and available >= w.stride * w.output_size
    length = w.stride * w.output_size if blocks else w.stride * (w.output_size - 1) + w.span
    cut = start != 0 or length != size
    before = (slice(None),) * axis
    if w.kernel_size == 1 or w.output_size == 1:
        one_tap = w.kernel_size == 1
        index = before + ((slice(0, length, w.stride),) if one_tap else (slice(0, w.span, w.dilation),))

        def strided(x: torch.Tensor) -> torch.Tensor:
            x = (x.narrow(axis, start, length) if cut else x)[index]
            if one_tap:
                return x.unsqueeze(-1) if k_last else x.unsqueeze(axis + 1)
            return x.movedim(axis, -1).unsqueeze(axis) if k_last else x.unsqueeze(axis)

        return strided
    if blocks:
        shape = (w.output_size, w.stride)
        keep = None if w.span == w.stride and w.dilation == 1 else before + (slice(None), slice(0, w.span, w.dilation))

        def unflattened(x: torch.Tensor) -> torch.Tensor:
            x = (x.narrow(axis, start, length) if cut else x).unflatten(axis, shape)
            if keep is not None:
                x = x[keep]
            return x.movedim(axis + 1, -1) if k_last else x

        return unflattened
    span, stride, dilation = w.span, w.stride, w.dilation

    def unfolded(x: torch.Tensor) -> torch.Tensor:
        x = (x.narrow(axis, start, length) if cut else x).unfold(axis, span, stride)
        if dilation > 1:
            x = x[..., ::dilation]
        return x if k_last else x.movedim(-1, axis + 1)

    return unfolded


Run = Sequence[tuple[int, Window]]
Reader = Callable[[torch.Tensor, Sequence["torch.Tensor | None"]], torch.Tensor]


def taps_reader(run: Run, k_last: bool, indexed: Sequence[bool]) -> Reader:
    """Reads of the taps ``(axis, window)`` of ``run``, in order: ``reader(x, indices)``, with ``indices[n]``
    the index map of read ``n`` (a padding mode's fold, ``pad_index``) where ``indexed[n]``, else None.

    Reads that need no padding are fixed views; the zero padding of the axes ``x`` has is
    one pad for the run (a read can pad early when its axis is one ``x`` has that no earlier
    read of the run made or used). Every choice is made once (per number of dims of ``x``).
    """
    if not any(reads_padding(window) for _, window in run):
        calls = [_taps_call(axis, window, k_last, window.input_size, True) for axis, window in run]
        if len(calls) == 1:
            (call,) = calls
            return lambda x, indices: call(x)

        def plain(x: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> torch.Tensor:
            for call in calls:
                x = call(x)
            return x

        return plain
    by_ndim: dict[int, Reader] = {}

    def padded(x: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> torch.Tensor:
        reader = by_ndim.get(x.ndim)
        if reader is None:
            reader = _padded_reader(run, k_last, indexed, x.ndim)
            if not torch.compiler.is_compiling():  # traced code keeps no Python state
                by_ndim[x.ndim] = reader
        return reader(x, indices)

    return padded


def _padded_reader(run: Run, k_last: bool, indexed: Sequence[bool], ndim: int) -> Reader:
    """``taps_reader``'s reads of a run that reads padding, for an ``x`` of ``ndim`` dims (each read adds one)."""
    early: dict[int, int] = {}  # run number -> axis of x padded before the reads
    used: set[int] = set()
    for number, (axis, window) in enumerate(run):
        source = _source_axis(axis, run[:number], k_last, ndim)
        if source is not None and source not in used and not indexed[number] and reads_padding(window):
            early[number] = source
        if source is not None:
            used.add(source)
    first: Call | None = None
    if early:
        pad = [0, 0] * ndim
        for number, source in early.items():
            window = run[number][1]
            pad[2 * (ndim - 1 - source)] = window.pad_left
            pad[2 * (ndim - 1 - source) + 1] = _length(window) - window.pad_left - window.input_size
        together = pad[: 2 * (ndim - min(early.values()))]
        first = lambda x: signed_pad(x, together)  # noqa: E731 - a fixed call
    reads: list[tuple[bool, Call]] = []
    for number, (axis, window) in enumerate(run):
        if indexed[number]:
            reads.append((True, _taps_call(axis, window, k_last, len(einsum.pad_index(window)), False)))
        elif number in early:
            reads.append((False, _taps_call(axis, window, k_last, _length(window), False)))
        elif reads_padding(window):
            right = _length(window) - window.pad_left - window.input_size
            reads.append((False, _padding_then(
                [0, 0] * (ndim + number - 1 - axis) + [window.pad_left, right],
                _taps_call(axis, window, k_last, _length(window), False),
            )))
        else:
            reads.append((False, _taps_call(axis, window, k_last, window.input_size, True)))
    axes = [axis for axis, _ in run]

    def read(x: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> torch.Tensor:
        if first is not None:
            x = first(x)
        for (selects, call), axis, index in zip(reads, axes, indices):
            x = call(x.index_select(axis, index) if selects else x)  # type: ignore[arg-type]
        return x

    return read


def _padding_then(pad: Sequence[int], call: Call) -> Call:
    """Zero-pad with ``pad`` (``F.pad`` order), then ``call``."""
    return lambda x: call(signed_pad(x, pad))


def _source_axis(axis: int, before: Run, k_last: bool, ndim: int) -> int | None:
    """The axis of the run's input that ``axis`` (after the reads ``before``) is, or None when an earlier read
    made it."""
    if k_last:  # ``o`` replaced the pixels in place, each ``k`` went last
        return axis if axis < ndim else None
    for earlier, _ in reversed(before):
        if axis in (earlier, earlier + 1):
            return None
        if axis > earlier + 1:
            axis -= 1
    return axis


def _taps_view_run(run: Run) -> Call:
    """A run of consecutive ``Taps`` views as one call (index maps for padding modes built once per device)."""
    folded = [window.mode != "zeros" and reads_padding(window) for _, window in run]
    reader = taps_reader(run, False, folded)
    if not any(folded):
        none = (None,) * len(run)
        return lambda tensor: reader(tensor, none)
    indices: dict[torch.device, list[torch.Tensor | None]] = {}

    def apply(tensor: torch.Tensor) -> torch.Tensor:
        found = indices.get(tensor.device)
        if found is None:
            found = [pad_index(window, tensor.device) if fold else None for (_, window), fold in zip(run, folded)]
            indices[tensor.device] = found
        return reader(tensor, found)

    return apply


def pad_index(window: Window, device: torch.device) -> torch.Tensor:
    """For each padded position in ``[-P_left, I + P_right)``, the input pixel it reads (a padding mode's fold)."""
    return torch.tensor(einsum.pad_index(window), dtype=torch.int64, device=device)
