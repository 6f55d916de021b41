"""Native dispatch: networks that a PyTorch kernel computes run on that kernel.

The match is on structure, never on tensor names: which kinds the tensors
have, which tensors each leg joins, and where the legs of every index pattern
``Pi[k, o, i]`` go. With data tensors ``A``, ``B`` and the output:

=====================  ======================  ==================================
pattern legs go to     network                 kernel
=====================  ======================  ==================================
``i->A, k->B, o->out``  convolution             ``F.conv{N}d``
``o->A, k->B, i->out``  input VJP / transposed  ``F.conv_transpose{N}d`` (or
                        convolution forward     ``aten.convolution_backward``)
``i->A, o->B, k->out``  weight VJP              ``aten.convolution_backward``
``i->A, (k, o)->out``   unfold (im2col)         ``F.unfold`` (2-d, overlapping), strided views
``(k, o)->A, i->out``   fold (col2im)           ``F.fold`` (2-d)
no patterns            matrix product          ``torch.matmul`` (copy-avoiding layout)
=====================  ======================  ==================================

Every other leg is classified by the tensors it joins: on both data tensors
and the output it is a group leg; on one data tensor and the output a batch or
channel leg; on both data tensors only a contracted channel (or, for the
weight VJP, the batch). Anything that fits no row - a leg summed on one
tensor, a repeated leg, identities, padding modes torch cannot pad, more
spatial dimensions than the kernel has - returns None and runs on the einsum
path. Padding the kernel cannot express (asymmetric, negative, reflect,
replicate, circular) is done with ``F.pad`` first.

The result is a ``Native`` plan (``tnconv.lower.kernels``: plain data; the
backend makes the call). Convolution, VJP, unfold and fold kernels hold no
batch size: their reshapes lead with -1 (``tnconv.lower.layout``) and the
transposed convolution takes the batch of its operand. So when a network's batch is the leading leg of its
operands and its output, these kernels of that network are equal for all batch
sizes, and one runs them all (``Program.kernel``; ``tnconv.functional`` uses it
under ``torch.compile`` to keep batch sizes symbolic). A matrix product's recipe
holds its sizes.
"""

from __future__ import annotations

import math
from typing import Sequence

from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.ir.views import Taps
from tnconv.lower.kernels import (
    ConvCall, ConvTransposeCall, ConvWeightCall, FoldCall, KernelCall, MatmulCall, Native, Spatial, UnfoldCall,
)
from tnconv.lower.layout import Arrange, arrange, restore
from tnconv.lower.reading import OUT, Reading, read
from tnconv.lower.steps import Pairwise, as_gram, recipe
from tnconv.lower.window import Window

PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
WIDE_GROUP_PAIRS = 64 * 64
"""Input-times-output channels per group from which a grouped weight VJP with few output locations leaves the
``convolution_backward`` kernel for the einsum stage (``_grouped_weight_pays``)."""
Found = tuple[str, KernelCall]


def match(net: Network) -> Native | None:
    """The kernel that computes ``net`` (a name such as ``"conv2d"`` and its call), or None.

    The call takes the operands in ``net.operands`` order. The match reads the
    index patterns of pattern tensors and of ``Taps`` views alike
    (``tnconv.lower.reading``: a simplified network shows the kernel's
    convolution in its views), then takes two data tensors without pattern
    tensors as a matrix product (read through their views). The weight VJP of a
    1x1 conv runs as the matrix product of strided views it is
    (``_one_by_one``), simplified or not.
    """
    if not net.is_concrete or any(int(size) < 1 for size in net.sizes.values()):
        return None
    reading = read(net)
    found = _match(reading) if reading is not None else None
    if reading is not None and found is not None and isinstance(found[1], ConvWeightCall):
        if all(_one_by_one(pattern.pattern) for pattern in reading.patterns):
            found = _matmul(net, _read_through_taps(reading)) or found
    data = [p for p, e in enumerate(net.entries) if isinstance(e.kind, Data)]
    if found is None and len(data) == len(net.entries) == 2:
        found = _matmul(net, {p: net.entries[p] for p in data})
    if found is None:
        return None
    name, call = found
    sizes = reading.sizes if reading is not None else _sizes(net)
    legs = _multiplied_legs(net, reading, call)
    copies = isinstance(call, (UnfoldCall, FoldCall))
    return Native(name, call, 0 if copies else math.prod(sizes[leg] for leg in legs), legs)


