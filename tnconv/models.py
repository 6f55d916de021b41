"""Benchmark models written by hand: ResNet-18 and VGG-19 (CIFAR and torchvision's ImageNet layouts), a ConvNeXt.

They are the whole models of the model-scale benchmarks and of ``tnconv curvature``
(torchvision is not a dependency). Each factory returns a fresh ``torch.nn.Module``
in training mode, initialised by torch's default initialisers (seed with
``torch.manual_seed`` for reproducible weights), whose output is ``(N, num_classes)``
logits:

- ``resnet18_cifar``: the CIFAR variant of ResNet-18 (He et al. 2016): a 3x3 stem
  without max pooling for ``(N, 3, 32, 32)`` inputs, four stages of two ``BasicBlock``s
  (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pooling and one
  ``Linear``; 11.2M parameters for 10 classes. Module names follow torchvision's
  (``conv1``, ``layer2.0.downsample.0``, ``fc``).
- ``resnet18``: torchvision's ResNet-18 for ``(N, 3, 224, 224)``: a 7x7 stride-2 stem and 3x3
  stride-2 max pooling before the same stages; 11.7M parameters for 1000 classes, torchvision's
  module names (``maxpool`` too), so that its state dict loads into torchvision's ``resnet18``.
- ``vgg19_cifar``: VGG-19 with BatchNorm (Simonyan & Zisserman 2015) for ``(N, 3, 32, 32)``:
  sixteen 3x3 convs in five blocks, each block ending in 2x2 max pooling, then one
  ``Linear(512, num_classes)``; ``features.K`` and ``classifier`` as in torchvision.
- ``vgg19``: torchvision's VGG-19 (``vgg19``, or ``vgg19_bn`` with ``batch_norm=True``) for
  ``(N, 3, 224, 224)``: the same sixteen convs (224x224 becomes 7x7), 7x7 adaptive average
  pooling and ``classifier`` = ``Linear(25088, 4096)``, ReLU, Dropout, ``Linear(4096, 4096)``,
  ReLU, Dropout, ``Linear(4096, num_classes)``; 143.7M parameters for 1000 classes.
- ``resnet18_cifar`` and ``vgg19_cifar`` take ``norm="group"``: ``GroupNorm(min(32, C), C)`` in place of
  every BatchNorm, as differentially private training uses them (BatchNorm mixes the samples of a batch).
- ``convnext_depthwise``: a ConvNeXt-style network (Liu et al. 2022) for ``(N, 3, 224, 224)``:
  a 4x4 stride-4 patchify stem, stages of blocks (depthwise 7x7 conv, LayerNorm over
  channels, ``Linear(C, 4C)``, GELU, ``Linear(4C, C)``, residual) with LayerNorm and a 2x2
  stride-2 conv between stages, global average pooling, LayerNorm and a ``Linear`` head;
  no layer scale or stochastic depth. Its pointwise ``Linear`` layers act on
  ``(N, H, W, C)``, so KFAC sees them with ``H*W`` locations.

All pool before their head (globally, or to 7x7 in ``vgg19``), so they also run on other input sizes.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from tnconv.namespace import public_dir

__all__ = [
    "BasicBlock", "ChannelsLayerNorm", "ConvNeXt", "ConvNeXtBlock", "ResNet", "ResNetCifar", "VGG",
    "convnext_depthwise", "resnet18", "resnet18_cifar", "vgg19", "vgg19_cifar",
]
__dir__ = public_dir(globals(), __all__)

VGG19_CHANNELS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
NORMS = ("batch", "group")
NORM_GROUPS = 32
"""Channel groups of ``norm="group"``: ``GroupNorm(min(NORM_GROUPS, C), C)``."""


def _check_positive(**values: object) -> None:
    """Each value must be an int >= 1 (ValueError naming the argument)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_norm(norm: object) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return str(norm)


