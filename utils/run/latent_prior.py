"""A prior fitted to the aggregate posterior: a Gaussian mixture on the training images'
latent means (ex-post density estimation), so that samples land where the decoder was
trained instead of in the holes that N(0, I) leaves between the posteriors.

    prior = fit(means, components, seed)            # scikit-learn's GaussianMixture
    save(path, prior); prior = load(path)            # modeldir/prior-STEP-gmmK.npz
    z = sample(prior, seed, count)                   # the same (seed, count), the same z

The mixture is stored as plain arrays (weights, means, covariances), not as a pickled
estimator, so a file can be read without scikit-learn and without running its code.
Sampling is numpy's: a seeded component per sample, then mean + L·ε with L the
component covariance's Cholesky factor.
"""
import collections
import os
import zipfile

import numpy as np
from scipy import special

from utils.run import atomic
from utils.run.errors import UserError

# A fitted mixture: weights [K], means [K, L], covariances [K, L, L]; the checkpoint step
# it belongs to and the training images it was fitted on.
Mixture = collections.namedtuple('Mixture', 'weights means covariances step images')

FILE = 'prior-{step}-gmm{components}.npz'  # beside the checkpoint of STEP
SAMPLE_STREAM = 104729  # seeds the mixture's samples apart from other seeded draws
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


def sample(prior, seed, count, temperature=1.0):
    """`count` samples [count, L] float32 of the mixture; the same (prior, seed, count)
    gives the same samples, and the first n of a longer draw are those of a draw of n.
    `temperature` scales each sample's offset from its component's mean (the component's
    covariance by its square); the components drawn stay the same."""
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    weights = np.asarray(prior.weights, np.float64)
    # one row of L + 1 normals per sample, in sample order (so a longer draw extends a
    # shorter one): the first, through the normal CDF, a uniform that picks the component
    draws = rng.standard_normal((count, prior.means.shape[1] + 1))
    uniforms, epsilon = special.ndtr(draws[:, 0]), draws[:, 1:]
    component = np.minimum(np.searchsorted(np.cumsum(weights) / weights.sum(), uniforms,
                                           side='right'), len(weights) - 1)
    factors = np.linalg.cholesky(prior.covariances)
    offsets = np.einsum('nij,nj->ni', factors[component], epsilon)
    z = prior.means[component] + temperature * offsets
    return z.astype(np.float32)


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
