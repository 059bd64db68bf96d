"""The HDF5 reader: each image once per epoch in a new seeded order, values, errors."""
import h5py
import numpy as np
import pytest

import data_reader
from utils.data import hdf5_images
from utils.data.hdf5_writer import write_images

N = 50  # images; the batch of 16 does not divide it, so batches cross epochs


@pytest.fixture
def numbered(tmp_path):
    """A file whose image i holds the value i in every pixel."""
    images = np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None],
                             (N, 4, 3, 1)).copy()
    return write_images(str(tmp_path / 'numbered.h5'), images)


def ids_of(batch):
    return np.rint((batch[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def read_stream(path, batches, **kwargs):
    with data_reader.BatchReader(path, 4, 3, 1, 16, seed=7, **kwargs) as reader:
        return [reader.next_batch() for _ in range(batches)]


def test_each_image_once_per_epoch_in_a_new_order(numbered):
    batches = read_stream(numbered, 10)  # 160 images: three whole epochs and a bit
    assert all(b.shape == (16, 4, 3, 1) and b.dtype == np.float32 for b in batches)
    stream = np.concatenate([ids_of(b) for b in batches])
    epochs = [stream[e * N:(e + 1) * N] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(N))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(N))


def test_values_are_in_minus_one_to_one(tmp_path):
    values = np.array([0, 1, 127, 128, 254, 255], np.uint8)
    path = write_images(str(tmp_path / 'v.h5'), values.reshape(6, 1, 1, 1))
    with data_reader.BatchReader(path, 1, 1, 1, 6, seed=0) as reader:
        got = np.sort(reader.next_batch().ravel())
    np.testing.assert_allclose(got, values / 127.5 - 1.0, rtol=0, atol=1e-6)
    assert got[0] == -1.0 and got[-1] == 1.0


def test_order_is_fixed_by_seed_and_start_step(numbered):
    first = read_stream(numbered, 6)
    again = read_stream(numbered, 6)
    resumed = read_stream(numbered, 2, start_step=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed[0], first[4])
    np.testing.assert_array_equal(resumed[1], first[5])
    with data_reader.BatchReader(numbered, 4, 3, 1, 16, seed=8) as reader:
        assert not np.array_equal(reader.next_batch(), first[0])


def test_streamed_and_in_memory_reads_agree(numbered):
    in_memory = read_stream(numbered, 5)
    streamed = read_stream(numbered, 5, memory_limit_mb=0)
    for a, b in zip(in_memory, streamed):
        np.testing.assert_array_equal(a, b)


def test_chunk_reads_with_several_images_per_chunk(numbered):
    with h5py.File(numbered, 'r') as handle:
        images = handle['images']
        assert images.chunks[0] > 1 and data_reader.whole_image_chunks(images)
        order = np.array([49, 0, 7, 7, 48, 1])
        np.testing.assert_array_equal(data_reader.read_chunks(images, order)[:, 0, 0, 0], order)


def test_sequential_batches_in_file_order(numbered):
    batches = list(hdf5_images.sequential_batches(numbered, 4, 3, 1, 16, limit=40))
    assert [len(b) for b in batches] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([ids_of(b) for b in batches]), np.arange(40))


def test_read_rows_any_order_and_repeats(numbered):
    with h5py.File(numbered, 'r') as handle:
        rows = data_reader.read_rows(handle['images'], np.array([9, 2, 9, 0]))
    np.testing.assert_array_equal(rows[:, 0, 0, 0], [9, 2, 9, 0])


def make_file(path, **datasets):
    with h5py.File(path, 'w') as handle:
        for name, value in datasets.items():
            handle[name] = value
    return str(path)


@pytest.mark.parametrize('content, message', [
    (None, 'not found'),
    ('garbage', 'not a readable HDF5 file'),
    ({'pixels': np.zeros((2, 4, 3, 1), np.uint8)}, 'no dataset "images"'),
    ({'images': np.zeros((2, 4, 3, 1), np.float32)}, 'expected uint8'),
    ({'images': np.zeros((2, 4, 3), np.uint8)}, 'expected [N, height, width, channel]'),
    ({'images': np.zeros((0, 4, 3, 1), np.uint8)}, 'holds no images'),
    ({'images': np.zeros((2, 4, 3, 3), np.uint8)}, 'set --channel=3'),
    ({'images': np.zeros((2, 5, 3, 1), np.uint8)}, 'set --height=5'),
])
def test_clear_errors(tmp_path, content, message):
    path = tmp_path / 'bad.h5'
    if content == 'garbage':
        path.write_bytes(b'not hdf5 at all')
    elif content is not None:
        make_file(path, **content)
    with pytest.raises(hdf5_images.DataError, match=message.replace('[', r'\[')):
        hdf5_images.open_images(str(path), 4, 3, 1)


def test_a_read_failing_mid_run_is_a_clear_error(numbered):
    """An I/O error in the prefetch thread (a failing disk, a lost network mount) reaches
    the training loop as a DataError naming the file, not as a bare h5py traceback."""
    class FailingImages:  # every use fails, whichever read function the thread holds
        def __getitem__(self, item):
            raise OSError("Can't synchronously read data (file read failed)")

        def __getattr__(self, name):
            raise OSError("Can't synchronously read data (file read failed)")
    reader = data_reader.BatchReader(numbered, 4, 3, 1, 16, seed=0, prefetch=1,
                                     memory_limit_mb=0)
    try:
        reader.next_batch()
        reader._images, reader._read = FailingImages(), data_reader.read_rows
        with pytest.raises(hdf5_images.DataError, match='reading .*numbered.h5 failed.*recreate'):
            for _ in range(5):
                reader.next_batch()
    finally:
        reader.close()


def test_streaming_one_image_chunks_covers_each_epoch_exactly(tmp_path):
    """A file larger than the reader's memory limit, one 128x128x3 image per chunk: the
    direct chunk reads visit each image once per epoch over several epochs, and give
    the batches the in-memory path gives."""
    count = 40
    images = np.zeros((count, 128, 128, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    images[:, 64:, :, 1] = np.arange(count)[:, None, None]  # content beyond the first row
    path = write_images(str(tmp_path / 'faces.h5'), images)
    with h5py.File(path, 'r') as handle:
        assert handle['images'].chunks == (1, 128, 128, 3)
        assert data_reader.whole_image_chunks(handle['images'])
    read = {}
    for limit in (0, 512):  # streamed (limit below the 2 MB file) and in memory
        with data_reader.BatchReader(path, 128, 128, 3, 16, seed=3,
                                     memory_limit_mb=limit) as reader:
            read[limit] = [reader.next_batch() for _ in range(10)]  # 160 images: 4 epochs
    for a, b in zip(read[0], read[512]):
        np.testing.assert_array_equal(a, b)
    stream = np.concatenate([ids_of(b) for b in read[0]])
    epochs = [stream[e * count:(e + 1) * count] for e in range(4)]
    assert all(sorted(order) == list(range(count)) for order in epochs)
    assert len({tuple(order) for order in epochs}) == 4
    rows = np.concatenate(read[0])
    np.testing.assert_array_equal(np.rint((rows[:, 100, 5, 1] + 1) * 127.5), stream)