def _one_by_one(pattern: IndexPattern) -> bool:
    """A 1x1 kernel reading no padding: its conv is a matrix product of strided views.

    For the weight VJP (and per-sample gradients, where the batch becomes the groups)
    torch's ``matmul`` beats ``convolution_backward`` there on CPU (ResNet-18's 1x1
    stride-2 downsampling, batch 8: 7.2 ms against 8.5 ms, per-sample 4.5 ms against 10.9 ms).
    """
    window = Window.of(pattern)
    last = window.stride * (window.output_size - 1) - window.pad_left
    return window.kernel_size == 1 and window.pad_left <= 0 and last < window.input_size


def _match(reading: Reading) -> Found | None:
    """The conv kernel (conv, transposed conv, weight VJP, unfold, fold) that computes the read network, by where
    its patterns' legs go."""
    operands = reading.operands
    if not reading.patterns or any(len(set(e.legs)) != len(e.legs) for e in (*reading.net.entries, *operands.values())):
        return None
    roles = _roles(reading)
    if roles is None:
        return None
    k_at, o_at, i_at = roles
    if len(operands) == 2 and len(set(roles)) == 3:
        if o_at == OUT:
            return _conv(reading, i_at, k_at)
        if i_at == OUT:
            return _transpose(reading, o_at, k_at)
        return _weight(reading, i_at, o_at)
    if len(operands) == 1 and i_at != OUT and k_at == o_at == OUT:
        return _unfold(reading, i_at)
    if len(operands) == 1 and i_at == OUT and k_at == o_at != OUT:
        return _fold(reading, k_at)
    return None


def _roles(reading: Reading) -> tuple[int, int, int] | None:
    """Where the ``(k, o, i)`` legs of every pattern go (a data position or OUT), if all agree."""
    found: tuple[int, ...] | None = None
    for pattern in reading.patterns:
        where = []
        for leg in pattern.legs:
            targets = reading.where(pattern, leg)
            if len(targets) != 1 or (targets[0] != OUT and targets[0] not in reading.operands):
                return None
            where.append(targets[0])
        if found is not None and tuple(where) != found:
            return None
        found = tuple(where)
    return found  # type: ignore[return-value]


def _read_through_taps(reading: Reading) -> dict[int, Tensor]:
    """The data tensors with every pattern read as a ``Taps`` view of the tensor that holds its pixels (the
    strided views a 1x1 conv's matrix product takes): pattern tensors become views, read views stay."""
    net = reading.net
    entries = {position: net.entries[position] for position in reading.operands}
    for pattern in reading.patterns:
        if pattern.tensor is None:
            continue
        k, o, i = pattern.legs
        (reader,) = reading.where(pattern, i)  # the roles gave each pixel one data tensor
        entry = entries[reader]
        slot = entry.legs.index(i)
        views = (*entry.views, Taps(slot, pattern.pattern))
        entries[reader] = Tensor(entry.name, (*entry.legs[:slot], o, k, *entry.legs[slot + 1 :]), Data(views))
    return entries


