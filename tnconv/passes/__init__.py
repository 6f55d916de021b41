"""Passes: pure ``Network -> Network`` transformations (differentiate, vmap, fuse, simplify) and their vocabulary."""
