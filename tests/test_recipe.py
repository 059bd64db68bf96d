"""The levers of the best recipe: the fitted Gaussian-mixture prior, averaged weights, a
trained σ, the KL warm-up, the cosine schedule and the image-gradient loss; and that
resume stays exact with all of them."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import network
import ops
import runner
from test_network import checkpoint_values, logged_losses
from utils.run import latent_prior
from utils.run.errors import UserError

tf1 = tf.compat.v1

KNOWN = latent_prior.Mixture(
    weights=np.array([0.2, 0.5, 0.3]),
    means=np.array([[-6.0, 0.0], [0.0, 5.0], [6.0, -2.0]]),
    covariances=np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.4]],
                          [[0.8, -0.2], [-0.2, 0.3]]]),
    step=7, images=0)


def by_first_mean(weights, means):
    order = np.argsort(means[:, 0])
    return weights[order], means[order]


def test_sampling_a_known_mixture_gives_its_weights_means_and_covariances():
    z = latent_prior.sample(KNOWN, seed=3, count=60000)
    assert z.shape == (60000, 2) and z.dtype == np.float32
    # each point belongs to the nearest mean: the components are far apart
    nearest = np.argmin(((z[:, None] - KNOWN.means[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest) / len(z), KNOWN.weights, atol=0.01)
    for index in range(3):
        part = z[nearest == index]
        np.testing.assert_allclose(part.mean(0), KNOWN.means[index], atol=0.05)
        np.testing.assert_allclose(np.cov(part.T), KNOWN.covariances[index], atol=0.05)


def test_fitting_recovers_a_known_mixture():
    points = latent_prior.sample(KNOWN, seed=4, count=20000)
    fitted = latent_prior.fit(points, components=3, seed=0, step=7)
    weights, means = by_first_mean(fitted.weights, fitted.means)
    np.testing.assert_allclose(weights, KNOWN.weights, atol=0.02)
    np.testing.assert_allclose(means, KNOWN.means, atol=0.1)
    assert fitted.step == 7 and fitted.images == 20000


def test_samples_are_fixed_by_the_seed_and_a_longer_draw_extends_a_shorter():
    a = latent_prior.sample(KNOWN, seed=5, count=100)
    np.testing.assert_array_equal(a, latent_prior.sample(KNOWN, seed=5, count=100))
    assert not np.array_equal(a, latent_prior.sample(KNOWN, seed=6, count=100))
    np.testing.assert_array_equal(a, latent_prior.sample(KNOWN, seed=5, count=1000)[:100])


def test_a_saved_mixture_loads_back_and_a_damaged_one_is_one_error(tmp_path):
    path = latent_prior.prior_path(str(tmp_path), 7, 3)
    latent_prior.save(path, KNOWN)
    assert sorted(os.listdir(tmp_path)) == ['prior-7-gmm3.npz']
    loaded = latent_prior.load(path, latent_len=2)
    for name in ('weights', 'means', 'covariances'):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(KNOWN, name))
    assert loaded.step == 7
    with pytest.raises(UserError, match='2-dimensional latents, not --latent_len=4'):
        latent_prior.load(path, latent_len=4)
    with open(path, 'r+b') as handle:
        handle.truncate(100)
    with pytest.raises(UserError, match='is damaged'):
        latent_prior.load(path, latent_len=2)


def test_too_few_points_for_the_components_is_an_error():
    with pytest.raises(UserError, match='cannot fit a mixture of --prior_components=5'):
        latent_prior.fit(np.zeros((3, 2)), components=5, seed=0)


def test_a_temperature_scales_each_sample_about_its_component_mean():
    z = latent_prior.sample(KNOWN, seed=3, count=60000)
    cooled = latent_prior.sample(KNOWN, seed=3, count=60000, temperature=0.5)
    nearest = np.argmin(((z[:, None] - KNOWN.means[None]) ** 2).sum(-1), axis=1)
    # the same components, each sample half as far from its component's mean
    np.testing.assert_allclose(cooled - KNOWN.means[nearest], 0.5 * (z - KNOWN.means[nearest]),
                               atol=1e-5)
    for index in range(3):
        part = cooled[nearest == index]
        np.testing.assert_allclose(np.cov(part.T), 0.25 * KNOWN.covariances[index], atol=0.02)


def test_the_mixture_log_density_is_that_of_an_independent_computation():
    z = np.array([[-6.0, 0.5], [0.0, 0.0], [3.0, 1.0], [20.0, 20.0]])
    # the mixture's density summed from scipy's normal densities, component by component
    from scipy.stats import multivariate_normal
    density = sum(weight * multivariate_normal(mean, covariance).pdf(z) for weight, mean,
                  covariance in zip(KNOWN.weights, KNOWN.means, KNOWN.covariances))
    np.testing.assert_allclose(latent_prior.log_density(KNOWN, z)[:3], np.log(density[:3]),
                               rtol=1e-10)
    # far out, where the density underflows to 0, the log stays finite
    assert np.isfinite(latent_prior.log_density(KNOWN, z)[3])


def test_a_truncated_draw_drops_the_least_probable_share_of_the_mixture_samples():
    floor = latent_prior.density_floor(KNOWN, 0.2)
    full = latent_prior.sample(KNOWN, seed=3, count=20000)
    full_density = latent_prior.log_density(KNOWN, full)
    assert abs(np.mean(full_density < floor) - 0.2) < 0.015  # about the share asked for
    truncated = latent_prior.sample(KNOWN, seed=3, count=10000, truncation=0.2)
    assert truncated.shape == (10000, 2) and truncated.dtype == np.float32
    # the samples kept are the draw's candidates that pass, in order
    passing = full[full_density >= floor]
    np.testing.assert_array_equal(truncated, passing[:10000])
    # a longer truncated draw extends a shorter one
    np.testing.assert_array_equal(
        truncated[:100], latent_prior.sample(KNOWN, seed=3, count=100, truncation=0.2))
    # the tails go: each component's samples lie closer to its mean than without truncation
    nearest = np.argmin(((full[:, None] - KNOWN.means[None]) ** 2).sum(-1), axis=1)
    kept_nearest = np.argmin(((truncated[:, None] - KNOWN.means[None]) ** 2).sum(-1), axis=1)
    for index in range(3):
        spread = np.trace(np.cov(full[nearest == index].T))
        assert np.trace(np.cov(truncated[kept_nearest == index].T)) < 0.9 * spread


def test_a_truncation_that_keeps_almost_nothing_is_an_error(monkeypatch):
    monkeypatch.setattr(latent_prior, 'MAX_ROUNDS', 2)
    # at temperature 10 nearly every sample lies in the tails of the untempered mixture
    with pytest.raises(UserError, match='pass --prior_truncation=0.5 too rarely'):
        latent_prior.sample(KNOWN, seed=3, count=10000, temperature=10, truncation=0.5)


def test_evaluate_and_predict_sample_the_mixture_fitted_at_the_end_of_training(tiny_conf):
    conf = tiny_conf(sample_prior='gmm', prior_components=2, max_step=10)
    model = runner.Runner(conf)
    runner.train(model)
    path = latent_prior.prior_path(conf.modeldir, 10, 2)
    assert os.path.exists(path)
    saved = latent_prior.load(path, conf.latent_len)
    means = model.training_latent_means()
    assert means.shape == (96, conf.latent_len)
    # the mixture's weighted mean is the latents' mean (EM keeps it at every step)
    np.testing.assert_allclose(saved.weights @ saved.means, means.mean(0), atol=1e-3)
    model.close()

    model = runner.Runner(conf.replace(action='evaluate'))
    model.restore_for('evaluate')
    z = model.prior_z(6)
    np.testing.assert_array_equal(z, latent_prior.sample(saved, conf.random_seed, 6))
    model.close()

    # --prior_temperature: the same mixture, its samples' spread scaled, evaluated apart
    cooled = conf.replace(action='evaluate', prior_temperature=0.5)
    model = runner.Runner(cooled)
    model.restore_for('evaluate')
    np.testing.assert_array_equal(model.prior_z(6),
                                  latent_prior.sample(saved, conf.random_seed, 6, 0.5))
    model.close()
    assert runner.evaluation_variant(cooled) == 'gmm2-t0.5'

    # --prior_truncation: the same mixture's draw without its least probable share
    truncated = conf.replace(action='evaluate', prior_truncation=0.3)
    model = runner.Runner(truncated)
    model.restore_for('evaluate')
    np.testing.assert_array_equal(
        model.prior_z(6), latent_prior.sample(saved, conf.random_seed, 6, truncation=0.3))
    model.close()
    assert runner.evaluation_variant(truncated) == 'gmm2-q0.3'
    normal = cooled.replace(sample_prior='normal')
    assert runner.evaluation_variant(normal) == 't0.5'


def test_the_mixture_fitted_at_the_end_of_training_encodes_with_the_averaged_weights(
        tiny_conf):
    """Predict and evaluate decode with the averaged weights, so the mixture they sample
    must be fitted to the latents of those weights, not of the last step's."""
    conf = tiny_conf(ema_decay=0.9, sample_prior='gmm', prior_components=2, max_step=10)
    model = runner.Runner(conf)
    runner.train(model)
    model.close()
    saved = latent_prior.load(latent_prior.prior_path(conf.modeldir, 10, 2), conf.latent_len)

    def latent_mean(weights):
        model = runner.Runner(conf.replace(action='fit_prior', inference_weights=weights))
        model.restore_for('fit_prior')
        means = model.training_latent_means().mean(0)
        model.close()
        return means
    averaged, last = latent_mean('average'), latent_mean('last')
    assert np.abs(averaged - last).max() > 0.01  # the two sets of weights encode apart
    # the mixture's weighted mean is the mean of the latents it was fitted to
    np.testing.assert_allclose(saved.weights @ saved.means, averaged, atol=1e-4)