def _spatial(reading: Reading, kernel_padding: bool, modes: bool) -> Spatial | None:
    """The patterns' hyper-parameters; None when torch cannot run them (see ``match``)."""
    windows = tuple(Window.of(pattern.pattern) for pattern in reading.patterns)
    mode = windows[0].mode
    if any(w.mode != mode for w in windows) or (mode != "zeros" and not modes):
        return None
    if any(w.stride < 1 or w.dilation < 1 or w.kernel_size < 1 for w in windows):
        return None
    symmetric = all(w.pad_left == w.pad_right >= 0 for w in windows)
    if mode != "zeros":
        if len(windows) > 3 or any(min(w.pad_left, w.pad_right) < 0 for w in windows):
            return None
        if mode == "reflect" and any(max(w.pad_left, w.pad_right) >= w.input_size for w in windows):
            return None
        if mode == "circular" and any(max(w.pad_left, w.pad_right) > w.input_size for w in windows):
            return None
    in_kernel = kernel_padding and mode == "zeros" and symmetric
    pad = None
    if not in_kernel and any(w.pad_left or w.pad_right for w in windows):
        pad = tuple(p for w in reversed(windows) for p in (w.pad_left, w.pad_right))
    return Spatial(
        tuple(w.kernel_size for w in windows),
        tuple(w.stride for w in windows),
        tuple(w.dilation for w in windows),
        tuple(w.pad_left if in_kernel else 0 for w in windows),
        pad,
        PAD_MODES[mode],
        windows,
    )


def _split(reading: Reading, a: int, b: int, skip: set[str]) -> tuple[list[str], ...] | None:
    """Legs of A and B (less ``skip``) by where they go: (A+B+out, A+out, B+out, A+B); None if one is summed alone."""
    legs_a, legs_b = reading.operands[a].legs, reading.operands[b].legs
    out = set(reading.net.output)
    shared: list[str] = []
    only_a: list[str] = []
    only_b: list[str] = []
    contracted: list[str] = []
    for leg in legs_a:
        if leg in skip:
            continue
        if leg in legs_b:
            (shared if leg in out else contracted).append(leg)
        elif leg in out:
            only_a.append(leg)
        else:
            return None
    for leg in legs_b:
        if leg in skip or leg in legs_a:
            continue
        if leg not in out:
            return None
        only_b.append(leg)
    return shared, only_a, only_b, contracted


def _sizes(net: Network) -> dict[str, int]:
    return {leg: int(size) for leg, size in net.sizes.items()}


def _pattern_legs(reading: Reading) -> tuple[list[str], list[str], list[str]]:
    k, o, i = zip(*(pattern.legs for pattern in reading.patterns))
    return list(k), list(o), list(i)


def _shaped(
    reading: Reading, a: int, b: int, pattern_legs: str, kernel_padding: bool
) -> tuple[tuple[list[str], list[str], list[str]], tuple[list[str], ...], Spatial] | None:
    """What a native kernel on operands ``a`` and ``b`` needs: the patterns' ``(k, o, i)`` legs, the
    legs' split (``_split``, with the pattern legs ``pattern_legs`` of ``"ki"``/``"ko"``/``"oi"``
    on the two operands) and the spatial hyper-parameters; None when no kernel of <= 3 dims fits."""
    legs = _pattern_legs(reading)
    on_operands = {leg for which in pattern_legs for leg in legs["koi".index(which)]}
    split = _split(reading, a, b, on_operands)
    spatial = _spatial(reading, kernel_padding=kernel_padding, modes=kernel_padding)
    if split is None or spatial is None or len(reading.patterns) > 3:
        return None
    return legs, split, spatial


def _arrange(reading: Reading, position: int, groups: list[list[str]]) -> Arrange:
    """How the data tensor at ``position`` reaches a kernel as the leg ``groups`` (read: ``Reading.operands``)."""
    entry = reading.operands[position]
    return arrange(entry, reading.net.operands.index(entry.name), groups, reading.sizes)


def _conv(reading: Reading, x: int, w: int) -> Found | None:
    found = _shaped(reading, x, w, "ki", kernel_padding=True)
    if found is None:
        return None
    (ks, os, is_), (groups, batch, c_out, c_in), spatial = found
    n = len(ks)
    sizes = reading.sizes
    x_in = _arrange(reading, x, [batch, groups + c_in, *([l] for l in is_)])
    w_in = _arrange(reading, w, [groups + c_out, c_in, *([l] for l in ks)])
    out = restore([batch, groups, c_out, *([l] for l in os)], reading.net.output, sizes)
    return f"conv{n}d", ConvCall(x_in, w_in, out, spatial, _product(groups, sizes))


