"""The stage options: number of stages, decoder and refiner kinds, refinement losses and
weights, stage_gradient, and coarse-to-fine sizes."""
import numpy as np
import pytest
import tensorflow as tf

import network
import runner
from helpers import blob_images
from utils.run import stages

tf1 = tf.compat.v1


def batch_of(count, size=16):
    return blob_images(count, size, size, seed=3).astype(np.float32) / 127.5 - 1.0


def trainable(model, scope):
    with model.graph.as_default():
        return tf1.trainable_variables(scope)


@pytest.mark.parametrize('num_stages', [1, 2, 3])
def test_num_stages_build_and_learn(tiny_conf, num_stages):
    model = runner.Runner(tiny_conf(num_stages=num_stages))
    model.sess.run(model.init_op)
    batch = batch_of(8)
    losses = [float(model.train_step(batch)[0]['total']) for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0], losses
    expected = {'kl', 'total'} | {f'stage{k}_{what}' for k in range(1, num_stages + 1)
                                  for what in ('loss', 'psnr')}
    assert set(model.net.metrics) == expected
    samples = model.sample(3)
    assert len(samples) == num_stages and all(s.shape == (3, 16, 16, 1) for s in samples)
    scopes = {v.name.split('/')[0] for v in trainable(model, None)}
    assert scopes == {f'stage{k}' for k in range(1, num_stages + 1)}
    model.close()


def refinement_gradients(model):
    """Gradients of every refinement loss with respect to the stage-1 variables."""
    model.graph._unsafe_unfinalize()  # tf.gradients adds ops to the built graph
    with model.graph.as_default():
        losses = [model.net.metrics[f'stage{k}_loss'] for k in range(2, model.conf.num_stages + 1)]
        stage1 = tf1.trainable_variables('stage1/')
        return tf.gradients(tf.add_n(losses), stage1)


def test_stage_gradient_off_gives_stage_one_no_refinement_gradient(tiny_conf):
    joint = runner.Runner(tiny_conf(num_stages=3))
    assert any(g is not None for g in refinement_gradients(joint))
    joint.close()
    separate = runner.Runner(tiny_conf(num_stages=3, stage_gradient=False))
    assert all(g is None for g in refinement_gradients(separate))
    with separate.graph.as_default():  # stage 3's loss reaches stage 3 only
        reached = [v.name.split('/')[0] for v, g in zip(
            tf1.trainable_variables(), tf.gradients(separate.net.metrics['stage3_loss'],
                                                    tf1.trainable_variables())) if g is not None]
    assert set(reached) == {'stage3'}
    # and training still moves stage 1 by its own loss
    separate.sess.run(separate.init_op)
    weights = trainable(separate, 'stage1/decoder/project/weights')[0]
    before = separate.sess.run(weights)
    separate.train_step(batch_of(8))
    after = separate.sess.run(weights)
    assert not np.array_equal(before, after)
    separate.close()