def test_reencoding_trips_each_prior_sample_through_stage_1_and_the_encoder(tiny_conf):
    conf = tiny_conf(max_step=30)
    model = runner.Runner(conf)
    runner.train(model)
    means = model.training_latent_means()
    model.close()

    reencoded = conf.replace(action='evaluate', prior_reencode=2)
    model = runner.Runner(reencoded)
    model.restore_for('evaluate')
    drawn = model.drawn_prior_z(20)
    np.testing.assert_array_equal(drawn, model.normal_samples(20))
    # two trips computed here from the graph's own endpoints, one sample at a time
    expected = drawn
    for _ in range(2):
        coarse = np.concatenate([model.sample_batch(z[None])[0] for z in expected])
        expected = np.concatenate([model.encode_batch(image[None])[0] for image in coarse])
    z = model.prior_z(20)
    np.testing.assert_allclose(z, expected, atol=1e-5)
    model.close()

    # the trips end nearer the training latents than N(0, I)'s samples start
    def nearest_distance(points):
        return np.sqrt(((points[:, None] - means[None]) ** 2).sum(-1).min(1)).mean()
    assert nearest_distance(z) < 0.5 * nearest_distance(drawn)
    assert runner.evaluation_variant(reencoded) == 'r2'
    assert runner.evaluation_variant(reencoded.replace(sample_prior='gmm',
                                                       prior_components=3)) == 'gmm3-r2'


