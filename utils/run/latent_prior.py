"""A prior fitted to the aggregate posterior: a Gaussian mixture on the training images'
latent means (ex-post density estimation), so that samples land where the decoder was
trained instead of in the holes that N(0, I) leaves between the posteriors.

    prior = fit(means, components, seed)            # scikit-learn's GaussianMixture
    save(path, prior); prior = load(path)            # modeldir/prior-STEP-gmmK.npz
    z = sample(prior, seed, count)                   # the same (seed, count), the same z
    z = sample(prior, seed, count, truncation=0.05)  # less probable than 5% of its draws: redrawn

The mixture is stored as plain arrays (weights, means, covariances), not as a pickled
estimator, so a file can be read without scikit-learn and without running its code.
Sampling is numpy's: a seeded component per sample, then mean + L·ε with L the
component covariance's Cholesky factor. A truncated draw keeps, in order, the samples
whose log-density under the mixture reaches a floor: the `truncation` quantile of the
log-densities of the mixture's own samples (a fixed draw), so that about that share of
the candidates (the ones in the mixture's thin tails) is dropped.
"""
import collections
import os
import zipfile

import numpy as np
from scipy import linalg, special

from utils.run import atomic
from utils.run.errors import UserError

# A fitted mixture: weights [K], means [K, L], covariances [K, L, L]; the checkpoint step
# it belongs to and the training images it was fitted on.
Mixture = collections.namedtuple('Mixture', 'weights means covariances step images')

FILE = 'prior-{step}-gmm{components}.npz'  # beside the checkpoint of STEP
SAMPLE_STREAM = 104729  # seeds the mixture's samples apart from other seeded draws
FLOOR_STREAM = 7919  # seeds the fixed draw whose log-densities set a truncation's floor
FLOOR_SAMPLES = 20000  # its size: the floor's quantile then varies by about 0.01 nats
DRAW_CHUNK = 4096  # candidates per round of a truncated draw (fixed, so any count sees the
# same candidates in the same order)
MAX_ROUNDS = 1000  # a truncated draw that keeps too few samples stops with an error
COVARIANCE_FLOOR = 1e-6  # added to the diagonals (scikit-learn's reg_covar): keeps L defined
# EM stops once an iteration raises the mean log-likelihood per latent by less than this
# (nats). 200 components on 55,000 32-d latents reach it in about 17 iterations instead
# of 55 at scikit-learn's 1e-3, a third of the time, for 0.1 nats less per latent.
EM_TOLERANCE = 1e-2


def prior_path(modeldir, step, components):
    """Where the mixture of `components` fitted to checkpoint `step` is kept."""
    return os.path.join(modeldir, FILE.format(step=step, components=components))


def fit(means, components, seed, step=0):
    """A full-covariance Gaussian mixture of `components` fitted by EM to latent means
    [N, L]; returns a Mixture. Raises UserError when there are fewer points than
    components."""
    from sklearn.mixture import GaussianMixture  # only the fitting needs scikit-learn

    means = np.asarray(means, np.float64)
    if len(means) < components:
        raise UserError(f'{len(means)} training images cannot fit a mixture of '
                        f'--prior_components={components}: lower it to {len(means)} or less')
    mixture = GaussianMixture(n_components=components, covariance_type='full',
                              reg_covar=COVARIANCE_FLOOR, tol=EM_TOLERANCE, max_iter=200,
                              n_init=1, random_state=seed).fit(means)
    return Mixture(mixture.weights_, mixture.means_, mixture.covariances_, step, len(means))


