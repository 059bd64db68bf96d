"""How close the training step comes to the machine's limit.

    python benchmarks/train_step.py [--flagfile=configs/celeba128.flags] [main.py flags]
        [--steps=20 --warmup=5 --matmul_size=2048 --label=...]

For the model of the flags, on one constant in-memory batch (the reader is measured
by reader_speed.py): the median training step time over --steps timed steps after
--warmup, images/s, FLOPs per image (TensorFlow's profiler on a traced step, and the
analytic count of benchmarks/flops.py), achieved GFLOP/s, and its share of the dense
float32 matmul GFLOP/s measured in the same process with the same thread settings;
then prior-sampling (predict) images/s and the peak RSS. Prints a table row and one
JSON line.
"""
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import main  # noqa: E402  (defines the model flags)
from benchmarks import flops as analytic  # noqa: E402

flags.DEFINE_integer('steps', 20, 'timed training steps')
flags.DEFINE_integer('warmup', 5, 'untimed training steps first')
flags.DEFINE_integer('matmul_size', 2048, 'n of the n×n float32 matmuls that measure the peak')
flags.DEFINE_integer('predict_batch', 256, 'prior samples per predict run')
flags.DEFINE_string('label', '', 'name of this configuration in the output')


def median_seconds(run, repeats):
    """Median wall time of `repeats` calls of run()."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def matmul_gflops(tf, session_config, size, repeats=10, chain=4):
    """Dense float32 matmul GFLOP/s: `chain` independent n×n products per run, median of
    `repeats` runs after one warm-up."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = tf1.get_variable('a', [size, size], initializer=tf1.random_normal_initializer())
        b = tf1.get_variable('b', [size, size], initializer=tf1.random_normal_initializer())
        # one element of each product is fetched: an unused product would be pruned
        products = tf.add_n([tf.matmul(a + float(i), b)[0, 0] for i in range(chain)])
        init = tf1.global_variables_initializer()
    with tf1.Session(graph=graph, config=session_config) as sess:
        sess.run(init)
        sess.run(products)
        seconds = median_seconds(lambda: sess.run(products), repeats)
    return 2 * size ** 3 * chain / seconds / 1e9


def traced_step(tf, model, batch):
    """RunMetadata of one traced training step."""
    tf1 = tf.compat.v1
    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    run_meta = tf1.RunMetadata()
    model.sess.run(model.net.train_op, {model.net.images: batch, model.net.training: True},
                   options=options, run_metadata=run_meta)
    return run_meta


def time_by_op_type(run_meta, top=8):
    """[(op type, share of the summed op time)] of a traced step, largest first (op
    times summed over threads: where the work goes, not the wall time)."""
    totals = {}
    for device in run_meta.step_stats.dev_stats:
        for node in device.node_stats:
            kind = node.timeline_label.split('(')[0].split(' = ')[-1].strip() or node.node_name
            totals[kind] = totals.get(kind, 0) + node.all_end_rel_micros
    whole = sum(totals.values()) or 1
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [(kind, micros / whole) for kind, micros in ranked]


def profiled_flops(tf, model, batch):
    """FLOPs of one training step as TensorFlow's profiler counts them: (all ops,
    Conv2D*/MatMul only; the rest, elementwise arithmetic, adds about 1%).

    The profiler reads each op's shapes from a traced run under the op's graph name.
    Grappler renames the ops it rewrites (fusions, layout changes), whose FLOPs would
    then go uncounted, so this step is traced in a session without graph rewrites.
    """
    tf1 = tf.compat.v1
    config = tf1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf1.Session(graph=model.graph, config=config) as sess:
        sess.run(model.init_op)
        options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
        run_meta = tf1.RunMetadata()
        sess.run(model.net.train_op, {model.net.images: batch, model.net.training: True},
                 options=options, run_metadata=run_meta)
    builder = tf1.profiler.ProfileOptionBuilder
    opts = builder(builder.float_operation()).with_empty_output().build()
    root = tf1.profiler.profile(model.graph, run_meta=run_meta, cmd='scope', options=opts)
    total = dense = 0
    nodes = list(root.children)
    while nodes:  # every node's own FLOPs, by its op's type
        node = nodes.pop()
        nodes.extend(node.children)
        total += node.float_ops
        op_type = model.graph.get_operation_by_name(node.name).type
        if op_type.startswith(('Conv2D', 'MatMul')):
            dense += node.float_ops
    return total, dense


