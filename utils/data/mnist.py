"""MNIST-format IDX files (gzipped or raw) => the three HDF5 files main.py reads.

Split: train = the first 55,000 images of the IDX training set, valid = its
last 5,000, test = the 10,000 images of the IDX test set (the split of the
classic TensorFlow MNIST tutorial).
"""
import gzip
import json
import os

import numpy as np

from utils.run.errors import UserError
from utils.data.hdf5_writer import write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IDX_DIR = os.path.join(ROOT, 'data', 'mnist')  # the bundled MNIST IDX files
TRAIN_IMAGES = 'train-images-idx3-ubyte.gz'
TEST_IMAGES = 't10k-images-idx3-ubyte.gz'
NUM_VALID = 5000  # taken from the end of the IDX training set
UBYTE = 0x08  # IDX type code of unsigned bytes


class IdxError(UserError):
    """An IDX file is malformed or not an image file."""


def read_idx(path):
    """Reads an IDX file (gzipped when the name ends in .gz) into a numpy array."""
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as handle:
            data = handle.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise IdxError(f'{path} cannot be read ({err}): a truncated download or not a '
                       f'gzipped IDX file; fetch it again') from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f'{path} is not an IDX file (bad magic number)')
    if data[2] != UBYTE:
        raise IdxError(f'{path}: only unsigned-byte IDX data is supported')
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if len(data) != header + int(np.prod(dims)):
        raise IdxError(f'{path}: {len(data) - header} data bytes, expected {np.prod(dims)} '
                       f'for shape {dims} (truncated file?)')
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def write_idx(path, array):
    """Writes a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b''.join(
        int(d).to_bytes(4, 'big') for d in array.shape)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as handle:
        handle.write(header + array.tobytes())


def read_idx_images(path):
    """An IDX image file => uint8 [N, h, w, 1]."""
    images = read_idx(path)
    if images.ndim != 3:
        raise IdxError(f'{path} holds shape {images.shape}, not [N, h, w] images')
    return images[..., np.newaxis]


def convert(train_path, test_path, outputs, num_valid=NUM_VALID, expected_shape=None,
            before_writing=None):
    """IDX train/test image files => HDF5 files outputs = (train, valid, test).

    expected_shape: (height, width, channel) the flags ask for; the IDX images must
    have it. before_writing(counts) runs once the counts are known, before the first
    write (a check that may raise). Returns the number of images written to each.
    """
    train = read_idx_images(train_path)
    test = read_idx_images(test_path)
    found = train.shape[1:]
    if expected_shape is not None and tuple(expected_shape) != found:
        raise IdxError(f'the IDX images are {found[0]}x{found[1]}x{found[2]} but the flags '
                       f'say {expected_shape[0]}x{expected_shape[1]}x{expected_shape[2]}: '
                       f'pass --height={found[0]} --width={found[1]} --channel={found[2]}')
    if test.shape[1:] != found:
        raise IdxError(f'{test_path} holds {test.shape[1:]} images, {train_path} {found}')
    if not 0 < num_valid < len(train):
        raise IdxError(f'cannot take {num_valid} valid images from {len(train)}')
    cut = len(train) - num_valid
    pieces = ((train[:cut], train_path, f'0:{cut}'),
              (train[cut:], train_path, f'{cut}:{len(train)}'),
              (test, test_path, f'0:{len(test)}'))
    counts = dict(zip(('train', 'valid', 'test'), (cut, num_valid, len(test))))
    if before_writing is not None:
        before_writing(list(counts.values()))
    for output, split, (images, source, rows) in zip(outputs, counts, pieces):
        write_images(output, images, attrs={
            'source': 'idx', 'source_file': os.path.basename(source), 'rows': rows,
            'split': split, 'split_counts': json.dumps(counts), 'crop': 'none',
            'height': found[0], 'width': found[1], 'channel': found[2],
            'skipped_count': 0, 'skipped_files': '[]'})
    return tuple(counts.values())