# ---------------------------------------------------------------- averaged weights

def test_predict_and_evaluate_restore_the_averaged_weights(tiny_conf):
    conf = tiny_conf(ema_decay=0.9, max_step=10)
    model = runner.Runner(conf)
    runner.train(model)
    model.close()
    values = checkpoint_values(os.path.join(conf.modeldir, 'msvae-10'))
    name = 'stage1/encoder/latent/weights'
    average = values[f'{name}/ExponentialMovingAverage']
    assert not np.allclose(average, values[name])  # the average lags the weights

    for action in ('predict', 'evaluate'):
        model = runner.Runner(conf.replace(action=action))
        model.restore_for(action)
        with model.graph.as_default():
            variable = next(v for v in tf1.global_variables() if v.op.name == name)
            moving = next(v for v in tf1.global_variables()
                          if v.op.name == 'stage1/encoder/down0/bn/moving_mean')
        np.testing.assert_array_equal(model.sess.run(variable), average)
        # what is not trained (batch-norm averages) is restored as itself
        np.testing.assert_array_equal(model.sess.run(moving), values[moving.op.name])
        model.close()
    # --inference_weights=last: the last step's weights instead, for comparison
    model = runner.Runner(conf.replace(action='predict', inference_weights='last'))
    model.restore_for('predict')
    with model.graph.as_default():
        variable = next(v for v in tf1.global_variables() if v.op.name == name)
    np.testing.assert_array_equal(model.sess.run(variable), values[name])
    model.close()


