"""Layer helpers: output shapes, batch norm's two modes, and the losses against numpy/scipy."""
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import ops

tf1 = tf.compat.v1


def run_graph(build, feeds=None, init=True):
    """Builds tensors with build() in a new graph, initialises variables, returns their values."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        outputs = build()
        with tf1.Session() as sess:
            if init:
                sess.run(tf1.global_variables_initializer())
            return sess.run(outputs, feeds(graph) if feeds else None)


@pytest.mark.parametrize('size, stride, expected', [
    ((28, 28), 1, (28, 28)), ((28, 28), 2, (14, 14)), ((7, 5), 2, (4, 3)), ((1, 9), 2, (1, 5))])
def test_conv2d_shapes(size, stride, expected):
    def build():
        x = tf.ones([2, *size, 3])
        return ops.conv2d(x, 5, 'conv', stride=stride)
    assert run_graph(build).shape == (2, *expected, 5)


def test_resize_conv_dense_residual_shapes():
    def build():
        x = tf.random.normal([3, 4, 4, 6])
        return {'up': ops.resize_conv(x, 2, (7, 9), 'up'),
                'dense': ops.dense(tf.ones([3, 10]), 7, 'dense'),
                'residual': ops.residual_block(x, True, 'res'),
                'cbl': ops.conv_bn_lrelu(x, 8, False, 'cbl', stride=2)}
    out = run_graph(build)
    assert out['up'].shape == (3, 7, 9, 2)
    assert out['dense'].shape == (3, 7)
    assert out['residual'].shape == (3, 4, 4, 6)
    assert out['cbl'].shape == (3, 2, 2, 8)


def test_lrelu_slope():
    values = run_graph(lambda: ops.lrelu(tf.constant([-2.0, 0.0, 3.0])), init=False)
    np.testing.assert_allclose(values, [-2.0 * ops.LEAK, 0.0, 3.0])


def test_batch_norm_training_and_inference_modes():
    rng = np.random.default_rng(0)
    batch = rng.normal(3.0, 2.0, (16, 4, 4, 2)).astype(np.float32)
    steps = 5
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 4, 4, 2])
        training = tf1.placeholder_with_default(False, [])
        y = ops.batch_norm(x, training, 'bn')
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            trained = sess.run(y, {x: batch, training: True})
            for _ in range(steps):
                sess.run(updates, {x: batch, training: True})
            inferred = sess.run(y, {x: batch})
    # training mode: the batch's own statistics (beta = 0, gamma = 1 at init)
    mean, var = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
    np.testing.assert_allclose(trained, (batch - mean) / np.sqrt(var + ops.BN_EPSILON),
                               rtol=1e-4, atol=1e-4)
    # inference mode: running averages that started at 0 and 1 and moved `steps` times
    keep = ops.BN_DECAY ** steps
    moving_mean, moving_var = (1 - keep) * mean, keep * 1.0 + (1 - keep) * var
    np.testing.assert_allclose(inferred, (batch - moving_mean) /
                               np.sqrt(moving_var + ops.BN_EPSILON), rtol=1e-4, atol=1e-4)


def test_batch_norm_python_false_adds_no_update_ops():
    graph = tf.Graph()
    with graph.as_default():
        ops.batch_norm(tf.ones([2, 3, 3, 4]), False, 'bn')
        assert tf1.get_collection(tf1.GraphKeys.UPDATE_OPS) == []


def test_kl_against_closed_form_of_two_gaussians():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(5, 7)).astype(np.float32)
    std = rng.uniform(0.2, 2.0, (5, 7)).astype(np.float32)
    ours = run_graph(lambda: ops.kl_to_standard_normal(tf.constant(mean), tf.constant(std)),
                     init=False)
    # KL(N(m, s²) ‖ N(0, 1)) = log(1/s) + (s² + m²)/2 − 1/2, per dimension
    expected = np.sum(np.log(1.0 / std) + (std ** 2 + mean ** 2) / 2.0 - 0.5, axis=1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_gaussian_nll_against_scipy_log_density():
    rng = np.random.default_rng(2)
    target = rng.uniform(-1, 1, (3, 4, 5, 2)).astype(np.float32)
    prediction = rng.uniform(-1, 1, (3, 4, 5, 2)).astype(np.float32)
    sigma = 0.3
    ours = run_graph(lambda: ops.gaussian_nll(tf.constant(target), tf.constant(prediction),
                                              sigma), init=False)
    log_density = scipy.stats.norm.logpdf(target, loc=prediction, scale=sigma)
    dropped_constant = target[0].size * np.log(sigma * np.sqrt(2 * np.pi))
    expected = -log_density.sum(axis=(1, 2, 3)) - dropped_constant
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_l1_and_psnr_against_numpy():
    rng = np.random.default_rng(3)
    target = rng.uniform(-1, 1, (4, 6, 6, 3)).astype(np.float32)
    prediction = np.clip(target + rng.normal(0, 0.1, target.shape), -1, 1).astype(np.float32)
    l1, psnr = run_graph(lambda: (ops.l1_distance(tf.constant(target), tf.constant(prediction)),
                                  ops.psnr(tf.constant(target), tf.constant(prediction))),
                         init=False)
    np.testing.assert_allclose(l1, np.abs(target - prediction).sum(axis=(1, 2, 3)), rtol=1e-5)
    # PSNR on the [0, 255] scale is the same number: the peak and the error scale together
    t8, p8 = (target + 1) * 127.5, (prediction + 1) * 127.5
    mse = ((t8 - p8) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(psnr, 10 * np.log10(255.0 ** 2 / mse), rtol=1e-4)
