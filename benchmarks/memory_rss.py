"""Peak memory (RSS) of training on a small and on a large HDF5 file.

    python benchmarks/memory_rss.py --flagfile=configs/celeba128.flags \\
        --source=/tmp/celeba_like_h5/celeba128_train.h5 [--small=1000 --large=50000 --steps=2]

Writes two files of --small and --large images (rows of --source repeated), then
trains --steps steps on each in a fresh process (the flags' model, no validation),
--repeats times alternating, and prints the median peak resident set size of each
and their difference. TensorFlow's own peak varies by a few hundred MB from run to
run with a large model; a smaller model (e.g. --start_channel_num=16) makes the
reader's share visible. The reader
streams files above --reader_memory_mb, so memory must not grow with the file.
"""
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import h5py  # noqa: E402

import main  # noqa: E402  (defines the model flags)
from utils.data.hdf5_writer import ImageFileWriter  # noqa: E402

flags.DEFINE_string('source', '', 'HDF5 file whose images fill the two test files')
flags.DEFINE_integer('small', 1000, 'images in the small file')
flags.DEFINE_integer('large', 50000, 'images in the large file')
flags.DEFINE_integer('steps', 2, 'training steps per run')
flags.DEFINE_integer('repeats', 3, 'runs per file, alternating between the two files')
FLAGS = flags.FLAGS

MEASURE = '''
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as done:
    if done.code:
        raise
print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def fill(path, source, count):
    """Writes `count` images taken from `source` in order, repeating it as needed."""
    with h5py.File(source, 'r') as handle:
        images = handle['images']
        with ImageFileWriter(path, images.shape[1:], count) as writer:
            while writer.count < count:
                take = min(4096, count - writer.count, images.shape[0])
                start = writer.count % (images.shape[0] - take + 1)
                writer.append(images[start:start + take])
            writer.commit({'source': source})


def peak_rss_mb(folder, name):
    """Trains --steps steps on folder/name in a new process; its peak RSS in MB."""
    args = [a for a in sys.argv[1:] if not a.startswith(('--source', '--small', '--large',
                                                         '--steps', '--repeats'))]
    command = [sys.executable, '-c', MEASURE, os.path.join(main.ROOT, 'main.py'), *args,
               f'--data_dir={folder}', f'--train_data={name}', '--valid_data=',
               f'--max_step={FLAGS.steps}', f'--save_step={FLAGS.steps}', '--fresh_start',
               f'--modeldir={folder}/model-{name}', f'--logdir={folder}/log-{name}',
               f'--sampledir={folder}/samples-{name}']
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    line = [x for x in done.stdout.splitlines() if x.startswith('peak_rss_kb')][-1]
    return int(line.split()[1]) / 1024


def run(_):
    folder = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(FLAGS.source)))
    names = {count: f'images{count}.h5' for count in (FLAGS.small, FLAGS.large)}
    for count, name in names.items():
        fill(os.path.join(folder, name), FLAGS.source, count)
    runs = {count: [] for count in names}
    for _ in range(FLAGS.repeats):
        for count, name in names.items():
            runs[count].append(peak_rss_mb(folder, name))
    medians = {}
    for count, name in names.items():
        size = os.path.getsize(os.path.join(folder, name)) / 2 ** 20
        medians[count] = statistics.median(runs[count])
        print(f'{count:6d} images ({size:6.0f} MB file): peak RSS median {medians[count]:7.0f} MB'
              f'  (runs: {", ".join(f"{r:.0f}" for r in runs[count])})')
        os.remove(os.path.join(folder, name))
    print(f'difference of the medians: {medians[FLAGS.large] - medians[FLAGS.small]:+.0f} MB '
          f'(reader_memory_mb={FLAGS.reader_memory_mb}, {FLAGS.steps} steps per run)')


if __name__ == '__main__':
    app.run(run)