def test_the_average_follows_the_weights_with_the_decay(tiny_conf):
    """After each step, average = d·average + (1 − d)·weights, d = min(decay, (1+n)/(10+n))
    with n the global step after the update."""
    model = runner.Runner(tiny_conf(ema_decay=0.5))
    model.sess.run(model.init_op)
    with model.graph.as_default():
        weights = next(v for v in tf1.trainable_variables()
                       if v.op.name == 'stage1/encoder/latent/biases')
        average = model.net.weight_averages.average(weights)
    batch = np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32)
    expected = model.sess.run(weights)
    for step in range(3):
        model.train_step(batch)
        decay = min(0.5, (2 + step) / (11 + step))  # n = step + 1
        expected = decay * expected + (1 - decay) * model.sess.run(weights)
        np.testing.assert_allclose(model.sess.run(average), expected, rtol=1e-5, atol=1e-7)
    model.close()


# ---------------------------------------------------------------- trained sigma

def test_a_trained_sigma_moves_to_the_residuals_standard_deviation():
    """On a fixed batch and fixed outputs, gradient descent on log σ of the stage-1 loss
    ends at the root mean square of the residuals (where D/σ = Σr²/σ³)."""
    rng = np.random.default_rng(1)
    targets = rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    outputs = targets + rng.normal(0, 0.2, targets.shape).astype(np.float32)
    rms = float(np.sqrt(np.mean((targets - outputs) ** 2)))
    graph = tf.Graph()
    with graph.as_default():
        log_sigma = tf1.get_variable('log_sigma', [], initializer=tf1.constant_initializer(
            math.log(0.5)))
        loss = tf.reduce_mean(ops.gaussian_nll(tf.constant(targets), tf.constant(outputs),
                                               0.5, log_sigma))
        step = tf1.train.AdamOptimizer(0.05).minimize(loss)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            first = float(np.exp(sess.run(log_sigma)))
            for _ in range(600):
                sess.run(step)
            last = float(np.exp(sess.run(log_sigma)))
    assert abs(first - rms) > 0.25
    assert last == pytest.approx(rms, rel=0.01)


def test_the_trained_sigma_is_a_checkpointed_variable_reported_and_used(tiny_conf):
    # images in [-1, 1] and a tanh output: residuals far below a start of 3, so σ falls
    conf = tiny_conf(learn_sigma=True, sigma=3.0, max_step=20, summary_step=1)
    model = runner.Runner(conf)
    runner.train(model)
    sigma = model.decoder_sigma()
    assert sigma < 2.97
    model.close()
    values = checkpoint_values(os.path.join(conf.modeldir, 'msvae-20'))
    assert float(np.exp(values['stage1/log_sigma'])) == pytest.approx(sigma, rel=1e-6)
    assert 'sigma' in {name.split('/', 1)[1] for name in
                       logged_scalar_tags(conf.logdir)}


