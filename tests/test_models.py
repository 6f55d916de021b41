"""tnconv.models: the hand-written benchmark models have the architecture they claim and run."""

from __future__ import annotations

import pytest
import torch

from tnconv import models


def _convs(model: torch.nn.Module) -> dict[str, torch.nn.Conv2d]:
    return {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)}


def _parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_resnet18_cifar_is_the_cifar_resnet18():
    """11,173,962 parameters (the CIFAR ResNet-18 of the literature), 20 convs, a 3x3 stem, torchvision's names."""
    model = models.resnet18_cifar()
    convs = _convs(model)
    assert _parameters(model) == 11_173_962
    assert len(convs) == 20 and sum("downsample" in name for name in convs) == 3
    assert convs["conv1"].kernel_size == (3, 3) and convs["conv1"].stride == (1, 1)
    assert convs["layer2.0.conv1"].stride == (2, 2) and convs["layer4.1.conv2"].out_channels == 512
    assert all(conv.bias is None for conv in convs.values())
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.out_features == 10


def test_resnet18_is_torchvisions_resnet18():
    """11,689,512 parameters (torchvision's resnet18), a 7x7 stride-2 stem and 3x3 stride-2 max pooling: 224x224
    inputs reach the last stage at 7x7."""
    model = models.resnet18()
    convs = _convs(model)
    assert _parameters(model) == 11_689_512
    assert len(convs) == 20 and convs["conv1"].kernel_size == (7, 7) and convs["conv1"].stride == (2, 2)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d) and model.maxpool.kernel_size == 3
    assert model.fc.out_features == 1000
    sizes = {}
    hook = convs["layer4.1.conv2"].register_forward_hook(lambda m, args, out: sizes.update(last=out.shape[2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 224, 224))
    hook.remove()
    assert tuple(sizes["last"]) == (7, 7)


def test_vgg19_is_torchvisions_vgg19():
    """143,667,240 parameters (torchvision's vgg19; 143,678,248 with BatchNorm, vgg19_bn) and its classifier."""
    model = models.vgg19()
    assert _parameters(model) == 143_667_240 and _parameters(models.vgg19(batch_norm=True)) == 143_678_248
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 4096), (4096, 4096), (4096, 1000)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.classifier) == 2
    with pytest.raises(TypeError, match="batch_norm"):
        models.vgg19(batch_norm=1)


def test_vgg19_cifar_is_vgg19_with_batchnorm():
    model = models.vgg19_cifar()
    convs = _convs(model)
    assert _parameters(model) == 20_040_522
    assert len(convs) == 16 and all(conv.kernel_size == (3, 3) for conv in convs.values())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 16
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert model.classifier.in_features == 512


@pytest.mark.parametrize("factory, norms", [(models.resnet18_cifar, 20), (models.vgg19_cifar, 16)])
def test_norm_group_puts_groupnorm_in_place_of_every_batchnorm(factory, norms):
    """Same convs and parameter count (GroupNorm's affine parameters are BatchNorm's), no BatchNorm left."""
    model, plain = factory(norm="group"), factory()
    groups = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(groups) == norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(m.num_groups == min(32, m.num_channels) for m in groups)
    assert _parameters(model) == _parameters(plain) and list(_convs(model)) == list(_convs(plain))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnext_depthwise_has_a_patchify_stem_and_depthwise_7x7_convs():
    model = models.convnext_depthwise()
    convs = _convs(model)
    stem = convs["downsample_layers.0.0"]
    assert stem.kernel_size == (4, 4) and stem.stride == (4, 4) and stem.out_channels == 96
    depthwise = [conv for name, conv in convs.items() if name.endswith("dwconv")]
    assert len(depthwise) == 8
    assert all(conv.kernel_size == (7, 7) for conv in depthwise)
    assert all(conv.groups == conv.in_channels == conv.out_channels for conv in depthwise)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == 8 + 4 + 1
    assert sum(isinstance(m, torch.nn.GELU) for m in model.modules()) == 8


@pytest.mark.parametrize(
    "factory, shape",
    [(models.resnet18_cifar, (1, 3, 32, 32)), (models.vgg19_cifar, (1, 3, 32, 32)),
     (models.convnext_depthwise, (1, 3, 224, 224)), (models.resnet18, (1, 3, 64, 64)), (models.vgg19, (1, 3, 32, 32))],
)
def test_builtin_models_map_a_batch_to_logits(factory, shape):
    model = factory(num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (1, 7)


def test_models_take_other_channels_and_sizes():
    """A 1-channel input, a smaller ConvNeXt on 32x32 images, training mode with a backward pass."""
    model = models.convnext_depthwise(num_classes=3, in_channels=1, depths=(1, 2), dims=(8, 16))
    out = model(torch.randn(2, 1, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 3) and model.head.weight.grad is not None
    assert len([n for n in _convs(model) if n.endswith("dwconv")]) == 3
    assert models.resnet18_cifar(in_channels=1).conv1.in_channels == 1


def test_same_seed_same_weights():
    torch.manual_seed(3)
    first = models.vgg19_cifar().state_dict()
    torch.manual_seed(3)
    second = models.vgg19_cifar().state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: models.resnet18_cifar(num_classes=0), "num_classes must be an int >= 1, got 0"),
        (lambda: models.vgg19_cifar(in_channels=2.0), "in_channels must be an int >= 1, got 2.0"),
        (lambda: models.convnext_depthwise(depths=(2, 2), dims=(8,)), "depths and dims must have the same length"),
        (lambda: models.convnext_depthwise(dims=()), "dims must be a non-empty tuple"),
        (lambda: models.convnext_depthwise(depths=(1, 0), dims=(4, 8)), "each of depths must be an int >= 1, got 0"),
        (lambda: models.resnet18_cifar(norm="layer"), "norm must be one of ('batch', 'group'), got 'layer'"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
