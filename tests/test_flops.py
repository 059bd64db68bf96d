"""The analytic FLOP count of benchmarks/flops.py against TensorFlow's profiler on a
traced training step, for every kind of stage. (The profiler miscounts NCHW
convolutions; the benchmark then falls back to the analytic count.)"""
import numpy as np
import pytest
import tensorflow as tf

import runner
from benchmarks import flops
from benchmarks.train_step import profiled_flops


@pytest.mark.parametrize('options', [
    dict(),
    dict(num_stages=1, decoder='plain'),
    dict(num_stages=3, refine_net='resnet', coarse_scale=1),
    dict(num_stages=3, refine_net='resnet', refine_channel_num=2),
    dict(refine_channel_num=8),
    dict(upsample='transpose'),
    dict(fused_batch_norm=True),
])
def test_analytic_count_matches_the_profiler(tiny_conf, options):
    conf = tiny_conf(**options)
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    batch = np.zeros((conf.batch, conf.height, conf.width, conf.channel), np.float32)
    _, dense = profiled_flops(tf, model, batch)
    model.close()
    counted = flops.count(conf)
    # the profiler counts every Conv2D / MatMul of the step (forward and both gradients);
    # transposed convolutions differ by a few % at the borders of these tiny images
    assert dense / conf.batch == pytest.approx(counted['train'], rel=0.05)
    assert counted['train'] < 3 * counted['forward']
