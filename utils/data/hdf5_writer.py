"""Writing image datasets in the HDF5 layout that data_reader.py reads.

One dataset `images`, uint8 [N, height, width, channel], chunked so that one
chunk holds about CHUNK_BYTES of whole images, and attributes that say where
the images came from. A file is written under a temporary name and renamed
on success, so an interrupted write never leaves a half-written file under
the final name.
"""
import os

import h5py
import numpy as np

from utils.run import atomic

CHUNK_BYTES = 64 * 1024  # about one chunk per 64 KiB: a few MNIST digits per read, one CelebA face
BLOCK_ROWS = 4096  # images copied per write call
MAX_ATTRIBUTE_NAMES = 500  # list at most this many skipped files in an attribute (HDF5 keeps
#                            attributes under 64 KiB); the full list goes to a text file


def chunk_rows(image_shape):
    """Images per HDF5 chunk for images of `image_shape` (height, width, channel)."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


class ImageFileWriter:
    """Appends uint8 images to a new HDF5 file under a temporary name; commit() sets the
    attributes and renames it to `path`, close() without commit() deletes it.

        with ImageFileWriter(path, (h, w, c)) as writer:
            writer.append(block)        # [n, h, w, c] uint8, any number of times
            writer.commit(attrs)
    """

    def __init__(self, path, image_shape, expected_count=BLOCK_ROWS):
        self.path = path
        self.image_shape = tuple(int(n) for n in image_shape)
        self.count = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.temporary = atomic.partial_path(path)
        self._handle = h5py.File(self.temporary, 'w')
        rows = max(1, min(chunk_rows(self.image_shape), expected_count))
        self._images = self._handle.create_dataset(
            'images', shape=(max(expected_count, 1),) + self.image_shape,
            maxshape=(None,) + self.image_shape, dtype=np.uint8,
            chunks=(rows,) + self.image_shape)

    def append(self, block):
        """Appends uint8 images [n, h, w, c]."""
        block = np.asarray(block)
        if block.dtype != np.uint8 or block.shape[1:] != self.image_shape:
            raise ValueError(f'expected uint8 [n, {self.image_shape}] images, got '
                             f'{block.dtype} {block.shape}')
        end = self.count + len(block)
        if end > self._images.shape[0]:
            self._images.resize(max(end, 2 * self._images.shape[0]), axis=0)
        self._images[self.count:end] = block
        self.count = end

    def commit(self, attrs=None):
        """Trims the dataset to the images appended, stores `attrs` on it, and renames
        the file into place."""
        self._images.resize(self.count, axis=0)
        for key, value in (attrs or {}).items():
            self._images.attrs[key] = value
        self._handle.close()
        atomic.publish(self.temporary, self.path)

    def close(self):
        """Closes the file; deletes it unless commit() renamed it."""
        self._images = None  # the dataset goes before its file (HDF5 after a failed write)
        if self._handle.id.valid:
            try:
                self._handle.close()
            except (OSError, RuntimeError):  # a full disk fails the close's flush too
                pass
        atomic.discard(self.temporary)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_images(path, images, attrs=None):
    """Writes uint8 images [N, h, w, c] (an array or an h5py dataset) to `path`.

    attrs: a dict of attributes stored on the dataset. Returns `path`.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f'expected uint8 [N, h, w, c] images, got {images.dtype} '
                         f'{images.shape}')
    with ImageFileWriter(path, images.shape[1:], expected_count=len(images)) as writer:
        for start in range(0, len(images), BLOCK_ROWS):
            writer.append(images[start:start + BLOCK_ROWS])
        writer.commit(attrs)
    return path
