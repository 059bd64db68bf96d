"""The shipped model, pretrained/mnist: it samples and reconstructs right after install,
with no training and no data preparation of one's own."""
import glob
import os

import numpy as np
import pytest
from PIL import Image

import main
from conftest import ROOT
from utils.data import mnist, prepare_data
from utils.evaluation import metrics
from utils.run import checkpoints, preflight

PRETRAINED = os.path.join(ROOT, 'pretrained', 'mnist')


def test_the_shipped_model_is_small_and_inference_only():
    steps = checkpoints.saved_steps(PRETRAINED, 'msvae')
    assert len(steps) == 1
    files = glob.glob(os.path.join(PRETRAINED, '*'))
    assert sum(os.path.getsize(path) for path in files) < 10e6
    assert checkpoints.load_config(PRETRAINED)['num_stages'] == 2


def test_predict_from_the_shipped_model_gives_digit_like_samples(tmp_path):
    conf = main.default_config(action='predict', modeldir=PRETRAINED, num_samples=64,
                               sampledir=str(tmp_path / 'samples'))
    folder = main.run(conf)
    paths = sorted(glob.glob(os.path.join(folder, 'sample_*.png')))
    assert len(paths) == 64
    samples = np.stack([np.asarray(Image.open(path), np.float64) / 255 for path in paths])
    # MNIST digits: white strokes on black, about 13% mean intensity, most pixels black
    # (a model that is untrained or broken gives grey noise or blank images)
    assert 0.05 < samples.mean() < 0.25
    assert (samples < 0.1).mean() > 0.6 and (samples > 0.5).mean() > 0.05
    assert samples.std(axis=0).mean() > 0.1  # the samples differ from each other


def test_reconstruct_from_the_shipped_model_makes_the_test_split_and_fits_it(tmp_path):
    data_dir = tmp_path / 'data'  # the default split names: made from the bundled IDX files
    conf = main.default_config(action='reconstruct', modeldir=PRETRAINED, num_samples=32,
                               data_dir=str(data_dir), sampledir=str(tmp_path / 'samples'))
    folder = main.run(conf)
    assert os.path.exists(data_dir / 'mnist_test.h5')
    load = lambda pattern: np.stack([  # noqa: E731
        np.asarray(Image.open(p), np.float64)[..., None] / 127.5 - 1
        for p in sorted(glob.glob(os.path.join(folder, pattern)))])
    inputs, refined = load('input_*.png'), load('stage2_*.png')
    assert len(inputs) == len(refined) == 32
    assert metrics.psnr(inputs, refined).mean() > 15  # dB: the digits come back
    assert mnist.IDX_DIR.startswith(ROOT)


@pytest.fixture(scope='module')
def mnist_files(tmp_path_factory):
    """The bundled MNIST as HDF5 files, made once for this module."""
    folder = tmp_path_factory.mktemp('mnist')
    prepare_data.prepare('idx', mnist.IDX_DIR, [str(folder / name)
                                                for name in preflight.MNIST_FILES])
    return folder


@pytest.mark.parametrize('action', ['interpolate', 'encode'])
def test_interpolate_and_encode_run_on_the_shipped_model(mnist_files, tmp_path, action):
    conf = main.default_config(action=action, modeldir=PRETRAINED, data_dir=str(mnist_files),
                               sampledir=str(tmp_path / 'samples'), encode_split='valid')
    assert os.path.exists(main.run(conf))