def logged_scalar_tags(logdir):
    tags = set()
    for name in os.listdir(logdir):
        for event in tf1.train.summary_iterator(os.path.join(logdir, name)):
            tags.update(value.tag for value in event.summary.value)
    return tags


# ---------------------------------------------------------------- schedule and losses

def test_kl_weight_and_cosine_learning_rate_follow_their_formulas():
    graph = tf.Graph()
    with graph.as_default():
        step = tf1.placeholder(tf.int64, [])
        weight = network.kl_weight(step, 100)
        setup = network.TrainingSetup(learning_rate=1e-3, beta1=0.9, noise_seed=0,
                                      lr_schedule='cosine', decay_steps=200)
        rate = network.learning_rate(step, setup)
        with tf1.Session() as sess:
            for value in (0, 50, 100, 150, 200, 300):
                w, r = sess.run([weight, rate], {step: value})
                assert w == pytest.approx(min(1.0, value / 100))
                expected = 0.5e-3 * (1 + math.cos(math.pi * min(value, 200) / 200))
                assert r == pytest.approx(expected, abs=1e-9)
    assert network.kl_weight(None, 0) is None
    constant = network.TrainingSetup(learning_rate=1e-3, beta1=0.9, noise_seed=0)
    assert network.learning_rate(None, constant) == 1e-3


def test_gradient_l1_matches_numpy():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (3, 5, 6, 2)).astype(np.float32)
    b = rng.uniform(-1, 1, (3, 5, 6, 2)).astype(np.float32)

    def numpy_gradient_l1(x, y):
        dy = np.abs(np.diff(x, axis=1) - np.diff(y, axis=1)).sum((1, 2, 3))
        dx = np.abs(np.diff(x, axis=2) - np.diff(y, axis=2)).sum((1, 2, 3))
        return dy + dx
    graph = tf.Graph()
    with graph.as_default(), tf1.Session() as sess:
        got, offset = sess.run([ops.gradient_l1(tf.constant(a), tf.constant(b)),
                                ops.gradient_l1(tf.constant(a), tf.constant(a + 0.3))])
    np.testing.assert_allclose(got, numpy_gradient_l1(a, b), rtol=1e-5)
    np.testing.assert_allclose(offset, 0, atol=1e-5)  # blind to a uniform offset


def stage2_loss_and_output(conf, batch):
    """{'loss': stage 2's per-image loss, 'out': its image} of a freshly initialised model."""
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    values = model.sess.run({'loss': model.net.per_image['stage2_loss'],
                             'out': model.net.stage_outputs[1]}, {model.net.images: batch})
    model.close()
    return values


def test_refinement_loss_adds_the_weighted_gradient_term(tiny_conf):
    rng = np.random.default_rng(3)
    batch = rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32)
    losses = {weight: stage2_loss_and_output(tiny_conf(refine_gradient_weight=weight), batch)
              for weight in (0.0, 2.0)}
    np.testing.assert_array_equal(losses[0.0]['out'], losses[2.0]['out'])  # same seed
    out = losses[0.0]['out']
    l1 = np.abs(batch - out).sum((1, 2, 3))
    grad = (np.abs(np.diff(batch, axis=1) - np.diff(out, axis=1)).sum((1, 2, 3))
            + np.abs(np.diff(batch, axis=2) - np.diff(out, axis=2)).sum((1, 2, 3)))
    np.testing.assert_allclose(losses[0.0]['loss'], l1, rtol=1e-5)
    np.testing.assert_allclose(losses[2.0]['loss'], l1 + 2.0 * grad, rtol=1e-5)


