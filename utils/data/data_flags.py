"""The data flags that main.py and utils.data.prepare_data share (defined once, by
whichever command loads first), so that one flag file serves both."""
from absl import flags


def define():
    """Defines data_dir, the three split names, height, width, channel and random_seed
    (once per process)."""
    if 'data_dir' in flags.FLAGS:
        return
    flags.DEFINE_string('data_dir', 'data', 'folder of the HDF5 files')
    flags.DEFINE_string('train_data', 'mnist_train.h5', 'HDF5 file of the training split, '
                        'in data_dir')
    flags.DEFINE_string('valid_data', 'mnist_valid.h5', 'HDF5 file of the validation split, '
                        'in data_dir ("" = no validation)')
    flags.DEFINE_string('test_data', 'mnist_test.h5', 'HDF5 file of the test split, in '
                        'data_dir')
    flags.DEFINE_integer('channel', 1, 'image channels: 1 (grayscale) or 3 (RGB)')
    flags.DEFINE_integer('height', 28, 'image height in pixels')
    flags.DEFINE_integer('width', 28, 'image width in pixels')
    flags.DEFINE_integer('random_seed', 1234, 'seed of initialisation, data order, noise and '
                         'samples (and of the split of prepare_data)')

