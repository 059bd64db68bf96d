"""Makes the HDF5 files main.py reads.

    python -m utils.prepare_data --source=idx [--input_dir=data/mnist] \\
        [--data_dir=data --train_data=mnist_train.h5 --valid_data=... --test_data=...]

The data flags have the names and meanings of main.py's, so one --flagfile
serves both. Sources:
  idx: MNIST-format IDX image files (gzipped or raw) in input_dir:
       train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]. train and
       valid come from the training file (valid = its last --num_valid images),
       test is the test file.
"""
import os
import sys

from absl import app, flags

from utils import mnist
from utils.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags (defined only when run as a command: main.py has flags
    of the same names)."""
    flags.DEFINE_enum('source', 'idx', ['idx'], 'kind of input')
    flags.DEFINE_string('input_dir', mnist.IDX_DIR, 'folder of the input files')
    flags.DEFINE_integer('num_valid', mnist.NUM_VALID, 'idx: training images moved to the valid split')
    flags.DEFINE_boolean('overwrite', False, 'replace existing output files')
    flags.DEFINE_string('data_dir', 'data', 'output folder')
    flags.DEFINE_string('train_data', 'mnist_train.h5', 'output file of the training split')
    flags.DEFINE_string('valid_data', 'mnist_valid.h5', 'output file of the validation split')
    flags.DEFINE_string('test_data', 'mnist_test.h5', 'output file of the test split')


def find_idx(input_dir, stem):
    """The path of input_dir/stem or input_dir/stem.gz."""
    for name in (stem + '.gz', stem):
        path = os.path.join(input_dir, name)
        if os.path.isfile(path):
            return path
    raise UserError(f'no {stem}[.gz] in {input_dir}: point --input_dir at the IDX files')


def prepare(source, input_dir, outputs, overwrite=False, num_valid=mnist.NUM_VALID):
    """Writes the three split files `outputs` (train, valid, test); returns their sizes."""
    existing = [path for path in outputs if os.path.exists(path)]
    if existing and not overwrite:
        raise UserError(f'{", ".join(existing)} already exist: pass --overwrite to replace them')
    if source != 'idx':
        raise UserError(f'unknown --source={source}')
    return mnist.convert(find_idx(input_dir, 'train-images-idx3-ubyte'),
                         find_idx(input_dir, 't10k-images-idx3-ubyte'), outputs, num_valid)


def main(argv):
    """Command-line entry: one error line and exit status 2 on wrong input."""
    del argv
    outputs = [os.path.join(FLAGS.data_dir, name)
               for name in (FLAGS.train_data, FLAGS.valid_data, FLAGS.test_data)]
    try:
        counts = prepare(FLAGS.source, FLAGS.input_dir, outputs, FLAGS.overwrite,
                         FLAGS.num_valid)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for path, count in zip(outputs, counts):
        print(f'{path}: {count} images')
    return 0


if __name__ == '__main__':
    define_flags()
    app.run(main)
