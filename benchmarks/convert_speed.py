"""Conversion speed: utils.data.prepare_data on every core against one process decoding alone.

    python benchmarks/make_celeba_like.py --output_dir=/tmp/celeba_like --count=20000
    python benchmarks/convert_speed.py --input_dir=/tmp/celeba_like [--repeats=3]

Three loops over the same files, alternating, after an untimed read that puts the
files in the page cache: one process decoding, cropping and resizing each file with
the converter's function and keeping nothing (the per-core decode limit); one
process doing that and writing the HDF5 file (the single-core converter); and
prepare_data on every core. The medians and the ratios are printed. Outputs go
beside --input_dir, on the same disk.
"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import numpy as np  # noqa: E402

from utils.data import image_files, prepare_data  # noqa: E402
from utils.data.hdf5_writer import ImageFileWriter  # noqa: E402

flags.DEFINE_string('input_dir', '/tmp/celeba_like', 'folder of CelebA-like JPEGs')
flags.DEFINE_integer('repeats', 3, 'timed runs of each')
flags.DEFINE_integer('size', 128, 'output height and width')
FLAGS = flags.FLAGS


def single_process(paths, size):
    """images/s of a plain loop over load_image."""
    began = time.perf_counter()
    for path in paths:
        image_files.load_image(path, size, size, 3)
    return len(paths) / (time.perf_counter() - began)


def single_process_writing(paths, size, folder):
    """images/s of a plain loop that also writes the images to an HDF5 file."""
    began = time.perf_counter()
    with ImageFileWriter(os.path.join(folder, 'single.h5'), (size, size, 3), len(paths)) as out:
        for start in range(0, len(paths), 64):
            out.append(np.stack([image_files.load_image(path, size, size, 3)
                                 for path in paths[start:start + 64]]))
        out.commit()
    os.remove(os.path.join(folder, 'single.h5'))
    return len(paths) / (time.perf_counter() - began)


def converter(paths, size, folder):
    """images/s of prepare_data.prepare (all cores, HDF5 written)."""
    outputs = [os.path.join(folder, f'{split}.h5') for split in prepare_data.SPLITS]
    began = time.perf_counter()
    prepare_data.prepare('celeba', FLAGS.input_dir, outputs, overwrite=True, height=size,
                         width=size, channel=3)
    return len(paths) / (time.perf_counter() - began)


def main(argv):
    del argv
    paths = image_files.find_images(FLAGS.input_dir)
    for path in paths:  # untimed: both loops start with the files in the page cache
        with open(path, 'rb') as handle:
            handle.read()
    single, writing, parallel = [], [], []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(FLAGS.input_dir))) \
            as folder:
        for _ in range(FLAGS.repeats):
            single.append(single_process(paths, FLAGS.size))
            writing.append(single_process_writing(paths, FLAGS.size, folder))
            parallel.append(converter(paths, FLAGS.size, folder))
    print(f'{len(paths)} JPEGs of {FLAGS.input_dir} -> {FLAGS.size}x{FLAGS.size}x3, '
          f'{os.cpu_count()} CPUs, {FLAGS.repeats} runs each')
    print(f'one process, decode only : median {statistics.median(single):7.1f} images/s  '
          f'(runs: {", ".join(f"{r:.0f}" for r in single)})')
    print(f'one process, decode+write: median {statistics.median(writing):7.1f} images/s  '
          f'(runs: {", ".join(f"{r:.0f}" for r in writing)})')
    print(f'prepare_data, all cores  : median {statistics.median(parallel):7.1f} images/s  '
          f'(runs: {", ".join(f"{r:.0f}" for r in parallel)})')
    median = statistics.median(parallel)
    print(f'ratio to decode only     : {median / statistics.median(single):.2f}')
    print(f'ratio to decode+write    : {median / statistics.median(writing):.2f}')


if __name__ == '__main__':
    app.run(main)