def _transpose(reading: Reading, v: int, w: int) -> Found | None:
    found = _shaped(reading, v, w, "ko", kernel_padding=False)
    if found is None:
        return None
    (ks, os, is_), (groups, batch, c_result, c_contracted), spatial = found
    n = len(ks)
    sizes = reading.sizes
    v_in = _arrange(reading, v, [batch, groups + c_contracted, *([l] for l in os)])
    w_in = _arrange(reading, w, [groups + c_contracted, c_result, *([l] for l in ks)])
    out = restore([batch, groups, c_result, *([l] for l in is_)], reading.net.output, sizes)
    windows = spatial.windows
    full = tuple(w.stride * (w.output_size - 1) + w.span for w in windows)
    symmetric = all(w.pad_left == w.pad_right >= 0 for w in windows)
    extra = tuple(w.input_size + 2 * w.pad_left - f for w, f in zip(windows, full))
    if symmetric and all(0 <= e < max(w.stride, w.dilation) for w, e in zip(windows, extra)):
        spatial = Spatial(spatial.kernel, spatial.stride, spatial.dilation,
                          tuple(w.pad_left for w in windows), None, "constant", windows)
        output_padding: tuple[int, ...] | None = extra
        crop = None
    else:
        output_padding = None
        crop = tuple(p for w, f in zip(reversed(windows), reversed(full))
                     for p in (-w.pad_left, w.input_size + w.pad_left - f))
    input_sizes = (_product(groups + c_result, sizes), *full)
    kernel = ConvTransposeCall(v_in, w_in, out, spatial, _product(groups, sizes), output_padding, input_sizes, crop)
    return f"conv_transpose{n}d", kernel


def _weight(reading: Reading, x: int, v: int) -> Found | None:
    found = _shaped(reading, x, v, "oi", kernel_padding=True)
    if found is None:
        return None
    (ks, os, is_), (groups, c_in, c_out, batch), spatial = found
    n = len(ks)
    sizes = reading.sizes
    if not _grouped_weight_pays(_product(groups, sizes), _product(c_in + c_out, sizes), _product(os, sizes)):
        return None
    x_in = _arrange(reading, x, [batch, groups + c_in, *([l] for l in is_)])
    v_in = _arrange(reading, v, [batch, groups + c_out, *([l] for l in os)])
    out = restore([groups, c_out, c_in, *([l] for l in ks)], reading.net.output, sizes)
    weight_shape = (_product(groups + c_out, sizes), _product(c_in, sizes), *spatial.kernel)
    return f"conv{n}d_weight", ConvWeightCall(x_in, v_in, out, spatial, _product(groups, sizes), weight_shape)


def _grouped_weight_pays(groups: int, channel_pairs: int, locations: int) -> bool:
    """Whether ``convolution_backward`` should compute a weight VJP of ``groups`` groups with ``channel_pairs``
    input-times-output channels per group from ``locations`` output locations: always without groups or with
    fewer than ``WIDE_GROUP_PAIRS`` channel pairs per group, else where ``locations >= 2 sqrt(channel_pairs)``
    (``T^2 >= 4 c_in c_out``).

    Per-sample gradients run as a weight VJP whose groups are the batch. There the CPU kernel slows down
    steeply as a group's channels grow and its locations shrink; measured against the einsum stage (patches as
    views, one batched product), 1 thread, 3x3 kernels, 32 samples: 0.47x its time with 64 channels at 32x32,
    0.84x at 16x16, 0.96x at 8x8, 1.48x at 4x4; 128 channels 1.08x at 16x16, 3.8x at 8x8; 256 channels 2.0x at
    8x8, 2.7x at 4x4; 512 channels 2.0x at 7x7 (8 samples), 2.7x at 4x4, 29x at 2x2 (VGG-19's last block).
    Depthwise and narrow groups (ResNeXt's 4-32 channels per group) keep the kernel.
    """
    return groups == 1 or channel_pairs < WIDE_GROUP_PAIRS or locations * locations >= 4 * channel_pairs


