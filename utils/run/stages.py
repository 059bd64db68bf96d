"""The layout of the stages from the flags: each stage's image size and loss weight
(no TensorFlow needed, so flags can be checked before it loads)."""
import math

from utils.run.shapes import level_sizes


def stage_sizes(height, width, num_stages, coarse_scale):
    """The (h, w) each stage works at: stage 1 at the size halved `coarse_scale` times,
    each refinement stage doubling it until the full size, then staying there.

    stage_sizes(28, 28, 3, 1) == [(14, 14), (28, 28), (28, 28)]
    """
    halvings = level_sizes(height, width, coarse_scale)
    return [halvings[max(coarse_scale - stage, 0)] for stage in range(num_stages)]


def refine_weights(values, num_stages):
    """The loss weight of each refinement stage (stages 2..num_stages) as floats.

    values: the --refine_weights list (strings or numbers; a comma-separated
    string also works): one value for every stage, or one per stage.
    Raises ValueError with the reason when they do not fit.
    """
    if isinstance(values, str):
        values = values.split(',')
    try:
        weights = [float(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError('not a number: give numbers such as 1 or 0.5,2') from None
    count = num_stages - 1
    if len(weights) == 1:
        weights = weights * count
    if len(weights) != count:
        raise ValueError(f'{len(weights)} values for {count} refinement stages '
                         f'(--num_stages={num_stages}): give one value, or {count}')
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError('weights must be finite and >= 0')
    return weights
