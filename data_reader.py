"""HDF5 image reading for training: shuffled, streamed, prefetched batches in [-1, 1].

A data file holds one dataset `images`: uint8, [N, height, width, channel]
(utils.data.hdf5_images checks it against the flags and reads it in file order,
for validation and evaluation).

Training order. The reader walks an endless stream that is the concatenation
of one permutation of range(N) per epoch; the permutation of epoch e is drawn
from a generator seeded by (random_seed, e). A batch is the next `batch`
positions of the stream, so it may span two epochs, every epoch still visits
each image exactly once, and the batch of training step s is fixed by (seed, s):
a resumed run reads exactly the batches an uninterrupted run would.

Memory. Files up to `memory_limit_mb` are read whole once; larger files are
read batch by batch, image by image in the batch's random order, so memory does
not grow with the number of images. When the HDF5 chunks hold whole images
unfiltered (the layout utils.data.hdf5_writer writes: one CelebA 128x128x3 image per
chunk) each image is taken from one direct chunk read; otherwise one sorted HDF5
selection per batch (several times slower). benchmarks/reader_speed.py measures these against reading contiguous
blocks (the access pattern a block-shuffling buffer would use). A background
thread assembles batches into a bounded queue so that reading overlaps the
training step.
"""
import queue
import threading

import h5py
import numpy as np

from utils.data.hdf5_images import DataError, open_images, read, to_float

DEFAULT_MEMORY_LIMIT_MB = 512  # files up to this size are loaded whole


def epoch_permutation(num_images, seed, epoch):
    """The visiting order of epoch `epoch`: a permutation of range(num_images)."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


class IndexStream:
    """Image indices of the training stream, `batch` at a time, from a start position."""

    def __init__(self, num_images, batch, seed, start_step=0):
        self.num_images = num_images
        self.batch = batch
        self.seed = seed
        self.position = start_step * batch
        self._epoch = None
        self._order = None

    def _order_of(self, epoch):
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_permutation(
                self.num_images, self.seed, epoch)
        return self._order

    def next(self):
        """The next `batch` indices of the stream (they may cross into a new epoch)."""
        parts, needed = [], self.batch
        while needed:
            epoch, offset = divmod(self.position, self.num_images)
            take = min(needed, self.num_images - offset)
            parts.append(self._order_of(epoch)[offset:offset + take])
            self.position += take
            needed -= take
        return np.concatenate(parts)


def read_rows(images, indices):
    """images[indices] for any index order, with one sorted HDF5 read."""
    unique, inverse = np.unique(indices, return_inverse=True)
    return images[unique][inverse]


def whole_image_chunks(images):
    """True when the HDF5 chunks hold whole images and are unfiltered (the layout of
    utils.data.hdf5_writer): a chunk's raw bytes are then `chunks[0]` images."""
    return (isinstance(images, h5py.Dataset) and images.chunks is not None
            and images.chunks[1:] == images.shape[1:]
            and images.id.get_create_plist().get_nfilters() == 0)


def read_chunks(images, indices):
    """images[indices] in the given order by direct chunk reads, each chunk read once per
    call; several times faster than an HDF5 selection of scattered rows. Needs
    whole_image_chunks(images)."""
    shape, rows = images.shape[1:], images.chunks[0]
    out = np.empty((len(indices),) + shape, np.uint8)
    chunks = {}
    for row, index in enumerate(int(i) for i in indices):
        first = index - index % rows
        if first not in chunks:
            try:
                _, data = images.id.read_direct_chunk((first,) + (0,) * len(shape))
                chunks[first] = np.frombuffer(data, np.uint8).reshape((rows,) + shape)
            except (KeyError, OSError, ValueError):  # a chunk never written: HDF5 fills it
                chunks[first] = images[first:first + rows]
        out[row] = chunks[first][index - first]
    return out


class BatchReader:
    """Endless shuffled training batches from one HDF5 file, prefetched in a thread.

    The first next_batch() returns the batch of the training step that follows
    global step `start_step`, the next one the batch after it, and so on.
    """

    def __init__(self, path, height, width, channel, batch, seed, start_step=0,
                 prefetch=8, memory_limit_mb=DEFAULT_MEMORY_LIMIT_MB):
        self.path = path
        self._file, images = open_images(path, height, width, channel)
        self.num_images = images.shape[0]
        if images.size <= memory_limit_mb * 2 ** 20:
            try:
                images = read(images, Ellipsis, path)
            except DataError:
                self._file.close()
                raise
        self._images = images
        self._read = read_chunks if whole_image_chunks(images) else read_rows
        self._stream = IndexStream(self.num_images, batch, seed, start_step)
        self._queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True,
                                        name='batch-reader')
        self._thread.start()

    def _fill(self):
        try:
            while not self._stop.is_set():
                batch = to_float(self._read(self._images, self._stream.next()))
                self._put(batch)
        except (OSError, KeyError, ValueError) as err:  # h5py's ways of failing a read
            self._put(DataError(f'reading {self.path} failed ({err}); the file may be '
                                f'damaged: recreate it with python -m utils.data.prepare_data'))
        except Exception as err:  # handed to the consumer, which re-raises it
            self._put(err)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_batch(self):
        """The next float32 batch [batch, height, width, channel] in [-1, 1]."""
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        """Stops the prefetch thread and closes the file."""
        self._stop.set()
        self._thread.join()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