def numpy_ssim(x, y, size=11, sigma=1.5):
    """SSIM per image of [b, h, w, c] arrays in [0, 1] (Wang et al. 2004): Gaussian-weighted
    local means, variances and covariance over every valid window, averaged."""
    coords = np.arange(size) - (size - 1) / 2
    line = np.exp(-coords ** 2 / (2 * sigma ** 2))
    kernel = np.outer(line, line) / np.outer(line, line).sum()

    def local_mean(a):  # [b, h, w, c] => [b, h-size+1, w-size+1, c]
        windows = np.lib.stride_tricks.sliding_window_view(a, (size, size), axis=(1, 2))
        return np.einsum('bhwcij,ij->bhwc', windows, kernel)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = local_mean(x), local_mean(y)
    vx, vy = local_mean(x * x) - mx ** 2, local_mean(y * y) - my ** 2
    cov = local_mean(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)
                / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return ssim_map.mean(axis=(1, 2, 3))


def test_ssim_distance_matches_numpy():
    rng = np.random.default_rng(4)
    a = rng.uniform(-1, 1, (3, 16, 14, 2)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    flat = np.full_like(a, a.mean())  # a flat guess of a textured image
    graph = tf.Graph()
    with graph.as_default(), tf1.Session() as sess:
        got, same, guess = sess.run([ops.ssim_distance(tf.constant(a), tf.constant(b)),
                                     ops.ssim_distance(tf.constant(a), tf.constant(a)),
                                     ops.ssim_distance(tf.constant(a), tf.constant(flat))])
    pixels = 16 * 14 * 2
    expected = pixels * (1 - numpy_ssim((a + 1) / 2, (b + 1) / 2))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(same, 0, atol=1e-2)
    assert np.all(guess > got)  # noise keeps the structure a flat guess loses


def test_refinement_loss_adds_the_weighted_ssim_term(tiny_conf):
    rng = np.random.default_rng(5)
    batch = rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32)
    values = {weight: stage2_loss_and_output(tiny_conf(refine_ssim_weight=weight), batch)
              for weight in (0.0, 3.0)}
    out = values[0.0]['out']
    np.testing.assert_array_equal(out, values[3.0]['out'])  # same seed, same net
    l1 = np.abs(batch - out).sum((1, 2, 3))
    ssim_term = 16 * 16 * (1 - numpy_ssim((batch + 1) / 2, (out + 1) / 2))
    np.testing.assert_allclose(values[0.0]['loss'], l1, rtol=1e-5)
    np.testing.assert_allclose(values[3.0]['loss'], l1 + 3.0 * ssim_term, rtol=1e-4)


# ---------------------------------------------------------------- exact resume

def test_resume_is_exact_with_every_lever(tiny_conf, tmp_path):
    """Cosine schedule, KL warm-up, averaged weights, a trained σ, the gradient and SSIM losses:
    ten steps, stop, ten more equal twenty straight (losses and every variable, the
    averages and σ included), and the mixture fitted at the end is the same."""
    levers = dict(lr_schedule='cosine', kl_warmup_steps=15, ema_decay=0.9, learn_sigma=True,
                  refine_gradient_weight=0.5, refine_ssim_weight=0.5, sample_prior='gmm',
                  prior_components=2)

    def conf(name, max_step):
        # the schedule's length is the run's max_step: the split run states the final one
        return tiny_conf(max_step=max_step, save_step=10, summary_step=1,
                         modeldir=str(tmp_path / name), logdir=str(tmp_path / f'{name}_log'),
                         **levers)
    model = runner.Runner(conf('straight', 20))
    runner.train(model)
    model.close()
    first = runner.Runner(conf('split', 20).replace(max_step=20))
    # stop after ten steps as a signal would: train_loop's should_stop
    start = first.initialize_or_restore()
    from utils.run.signals import StopRequests
    with StopRequests() as stop:
        runner.train_loop(first, runner.SINGLE_PROCESS, start, first.sess, stop,
                          should_stop=lambda: first.step() >= 10)
    first.close()
    second = runner.Runner(conf('split', 20))
    runner.train(second)
    second.close()

    straight, split = (logged_losses(str(tmp_path / f'{name}_log')) for name in
                       ('straight', 'split'))
    np.testing.assert_array_equal([split[s] for s in range(11, 21)],
                                  [straight[s] for s in range(11, 21)])
    a = checkpoint_values(str(tmp_path / 'straight' / 'msvae-20'))
    b = checkpoint_values(str(tmp_path / 'split' / 'msvae-20'))
    assert a.keys() == b.keys()
    assert any(name.endswith('ExponentialMovingAverage') for name in a)
    assert 'stage1/log_sigma' in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    priors = [latent_prior.load(latent_prior.prior_path(str(tmp_path / name), 20, 2), 4)
              for name in ('straight', 'split')]
    np.testing.assert_array_equal(priors[0].means, priors[1].means)
    np.testing.assert_array_equal(priors[0].covariances, priors[1].covariances)