def normalization(norm: str, channels: int) -> nn.Module:
    """``BatchNorm2d(channels)`` (``norm="batch"``) or ``GroupNorm(min(NORM_GROUPS, channels), channels)``."""
    if norm == "group":
        return nn.GroupNorm(min(NORM_GROUPS, channels), channels)
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """ResNet's basic block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The shortcut is the identity, or a strided 1x1 conv with BatchNorm where the
    stride or the channel count changes. ``norm="group"``: GroupNorm in place of BatchNorm.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = normalization(norm, channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = normalization(norm, channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), normalization(norm, channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """A ResNet of ``BasicBlock``s: stem, one stage per entry of ``blocks``, pooling, ``fc``.

    The stem is torchvision's (7x7 stride-2 conv, then 3x3 stride-2 max pooling) for ImageNet-size
    inputs, else a 3x3 stride-1 conv (CIFAR). ``norm="group"``: GroupNorm in place of BatchNorm.
    """

    def __init__(
        self, blocks: tuple[int, ...], num_classes: int, in_channels: int, imagenet: bool = False, norm: str = "batch"
    ) -> None:
        super().__init__()
        if imagenet:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = normalization(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module | None = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else None
        channels = 64
        for index, count in enumerate(blocks):
            width, stride = 64 * 2**index, 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride, norm)]
            stage += [BasicBlock(width, width, norm=norm) for _ in range(count - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            channels = width
        self.stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for index in range(self.stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


ResNetCifar = ResNet
"""``ResNet``'s name before it had the ImageNet stem (its default, ``imagenet=False``, is the CIFAR stem)."""


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3, norm: str = "batch") -> nn.Module:
    """ResNet-18 for CIFAR-size images: ``(N, in_channels, 32, 32)`` -> ``(N, num_classes)`` logits.

    Args:
        num_classes: the outputs of the final ``Linear`` (``fc``).
        in_channels: the input channels of the 3x3 stem (``conv1``).
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (``GroupNorm(min(32, C), C)``, for private training).
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    return ResNet((2, 2, 2, 2), num_classes, in_channels, norm=_check_norm(norm))


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 for ImageNet-size images: ``(N, in_channels, 224, 224)`` -> ``(N, num_classes)``.

    Args:
        num_classes: the outputs of the final ``Linear`` (``fc``).
        in_channels: the input channels of the 7x7 stride-2 stem (``conv1``).
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    return ResNet((2, 2, 2, 2), num_classes, in_channels, imagenet=True)


class VGG(nn.Module):
    """VGG: ``features`` (3x3 convs with ReLU, ``normalization(norm)`` between unless ``norm`` is None, max
    pooling after each block), ``avgpool``, ``classifier``."""

    def __init__(
        self, blocks: tuple[tuple[int, ...], ...], in_channels: int, norm: str | None, avgpool: int,
        classifier: nn.Module,
    ) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for block in blocks:
            for width in block:
                normalize = [] if norm is None else [normalization(norm, width)]
                layers += [nn.Conv2d(channels, width, 3, padding=1), *normalize, nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(avgpool)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg19_cifar(num_classes: int = 10, in_channels: int = 3, norm: str = "batch") -> nn.Module:
    """VGG-19 with BatchNorm for CIFAR-size images: ``(N, in_channels, 32, 32)`` -> ``(N, num_classes)``.

    Sixteen 3x3 convs (with bias, as in torchvision) in blocks of 2, 2, 4, 4, 4 (64 to 512
    channels), each block ending in 2x2 max pooling (32x32 becomes 1x1), then
    ``classifier = Linear(512, num_classes)``.

    Args:
        num_classes: the outputs of ``classifier``.
        in_channels: the input channels of the first conv.
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (``GroupNorm(min(32, C), C)``, for private training).
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    return VGG(VGG19_CHANNELS, in_channels, _check_norm(norm), 1, nn.Linear(512, num_classes))


def vgg19(num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False) -> nn.Module:
    """torchvision's VGG-19 for ImageNet-size images: ``(N, in_channels, 224, 224)`` -> ``(N, num_classes)``.

    torchvision's ``vgg19`` (``vgg19_bn`` with ``batch_norm``): the sixteen convs of
    ``vgg19_cifar``, 7x7 adaptive average pooling, and a ``classifier`` of three ``Linear``
    layers (25088 -> 4096 -> 4096 -> ``num_classes``) with ReLU and Dropout between them.

    Args:
        num_classes: the outputs of the last ``Linear``.
        in_channels: the input channels of the first conv.
        batch_norm: BatchNorm after each conv (torchvision's ``vgg19_bn``).
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    if not isinstance(batch_norm, bool):
        raise TypeError(f"batch_norm must be a bool, got {batch_norm!r}")
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, 4096),
        nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, num_classes),
    )  # fmt: skip
    return VGG(VGG19_CHANNELS, in_channels, "batch" if batch_norm else None, 7, classifier)


class ChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of ``(N, C, *spatial)`` (ConvNeXt's "channels first" LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ConvNeXtBlock(nn.Module):
    """``x + pwconv2(gelu(pwconv1(norm(dwconv(x)))))``: a depthwise 7x7 conv, then pointwise ``Linear``s.

    The LayerNorm and both ``Linear`` layers act on channels last, ``(N, H, W, C)``.
    """

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, expansion * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expansion * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Stem, then per stage (a downsampling layer first, except in stage 1) its blocks; pooling, norm, ``head``."""

    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...], num_classes: int, in_channels: int) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, stride=4), ChannelsLayerNorm(dims[0], eps=1e-6))
        downsampling = [
            nn.Sequential(ChannelsLayerNorm(before, eps=1e-6), nn.Conv2d(before, after, 2, stride=2))
            for before, after in itertools.pairwise(dims)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsampling])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(width) for _ in range(depth))) for depth, width in zip(depths, dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.head(self.norm(x.mean((2, 3))))


def convnext_depthwise(
    num_classes: int = 10, in_channels: int = 3, depths: tuple[int, ...] = (2, 2, 2, 2),
    dims: tuple[int, ...] = (96, 192, 384, 768),
) -> nn.Module:  # fmt: skip
    """A ConvNeXt-style network of depthwise 7x7 convs for ``(N, in_channels, 224, 224)`` inputs.

    With the defaults: ConvNeXt-T's widths (96 to 768 channels at 56x56 to 7x7) with two
    blocks per stage, 8 depthwise convs, 16 pointwise ``Linear`` layers.

    Args:
        num_classes: the outputs of ``head``.
        in_channels: the input channels of the patchify stem (4x4, stride 4).
        depths: blocks per stage.
        dims: channels per stage (as many as ``depths``); each stage after the first
            starts with a 2x2 stride-2 conv from the previous width.
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    for name, values in (("depths", depths), ("dims", dims)):
        if not isinstance(values, (tuple, list)) or not values:
            raise ValueError(f"{name} must be a non-empty tuple of ints >= 1, got {values!r}")
        for value in values:
            _check_positive(**{f"each of {name}": value})
    if len(depths) != len(dims):
        raise ValueError(f"depths and dims must have the same length, got depths={depths!r} and dims={dims!r}")
    return ConvNeXt(tuple(depths), tuple(dims), num_classes, in_channels)

