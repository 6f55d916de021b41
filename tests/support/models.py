"""Small modules that the whole-model curvature tests share."""

from __future__ import annotations

import torch


class Upsample(torch.nn.Module):
    """A transposed conv whose output size is set by ``output_size`` in its forward (not by an attribute)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x, output_size=[2 * s for s in x.shape[2:]])
