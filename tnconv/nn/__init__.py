"""PyTorch-compatible convolution modules whose forward passes run :mod:`tnconv.functional`.

Every class mirrors its ``torch.nn`` counterpart: the same constructor arguments (``device``
and ``dtype`` included), attributes (``kernel_size``, ``stride``, ... as tuples), parameter
names and shapes (``weight``, ``bias``), initialisation (the same random draws in the same
order, so the same seed gives the same parameters) and ``extra_repr``. State dicts move
between a tnconv module and its torch twin in both directions, and every class has a
``from_torch(module)`` classmethod that copies a torch module's configuration and parameters.

``ConvNd`` and ``ConvTransposeNd`` take the number of spatial dims ``N`` first and work for
any ``N >= 1``; ``Unfold`` and ``Fold`` work in any N-d as well.

``approximate_backprop(model, keep, mode)`` makes the weight gradients of a model's conv
layers tensor-dropout estimates (``tnconv.nn.approximate``); its handle's ``remove()``
restores exact gradients.
"""

from tnconv.namespace import public_dir
from tnconv.nn.conv import Conv1d, Conv2d, Conv3d, ConvNd
from tnconv.nn.fold import Fold, Unfold
from tnconv.nn.transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, ConvTransposeNd
from tnconv.nn.approximate import ApproximateBackprop, approximate_backprop

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvNd",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "ConvTransposeNd",
    "Fold",
    "Unfold",
    "approximate_backprop",
    "ApproximateBackprop",
]

__dir__ = public_dir(globals(), __all__)
