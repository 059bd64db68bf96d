"""The model: stage shapes, inference-mode batch norm, learning, and exact resume."""
import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import data_reader
import network
import ops
import runner
from helpers import blob_images
from utils.run import checkpoints
from utils.run.errors import UserError

tf1 = tf.compat.v1


def output_shape(build, shape):
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, [None, *shape])
        y = build(x)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            values = sess.run(y, {x: np.random.default_rng(0).uniform(-1, 1, (2, *shape))})
    return values


@pytest.mark.parametrize('depth', [2, 3, 4, 5])
@pytest.mark.parametrize('shape', [(32, 32, 3), (40, 36, 1), (45, 33, 3)])
def test_unet_keeps_the_shape(depth, shape):
    values = output_shape(lambda x: network.unet(x, depth, 4, ops.DEFAULT_OPTIONS, False), shape)
    assert values.shape == (2, *shape)
    assert np.all(np.abs(values) <= 1)  # tanh output


@pytest.mark.parametrize('shape, depth', [((28, 28, 1), 3), ((20, 12, 3), 2), ((64, 48, 3), 4)])
def test_encoder_and_decoder_shapes(shape, depth, tiny_conf):
    conf = tiny_conf(height=shape[0], width=shape[1], channel=shape[2], network_depth=depth,
                     latent_len=6)

    def build(x):
        mean, std = network.encoder(x, conf.model, ops.DEFAULT_OPTIONS, True)
        return mean, std, network.decoder(mean, conf.model, ops.DEFAULT_OPTIONS, True,
                                          (conf.height, conf.width))
    mean, std, image = output_shape(build, shape)
    assert mean.shape == std.shape == (2, 6)
    assert np.all(std > 0)
    assert image.shape == (2, *shape)


def test_prior_samples_are_fixed_by_the_seed():
    a = runner.prior_samples(5, 10, 3)
    np.testing.assert_array_equal(a, runner.prior_samples(5, 10, 3))
    np.testing.assert_array_equal(a[:4], runner.prior_samples(5, 4, 3))
    assert not np.allclose(a, runner.prior_samples(6, 10, 3))


def test_loss_falls_over_100_steps(tiny_conf):
    model = runner.Runner(tiny_conf(batch=16, start_channel_num=8, learning_rate=3e-3))
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
    model = runner.Runner(tiny_conf())
    model.sess.run(model.init_op)
    data = blob_images(8, seed=4).astype(np.float32) / 127.5 - 1
    for _ in range(3):
        model.train_step(data)
    run = lambda x, training: model.sess.run(  # noqa: E731
        model.net.stage_outputs[-1], {model.net.images: x, model.net.training: training})
    np.testing.assert_allclose(run(data, False)[:1], run(data[:1], False), atol=1e-5)
    assert not np.allclose(run(data, True)[:1], run(data[:2], True)[:1], atol=1e-3)
    model.close()


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def logged_losses(logdir):
    """step => train/total from the TensorBoard events of a run."""
    losses = {}
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
        for event in tf1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == 'train/total':
                    losses[event.step] = value.simple_value
    return losses


def test_resume_continues_exactly(tiny_conf, tmp_path):
    """Ten steps, stop, ten more from the checkpoint: the losses of steps 11..20 and every
    variable (weights, batch-norm averages, Adam slots, global step) equal those of
    twenty uninterrupted steps, bit for bit on CPU."""
    def conf(name, max_step):
        return tiny_conf(max_step=max_step, save_step=10, summary_step=1,
                         modeldir=str(tmp_path / name), logdir=str(tmp_path / f'{name}_log'))
    model = runner.Runner(conf('straight', 20))
    assert runner.train(model) == 20
    model.close()
    for max_step in (10, 20):
        model = runner.Runner(conf('split', max_step))
        runner.train(model)
        model.close()

    straight, split = logged_losses(str(tmp_path / 'straight_log')), logged_losses(
        str(tmp_path / 'split_log'))
    assert sorted(split) == sorted(straight) == list(range(1, 21))
    np.testing.assert_array_equal([split[s] for s in range(11, 21)],
                                  [straight[s] for s in range(11, 21)])
    a = checkpoint_values(str(tmp_path / 'straight' / 'msvae-20'))
    b = checkpoint_values(str(tmp_path / 'split' / 'msvae-20'))
    assert a.keys() == b.keys()
    assert any('Adam' in name for name in a) and any('moving_mean' in name for name in a)
    assert a['global_step'] == b['global_step'] == 20
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_same_seed_gives_the_same_first_20_losses(tiny_conf, tmp_path):
    def first_losses(seed):
        model = runner.Runner(tiny_conf(random_seed=seed))
        model.sess.run(model.init_op)
        conf = model.conf
        with data_reader.BatchReader(os.path.join(conf.data_dir, conf.train_data), 16, 16, 1,
                                     conf.batch, seed) as reader:
            losses = [model.train_step(reader.next_batch())[0]['total'] for _ in range(20)]
        model.close()
        return np.array(losses)
    first = first_losses(5)
    np.testing.assert_array_equal(first, first_losses(5))
    assert not np.allclose(first, first_losses(6))


def test_a_huge_learning_rate_stops_at_the_first_non_finite_loss(tiny_conf):
    conf = tiny_conf(learning_rate=1e6, max_step=50, save_step=1, keep_checkpoints=50,
                     valid_data='')
    model = runner.Runner(conf)
    with pytest.raises(UserError, match=r'not finite (at|after) step (\d+)') as caught:
        runner.train(model)
    model.close()
    step = int(re.search(r'step (\d+)', str(caught.value)).group(1))
    saved = checkpoints.saved_steps(conf.modeldir, conf.model_name)
    assert saved == list(range(1, step))  # nothing saved at or after the broken step
    if saved:
        assert f'msvae-{saved[-1]}' in str(caught.value)
        values = checkpoint_values(checkpoints.checkpoint_prefix(conf.modeldir, 'msvae',
                                                                 saved[-1]))
        assert all(np.all(np.isfinite(v)) for v in values.values())


def test_a_bounded_number_of_checkpoints_is_kept_across_restarts(tiny_conf):
    conf = tiny_conf(max_step=6, save_step=1, keep_checkpoints=3, valid_data='')
    model = runner.Runner(conf)
    runner.train(model)
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [4, 5, 6]
    conf = conf.replace(max_step=8)
    model = runner.Runner(conf)
    runner.train(model)
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [6, 7, 8]
    # TensorFlow's own tools find them through the state file
    assert tf.train.latest_checkpoint(conf.modeldir) == os.path.join(conf.modeldir, 'msvae-8')
    state = tf.train.get_checkpoint_state(conf.modeldir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        'msvae-6', 'msvae-7', 'msvae-8']
    reader = tf.train.load_checkpoint(conf.modeldir)  # a folder: its latest checkpoint
    assert reader.get_tensor('global_step') == 8


def test_a_non_finite_loss_stops_training_and_saves_nothing(tiny_conf, monkeypatch):
    conf = tiny_conf(max_step=10, save_step=2, valid_data='')
    model = runner.Runner(conf)
    real_step = model.train_step

    def step_that_diverges(batch, with_summary=False, session=None):
        metrics, summary = real_step(batch, with_summary, session)
        if model.step() >= 3:
            metrics = dict(metrics, total=float('nan'))
        return metrics, summary
    monkeypatch.setattr(model, 'train_step', step_that_diverges)
    with pytest.raises(UserError, match='not finite at step 3.*msvae-2'):
        runner.train(model)
    model.close()
    assert checkpoints.saved_steps(conf.modeldir, conf.model_name) == [2]
