"""The configuration of a run: the model's own fields as one frozen dataclass, and the
whole run (every flag) as a frozen namespace around it. No TensorFlow needed, so a
configuration is checked before TensorFlow loads.

ModelConfig holds what defines the trained model: the fields that fix its variables
(a checkpoint restores only into a graph built with the same values) and those of its
loss. A run saves them with its other flags in flags.json; resuming checks the
variable fields, and predict / reconstruct / evaluate take all of them from there.
Adding a model flag means defining the flag and adding its field here.
"""
import dataclasses
import math

from utils.run import shapes, stages
from utils.run.errors import UserError


def _field(**metadata):
    """A required field with metadata: variables=True (it fixes the variables' shapes or
    names: must match to resume), choices=(...) (the allowed values), positive=True
    (a whole number > 0)."""
    return dataclasses.field(metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The fields of the flags that define the model; validated when made."""

    height: int = _field(variables=True, positive=True)  # image height in pixels
    width: int = _field(variables=True, positive=True)  # image width in pixels
    channel: int = _field(variables=True, choices=(1, 3))  # 1 grayscale, 3 RGB
    network_depth: int = _field(variables=True, positive=True)  # stride-2 levels
    start_channel_num: int = _field(variables=True, positive=True)  # first level's width
    refine_channel_num: int = _field(variables=True)  # the refiners' first width (0 = start)
    latent_len: int = _field(variables=True, positive=True)  # dimensions of z
    num_stages: int = _field(variables=True)  # 1 = the VAE alone, 2 = the paper's MSVAE
    decoder: str = _field(variables=True, choices=('residual', 'plain'))  # stage 1's decoder
    refine_net: str = _field(variables=True, choices=('unet', 'resnet'))  # stages 2..N
    coarse_scale: int = _field(variables=True)  # stage 1 at the size halved this often
    upsample: str = _field(variables=True, choices=('resize', 'transpose'))  # up-convs
    sigma: float = _field()  # std of the Gaussian decoder, pixels in [-1, 1]
    refine_loss: str = _field(choices=('l1', 'l2'))  # loss of each refinement stage
    refine_weights: tuple = _field()  # one weight for all refinement stages, or one each
    stage_gradient: bool = _field()  # refinement losses also train the earlier stages
    learn_sigma: bool = _field(variables=True)  # sigma a trained variable (starts at sigma)
    ema_decay: float = _field(variables=True)  # > 0: inference uses averaged weights
    refine_gradient_weight: float = _field()  # image-gradient L1 added to refinement losses
    refine_ssim_weight: float = _field()  # D·(1 − SSIM) added to refinement losses

    def __post_init__(self):
        weights = self.refine_weights
        if isinstance(weights, str):
            weights = weights.split(',')
        object.__setattr__(self, 'refine_weights', tuple(weights))
        self._check_values()
        self._check_stages()

    @classmethod
    def from_values(cls, values):
        """The model fields of a dict of flag values (other keys are ignored)."""
        missing = [name for name in field_names() if name not in values]
        if missing:
            raise UserError(f'the model fields {", ".join(missing)} are missing: give every '
                            f'model flag')
        return cls(**{name: values[name] for name in field_names()})

    def as_dict(self):
        """The fields as they appear in flags.json."""
        values = dataclasses.asdict(self)
        values['refine_weights'] = list(self.refine_weights)
        return values

    def _check_values(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            choices = field.metadata.get('choices')
            if field.metadata.get('positive') and not (isinstance(value, int) and value > 0):
                raise UserError(f'--{field.name}={value} must be positive: give a whole '
                                f'number > 0')
            if choices and value not in choices:
                if field.name == 'channel':
                    raise UserError(f'--channel={value} must be 1 or 3')
                raise UserError(f'unknown --{field.name}={value}: choose one of '
                                f'{", ".join(map(str, choices))}')
        if not (isinstance(self.refine_channel_num, int) and self.refine_channel_num >= 0):
            raise UserError(f'--refine_channel_num={self.refine_channel_num} must be 0 (the '
                            f'refiners as wide as --start_channel_num) or a whole number > 0')
        if not 0 <= self.ema_decay < 1:
            raise UserError(f'--ema_decay={self.ema_decay} must be in [0, 1): 0 = no '
                            f'averaged weights, 0.999 = an average over about 1000 steps')
        for name in ('refine_gradient_weight', 'refine_ssim_weight'):
            weight = getattr(self, name)
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise UserError(f'--{name}={weight} must be 0 (plain --refine_loss) or '
                                f'positive')
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma)
                and self.sigma > 0):
            raise UserError(f'--sigma={self.sigma} must be positive: the decoder\'s standard '
                            f'deviation, in pixel units of [-1, 1]')

    def _check_stages(self):
        """The stage layout: count, weights, coarse-to-fine sizes and depth."""
        if not (isinstance(self.num_stages, int) and self.num_stages >= 1):
            raise UserError(f'--num_stages={self.num_stages} must be 1 (the VAE alone) or more')
        try:
            stages.refine_weights(self.refine_weights, self.num_stages)
        except ValueError as err:
            raise UserError(f'--refine_weights={",".join(map(str, self.refine_weights))}: '
                            f'{err}') from None
        if not 0 <= self.coarse_scale < self.num_stages:
            raise UserError(f'--coarse_scale={self.coarse_scale} must be between 0 and '
                            f'--num_stages-1 = {self.num_stages - 1}: each refinement stage '
                            f'doubles the size once')
        height, width = self.stage_sizes()[0]
        deepest = shapes.max_depth(height, width)
        if deepest < 1:
            raise UserError(f'{height}x{width} images (stage 1\'s size) are too small for one '
                            f'stride-2 level: use images of at least 2x2'
                            + (' or a smaller --coarse_scale' if self.coarse_scale else ''))
        if self.network_depth > deepest:
            raise UserError(
                f'--network_depth={self.network_depth} is too deep for {height}x{width} '
                f'images (stage 1\'s size; each level halves it): use --network_depth='
                f'{deepest} or less' + (' or a smaller --coarse_scale' if self.coarse_scale
                                        else ''))

    def stage_sizes(self):
        """The (h, w) of each stage's image (stages.stage_sizes)."""
        return stages.stage_sizes(self.height, self.width, self.num_stages, self.coarse_scale)

    def refine_channels(self):
        """The refinement stages' first width: refine_channel_num, or start_channel_num."""
        return self.refine_channel_num or self.start_channel_num

    def weights(self):
        """The loss weight of each refinement stage as floats."""
        return stages.refine_weights(self.refine_weights, self.num_stages)


# Model fields added after runs were saved without them: the value those runs had.
LEGACY_DEFAULTS = {'learn_sigma': False, 'ema_decay': 0.0, 'refine_gradient_weight': 0.0,
                   'refine_ssim_weight': 0.0, 'refine_channel_num': 0}


def saved_value(saved, name):
    """Model field `name` of a saved flags dict (LEGACY_DEFAULTS for older runs)."""
    return saved.get(name, LEGACY_DEFAULTS.get(name))


def field_names():
    """Every model field, in order."""
    return tuple(field.name for field in dataclasses.fields(ModelConfig))


def variable_fields():
    """The model fields that fix the variables: they must match to resume."""
    return tuple(field.name for field in dataclasses.fields(ModelConfig)
                 if field.metadata.get('variables'))


def choices(name):
    """The allowed values of model field `name` (for the flag's definition)."""
    return next(field.metadata['choices'] for field in dataclasses.fields(ModelConfig)
                if field.name == name)


class RunConfig:
    """Every flag of one run as a read-only attribute; `model` is its ModelConfig.

    Made once from the flags (or, in tests, from keywords); replace() returns a
    changed copy, so nothing changes a configuration after it was checked.
    """

    def __init__(self, **values):
        object.__setattr__(self, '_values', dict(values))

    def __getattr__(self, name):
        try:
            return self.__dict__['_values'][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f'a RunConfig is read-only: use '
                                              f'replace({name}=...)')

    def __repr__(self):
        return f'RunConfig({self._values!r})'

    @property
    def model(self):
        """The model's fields as a validated ModelConfig (UserError when they do not fit)."""
        return ModelConfig.from_values(self._values)

    def replace(self, **changes):
        """A copy with `changes` applied."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise TypeError(f'unknown flags: {sorted(unknown)}')
        return RunConfig(**{**self._values, **changes})

    def as_dict(self):
        """The flags as a dict (for flags.json)."""
        return dict(self._values)
