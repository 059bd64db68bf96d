"""Shared fixtures: tiny synthetic image files and tiny model settings."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main  # noqa: E402
from utils.run import tf_setup  # noqa: E402
from helpers import blob_images  # noqa: E402
from utils.data.hdf5_writer import write_images  # noqa: E402

tf_setup.setup()  # graph mode, as main.py runs


def pytest_configure(config):
    """The marker of the tests that run alone: -m serial after -n 2 -m 'not serial'."""
    config.addinivalue_line('markers', 'serial: timing-sensitive; run outside the parallel '
                                       'part of the suite')


@pytest.fixture(scope='session', autouse=True)
def fid_cache(tmp_path_factory):
    """Converted Inception weights and reference features go to a folder of this test
    session (also for the commands the tests start), not to the user's cache."""
    folder = tmp_path_factory.mktemp('msvae_cache')
    before = os.environ.get('MSVAE_CACHE_DIR')
    os.environ['MSVAE_CACHE_DIR'] = str(folder)
    yield folder
    if before is None:
        del os.environ['MSVAE_CACHE_DIR']
    else:
        os.environ['MSVAE_CACHE_DIR'] = before


TINY = dict(height=16, width=16, channel=1, network_depth=2, start_channel_num=4,
            latent_len=4, batch=8, max_step=10, save_step=5, test_step=5, summary_step=5,
            valid_images=16, num_samples=6, train_data='train.h5', valid_data='valid.h5',
            test_data='test.h5')


@pytest.fixture
def tiny_data(tmp_path):
    """A data_dir with train.h5 (96 blobs) and valid.h5 (32 blobs), 16×16×1."""
    data_dir = tmp_path / 'data'
    write_images(str(data_dir / 'train.h5'), blob_images(96, seed=1))
    write_images(str(data_dir / 'valid.h5'), blob_images(32, seed=2))
    return data_dir


@pytest.fixture
def tiny_conf(tmp_path, tiny_data):
    """make(**overrides) => a RunConfig of a tiny model on tiny_data, outputs under tmp_path."""
    def make(**overrides):
        values = dict(TINY, data_dir=str(tiny_data), modeldir=str(tmp_path / 'model'),
                      logdir=str(tmp_path / 'log'), sampledir=str(tmp_path / 'samples'))
        values.update(overrides)
        return main.default_config(**values)
    return make
