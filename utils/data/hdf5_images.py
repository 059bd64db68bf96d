"""The HDF5 image files of the project: checking one against the flags, and reading
its images in file order (validation, evaluation, reference features).

A data file holds one dataset `images`: uint8, [N, height, width, channel]
(utils.data.hdf5_writer writes it). Images come out as float32 in [-1, 1].
"""
import os

import h5py
import numpy as np

from utils.run.errors import UserError

DATASET = 'images'


class DataError(UserError):
    """A data file is missing or does not match the flags; the message says how to fix it."""


def to_float(images):
    """uint8 [0, 255] => float32 [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def open_images(path, height, width, channel):
    """Opens `path` and checks its `images` dataset against the flags.

    Returns (h5py.File, dataset). Raises DataError naming the problem and
    the fix when the file is missing, unreadable, or of the wrong dtype/shape.
    """
    if os.path.isdir(path):
        raise DataError(f'data file {path} is a folder, not an HDF5 file: point the file '
                        f'name flags at its .h5 files, or convert its images with python -m '
                        f'utils.data.prepare_data --source=folder')
    if not os.path.isfile(path):
        raise DataError(f'data file {path} not found: check --data_dir and the '
                        f'file name flags, or make it with python -m utils.data.prepare_data')
    try:
        handle = h5py.File(path, 'r')
    except OSError as err:
        if 'unable to lock file' in str(err).lower():  # a good file that a writer has open
            raise DataError(f'{path} is open for writing by another process (HDF5 file '
                            f'lock): wait until it is written, or if no process writes it, '
                            f'run with HDF5_USE_FILE_LOCKING=FALSE') from None
        raise DataError(f'{path} is not a readable HDF5 file ({err}); '
                        f'recreate it with python -m utils.data.prepare_data') from None
    try:
        images = _check_images(handle, path, (height, width, channel))
    except DataError:
        handle.close()
        raise
    return handle, images


def _check_images(handle, path, expected):
    if DATASET not in handle or not isinstance(handle[DATASET], h5py.Dataset):
        raise DataError(f'{path} has no dataset "{DATASET}"; recreate it with '
                        f'python -m utils.data.prepare_data')
    images = handle[DATASET]
    if images.dtype != np.uint8:
        raise DataError(f'{path}: "{DATASET}" is {images.dtype}, expected uint8 '
                        f'in [0, 255]; recreate it with python -m utils.data.prepare_data')
    if images.ndim != 4:
        raise DataError(f'{path}: "{DATASET}" has shape {images.shape}, expected '
                        f'[N, height, width, channel]; recreate it with python -m '
                        f'utils.data.prepare_data')
    if images.shape[0] == 0:
        raise DataError(f'{path}: "{DATASET}" holds no images; point the data flags at a '
                        f'split with images, or recreate it with python -m utils.data.prepare_data')
    found = tuple(images.shape[1:])
    if found != tuple(expected):
        fix = ' '.join(f'--{name}={value}' for name, value, want in
                       zip(('height', 'width', 'channel'), found, expected)
                       if value != want)
        raise DataError(f'{path} holds {found[0]}x{found[1]}x{found[2]} images but '
                        f'the flags say {expected[0]}x{expected[1]}x{expected[2]}: '
                        f'set {fix} or use matching data')
    return images


def sequential_batches(path, height, width, channel, batch, limit=None):
    """Yields float32 batches of the first `limit` images (all if None), in file order.

    For validation and evaluation, which must see the same images every time.
    The last batch may be smaller.
    """
    handle, images = open_images(path, height, width, channel)
    with handle:
        count = images.shape[0] if limit is None else min(limit, images.shape[0])
        for start in range(0, count, batch):
            yield to_float(read(images, slice(start, min(start + batch, count)), path))


def read(images, rows, path):
    """images[rows]; DataError when the file's bytes there cannot be read (a damaged chunk)."""
    try:
        return images[rows]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f'reading {path} failed ({str(err)[:120]}); the file is damaged: '
                        f'recreate it with python -m utils.data.prepare_data') from None
