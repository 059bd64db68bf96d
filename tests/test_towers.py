"""--num_gpus towers on logical CPU devices: the same loss, gradients and batch-norm
averages as one device with the whole batch."""
import os

import numpy as np
import pytest
import tensorflow as tf

import data_reader
import main
import runner
import towers

tf1 = tf.compat.v1

# float32 sums over a different grouping (per tower, then across towers) round differently
LOSS_RTOL = 1e-5
GRADIENT_RTOL = 1e-4  # of the largest gradient entry of each variable


def variables_by_suffix(model, suffix):
    with model.graph.as_default():
        return {v.op.name: v for v in tf1.global_variables() if v.op.name.endswith(suffix)}


@pytest.mark.parametrize('count', [2, 4])
def test_towers_match_one_device_with_the_whole_batch(tiny_conf, count):
    # towers normalise with synchronised, unfused batch norm: so does the reference
    one = runner.Runner(tiny_conf(fused_batch_norm=False))
    one.sess.run(one.init_op)
    os.makedirs(one.conf.modeldir)
    one.save()
    several = runner.Runner(tiny_conf(num_gpus=count))
    assert several.restore(0) == 0  # one checkpoint fits both: the variables are shared
    with data_reader.BatchReader(f'{one.conf.data_dir}/train.h5', 16, 16, 1, 8, 1) as reader:
        batch = reader.next_batch()
    single_metrics, _ = one.train_step(batch)
    tower_metrics, _ = several.train_step(batch)
    for name, value in single_metrics.items():
        assert tower_metrics[name] == pytest.approx(value, rel=LOSS_RTOL), name
    # after one Adam step the first moment is (1 - beta1) * gradient: the gradients
    first_moments = variables_by_suffix(one, '/Adam')
    assert len(first_moments) > 20
    single = one.sess.run(first_moments)
    parallel = several.sess.run(variables_by_suffix(several, '/Adam'))
    for name, value in single.items():
        scale = np.abs(value).max()
        assert np.abs(parallel[name] - value).max() <= GRADIENT_RTOL * scale, name
    # the moving averages took the whole batch's statistics, once
    averages = one.sess.run(variables_by_suffix(one, 'moving_variance'))
    tower_averages = several.sess.run(variables_by_suffix(several, 'moving_variance'))
    for name, value in averages.items():
        np.testing.assert_allclose(tower_averages[name], value, rtol=1e-5, err_msg=name)
        assert not np.allclose(value, 1.0)  # moved from the initial value
    one.close()
    several.close()


def test_towers_train_a_model_that_one_device_restores(tiny_conf):
    main.run(tiny_conf(num_gpus=2, max_step=30, save_step=30, valid_data=''))
    with data_reader.BatchReader(f'{tiny_conf().data_dir}/train.h5', 16, 16, 1, 8, 5) as reader:
        batch = reader.next_batch()
    trained = runner.Runner(tiny_conf())
    assert trained.restore(0) == 30
    untrained = runner.Runner(tiny_conf())
    untrained.sess.run(untrained.init_op)
    assert trained.evaluate_metrics([batch])['total'] < \
        0.8 * untrained.evaluate_metrics([batch])['total']
    trained.close()
    untrained.close()


def test_each_tower_runs_on_its_own_device(tiny_conf):
    model = runner.Runner(tiny_conf(num_gpus=2))
    def placed(condition):
        return {(spec.device_type, spec.device_index) for spec in (
            tf.DeviceSpec.from_string(op.device) for op in model.graph.get_operations()
            if condition(op))}

    for index in range(2):
        assert placed(lambda op: op.name.startswith(f'tower{index}/')
                      and op.type == 'Conv2D') == {('CPU', index)}
    assert placed(lambda op: op.type == 'VarHandleOp') == {('CPU', 0)}
    model.close()


def test_tower_sync_sums_each_layer_over_towers():
    graph = tf.Graph()
    with graph.as_default():
        sync = towers.TowerSync(3)

        def build(index):
            first, = sync.all_sum([tf.constant(float(index + 1))])
            second, = sync.all_sum([first * (index + 1)])  # a second round, after the first
            return first, second

        results = sync.build(build)
    with tf1.Session(graph=graph) as sess:
        values = sess.run(results)
    assert [first for first, _ in values] == [6.0, 6.0, 6.0]
    assert [second for _, second in values] == [36.0, 36.0, 36.0]


def test_tower_sync_reraises_a_tower_error_without_hanging():
    graph = tf.Graph()
    with graph.as_default():
        sync = towers.TowerSync(2)

        def build(index):
            if index == 1:
                raise ValueError('tower 1 broke')
            return sync.all_sum([tf.constant(1.0)])

        with pytest.raises(ValueError, match='tower 1 broke'):
            sync.build(build)


def test_tower_devices_fall_back_to_logical_cpus():
    assert towers.tower_devices(2, gpus=4) == ['/gpu:0', '/gpu:1']
    assert towers.tower_devices(2, gpus=1) == ['/cpu:0', '/cpu:1']
