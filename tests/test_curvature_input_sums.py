"""KFAC-reduce's patch sums, formed once per batch (``factors.input_sums``, ``LayerBatch.with_sums``).

The factor, its diagonal (the finite check's bound) and a joined bias's mean patch read from the sums equal
references from the patches (``support.references``), for conv and transposed conv layers and ``Linear`` on
sequences, in float64; and a KFAC-reduce batch sums a conv layer's patches once.
"""

from __future__ import annotations

from unittest import mock

import torch
from hypothesis import given, settings
from support.layers import curvature_layers
from support.references import grouped_patches, kfac_references, kwargs

from tnconv.curvature import KFAC, factors
from tnconv.curvature.factors import Geometry, input_factor, input_factor_diagonal, input_sums, mean_patch


def check_against_patches(x: torch.Tensor, geometry: Geometry, u: torch.Tensor) -> None:
    """The reduce factor, its unscaled diagonal and the mean patch from ``input_sums(x)`` against patches ``u``
    ``(N, G, d, T)``."""
    sums = input_sums(x, geometry)
    expected = kfac_references(u)[1]
    batch, locations = u.shape[0], u.shape[-1]
    torch.testing.assert_close(input_factor(x, geometry, True, sums=sums), expected)
    diagonal = input_factor_diagonal(x, geometry, True, sums)
    torch.testing.assert_close(diagonal, expected.diagonal(dim1=1, dim2=2) * batch * locations**2)
    torch.testing.assert_close(mean_patch(x, geometry, sums), u.mean((0, 3)))


@settings(max_examples=25, deadline=None)
@given(curvature_layers(max_dims=2))
def test_conv_sums_give_the_reduce_factor_its_diagonal_and_the_mean_patch(layer):
    x = torch.randn(layer.x_shape, dtype=torch.float64)
    kind = "transposed" if layer.transposed else "conv"
    out_channels = layer.weight_shape[1] * layer.groups if layer.transposed else layer.weight_shape[0]
    extra = {} if layer.transposed else {"transposed": False, "output_padding": (0,) * len(layer.kernel_size)}
    geometry = Geometry(kind, layer.groups, out_channels, {"kernel_size": layer.kernel_size, **kwargs(layer), **extra})
    check_against_patches(x, geometry, grouped_patches(layer, x))


def test_linear_sums_give_the_reduce_factor_its_diagonal_and_the_mean_patch():
    x = torch.randn(4, 3, 5, dtype=torch.float64)  # (N, T, d): a sequence of 3 locations
    check_against_patches(x, Geometry("linear", 1, 2), x.permute(0, 2, 1)[:, None])


def test_a_reduce_batch_sums_a_conv_layers_patches_once():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4)
    ).double()
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), approx="reduce", separate_bias=False)
    x, y = torch.randn(5, 2, 6, 6, dtype=torch.float64), torch.randint(0, 4, (5,))
    passes = mock.Mock(wraps=factors.run_part)  # the programs that sum a conv input's patches
    routines = mock.Mock(wraps=factors.run_routine)
    with mock.patch.object(factors, "run_part", passes), mock.patch.object(factors, "run_routine", routines):
        kfac.update(x, y)
    assert passes.call_count == 1 and routines.call_count == 0  # the check, A and the joined bias read one pass
