"""A second VAE in latent space, the Two-Stage VAE's second stage (Dai & Wipf, ICLR 2019):
trained on the training images' latent means z, its encoder maps z to u and its decoder
maps u back; N(0, I) samples of u, through the decoder, land where the training latents
are, without a mixture's fixed number of ellipsoids.

    prior = fit(means, width, steps, seed)          # its own small TensorFlow graph
    save(path, prior); prior = load(path, L)        # modeldir/prior-STEP-vaeWxS.npz
    z = sample(prior, seed, count)                  # numpy: the decoder of seeded u

Both nets are multilayer perceptrons: DEPTH ReLU layers of `width` units, then a linear
layer. The decoder's output is Gaussian with one trained standard deviation γ for all
dimensions (the Two-Stage VAE's learned γ: as it shrinks, reconstruction outweighs the
KL, and the encoder's u fill N(0, I)). Sampling uses the decoder's mean. The prior is
stored as plain arrays (the decoder's layers, γ, the standardization), so sampling
needs no TensorFlow. Measured on MNIST it spreads its samples wider than the training
latents (README "A second VAE as the prior"): the mixture stays the recipe's prior.
"""
import collections
import os
import zipfile

import numpy as np

from utils.run import atomic
from utils.run.errors import UserError

# A trained latent VAE: the decoder's layers as (kernel [in, out], bias [out]) pairs,
# first to last; its log γ; the latents' mean and standard deviation per dimension (the
# VAE works on standardized latents); the checkpoint step and training images it was
# fitted on.
LatentVAE = collections.namedtuple('LatentVAE', 'layers log_gamma shift scale step images')

DEPTH = 2  # hidden layers of the encoder and of the decoder
BATCH = 256  # latents per training step
LEARNING_RATE = 1e-3  # Adam's, decayed by a cosine to 0 over the steps
SAMPLE_STREAM = 130363  # seeds the latent VAE's samples apart from other seeded draws
SCALE_FLOOR = 1e-6  # a latent dimension that never varies is shifted, not divided by 0
GAMMA_START = 0.1  # γ's start: reconstruction first, so the decoder does not ignore u


def name(width, steps):
    """The prior's name in files and evaluations: 'vaeWxS'."""
    return f'vae{width}x{steps}'


def prior_path(modeldir, step, width, steps):
    """Where the latent VAE of `width` units and `steps` steps fitted to checkpoint
    `step` is kept: modeldir/prior-STEP-vaeWxS.npz."""
    return os.path.join(modeldir, f'prior-{step}-{name(width, steps)}.npz')


def _mlp(tf1, inputs, width, outputs, scope):
    """DEPTH ReLU layers of `width`, then a linear layer of `outputs`: [b, in] => [b, out]."""
    hidden = inputs
    with tf1.variable_scope(scope):
        for index in range(DEPTH):
            hidden = tf1.nn.relu(_dense(tf1, hidden, width, f'hidden{index}'))
        return _dense(tf1, hidden, outputs, 'out')


def _dense(tf1, inputs, units, scope):
    """[b, in] => [b, units]: He-initialized kernel (for the ReLUs), zero bias."""
    with tf1.variable_scope(scope):
        kernel = tf1.get_variable('kernel', [inputs.shape[-1], units], initializer=(
            tf1.variance_scaling_initializer(scale=2.0, mode='fan_in')))
        bias = tf1.get_variable('bias', [units], initializer=tf1.zeros_initializer())
        return tf1.matmul(inputs, kernel) + bias


def _training_graph(tf1, latent_len, width, steps):
    """The two nets, the negative ELBO and an Adam step: a dict of endpoints."""
    points = tf1.placeholder(tf1.float32, [None, latent_len], 'points')
    # [b, L] => [b, 2L]: the mean and log standard deviation of q(u|z)
    encoded = _mlp(tf1, points, width, 2 * latent_len, 'encoder')
    u_mean, u_log_std = tf1.split(encoded, 2, axis=1)
    u = u_mean + tf1.exp(u_log_std) * tf1.random.normal(tf1.shape(u_mean))
    # [b, L] => [b, L]: the decoder's mean of p(z|u)
    decoded = _mlp(tf1, u, width, latent_len, 'decoder')
    log_gamma = tf1.get_variable('log_gamma', [], initializer=tf1.constant_initializer(
        np.log(GAMMA_START)))
    squared = tf1.reduce_sum(tf1.square(points - decoded), axis=1)
    reconstruction = 0.5 * squared * tf1.exp(-2.0 * log_gamma) + latent_len * log_gamma
    kl = 0.5 * tf1.reduce_sum(tf1.square(u_mean) + tf1.exp(2.0 * u_log_std)
                              - 2.0 * u_log_std - 1.0, axis=1)
    loss = tf1.reduce_mean(reconstruction + kl)
    step = tf1.train.get_or_create_global_step()
    rate = tf1.train.cosine_decay(LEARNING_RATE, step, steps)
    train = tf1.train.AdamOptimizer(rate).minimize(loss, global_step=step)
    decoder = [variable for variable in tf1.trainable_variables()
               if variable.name.startswith('decoder/')]
    return {'points': points, 'loss': loss, 'train': train, 'log_gamma': log_gamma,
            'decoder': decoder, 'squared': tf1.reduce_mean(squared)}


