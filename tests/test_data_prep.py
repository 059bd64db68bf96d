"""IDX reading/writing, MNIST IDX => HDF5, and the atomic HDF5 writer."""
import gzip
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import main
from utils.data import mnist
from utils.run import preflight
from utils.data.hdf5_writer import chunk_rows, write_images


@pytest.mark.parametrize('name', ['a.idx', 'a.idx.gz'])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = str(tmp_path / name)
    mnist.write_idx(path, array)
    if name.endswith('.gz'):
        with gzip.open(path, 'rb') as handle:
            assert handle.read(4) == bytes([0, 0, 8, 3])
    np.testing.assert_array_equal(mnist.read_idx(path), array)


def test_idx_errors(tmp_path):
    bad = tmp_path / 'bad.idx'
    bad.write_bytes(b'\x01\x02\x08\x01\x00\x00\x00\x02ab')
    with pytest.raises(mnist.IdxError, match='magic'):
        mnist.read_idx(str(bad))
    short = tmp_path / 'short.idx'
    mnist.write_idx(str(short), np.zeros((4, 2, 2), np.uint8))
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(mnist.IdxError, match='truncated'):
        mnist.read_idx(str(short))
    labels = tmp_path / 'labels.idx'
    mnist.write_idx(str(labels), np.zeros(5, np.uint8))
    with pytest.raises(mnist.IdxError, match='not \\[N, h, w\\] images'):
        mnist.read_idx_images(str(labels))


def test_idx_to_hdf5_split_and_content(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (30, 6, 5), dtype=np.uint8)
    test = rng.integers(0, 256, (9, 6, 5), dtype=np.uint8)
    mnist.write_idx(str(tmp_path / 'train.gz'), train)
    mnist.write_idx(str(tmp_path / 'test.gz'), test)
    outputs = [str(tmp_path / 'out' / f'{s}.h5') for s in ('train', 'valid', 'test')]
    assert mnist.convert(str(tmp_path / 'train.gz'), str(tmp_path / 'test.gz'), outputs,
                         num_valid=8) == (22, 8, 9)
    for path, expected, rows in zip(outputs, (train[:22], train[22:], test),
                                    ('0:22', '22:30', '0:9')):
        with h5py.File(path, 'r') as handle:
            images = handle['images']
            assert images.dtype == np.uint8 and images.shape == (*expected.shape, 1)
            np.testing.assert_array_equal(images[...], expected[..., None])
            assert images.chunks[1:] == (6, 5, 1)
            assert images.attrs['source'] == 'idx' and images.attrs['rows'] == rows
    assert sorted(os.listdir(tmp_path / 'out')) == ['test.h5', 'train.h5', 'valid.h5']


def test_chunks_hold_whole_images_near_64_kib():
    assert chunk_rows((28, 28, 1)) == 83
    assert chunk_rows((128, 128, 3)) == 1


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / 'out.h5'

    class Exploding:
        dtype, ndim, shape = np.dtype(np.uint8), 4, (10, 2, 2, 1)

        def __len__(self):
            return 10

        def __getitem__(self, item):
            raise RuntimeError('disk gone')
    with pytest.raises(RuntimeError):
        write_images(str(target), Exploding())
    assert os.listdir(tmp_path) == []


def test_first_default_run_makes_the_bundled_mnist_files(tmp_path, capsys):
    conf = main.default_config(data_dir=str(tmp_path))
    preflight.check_training_data(conf)
    said = capsys.readouterr().out
    assert said.count('\n') == 1 and 'making' in said
    counts = {}
    for name in preflight.MNIST_FILES:
        with h5py.File(tmp_path / name, 'r') as handle:
            counts[name] = handle['images'].shape
            sample = handle['images'][:100]
        assert sample.std() > 50  # real digits: black background, white strokes
    assert counts == {'mnist_train.h5': (55000, 28, 28, 1), 'mnist_valid.h5': (5000, 28, 28, 1),
                      'mnist_test.h5': (10000, 28, 28, 1)}
    before = os.path.getmtime(tmp_path / 'mnist_train.h5')
    preflight.check_training_data(conf)
    assert capsys.readouterr().out == ''
    assert os.path.getmtime(tmp_path / 'mnist_train.h5') == before


def test_prepare_data_command_makes_files_and_never_overwrites(tmp_path):
    train = np.random.default_rng(2).integers(0, 256, (40, 4, 4), dtype=np.uint8)
    mnist.write_idx(str(tmp_path / 'train-images-idx3-ubyte'), train)  # raw, not gzipped
    mnist.write_idx(str(tmp_path / 't10k-images-idx3-ubyte.gz'), train[:10])
    command = [sys.executable, '-m', 'utils.data.prepare_data', '--source=idx',
               f'--input_dir={tmp_path}', f'--data_dir={tmp_path / "out"}', '--num_valid=15',
               '--height=4', '--width=4']
    done = subprocess.run(command, capture_output=True, text=True, cwd=main.ROOT)
    assert done.returncode == 0, done.stderr
    assert 'mnist_train.h5: 25 images' in done.stdout
    with h5py.File(tmp_path / 'out' / 'mnist_valid.h5', 'r') as handle:
        np.testing.assert_array_equal(handle['images'][..., 0], train[25:])
    before = (tmp_path / 'out' / 'mnist_train.h5').read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, cwd=main.ROOT)
    assert again.returncode == 2
    assert again.stderr.strip().count('\n') == 0 and '--overwrite' in again.stderr
    assert (tmp_path / 'out' / 'mnist_train.h5').read_bytes() == before
