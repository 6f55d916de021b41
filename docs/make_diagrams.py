"""Regenerate the diagrams in docs/diagrams/ with tnconv itself: ``python docs/make_diagrams.py``."""

from __future__ import annotations

from pathlib import Path

import tnconv

HERE = Path(__file__).resolve().parent / "diagrams"

# resnet18's layer1 3x3 conv at batch 8, and ViT-B/16's patchify conv (dense: K = S)
LAYER = dict(input_shape=(8, 64, 56, 56), kernel_size=3, out_channels=64, padding=1)
PATCHIFY = dict(input_shape=(8, 3, 224, 224), kernel_size=16, out_channels=768, stride=16)
DEPTHWISE = dict(input_shape=(8, 128, 56, 56), kernel_size=7, out_channels=128, padding=3, groups=128)

DIAGRAMS = {
    "conv2d-forward": ("forward", LAYER, True),
    "conv2d-weight-vjp": ("weight_vjp", LAYER, True),
    "conv2d-input-vjp": ("input_vjp", LAYER, True),
    "conv2d-kfac-expand": ("kfac_expand", LAYER, True),
    "conv2d-kfac-reduce": ("kfac_reduce", LAYER, True),
    "depthwise-kfac-reduce": ("kfac_reduce", DEPTHWISE, True),
    "patchify-forward": ("forward", PATCHIFY, False),
    "patchify-forward-simplified": ("forward", PATCHIFY, True),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, (op, layer, simplify) in DIAGRAMS.items():
        net = tnconv.conv_network(op, **layer, simplify=simplify)
        for suffix in (".svg", ".png"):
            print(tnconv.draw(net, HERE / f"{name}{suffix}"))


if __name__ == "__main__":
    main()
