"""The model: stage shapes, inference-mode batch norm, learning, and exact resume."""
import numpy as np
import pytest
import tensorflow as tf

import network
from helpers import blob_images
from utils import checkpoints
from utils.errors import UserError

tf1 = tf.compat.v1


def output_shape(build, shape):
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, *shape])
        y = build(x)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            values = sess.run(y, {x: np.random.default_rng(0).uniform(-1, 1, (2, *shape))})
    return values


@pytest.mark.parametrize('depth', [2, 3, 4, 5])
@pytest.mark.parametrize('shape', [(32, 32, 3), (40, 36, 1), (45, 33, 3)])
def test_unet_keeps_the_shape(depth, shape):
    values = output_shape(lambda x: network.unet(x, depth, 4, False), shape)
    assert values.shape == (2, *shape)
    assert np.all(np.abs(values) < 1)  # tanh output


@pytest.mark.parametrize('shape, depth', [((28, 28, 1), 3), ((20, 12, 3), 2), ((64, 48, 3), 4)])
def test_encoder_and_decoder_shapes(shape, depth, tiny_conf):
    conf = tiny_conf(height=shape[0], width=shape[1], channel=shape[2], network_depth=depth,
                     latent_len=6)

    def build(x):
        mean, std = network.encoder(x, conf, True)
        return mean, std, network.decoder(mean, conf, True)
    mean, std, image = output_shape(build, shape)
    assert mean.shape == std.shape == (2, 6)
    assert np.all(std > 0)
    assert image.shape == (2, *shape)


def test_prior_samples_are_fixed_by_the_seed():
    a = network.prior_samples(5, 10, 3)
    np.testing.assert_array_equal(a, network.prior_samples(5, 10, 3))
    np.testing.assert_array_equal(a[:4], network.prior_samples(5, 4, 3))
    assert not np.allclose(a, network.prior_samples(6, 10, 3))


def test_loss_falls_over_100_steps(tiny_conf):
    model = network.MSVAE(tiny_conf(batch=16, start_channel_num=8, learning_rate=3e-3))
    model.sess.run(model.init_op)
    batch = blob_images(16, seed=3).astype(np.float32) / 127.5 - 1
    totals, psnrs = [], []
    for _ in range(100):
        metrics, _ = model.train_step(batch)
        totals.append(metrics['total'])
        psnrs.append(metrics['stage2_psnr'])
    model.close()
    assert np.mean(totals[-10:]) < 0.3 * np.mean(totals[:5])
    assert np.mean(psnrs[-10:]) > np.mean(psnrs[:5]) + 5  # dB


def test_inference_mode_does_not_depend_on_the_batch(tiny_conf):
    """Moving averages, not batch statistics, are used outside training: an image's
    reconstruction is the same alone and inside a batch. Training mode differs."""
    model = network.MSVAE(tiny_conf())
    model.sess.run(model.init_op)
    data = blob_images(8, seed=4).astype(np.float32) / 127.5 - 1
    for _ in range(3):
        model.train_step(data)
    run = lambda x, training: model.sess.run(  # noqa: E731
        model.stage_outputs[-1], {model.images: x, model.training: training})
    np.testing.assert_allclose(run(data, False)[:1], run(data[:1], False), atol=1e-5)
    assert not np.allclose(run(data, True)[:1], run(data[:2], True)[:1], atol=1e-3)
    model.close()


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_resume_continues_exactly(tiny_conf, tmp_path):
    """Ten steps, stop, ten more from the checkpoint: every variable (weights, batch-norm
    averages, Adam slots, global step) equals that of twenty uninterrupted steps."""
    straight = tiny_conf(max_step=20, save_step=10, modeldir=str(tmp_path / 'straight'))
    model = network.MSVAE(straight)
    assert model.train() == 20
    model.close()

    split = tiny_conf(max_step=10, save_step=10, modeldir=str(tmp_path / 'split'))
    model = network.MSVAE(split)
    model.train()
    model.close()
    split.max_step = 20
    model = network.MSVAE(split)
    assert model.initialize_or_restore() == 10
    assert model.train() == 20
    model.close()

    a = checkpoint_values(str(tmp_path / 'straight' / 'msvae-20'))
    b = checkpoint_values(str(tmp_path / 'split' / 'msvae-20'))
    assert a.keys() == b.keys()
    assert any('Adam' in name for name in a) and any('moving_mean' in name for name in a)
    assert a['global_step'] == b['global_step'] == 20
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_bounded_number_of_checkpoints_is_kept_across_restarts(tiny_conf):
    conf = tiny_conf(max_step=6, save_step=1, keep_checkpoints=3, valid_data='')
    model = network.MSVAE(conf)
    model.train()
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [4, 5, 6]
    conf.max_step = 8
    model = network.MSVAE(conf)
    model.train()
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [6, 7, 8]


def test_a_non_finite_loss_stops_training_and_saves_nothing(tiny_conf, monkeypatch):
    conf = tiny_conf(max_step=10, save_step=2, valid_data='')
    model = network.MSVAE(conf)
    real_step = model.train_step

    def step_that_diverges(batch, with_summary=False):
        metrics, summary = real_step(batch, with_summary)
        if model.step() >= 3:
            metrics = dict(metrics, total=float('nan'))
        return metrics, summary
    monkeypatch.setattr(model, 'train_step', step_that_diverges)
    with pytest.raises(UserError, match='not finite at step 3.*msvae-2'):
        model.train()
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [2]
