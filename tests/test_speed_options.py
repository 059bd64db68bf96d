"""The speed flags change how the graph runs, not what it computes: NCHW layout, fused
batch norm and XLA give the default model's numbers from the same checkpoint;
transposed-conv upsampling lands on the same sizes."""
import numpy as np
import pytest
import tensorflow as tf

import main
import runner
import ops
from helpers import blob_images

tf1 = tf.compat.v1


NCHW_HERE = runner.nchw_convolutions_run()
needs_nchw = pytest.mark.skipif(not NCHW_HERE, reason='this machine\'s TensorFlow has no '
                                'NCHW convolution kernels (CPU without oneDNN)')


def batch_of(count, size=16):
    return blob_images(count, size, size, seed=3).astype(np.float32) / 127.5 - 1.0


def outputs_from_checkpoint(conf, prefix, batch, z):
    """Training-mode metrics, inference-mode stage outputs and samples of the model of
    `conf` with the weights of checkpoint `prefix`."""
    model = runner.Runner(conf)
    model.saver.restore(model.sess, prefix)
    train = model.sess.run(model.net.metrics, {model.net.images: batch, model.net.training: True})
    infer = model.sess.run(model.net.stage_outputs, {model.net.images: batch})
    samples = model.sess.run(model.net.sample_outputs, {model.net.prior_z: z})
    model.close()
    return train, infer, samples


@pytest.fixture
def reference(tiny_conf, tmp_path):
    """(conf, checkpoint prefix, batch, z, outputs) of a default-layout model trained a
    few steps, so that batch-norm averages and weights are not at their initial values."""
    conf = tiny_conf(num_stages=2, fused_batch_norm=False)  # the graph without speed options
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    batch = batch_of(8)
    for _ in range(3):
        model.train_step(batch)
    prefix = model.saver.save(model.sess, str(tmp_path / 'ref'), write_meta_graph=False,
                              write_state=False)
    model.close()
    z = runner.prior_samples(1, 4, conf.latent_len)
    return conf, prefix, batch, z, outputs_from_checkpoint(conf, prefix, batch, z)


@pytest.mark.parametrize('options', [
    pytest.param(dict(data_format='NCHW', fused_batch_norm=False), marks=needs_nchw),
    dict(fused_batch_norm=True),
    pytest.param(dict(data_format='NCHW', fused_batch_norm=True), marks=needs_nchw),
    dict(xla=True, fused_batch_norm=False)])
def test_speed_options_compute_the_same(reference, tiny_conf, options):
    conf, prefix, batch, z, (train, infer, samples) = reference
    other = tiny_conf(num_stages=2, **options)
    train2, infer2, samples2 = outputs_from_checkpoint(other, prefix, batch, z)
    for name, value in train.items():
        assert train2[name] == pytest.approx(value, rel=2e-4, abs=1e-4), name
    for first, second in zip(infer + samples, infer2 + samples2):
        np.testing.assert_allclose(second, first, atol=2e-4)


def test_nchw_nearest_resize_matches_tf_image_resize():
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        for (h, w), size in (((4, 4), (7, 7)), ((7, 5), (14, 10)), ((3, 6), (5, 11))):
            x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
            expected = tf.image.resize(x, size, method='nearest')
            got = ops.nearest_resize_nchw(tf.transpose(x, [0, 3, 1, 2]), size)
            with tf1.Session(graph=graph) as sess:
                want, have = sess.run([expected, tf.transpose(got, [0, 2, 3, 1])])
            np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize('data_format', ['NHWC', pytest.param('NCHW', marks=needs_nchw)])
def test_transposed_upsampling_lands_on_odd_sizes_and_learns(tiny_conf, data_format):
    conf = tiny_conf(height=28, width=28, network_depth=3, upsample='transpose',
                     data_format=data_format)
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    with model.graph.as_default():
        up = [v for v in tf1.trainable_variables('stage1/decoder/up2/')]
    assert up[0].shape.as_list() == [3, 3, 8, 16]  # [k, k, out, in]: a transposed conv
    batch = batch_of(8, 28)
    losses = [float(model.train_step(batch)[0]['total']) for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0]
    assert all(s.shape == (2, 28, 28, 1) for s in model.sample(2))
    model.close()


def test_session_config_carries_threads_and_xla():
    conf = main.default_config(intra_op_threads=3, inter_op_threads=1, xla=True)
    config = runner.session_config(conf)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 1)
    assert config.graph_options.optimizer_options.global_jit_level == \
        tf1.OptimizerOptions.ON_1
