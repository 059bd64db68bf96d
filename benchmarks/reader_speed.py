"""Reader speed on a large HDF5 file, against the training step of a flag setting.

    python -m utils.data.prepare_data --source=celeba --input_dir=/tmp/celeba_like \\
        --flagfile=configs/celeba128.flags --data_dir=/tmp/celeba_like_h5
    python benchmarks/reader_speed.py --flagfile=configs/celeba128.flags \\
        --data_dir=/tmp/celeba_like_h5 [--seconds=10 --train_steps=3]

Batches/s at --batch of (a) the training reader streaming the file (memory limit 0,
prefetch thread, float conversion included); and of bare access patterns without
the thread: (b) random images by direct chunk reads (what the reader does),
(c) random images by one sorted HDF5 selection per batch, (d) contiguous blocks
of `batch` images at random offsets (what a block-shuffling buffer reads). Then
the training step rate of the flags on one constant batch, and the ratio of (a)
to it. Each figure is the median of --repeats runs of about --seconds each.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402

import data_reader  # noqa: E402
from utils.data import hdf5_images  # noqa: E402
import main  # noqa: E402  (defines the model flags)

flags.DEFINE_float('seconds', 10.0, 'length of one timed run')
flags.DEFINE_integer('repeats', 3, 'timed runs per figure')
flags.DEFINE_integer('train_steps', 3, 'timed training steps per run (after one warm-up)')
FLAGS = flags.FLAGS


def rate(step, seconds):
    """Calls step() for about `seconds`; returns calls per second."""
    began, calls = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - began)


def median_rate(step, seconds, repeats):
    runs = [rate(step, seconds) for _ in range(repeats)]
    return statistics.median(runs), runs


def access_patterns(path, batch, rng):
    """name => a function that reads one batch of uint8 images in that pattern."""
    handle = h5py.File(path, 'r')
    images = handle['images']
    count = images.shape[0]
    patterns = {
        'random images, direct chunk reads': lambda: data_reader.read_chunks(
            images, rng.integers(0, count, batch)),
        'random images, sorted HDF5 selection': lambda: data_reader.read_rows(
            images, rng.integers(0, count, batch)),
    }
    patterns['contiguous blocks at random offsets'] = lambda: block(images, count, batch, rng)
    return handle, patterns


def block(images, count, batch, rng):
    start = int(rng.integers(0, count - batch))
    return images[start:start + batch]


def training_rate(conf):
    """Training steps/s of the flags' model on one constant random batch."""
    runner = main.load_tensorflow_quietly()
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    batch = np.random.default_rng(0).uniform(
        -1, 1, (conf.batch, conf.height, conf.width, conf.channel)).astype(np.float32)
    model.train_step(batch)
    runs = []
    for _ in range(FLAGS.repeats):
        began = time.perf_counter()
        for _ in range(FLAGS.train_steps):
            model.train_step(batch)
        runs.append(FLAGS.train_steps / (time.perf_counter() - began))
    model.close()
    return statistics.median(runs), runs


def run(_):
    conf = main.config_from_flags()
    path = os.path.join(conf.data_dir, conf.train_data)
    handle, images = hdf5_images.open_images(path, conf.height, conf.width, conf.channel)
    count, size_mb = images.shape[0], images.size / 2 ** 20
    print(f'{path}: {count} images {conf.height}x{conf.width}x{conf.channel} '
          f'({size_mb:.0f} MB, chunks {images.chunks}), batch {conf.batch}, '
          f'{os.cpu_count()} CPUs')
    handle.close()
    with data_reader.BatchReader(path, conf.height, conf.width, conf.channel, conf.batch,
                                 conf.random_seed, memory_limit_mb=0) as reader:
        reader_rate, runs = median_rate(reader.next_batch, FLAGS.seconds, FLAGS.repeats)
    print(f'(a) training reader, streaming      : {reader_rate:8.1f} batches/s  '
          f'(runs: {", ".join(f"{r:.1f}" for r in runs)})')
    rng = np.random.default_rng(0)
    handle, patterns = access_patterns(path, conf.batch, rng)
    for label, (name, read) in zip('bcd', patterns.items()):
        value, runs = median_rate(read, FLAGS.seconds, FLAGS.repeats)
        print(f'({label}) {name:36s}: {value:8.1f} batches/s  '
              f'(runs: {", ".join(f"{r:.1f}" for r in runs)})')
    handle.close()
    steps, runs = training_rate(conf)
    print(f'training steps of the flags' + ' ' * 10 + f': {steps:8.3f} steps/s  '
          f'(runs: {", ".join(f"{r:.3f}" for r in runs)})')
    print(f'reader / training                   : {reader_rate / steps:8.1f}x')


if __name__ == '__main__':
    app.run(run)
