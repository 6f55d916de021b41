"""State, initialisation, ``extra_repr`` and ``from_torch`` shared by all conv modules.

Mirrors ``torch.nn.modules.conv._ConvNd``: the same attributes (tuples of N ints, padding as
given), ``weight`` of shape ``(C_out, C_in // G, *K)`` (``(C_in, C_out // G, *K)`` when
transposed), ``bias`` of shape ``(C_out,)`` or ``None``, and the same initialisation, so that
state dicts move between a tnconv module and its torch twin in both directions.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar, Union

import torch
from torch import Tensor
from torch.nn import Module, Parameter, init
from torch.nn.parameter import is_lazy

from tnconv.nn.arguments import conv_arguments

ConvT = TypeVar("ConvT", bound="ConvBase")
Device = Union[torch.device, str, None]


class ConvBase(Module):
    """Base of ``ConvNd`` and ``ConvTransposeNd``: validates the constructor arguments and stores them as
    torch's attributes (the fields of ``tnconv.nn.arguments.ConvArguments``), then creates the parameters."""

    # spatial dims fixed by the class (Conv2d: 2); None where the constructor takes N
    spatial_dims: ClassVar[int | None] = None
    transposed: ClassVar[bool] = False
    # the torch classes from_torch accepts, by spatial dims
    torch_classes: ClassVar[dict[int, type[Module]]] = {}

    weight: Parameter
    bias: Parameter | None

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: object,
        stride: object,
        padding: object,
        dilation: object,
        output_padding: object,
        groups: int,
        bias: bool,
        padding_mode: str,
        device: Device,
        dtype: torch.dtype | None,
    ) -> None:
        """Validate and store the hyper-parameters, then create and initialise the parameters."""
        super().__init__()
        args = conv_arguments(
            dims, in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, groups,
            padding_mode, self.transposed,
        )  # fmt: skip
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got bias={bias!r}")
        self.in_channels = args.in_channels
        self.out_channels = args.out_channels
        self.kernel_size = args.kernel_size
        self.stride = args.stride
        self.padding = args.padding
        self.dilation = args.dilation
        self.output_padding = args.output_padding
        self.groups = args.groups
        self.padding_mode = args.padding_mode
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        if self.transposed:
            channels = (self.in_channels, self.out_channels // self.groups)
        else:
            channels = (self.out_channels, self.in_channels // self.groups)
        self.weight = Parameter(torch.empty((*channels, *self.kernel_size), **factory))
        if bias:
            self.bias = Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def N(self) -> int:
        """Number of spatial dims."""
        return len(self.kernel_size)

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: ``kaiming_uniform_(a=sqrt(5))`` weight, ``U(+-1/sqrt(fan_in))`` bias.

        The random draws happen in torch's order, so under the same seed the parameters equal
        those of the torch module.
        """
        with torch.no_grad():
            init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)

    def _check_input(self, input: Tensor) -> None:
        """``input`` must be ``(n, C, *I)`` or unbatched ``(C, *I)`` (as in torch) with this module's N."""
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got input={input!r}")
        if input.ndim not in (self.N + 1, self.N + 2):
            raise ValueError(
                f"{type(self).__name__} expects a {self.N + 1}-d (unbatched) or {self.N + 2}-d (batched) input, "
                f"got input of shape {tuple(input.shape)}"
            )

    @classmethod
    def _torch_config(cls, module: Module) -> tuple[int, dict[str, Any]]:
        """Spatial dims and constructor keyword arguments of a torch module this class mirrors."""
        classes = tuple(cls.torch_classes.values())
        if not isinstance(module, classes):
            names = ", ".join(f"torch.nn.{c.__name__}" for c in classes)
            raise TypeError(f"module must be a {names}, got module of type {type(module).__name__}")
        dims = len(module.kernel_size)  # type: ignore[arg-type]
        if cls.spatial_dims is not None and dims != cls.spatial_dims:
            raise TypeError(
                f"{cls.__name__}.from_torch needs a {cls.spatial_dims}-d module, got module of type "
                f"{type(module).__name__}"
            )
        if is_lazy(module.weight):  # type: ignore[arg-type]
            raise ValueError(f"module has uninitialized parameters (run it once first), got module={module!r}")
        config: dict[str, Any] = {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": tuple(module.kernel_size),  # type: ignore[arg-type]
            "stride": tuple(module.stride),  # type: ignore[arg-type]
            "padding": module.padding,
            "dilation": tuple(module.dilation),  # type: ignore[arg-type]
            "groups": module.groups,
            "bias": module.bias is not None,
            "padding_mode": module.padding_mode,
        }
        if cls.transposed:
            config["output_padding"] = tuple(module.output_padding)  # type: ignore[arg-type]
        return dims, config

    @classmethod
    def from_torch(cls: type[ConvT], module: Module) -> ConvT:
        """A tnconv module with ``module``'s configuration and a copy of its parameters.

        ``module``'s device, dtype, ``requires_grad`` flags and training mode carry over; the
        copy shares no storage with ``module``, and no random numbers are drawn.
        """
        dims, config = cls._torch_config(module)
        positional = () if cls.spatial_dims is not None else (dims,)
        weight: Tensor = module.weight  # type: ignore[assignment]
        bias: Tensor | None = module.bias  # type: ignore[assignment]
        new = torch.nn.utils.skip_init(cls, *positional, **config, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight)
            new.weight.requires_grad_(weight.requires_grad)
            if new.bias is not None and bias is not None:
                new.bias.copy_(bias)
                new.bias.requires_grad_(bias.requires_grad)
        return new.train(module.training)