def measure(conf, steps, warmup, matmul_size, predict_batch):
    """All the numbers of one configuration, as a dict."""
    import numpy as np
    runner = main.load_tensorflow_quietly()
    import tensorflow as tf
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (conf.batch, conf.height, conf.width, conf.channel)).astype(
        np.float32)
    for _ in range(warmup):
        model.train_step(batch)
    step_s = median_seconds(lambda: model.train_step(batch), steps)
    all_flops, dense_flops = profiled_flops(tf, model, batch)
    breakdown = time_by_op_type(traced_step(tf, model, batch))
    z = runner.prior_samples(conf.random_seed, predict_batch, conf.latent_len)
    model.sess.run(model.net.sample_outputs, {model.net.prior_z: z})
    predict_s = median_seconds(lambda: model.sess.run(model.net.sample_outputs,
                                                      {model.net.prior_z: z}), 5)
    config = getattr(model, 'session_config', None)
    model.close()
    peak = matmul_gflops(tf, config, matmul_size)
    per_image = dense_flops / conf.batch
    counted = analytic.count(conf)['train']
    # should the profiler still miss ops whose shapes it cannot read, the analytic count
    # (which otherwise agrees with it to ~1%) is used, and the output says so
    source = 'profiler' if abs(per_image - counted) <= 0.05 * counted else 'analytic'
    achieved = (per_image if source == 'profiler' else counted) / step_s * conf.batch / 1e9
    return {
        'step_ms': 1e3 * step_s, 'images_per_s': conf.batch / step_s,
        'train_gflop_per_image_profiler': per_image / 1e9,
        'train_gflop_per_image_profiler_all_ops': all_flops / conf.batch / 1e9,
        'train_gflop_per_image_analytic': counted / 1e9, 'flops_source': source,
        'achieved_gflops': achieved, 'matmul_gflops': peak, 'share_of_matmul': achieved / peak,
        'predict_images_per_s': predict_batch / predict_s,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'cpus': os.cpu_count(), 'batch': conf.batch,
        'size': f'{conf.height}x{conf.width}x{conf.channel}',
        'op_time_shares': {kind: round(share, 4) for kind, share in breakdown},
    }


def run(_):
    """Measures the configuration of the flags and prints the table row and JSON."""
    conf = main.config_from_flags()
    main.validate(conf)
    args = flags.FLAGS
    result = measure(conf, args.steps, args.warmup, args.matmul_size, args.predict_batch)
    result['label'] = args.label or f'{result["size"]} batch {conf.batch}'
    print('| config | step ms | images/s | GFLOP/img (profiler / analytic) | GFLOP/s | '
          'matmul GFLOP/s | share | predict img/s | peak RSS MB |')
    print(f'| {result["label"]} | {result["step_ms"]:.1f} | {result["images_per_s"]:.1f} | '
          f'{result["train_gflop_per_image_profiler"]:.4g} / '
          f'{result["train_gflop_per_image_analytic"]:.4g} | {result["achieved_gflops"]:.1f}'
          f'{"" if result["flops_source"] == "profiler" else " (analytic)"} | '
          f'{result["matmul_gflops"]:.1f} | {100 * result["share_of_matmul"]:.1f}% | '
          f'{result["predict_images_per_s"]:.0f} | {result["peak_rss_mb"]:.0f} |')
    print(json.dumps(result))


if __name__ == '__main__':
    app.run(run)