def fit(means, width, steps, seed, step=0, progress=None):
    """A latent VAE of `width` units trained `steps` Adam steps of BATCH latent means
    [N, L], in epochs of a seeded shuffle; returns a LatentVAE. progress: an object
    with add(n) called once per step, or None. Raises UserError with too few points."""
    import tensorflow as tf  # only the fitting needs TensorFlow
    tf1 = tf.compat.v1

    means = np.asarray(means, np.float64)
    if len(means) < 2:
        raise UserError(f'{len(means)} training images cannot fit a latent VAE: it needs '
                        f'2 or more')
    # the VAE sees the latents standardized per dimension (u ~ N(0, I) has unit spread)
    shift, scale = means.mean(0), np.maximum(means.std(0), SCALE_FLOOR)
    standard = ((means - shift) / scale).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        net = _training_graph(tf1, means.shape[1], width, steps)
        init = tf1.global_variables_initializer()
    graph.finalize()
    rng = np.random.default_rng([seed, SAMPLE_STREAM, 1])
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        for batch in _batches(standard, steps, rng):
            sess.run(net['train'], {net['points']: batch})
            if progress is not None:
                progress.add(len(batch))
        values, log_gamma = sess.run([net['decoder'], net['log_gamma']])
    layers = [(values[index], values[index + 1]) for index in range(0, len(values), 2)]
    return LatentVAE(layers, float(log_gamma), shift.astype(np.float32),
                     scale.astype(np.float32), step, len(means))


def _batches(points, steps, rng):
    """`steps` batches of up to BATCH rows, each epoch a fresh permutation of `points`."""
    order, position = rng.permutation(len(points)), 0
    for _ in range(steps):
        if position >= len(order):
            order, position = rng.permutation(len(points)), 0
        yield points[order[position:position + BATCH]]
        position += BATCH


def decode(prior, u):
    """The decoder's mean of p(z|u), in the latents' own units: [n, L] => [n, L] float32.
    In float64, so that a row's result does not depend on the rows beside it (the first n
    samples of a longer draw stay those of a draw of n)."""
    hidden = np.asarray(u, np.float64)
    for index, (kernel, bias) in enumerate(prior.layers):
        hidden = hidden @ kernel.astype(np.float64) + bias
        if index < len(prior.layers) - 1:
            hidden = np.maximum(hidden, 0.0)
    return (hidden * prior.scale + prior.shift).astype(np.float32)


def sample(prior, seed, count, temperature=1.0):
    """`count` samples [count, L] of the prior: the decoder's mean of u ~ N(0, I) scaled
    by `temperature`. The same (prior, seed, count) gives the same samples, and the
    first n of a longer draw are those of a draw of n."""
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    u = rng.standard_normal((count, prior.layers[0][0].shape[0]))
    return decode(prior, temperature * u)


def save(path, prior):
    """Writes the latent VAE to `path` (.npz) atomically."""
    arrays = {f'kernel{index}': kernel for index, (kernel, _) in enumerate(prior.layers)}
    arrays.update({f'bias{index}': bias for index, (_, bias) in enumerate(prior.layers)})
    with atomic.replacing(path, suffix='.npz') as partial:
        np.savez(partial[:-len('.npz')], log_gamma=prior.log_gamma, shift=prior.shift,
                 scale=prior.scale, step=prior.step, images=prior.images, **arrays)


def load(path, latent_len):
    """The LatentVAE saved at `path`; UserError when it is damaged or its latent size is
    not `latent_len`."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            layers = [(saved[f'kernel{index}'], saved[f'bias{index}'])
                      for index in range(DEPTH + 1)]
            prior = LatentVAE(layers, float(saved['log_gamma']), saved['shift'],
                              saved['scale'], int(saved['step']), int(saved['images']))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise UserError(f'{path} is damaged (not an .npz of the latent VAE\'s decoder): '
                        f'delete it and the same command fits the prior again') from None
    ends = (prior.layers[0][0].shape[0], prior.layers[-1][0].shape[1])
    if ends != (latent_len, latent_len):
        raise UserError(f'{path} holds a latent VAE of {ends[0]}-dimensional latents, not '
                        f'--latent_len={latent_len}: delete it and the same command fits '
                        f'the prior again')
    return prior