def sample(prior, seed, count, temperature=1.0, truncation=0.0):
    """`count` samples [count, L] float32 of the mixture; the same (prior, seed, count)
    gives the same samples, and the first n of a longer draw are those of a draw of n.
    `temperature` scales each sample's offset from its component's mean (the component's
    covariance by its square); the components drawn stay the same. `truncation` in [0, 1)
    drops the candidates whose log-density is under density_floor(prior, truncation) and
    draws on; the samples kept are the candidates that pass, in order."""
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    factors = np.linalg.cholesky(prior.covariances)
    if truncation == 0:
        return _draw(prior, factors, rng, count, temperature).astype(np.float32)
    floor = density_floor(prior, truncation, factors)
    kept, total = [], 0
    for _ in range(MAX_ROUNDS):
        candidates = _draw(prior, factors, rng, DRAW_CHUNK, temperature)
        candidates = candidates[log_density(prior, candidates, factors) >= floor]
        kept.append(candidates)
        total += len(candidates)
        if total >= count:
            return np.concatenate(kept)[:count].astype(np.float32)
    raise UserError(f'the mixture\'s samples at --prior_temperature={temperature:g} pass '
                    f'--prior_truncation={truncation:g} too rarely ({total} of '
                    f'{MAX_ROUNDS * DRAW_CHUNK} candidates): lower either flag')


def _draw(prior, factors, rng, count, temperature):
    """`count` float64 samples from `rng`: a component per sample, then mean + T·L·ε."""
    weights = np.asarray(prior.weights, np.float64)
    # one row of L + 1 normals per sample, in sample order (so a longer draw extends a
    # shorter one): the first, through the normal CDF, a uniform that picks the component
    draws = rng.standard_normal((count, prior.means.shape[1] + 1))
    uniforms, epsilon = special.ndtr(draws[:, 0]), draws[:, 1:]
    component = np.minimum(np.searchsorted(np.cumsum(weights) / weights.sum(), uniforms,
                                           side='right'), len(weights) - 1)
    offsets = np.einsum('nij,nj->ni', factors[component], epsilon)
    return prior.means[component] + temperature * offsets


def log_density(prior, z, factors=None):
    """log p(z) [n] under the mixture of latents z [n, L] (factors: the covariances'
    Cholesky factors, computed when not given)."""
    z = np.asarray(z, np.float64)
    if factors is None:
        factors = np.linalg.cholesky(prior.covariances)
    normalizer = 0.5 * z.shape[1] * np.log(2 * np.pi)
    per_component = np.empty((len(z), len(factors)))
    for k, factor in enumerate(factors):
        # the offset whitened by the component's factor: its squared norm is the
        # Mahalanobis distance, and log |Σ| is twice the log of the factor's diagonal
        white = linalg.solve_triangular(factor, (z - prior.means[k]).T, lower=True)
        per_component[:, k] = (np.log(prior.weights[k]) - 0.5 * np.sum(white ** 2, axis=0)
                               - np.sum(np.log(np.diag(factor))) - normalizer)
    return special.logsumexp(per_component, axis=1)


def density_floor(prior, truncation, factors=None):
    """The log-density under which a draw with `truncation` drops a candidate: that
    quantile of the log-densities of FLOOR_SAMPLES fixed samples of the mixture."""
    if factors is None:
        factors = np.linalg.cholesky(prior.covariances)
    reference = _draw(prior, factors, np.random.default_rng(FLOOR_STREAM), FLOOR_SAMPLES, 1.0)
    return float(np.quantile(log_density(prior, reference, factors), truncation))


def save(path, prior):
    """Writes the mixture to `path` (.npz) atomically."""
    with atomic.replacing(path, suffix='.npz') as partial:
        np.savez(partial[:-len('.npz')], weights=prior.weights, means=prior.means,
                 covariances=prior.covariances, step=prior.step, images=prior.images)


def load(path, latent_len):
    """The Mixture saved at `path`; UserError when it is damaged or its latent size is not
    `latent_len`."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            prior = Mixture(saved['weights'], saved['means'], saved['covariances'],
                            int(saved['step']), int(saved['images']))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise UserError(f'{path} is damaged (not an .npz of the mixture\'s weights, means '
                        f'and covariances): delete it and the same command fits the prior '
                        f'again') from None
    components = len(prior.weights)
    if (prior.means.shape != (components, latent_len)
            or prior.covariances.shape != (components, latent_len, latent_len)):
        raise UserError(f'{path} holds a mixture of {prior.means.shape[-1]}-dimensional '
                        f'latents, not --latent_len={latent_len}: delete it and the same '
                        f'command fits the prior again')
    return prior
