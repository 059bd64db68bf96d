"""Feature extraction speed of the FID Inception network (utils/evaluation/inception.py):
images/s, median over timed repeats, for some input sizes and batch sizes.

    python benchmarks/inception_speed.py [--batches=25,50,100] [--sizes=28x28x1,128x128x3]
        [--repeats=5]

Each repeat extracts the features of `batch` random images in one call, after one
untimed warm-up call per setting. Every input is resized to 299×299 first, so the
input size barely matters; the network costs 5.71 G multiply-adds (11.4 GFLOP) per
image. Runs on the CPU (tensorflow-cpu); TensorFlow uses a GPU when one is present.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from utils.evaluation import inception, inception_weights  # noqa: E402
from utils.run import tf_setup  # noqa: E402



def parse_size(text):
    """'28x28x1' => (28, 28, 1)."""
    height, width, channel = (int(part) for part in text.split('x'))
    return height, width, channel


def images_per_second(network, images, repeats):
    """The rate of each of `repeats` calls on `images`."""
    network(images)  # warm-up: graph optimisation and memory allocation
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        network(images)
        rates.append(len(images) / (time.perf_counter() - began))
    return rates


def main():
    """Prints one line per (size, batch): the median images/s and the spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', default='25,50,100', help='images per call')
    parser.add_argument('--sizes', default='28x28x1,128x128x3', help='HxWxC input sizes')
    parser.add_argument('--repeats', type=int, default=5, help='timed calls per setting')
    args = parser.parse_args()
    arrays = inception_weights.load_weights()
    rng = np.random.default_rng(0)
    devices = 'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'
    print(f'tensorflow {tf.__version__} on {devices}, {os.cpu_count()} CPU cores')
    for size in map(parse_size, args.sizes.split(',')):
        for batch in map(int, args.batches.split(',')):
            images = rng.uniform(-1, 1, (batch,) + size).astype(np.float32)
            with inception.InceptionFeatures(size[2], arrays, batch=batch) as network:
                rates = images_per_second(network, images, args.repeats)
            print(f'{"x".join(map(str, size)):10s} batch {batch:4d}: median '
                  f'{statistics.median(rates):6.1f} images/s (min {min(rates):.1f}, '
                  f'max {max(rates):.1f}, {args.repeats} repeats)')


if __name__ == '__main__':
    tf_setup.setup()
    main()