def test_predict_samples_the_prior_the_run_was_trained_for_unless_told(tiny_conf):
    import main
    conf = tiny_conf(sample_prior='gmm', prior_components=2, max_step=10)
    assert main.run(conf) == 10
    later = main.default_config(**dict(conf.as_dict(), action='predict',
                                       sample_prior='normal', prior_components=10))
    folder = main.run(later)  # no flag on a command line: the run's own prior
    assert os.path.basename(folder) == 'predict_step_10_gmm2'
    assert len([name for name in os.listdir(folder) if name.startswith('sample_')]) == 6


# ---------------------------------------------------------------- other data

def test_the_recipe_flag_file_trains_evaluates_and_predicts_on_other_data(tmp_path):
    """configs/mnist_best.flags as it is, on colour images of another size (only the data
    flags and the budget changed): training fits the 200-component mixture, evaluate and
    predict sample it, and every output has the new shape."""
    import json
    import main
    from conftest import ROOT
    from helpers import blob_images
    from utils.data.hdf5_writer import write_images
    from PIL import Image

    data = tmp_path / 'data'
    # the recipe's mixture of 200 components needs 200 training images or more
    for name, count, seed in (('train', 240, 1), ('valid', 16, 2), ('test', 32, 3)):
        write_images(str(data / f'{name}.h5'), blob_images(count, 20, 24, 3, seed=seed))
    main.FLAGS.unparse_flags()
    try:
        main.FLAGS(['main.py', f'--flagfile={os.path.join(ROOT, "configs", "mnist_best.flags")}'])
        recipe = main.config_from_flags()
    finally:
        main.FLAGS.unparse_flags()
    assert (recipe.start_channel_num, recipe.latent_len, recipe.sample_prior,
            recipe.prior_components) == (32, 32, 'gmm', 200)
    conf = recipe.replace(
        data_dir=str(data), train_data='train.h5', valid_data='valid.h5', test_data='test.h5',
        height=20, width=24, channel=3, batch=16, max_step=6, save_step=3, test_step=3,
        summary_step=3, valid_images=16, num_samples=4, eval_samples=32, eval_fid=False,
        modeldir=str(tmp_path / 'model'), logdir=str(tmp_path / 'log'),
        sampledir=str(tmp_path / 'samples'))
    assert main.run(conf) == 6
    prior = latent_prior.load(latent_prior.prior_path(conf.modeldir, 6, 200), 32)
    assert prior.images == 240 and np.isclose(prior.weights.sum(), 1)

    main.run(conf.replace(action='evaluate'))
    with open(os.path.join(conf.modeldir, 'evaluation-6-gmm200.json')) as handle:
        result = json.load(handle)
    assert result['sample_prior'] == 'gmm200' and result['inference_weights'] == 'average'
    assert [stage['size'] for stage in result['stages']] == [[20, 24], [20, 24]]
    for stage in result['stages']:
        assert np.isfinite(stage['psnr']) and stage['samples']['laplacian_variance'] > 0

    folder = main.run(conf.replace(action='predict'))
    assert os.path.basename(folder) == 'predict_step_6_gmm200'
    samples = sorted(name for name in os.listdir(folder) if name.startswith('sample_'))
    assert len(samples) == 4
    with Image.open(os.path.join(folder, samples[0])) as image:
        assert image.mode == 'RGB' and image.size[1] == 20