def _unfold(reading: Reading, x: int) -> Found | None:
    n = len(reading.patterns)
    ks, os, is_ = _pattern_legs(reading)
    output = reading.net.output
    rest = [leg for leg in reading.operands[x].legs if leg not in is_]
    if any(leg not in output for leg in rest):
        return None
    windows = [Window.of(pattern.pattern) for pattern in reading.patterns]
    im2col = n == 2 and any(w.pad_left or w.pad_right or w.span > w.stride for w in windows)
    spatial = _spatial(reading, kernel_padding=im2col, modes=True)
    if spatial is None:
        return None
    im2col = im2col and spatial.mode == "constant"
    sizes = reading.sizes
    x_in = _arrange(reading, x, [rest[:1], rest[1:], *([l] for l in is_)])
    if im2col:
        out = restore([rest, ks, os], output, sizes)
    else:
        out = restore([rest[:1], rest[1:], *([l] for l in os), *([l] for l in ks)], output, sizes)
    return f"unfold{n}d", UnfoldCall(x_in, out, spatial, im2col)


def _fold(reading: Reading, x: int) -> Found | None:
    n = len(reading.patterns)
    ks, os, is_ = _pattern_legs(reading)
    output = reading.net.output
    rest = [leg for leg in reading.operands[x].legs if leg not in ks + os]
    spatial = _spatial(reading, kernel_padding=True, modes=False)
    if n != 2 or spatial is None or any(leg not in output for leg in rest):
        return None
    sizes = reading.sizes
    x_in = _arrange(reading, x, [rest[:1], rest[1:] + ks, os])
    out = restore([rest[:1], rest[1:], *([l] for l in is_)], output, sizes)
    windows = spatial.windows
    crop = None
    if spatial.pad is None:
        size = tuple(w.input_size for w in windows)
    else:
        size = tuple(w.input_size + w.pad_left + w.pad_right for w in windows)
        crop = tuple(p for w in reversed(windows) for p in (-w.pad_left, -w.pad_right))
        spatial = Spatial(spatial.kernel, spatial.stride, spatial.dilation, (0,) * n, None, "constant", windows)
    return "fold2d", FoldCall(x_in, out, spatial, size, crop)


def _matmul(net: Network, data: dict[int, Tensor]) -> Found | None:
    """The matrix product of the two data tensors ``data`` (by position: ``net``'s entries, or their reading
    through ``Taps`` views), read through their views."""
    if len(data) != 2 or any(len(set(entry.legs)) != len(entry.legs) for entry in data.values()):
        return None
    a, b = data.values()
    sizes = _sizes(net)
    product, _ = recipe([a.legs, b.legs], set(net.output), sizes, net.output)
    if not isinstance(product, Pairwise):
        return None
    if a.name == b.name and a.kind == b.kind:
        product = as_gram(product)
    a_in = arrange(a, net.operands.index(a.name), [(leg,) for leg in a.legs], sizes)
    b_in = arrange(b, net.operands.index(b.name), [(leg,) for leg in b.legs], sizes)
    return "matmul", MatmulCall(a_in, b_in, product)


def _product(legs: Sequence[str], sizes: dict[str, int]) -> int:
    result = 1
    for leg in legs:
        result *= sizes[leg]
    return result


def _multiplied_legs(net: Network, reading: Reading | None, call: KernelCall) -> tuple[str, ...]:
    """The legs whose sizes multiply to the kernel's multiply-adds: all but the patterns' ``i`` legs (each pair
    of an output and a kernel position reads one input position), as a convolution kernel or a matrix
    product runs them; none for unfold and fold (they copy), whose count is then 0."""
    if isinstance(call, (UnfoldCall, FoldCall)):
        return ()
    if reading is None:
        return tuple(net.sizes)
    pixels = {pattern.legs[2] for pattern in reading.patterns}
    return tuple(leg for leg in reading.sizes if leg not in pixels)
