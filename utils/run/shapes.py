"""Spatial sizes of the networks' levels (no TensorFlow needed, so flags can be checked
before it loads)."""
import math


def level_sizes(height, width, depth):
    """Sizes of the levels of a stride-2 pyramid: [(h, w), (⌈h/2⌉, ⌈w/2⌉), ...], depth+1 entries."""
    sizes = [(height, width)]
    for _ in range(depth):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def max_depth(height, width):
    """The deepest network_depth for height×width images: min(height, width) >= 2**depth,
    so that no level is halved below one pixel."""
    return int(math.floor(math.log2(min(height, width))))