def test_refinement_losses_and_weights_against_numpy(tiny_conf):
    model = runner.Runner(tiny_conf(num_stages=3, refine_loss='l2',
                                    refine_weights=['0.5', '2'], sigma=0.7))
    model.sess.run(model.init_op)
    x = batch_of(8)
    values, outputs, mean, std = model.sess.run(
        [model.net.metrics, model.net.stage_outputs, model.net.z_mean, model.net.z_std], {model.net.images: x})
    kl = np.mean(0.5 * np.sum(mean ** 2 + std ** 2 - 2 * np.log(std) - 1, axis=1))
    stage1 = np.mean(np.sum((x - outputs[0]) ** 2, axis=(1, 2, 3)) / (2 * 0.7 ** 2))
    stage2 = np.mean(np.sum((x - outputs[1]) ** 2, axis=(1, 2, 3)))
    stage3 = np.mean(np.sum((x - outputs[2]) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(
        [values['kl'], values['stage1_loss'], values['stage2_loss'], values['stage3_loss']],
        [kl, stage1, stage2, stage3], rtol=1e-4)
    np.testing.assert_allclose(values['total'], kl + stage1 + 0.5 * stage2 + 2 * stage3,
                               rtol=1e-4)
    model.close()


def test_decoder_and_refiner_kinds(tiny_conf):
    plain = runner.Runner(tiny_conf(num_stages=1, decoder='plain'))
    residual = runner.Runner(tiny_conf(num_stages=1, decoder='residual'))
    plain_names = [v.name for v in trainable(plain, 'stage1/decoder')]
    residual_names = [v.name for v in trainable(residual, 'stage1/decoder')]
    assert not any('/res' in name for name in plain_names)
    assert any('/res' in name for name in residual_names)
    assert set(plain_names) < set(residual_names)
    for model in (plain, residual):
        model.close()

    resnet = runner.Runner(tiny_conf(refine_net='resnet'))
    names = [v.name for v in trainable(resnet, 'stage2')]
    assert sum(f'stage2/res{i}/layer1/conv/weights' in ' '.join(names)
               for i in range(network.RESNET_BLOCKS)) == network.RESNET_BLOCKS
    first = trainable(resnet, 'stage2/in/conv/weights')[0]
    assert first.shape.as_list() == [5, 5, 1, network.RESNET_WIDTH * 4]  # start_channel_num 4
    resnet.sess.run(resnet.init_op)
    out = resnet.sess.run(resnet.net.stage_outputs, {resnet.net.images: batch_of(2)})
    assert out[1].shape == (2, 16, 16, 1) and np.abs(out[1]).max() <= 1
    resnet.close()


def first_kernel(model, scope):
    """The shape of the first convolution's kernel under scope."""
    return trainable(model, f'{scope}/in/conv/weights')[0].shape.as_list()


@pytest.mark.parametrize('refine_net, width', [('unet', 1), ('resnet', network.RESNET_WIDTH)])
def test_refine_channel_num_sets_the_refiners_width_only(tiny_conf, refine_net, width):
    same = runner.Runner(tiny_conf(refine_net=refine_net, num_stages=3))
    narrow = runner.Runner(tiny_conf(refine_net=refine_net, num_stages=3, refine_channel_num=2))
    # start_channel_num is 4: 0 keeps the refiners that wide, 2 halves every stage after 1
    for stage in ('stage2', 'stage3'):
        assert first_kernel(same, stage)[-1] == width * 4
        assert first_kernel(narrow, stage)[-1] == width * 2
    stage_one = [(v.name, v.shape.as_list()) for v in trainable(same, 'stage1')]
    assert stage_one == [(v.name, v.shape.as_list()) for v in trainable(narrow, 'stage1')]
    narrow.sess.run(narrow.init_op)
    out = narrow.sess.run(narrow.net.stage_outputs, {narrow.net.images: batch_of(2)})
    assert [o.shape for o in out] == [(2, 16, 16, 1)] * 3 and np.abs(out[-1]).max() <= 1
    for model in (same, narrow):
        model.close()


def test_stage_sizes_coarse_to_fine():
    assert stages.stage_sizes(28, 28, 3, 0) == [(28, 28)] * 3
    assert stages.stage_sizes(28, 28, 3, 1) == [(14, 14), (28, 28), (28, 28)]
    assert stages.stage_sizes(28, 28, 3, 2) == [(7, 7), (14, 14), (28, 28)]
    assert stages.stage_sizes(128, 96, 2, 1) == [(64, 48), (128, 96)]


def test_coarse_to_fine_model(tiny_conf):
    model = runner.Runner(tiny_conf(num_stages=3, coarse_scale=2, network_depth=2))
    model.sess.run(model.init_op)
    x = batch_of(4)
    outputs, targets, values = model.sess.run(
        [model.net.stage_outputs, model.net.targets, model.net.metrics], {model.net.images: x})
    assert [o.shape[1:3] for o in outputs] == [(4, 4), (8, 8), (16, 16)]
    # each target is the input averaged over 4x4, 2x2 and 1x1 blocks
    for target, block in zip(targets, (4, 2, 1)):
        expected = x.reshape(4, 16 // block, block, 16 // block, block, 1).mean(axis=(2, 4))
        np.testing.assert_allclose(target, expected, atol=1e-6)
    stage1 = np.mean(np.sum((targets[0] - outputs[0]) ** 2, axis=(1, 2, 3)) /
                     (2 * model.conf.sigma ** 2))
    np.testing.assert_allclose(values['stage1_loss'], stage1, rtol=1e-4)
    losses = [float(model.train_step(x)[0]['total']) for _ in range(12)]
    assert losses[-1] < losses[0]
    assert [s.shape[1:3] for s in model.sample(2)] == [(4, 4), (8, 8), (16, 16)]
    model.close()


def test_refine_weights_parsing():
    assert stages.refine_weights(['1'], 3) == [1.0, 1.0]
    assert stages.refine_weights('0.5,2', 3) == [0.5, 2.0]
    assert stages.refine_weights(['1'], 1) == []
    for bad in (['1', '2'], ['x'], ['-1'], ['nan']):
        with pytest.raises(ValueError):
            stages.refine_weights(bad, 2)
