"""Writing image datasets in the HDF5 layout that data_reader.py reads.

One dataset `images`, uint8 [N, height, width, channel], chunked so that one
chunk holds about CHUNK_BYTES of whole images, and attributes that say where
the images came from. The file is written under a temporary name and renamed
on success, so an interrupted write never leaves a half-written file under
the final name.
"""
import os

import h5py
import numpy as np

CHUNK_BYTES = 64 * 1024  # about one chunk per 64 KiB: a few MNIST digits per read, one CelebA face
BLOCK_ROWS = 4096  # images copied per write call


def chunk_rows(image_shape):
    """Images per HDF5 chunk for images of `image_shape` (height, width, channel)."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


def write_images(path, images, attrs=None):
    """Writes uint8 images [N, h, w, c] (an array or an h5py dataset) to `path`.

    attrs: a dict of attributes stored on the dataset. Returns `path`.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f'expected uint8 [N, h, w, c] images, got {images.dtype} '
                         f'{images.shape}')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f'{path}.partial-{os.getpid()}'
    try:
        with h5py.File(temporary, 'w') as handle:
            rows = min(chunk_rows(images.shape[1:]), len(images))
            dataset = handle.create_dataset('images', shape=images.shape, dtype=np.uint8,
                                            chunks=(rows,) + tuple(images.shape[1:]))
            for start in range(0, len(images), BLOCK_ROWS):
                dataset[start:start + BLOCK_ROWS] = images[start:start + BLOCK_ROWS]
            for key, value in (attrs or {}).items():
                dataset.attrs[key] = value
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
