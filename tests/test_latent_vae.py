"""--sample_prior=vae: a second VAE in latent space (the Two-Stage VAE's second stage),
fitted to the training latents, saved beside the checkpoint and sampled by predict and
evaluate; and --sample_prior=posterior, the training latents themselves."""
import os

import numpy as np
import pytest

import main
import runner
from test_recipe import KNOWN
from utils.run import latent_prior, latent_vae, priors
from utils.run.errors import UserError


@pytest.fixture(scope='module')
def fitted_to_known():
    """A latent VAE fitted to 20,000 points of three well-apart 2-d Gaussians."""
    points = latent_prior.sample(KNOWN, seed=4, count=20000)
    return points, latent_vae.fit(points, width=128, steps=10000, seed=0, step=7)


def nearest_component(z):
    distances = np.linalg.norm(z[:, None, :] - KNOWN.means[None], axis=2)
    return distances.argmin(1), distances.min(1)


def test_samples_of_a_fitted_latent_vae_recover_a_known_mixture(fitted_to_known):
    _, prior = fitted_to_known
    assert (prior.step, prior.images) == (7, 20000)
    z = latent_vae.sample(prior, seed=3, count=20000)
    assert z.shape == (20000, 2) and z.dtype == np.float32
    component, distance = nearest_component(z)
    near = distance < 3.0
    # each component gets its share of the samples, around its own mean
    shares = np.bincount(component, minlength=3) / len(z)
    np.testing.assert_allclose(shares, KNOWN.weights, atol=0.07)
    for index in range(3):
        np.testing.assert_allclose(z[near & (component == index)].mean(0),
                                   KNOWN.means[index], atol=0.7)
    # a continuous decoder leaves some samples between the components, but far fewer
    # than the one Gaussian of the points' mean and covariance does
    points, _ = fitted_to_known
    gaussian = np.random.default_rng(0).multivariate_normal(points.mean(0), np.cov(points.T),
                                                            20000)
    assert np.mean(~near) < 0.15 < 0.5 < np.mean(nearest_component(gaussian)[1] >= 3.0)


def test_sampling_is_seeded_and_a_longer_draw_extends_a_shorter(fitted_to_known):
    _, prior = fitted_to_known
    a = latent_vae.sample(prior, seed=5, count=100)
    np.testing.assert_array_equal(a, latent_vae.sample(prior, seed=5, count=100))
    assert not np.array_equal(a, latent_vae.sample(prior, seed=6, count=100))
    np.testing.assert_array_equal(a, latent_vae.sample(prior, seed=5, count=1000)[:100])
    # temperature scales u: at 0 every sample is the decoder's image of u = 0
    frozen = latent_vae.sample(prior, seed=5, count=10, temperature=0.0)
    np.testing.assert_allclose(frozen, latent_vae.decode(prior, np.zeros((10, 2))))


def test_the_fit_is_repeatable_and_gamma_is_trained(fitted_to_known):
    points, _ = fitted_to_known
    prior, again = (latent_vae.fit(points, width=16, steps=300, seed=0) for _ in range(2))
    for (kernel, bias), (kernel2, bias2) in zip(prior.layers, again.layers):
        np.testing.assert_array_equal(kernel, kernel2)
        np.testing.assert_array_equal(bias, bias2)
    assert prior.log_gamma == again.log_gamma
    assert prior.log_gamma != pytest.approx(np.log(latent_vae.GAMMA_START))


