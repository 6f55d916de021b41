"""Conv layers for the command line: the built-in list of real layers and parsing of layer flags.

A ``Layer`` is everything ``tnconv.conv_network`` needs about one conv (or
ConvTranspose) layer, with the batch included in ``input_shape``. The
built-in layers live in ``tnconv/layers.json`` (input without batch, torch
weight shape, hyper-parameters); ``--batch`` supplies the batch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from importlib import resources
from typing import Any, Collection, Mapping

from tnconv.caches import cached
from tnconv.cli.names import hint

DEFAULT_BATCH = 8
INT64_MAX = 2**63 - 1  # the most elements (and the largest size) a torch tensor can have
# the per-dim hyper-parameters of a Layer and the flag that sets each
PER_DIM_FLAGS = {
    "kernel_size": "--kernel", "stride": "--stride", "padding": "--padding", "dilation": "--dilation",
    "output_padding": "--output-padding",
}
# the arguments that tnconv.conv.hyper.conv_hyper's errors name, and the flag that sets each
HYPER_FLAGS = {
    **PER_DIM_FLAGS, "input_shape": "--input", "in_channels": "--input", "out_channels": "--out-channels",
    "groups": "--groups", "padding_mode": "--padding-mode", "transposed": "--transposed",
}
_HYPER_NAMES = re.compile(r"\b(" + "|".join(sorted(HYPER_FLAGS, key=len, reverse=True)) + r")\b")


@dataclass(frozen=True)
class Layer:
    """One conv layer: ``input_shape`` is ``(N, C_in, *I)``; hyper-parameters as ``torch.nn.Conv*d`` takes them."""

    name: str
    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...] | int = 1
    padding: tuple[int, ...] | int | str = 0
    dilation: tuple[int, ...] | int = 1
    groups: int = 1
    transposed: bool = False
    output_padding: tuple[int, ...] | int = 0
    padding_mode: str = "zeros"

    @property
    def dims(self) -> int:
        return len(self.input_shape) - 2

    @property
    def concrete(self) -> bool:
        """Whether every size is a number (``--input N,64,H,W`` names symbols for the batch and spatial sizes)."""
        return all(isinstance(size, int) for size in self.input_shape)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The torch weight shape: ``(C_out, C_in/G, *K)``, or ``(C_in, C_out/G, *K)`` when transposed."""
        c_in, g = self.input_shape[1], self.groups
        first, second = (c_in, self.out_channels // g) if self.transposed else (self.out_channels, c_in // g)
        return (first, second, *self.kernel_size)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tnconv.conv.hyper.conv_hyper`` (and of ``tnconv.conv_network`` after ``op``):
        every field but ``name``, which are named as its arguments."""
        return {field.name: getattr(self, field.name) for field in fields(self) if field.name != "name"}

    def describe(self) -> str:
        """One line: name, shapes and the hyper-parameters that differ from the defaults."""
        kind = "ConvTranspose" if self.transposed else "Conv"
        parts = [f"{kind}{self.dims}d", f"x={_shape(self.input_shape)}", f"w={_shape(self.weight_shape)}"]
        for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1), ("output_padding", 0)):
            value = getattr(self, key)
            if value != default and value != (default,) * self.dims:
                parts.append(f"{key}={_value(value)}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode}")
        return f"{self.name}: " + " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return dict(
            name=self.name, input_shape=list(self.input_shape), weight_shape=list(self.weight_shape),
            out_channels=self.out_channels, kernel_size=list(self.kernel_size), stride=_plain(self.stride),
            padding=_plain(self.padding), dilation=_plain(self.dilation), groups=self.groups,
            transposed=self.transposed, output_padding=_plain(self.output_padding), padding_mode=self.padding_mode,
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def _value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@cached(maxsize=1)
def _catalogue() -> dict[str, Any]:
    text = resources.files("tnconv").joinpath("layers.json").read_text(encoding="utf-8")
    return json.loads(text)


def default_layer_name() -> str:
    """The layer ``tnconv derive`` uses when none is given."""
    return str(_catalogue()["default"])


def layer_names() -> tuple[str, ...]:
    """The names of the built-in layers, in file order."""
    return tuple(entry["name"] for entry in _catalogue()["layers"])


def builtin_layer(name: str, batch: int = DEFAULT_BATCH) -> Layer:
    """The built-in layer ``name`` (``tiny_2d`` or ``tiny-2d``) with batch ``batch``.

    ValueError names the unknown name and the closest built-in one.
    """
    canonical = name.replace("-", "_")
    for entry in _catalogue()["layers"]:
        if entry["name"] == canonical:
            return _from_entry(entry, batch)
    names = layer_names()
    raise ValueError(f"--layer: unknown layer {name!r}{hint(canonical, names)} (built-in layers: {', '.join(names)})")


def _from_entry(entry: Mapping[str, Any], batch: int) -> Layer:
    x, w = tuple(entry["x"]), tuple(entry["w"])
    groups = int(entry.get("groups", 1))
    transposed = bool(entry.get("transposed", False))
    out_channels = w[1] * groups if transposed else w[0]
    return Layer(
        name=entry["name"], input_shape=(batch, *x), out_channels=out_channels, kernel_size=w[2:],
        stride=entry.get("stride", 1), padding=entry.get("padding", 0), dilation=entry.get("dilation", 1),
        groups=groups, transposed=transposed, output_padding=entry.get("output_padding", 0),
        padding_mode=entry.get("padding_mode", "zeros"),
    )


def parse_ints(text: str, flag: str, allow_zero: bool = False) -> tuple[int, ...]:
    """``"8,64,56,56"`` -> ``(8, 64, 56, 56)``; ValueError naming the flag and the text otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    low = 0 if allow_zero else 1
    if any(value < low for value in values):
        raise ValueError(f"{flag}: expected integers >= {low}, got {text!r}")
    if any(value > INT64_MAX for value in values):
        raise ValueError(f"{flag}: {text!r} has a size beyond int64 (2**63-1), more than any tensor can hold")
    return values


def shape_flag(text: str, flag: str = "--input") -> tuple[int | str, ...]:
    """``--input``: ``N,C_in,*spatial`` with at least one spatial dim; the batch and spatial sizes may be symbol
    names (``N,64,H,W``: the derivation and its cost then hold for all their values)."""
    parts = text.split(",")
    symbols = {n: part for n, part in enumerate(parts) if part.isidentifier()}
    if 1 in symbols:
        raise ValueError(f"{flag}: the channels (second size) must be an integer, got {parts[1]!r} in {text!r}; "
                         "only the batch and spatial sizes may be symbols")
    numbers = ",".join(part for n, part in enumerate(parts) if n not in symbols)
    try:
        values = iter(parse_ints(numbers, flag) if len(symbols) < len(parts) else ())
    except ValueError as error:  # the message shows the whole flag value, symbols included
        raise ValueError(str(error).replace(repr(numbers), repr(text))) from None
    shape = tuple(symbols[n] if n in symbols else next(values) for n in range(len(parts)))
    if len(shape) < 3:
        raise ValueError(f"{flag}: expected (N, C_in, *spatial) with at least one spatial dim, got {text}")
    return shape


def per_dim_flag(text: str, flag: str, allow_zero: bool = False) -> tuple[int, ...] | int:
    """An int flag, or one int per spatial dim (``"2"`` -> 2, ``"2,1"`` -> (2, 1))."""
    values = parse_ints(text, flag, allow_zero)
    return values[0] if len(values) == 1 else values


def padding_flag(text: str) -> tuple[int, ...] | int | str:
    """``--padding``: ints as for ``per_dim_flag``, or ``same`` / ``valid``."""
    if text in ("same", "valid"):
        return text
    return per_dim_flag(text, "--padding", allow_zero=True)


def with_overrides(layer: Layer, flags: Mapping[str, Any]) -> Layer:
    """``layer`` with the hyper-parameters given on the command line replaced (None = not given).

    An int ``kernel_size`` is repeated over the (new) spatial dims. ValueError,
    naming the flags, when a per-dim value does not fit the input's dims: one the
    user gave (``--stride 1,2,3`` for a 2-d input), or one kept from a built-in
    layer whose input ``--input`` changed to another number of dims.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return checked_sizes(layer)
    shape = given.get("input_shape", layer.input_shape)
    dims = len(shape) - 2
    if isinstance(given.get("kernel_size"), int):
        given["kernel_size"] = (given["kernel_size"],) * dims
    for key, flag in PER_DIM_FLAGS.items():
        value = given.get(key, getattr(layer, key))
        if not isinstance(value, tuple) or len(value) == dims:
            continue
        if key in given:
            counts = "1 integer" if dims == 1 else f"1 or {dims} integers"
            raise ValueError(f"{flag}: expected {counts} for a {dims}-d input, got {_value(value)}")
        raise ValueError(
            f"--input has {dims} spatial dim{'s' if dims != 1 else ''} but --layer {layer.name} has a "
            f"{len(value)}-d {flag.lstrip('-').replace('-', ' ')} ({_value(value)}); give {flag} too"
        )
    return checked_sizes(replace(layer, name=f"{layer.name} (modified)", **given))


def custom_layer(input_shape: tuple[int, ...], flags: Mapping[str, Any]) -> Layer:
    """A layer from ``--input`` (``shape_flag``) and the other flags (kernel 3, out channels = in channels by default)."""
    dims = len(input_shape) - 2
    base = Layer(name="custom", input_shape=input_shape, out_channels=input_shape[1], kernel_size=(3,) * dims)
    return replace(with_overrides(base, flags), name="custom")


def checked_sizes(layer: Layer) -> Layer:
    """``layer``, after checking that its input and weight fit in a tensor (at most 2**63-1 elements)."""
    for what, shape, flags in (("input", layer.input_shape, "--input or --batch"),
                               ("weight", layer.weight_shape, "--out-channels or --kernel")):
        elements = math.prod(size for size in shape if isinstance(size, int))  # symbols: checked when bound
        if elements > INT64_MAX:
            raise ValueError(
                f"the layer {what} {_shape(shape)} has {elements:,} elements, more than a tensor can hold "
                f"(2**63-1); use a smaller {flags}"
            )
    return layer


def library_checked(layer: Layer, given: Collection[str]) -> Layer:
    """``layer``, after ``tnconv.conv.hyper.conv_hyper`` judged what only the library can (channels divisible by
    groups, a kernel that fits the padded input, ...).

    Its ValueError/TypeError is raised again led by the flags that set the
    arguments it names: those of them in ``given`` (the flags on the command
    line), else the first it names (``--padding, --stride: padding='same' needs
    stride 1 in every dim, got stride=(2, 2)``).
    """
    from tnconv.conv.hyper import conv_hyper  # sympy, no torch

    try:
        conv_hyper(**layer.kwargs(), symbolic=not layer.concrete)
    except (TypeError, ValueError) as error:
        named = list(dict.fromkeys(HYPER_FLAGS[name] for name in _HYPER_NAMES.findall(str(error))))
        blamed = [flag for flag in named if flag in given] or named[:1] or ["the layer"]
        raise type(error)(f"{', '.join(blamed)}: {error}") from None
    return layer
