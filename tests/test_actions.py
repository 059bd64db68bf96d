"""--action=interpolate, encode and export on a tiny trained model."""
import glob
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import main
import runner
from helpers import blob_images
from utils.data.hdf5_writer import write_images
from utils.run import checkpoints, images

PAIRS, STEPS = 2, 5


@pytest.fixture
def trained(tiny_conf, tiny_data):
    """The RunConfig of a tiny model trained 10 steps, with a 40-image test split."""
    write_images(str(tiny_data / 'test.h5'), blob_images(40, seed=4))
    conf = tiny_conf(valid_data='')
    assert main.run(conf) == conf.max_step
    return conf


def restored(conf):
    model = runner.Runner(conf)
    model.restore(0)
    return model


def test_linear_and_spherical_paths():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    for path in (runner.lerp(a, b, 7), runner.slerp(a, b, 7)):
        assert path.shape == (3, 7, 6)
        np.testing.assert_allclose(path[:, 0], a, atol=1e-12)
        np.testing.assert_allclose(path[:, -1], b, atol=1e-12)
    np.testing.assert_allclose(runner.lerp(a, b, 3)[:, 1], (a + b) / 2)
    # on the circle through two orthogonal unit vectors every point keeps norm 1
    x, y = np.eye(2)[:1], np.eye(2)[1:]
    np.testing.assert_allclose(np.linalg.norm(runner.slerp(x, y, 9), axis=2), 1.0)
    np.testing.assert_allclose(runner.slerp(x, x, 4)[0], np.repeat(x, 4, axis=0))


def test_interpolation_end_points_are_the_reconstructions_of_the_pair(trained):
    conf = trained.replace(action='interpolate', interpolation_pairs=PAIRS,
                           interpolation_steps=STEPS)
    folder = main.run(conf)
    model = restored(conf)
    inputs = np.concatenate(list(model.test_batches(2 * PAIRS)))
    means, _ = model.encode_batch(inputs)
    reconstructions = model.sample_batch(means)  # decoded at z = mean, every stage
    _, test_paths, prior_paths = runner.interpolation_images(model, PAIRS, STEPS)
    model.close()
    for stage, path in enumerate(test_paths):
        path = path.reshape((PAIRS, STEPS) + path.shape[1:])
        np.testing.assert_allclose(path[:, 0], reconstructions[stage][0::2], atol=1e-5)
        np.testing.assert_allclose(path[:, -1], reconstructions[stage][1::2], atol=1e-5)
        assert not np.allclose(path[:, 1], path[:, 0], atol=1e-3)  # it moves between them
    # the grid: per pair a band of the inputs row and one row per stage, STEPS wide
    with Image.open(os.path.join(folder, 'test_pairs.png')) as picture:
        grid = np.asarray(picture)
    side = 16 + images.GAP
    assert grid.shape[:2] == (PAIRS * 3 * side - images.GAP + images.BAND_GAP,
                              STEPS * side - images.GAP)
    band = 3 * side + images.BAND_GAP  # where the second pair's band starts
    last_stage_end = grid[band + 2 * side:band + 2 * side + 16, (STEPS - 1) * side:][:, :16]
    expected = images.to_uint8(reconstructions[-1][3])[..., 0]
    np.testing.assert_array_equal(last_stage_end.reshape(16, 16, -1)[..., 0], expected)
    with Image.open(os.path.join(folder, 'prior_pairs.png')) as picture:
        assert picture.size == (STEPS * side - images.GAP,
                                PAIRS * 2 * side - images.GAP + images.BAND_GAP)
    assert len(prior_paths) == 2 and prior_paths[0].shape == (PAIRS * STEPS, 16, 16, 1)


def test_encode_writes_every_image_mean_and_std(trained):
    conf = trained.replace(action='encode', batch=6)  # 40 images: a short last batch
    path = main.run(conf)
    assert os.path.basename(path) == 'test_latents.h5'
    model = restored(conf)
    first = np.concatenate(list(model.test_batches(5)))
    mean, std = model.encode_batch(first)
    model.close()
    with h5py.File(path, 'r') as handle:
        assert handle['mean'].shape == handle['std'].shape == (40, conf.latent_len)
        np.testing.assert_array_equal(handle['index'][:], np.arange(40))
        assert handle.attrs['step'] == 10 and handle.attrs['split'] == 'test'
        assert handle.attrs['source'].endswith('test.h5')
        assert np.all(np.isfinite(handle['mean'][:])) and np.all(handle['std'][:] > 0)
        np.testing.assert_allclose(handle['mean'][:5], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(handle['std'][:5], std, rtol=1e-5, atol=1e-6)
    assert not glob.glob(path + '.partial*')


def test_export_is_smaller_loads_alone_and_predicts_the_same(trained, tmp_path):
    target = tmp_path / 'exported'
    main.run(trained.replace(action='export', export_dir=str(target)))
    exported = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(target)))
    names = exported.get_variable_to_shape_map()
    assert not any('Adam' in name or 'power' in name for name in names)
    assert any('moving_variance' in name for name in names) and 'global_step' in names
    size = lambda folder: sum(os.path.getsize(p) for p in  # noqa: E731
                              glob.glob(os.path.join(folder, 'msvae-10.*')))
    assert size(target) < 0.5 * size(trained.modeldir)
    assert checkpoints.load_config(str(target))['latent_len'] == trained.latent_len
    grids = []
    for modeldir in (trained.modeldir, str(target)):
        folder = main.run(trained.replace(action='predict', modeldir=modeldir,
                                          sampledir=str(tmp_path / os.path.basename(modeldir))))
        with open(os.path.join(folder, 'grid.png'), 'rb') as handle:
            grids.append(handle.read())
    assert grids[0] == grids[1]