def test_a_saved_latent_vae_loads_back_and_a_damaged_one_is_one_error(tmp_path,
                                                                       fitted_to_known):
    _, prior = fitted_to_known
    path = latent_vae.prior_path(str(tmp_path), 7, 128, 10000)
    assert os.path.basename(path) == 'prior-7-vae128x10000.npz'
    latent_vae.save(path, prior)
    loaded = latent_vae.load(path, latent_len=2)
    np.testing.assert_array_equal(latent_vae.sample(loaded, 1, 50),
                                  latent_vae.sample(prior, 1, 50))
    np.testing.assert_array_equal(loaded.scale, prior.scale)
    assert (loaded.step, loaded.images, loaded.log_gamma) == (7, 20000, prior.log_gamma)
    with pytest.raises(UserError, match='not --latent_len=4'):
        latent_vae.load(path, latent_len=4)
    with open(path, 'wb') as handle:
        handle.write(b'not an npz')
    with pytest.raises(UserError, match='is damaged'):
        latent_vae.load(path, latent_len=2)


def test_evaluate_and_predict_sample_the_latent_vae_fitted_at_the_end_of_training(tiny_conf):
    conf = tiny_conf(sample_prior='vae', prior_vae_width=16, prior_vae_steps=40, max_step=10)
    assert main.run(conf) == 10
    path = priors.path(conf, 10)
    assert os.path.basename(path) == 'prior-10-vae16x40.npz'
    saved = latent_vae.load(path, conf.latent_len)
    assert (saved.step, saved.images) == (10, 96)

    evaluating = conf.replace(action='evaluate')
    model = runner.Runner(evaluating)
    model.restore_for('evaluate')
    np.testing.assert_array_equal(model.prior_z(6),
                                  latent_vae.sample(saved, conf.random_seed, 6))
    model.close()
    assert runner.evaluation_variant(evaluating) == 'vae16x40'
    assert runner.evaluation_variant(evaluating.replace(prior_temperature=0.5)) == \
        'vae16x40-t0.5'

    # no flag on a command line: predict samples the run's own prior
    later = main.default_config(**dict(conf.as_dict(), action='predict',
                                       sample_prior='normal'))
    folder = main.run(later)
    assert os.path.basename(folder) == 'predict_step_10_vae16x40'
    assert len([name for name in os.listdir(folder) if name.startswith('sample_')]) == 6


def test_fit_prior_trains_the_latent_vae_again_and_replaces_the_file(tiny_conf):
    conf = tiny_conf(max_step=10)
    assert main.run(conf) == 10
    fitting = conf.replace(action='fit_prior', sample_prior='vae', prior_vae_width=8,
                           prior_vae_steps=20)

    def fit(conf):
        model = runner.Runner(conf)
        try:
            return runner.fit_prior(model)
        finally:
            model.close()
    path = fit(fitting)
    assert path == priors.path(fitting, 10) and os.path.exists(path)
    first = latent_vae.load(path, conf.latent_len)
    # a different width is another prior, beside the first
    wider = fit(fitting.replace(prior_vae_width=12))
    assert os.path.basename(wider) == 'prior-10-vae12x20.npz' and os.path.exists(path)
    assert latent_vae.load(wider, conf.latent_len).layers[0][0].shape == (4, 12)
    assert first.layers[0][0].shape == (4, 8)


def test_the_posterior_prior_draws_the_training_latents_themselves(tiny_conf):
    conf = tiny_conf(max_step=10)
    assert main.run(conf) == 10
    model = runner.Runner(conf.replace(action='evaluate', sample_prior='posterior'))
    model.restore_for('evaluate')
    means = model.training_latent_means()
    z = model.prior_z(200)  # more than the 96 training images: the order cycles
    model.close()
    rows = [np.flatnonzero((np.abs(means - sample) < 1e-6).all(1)) for sample in z]
    assert all(len(found) == 1 for found in rows)  # each sample is one training latent
    order = [found[0] for found in rows]
    assert sorted(order[:96]) == list(range(96))  # each once before any repeats
    assert order[96:192] == order[:96] and order[:96] != list(range(96))
    cooled = runner.training_latent_draw(means, conf.random_seed, 50, temperature=0.5)
    np.testing.assert_allclose(cooled, means.mean(0) + 0.5 * (z[:50] - means.mean(0)),
                               atol=1e-6)
    assert runner.evaluation_variant(conf.replace(sample_prior='posterior')) == 'posterior'
