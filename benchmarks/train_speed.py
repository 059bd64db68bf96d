"""Training speed of a flag setting: images/s, median over timed windows.

    python benchmarks/train_speed.py [--flagfile=...] [main.py flags] [--windows=5 --window_steps=20]

Times two loops on the same model: steps fed from the HDF5 reader (what training
does) and steps on one constant in-memory batch (the graph alone), after warm-up
steps. Prints the median of each and their ratio.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import main  # noqa: E402  (defines the model flags)
from utils.run import preflight  # noqa: E402

flags.DEFINE_integer('windows', 5, 'timed windows per loop')
flags.DEFINE_integer('window_steps', 20, 'training steps per window')
flags.DEFINE_integer('warmup_steps', 10, 'untimed steps before each loop')


def time_windows(step, windows, steps_per_window, batch):
    """images/s of each window of `steps_per_window` calls of step()."""
    rates = []
    for _ in range(windows):
        began = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        rates.append(steps_per_window * batch / (time.perf_counter() - began))
    return rates


def run(_):
    """Builds the model of the flags and prints the two medians."""
    conf = main.config_from_flags()
    main.validate(conf)
    preflight.check_training_data(conf)
    runner = main.load_tensorflow_quietly()
    import data_reader
    model = runner.Runner(conf)
    model.sess.run(model.init_op)
    path = os.path.join(conf.data_dir, conf.train_data)
    windows, per_window = flags.FLAGS.windows, flags.FLAGS.window_steps
    with data_reader.BatchReader(path, conf.height, conf.width, conf.channel, conf.batch,
                                 conf.random_seed,
                                 memory_limit_mb=conf.reader_memory_mb) as reader:
        constant = reader.next_batch()
        for _ in range(flags.FLAGS.warmup_steps):
            model.train_step(reader.next_batch())
        fed = time_windows(lambda: model.train_step(reader.next_batch()), windows,
                           per_window, conf.batch)
    in_memory = time_windows(lambda: model.train_step(constant), windows, per_window,
                             conf.batch)
    model.close()
    fed_median, memory_median = statistics.median(fed), statistics.median(in_memory)
    print(f'{conf.height}x{conf.width}x{conf.channel}, batch {conf.batch}, depth '
          f'{conf.network_depth}, start channels {conf.start_channel_num}, latent '
          f'{conf.latent_len}; {windows} windows of {per_window} steps, {os.cpu_count()} CPUs')
    print(f'training with the reader : median {fed_median:8.1f} images/s  '
          f'(windows: {", ".join(f"{r:.3g}" for r in fed)})')
    print(f'one in-memory batch      : median {memory_median:8.1f} images/s  '
          f'(windows: {", ".join(f"{r:.3g}" for r in in_memory)})')
    print(f'reader / in-memory       : {fed_median / memory_median:.3f}')


if __name__ == '__main__':
    app.run(run)
