"""Image quality metrics: checked against direct numpy/scipy sums and against TF's SSIM."""
import math

import numpy as np
import pytest
from scipy import ndimage, signal

from utils.evaluation import metrics

SIGMAS = (0.5, 1.0, 2.0, 4.0)


def _tf_eval(fn, *arrays):
    """fn(*tensors) evaluated to numpy, whether or not eager execution is on
    (importing `network` turns it off for the whole test session)."""
    tf = pytest.importorskip('tensorflow')
    if tf.executing_eagerly():
        return fn(*[tf.constant(a) for a in arrays]).numpy()
    graph = tf.Graph()
    with graph.as_default():
        result = fn(*[tf.constant(a) for a in arrays])
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(result)


def _unit(images):
    return np.clip((np.asarray(images, np.float64) + 1) / 2, 0, 1)


def _smooth_field(rng, shape, sigma=2.0):
    """Random smooth images in [-1, 1]: blurred noise stretched to the range."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, sigma, sigma, 0))
    low, high = noise.min(), noise.max()
    return 2 * (noise - low) / (high - low) - 1


def _pairs(shape, seed=0):
    """Targets and predictions of four kinds: unrelated noise, a noisy blurred
    copy, an inverted copy (negative cs, so MS-SSIM clamps to 0) and a shifted copy."""
    rng = np.random.default_rng(seed)
    noise_t, noise_p = rng.uniform(-1, 1, (2, 1) + shape)
    field = _smooth_field(rng, (1,) + shape)
    blurred = ndimage.gaussian_filter(field, sigma=(0, 1, 1, 0))
    noisy = np.clip(blurred + rng.normal(0, 0.1, blurred.shape), -1, 1)
    targets = np.concatenate([noise_t, field, field, field])
    predictions = np.concatenate([noise_p, noisy, -field, np.roll(field, 2, axis=2)])
    return targets, predictions


def _weights(scales):
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])[:scales]
    return weights / weights.sum()


def _blurred_set(rng, size=64):
    """A random-valued checkerboard, a random straight edge and noise, each
    blurred by SIGMAS: [3, len(SIGMAS), size, size, 1].

    64 pixels rather than 32, and random cells rather than a regular
    checkerboard: at sigma 4 almost nothing above 0.25 cycles/pixel is left, and
    on smaller images (or with a single tone near the cutoff) the Hann window's
    leakage, not the blur, then sets the high-frequency share.
    """
    ys, xs = np.mgrid[0:size, 0:size] - (size - 1) / 2
    cells = np.kron(rng.uniform(-1, 1, (size // 4, size // 4)), np.ones((4, 4)))
    angle = rng.uniform(0, np.pi)
    edge = np.where(xs * np.cos(angle) + ys * np.sin(angle) > rng.uniform(-6, 6), 0.7, -0.6)
    noise = rng.uniform(-1, 1, (size, size))
    images = [[ndimage.gaussian_filter(image, sigma) for sigma in SIGMAS]
              for image in (cells, edge, noise)]
    return np.array(images)[..., None]


def _sinusoid(frequency, size=64):
    xs = np.arange(size)
    wave = 0.8 * np.sin(2 * np.pi * frequency * xs)
    return np.tile(wave, (size, 1))[None, :, :, None]


def test_to_unit_maps_and_clips():
    np.testing.assert_allclose(metrics.to_unit([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]),
                               [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])
    assert metrics.to_unit(np.zeros(2, np.float32)).dtype == np.float64


def test_grayscale_uses_bt601_luma():
    rgb = np.zeros((1, 2, 2, 3))
    rgb[0, 0, 0] = [0.5, -0.2, 0.9]  # [0, 1]: 0.75, 0.4, 0.95
    gray = metrics.grayscale(rgb)
    assert gray.shape == (1, 2, 2)
    assert gray[0, 0, 0] == pytest.approx(0.299 * 0.75 + 0.587 * 0.4 + 0.114 * 0.95)
    assert gray[0, 1, 1] == pytest.approx(0.299 * 0.5 + 0.587 * 0.5 + 0.114 * 0.5)
    single = np.full((1, 2, 2, 1), 0.5)
    np.testing.assert_allclose(metrics.grayscale(single), np.full((1, 2, 2), 0.75))
    with pytest.raises(ValueError):
        metrics.grayscale(np.zeros((1, 2, 2, 2)))


def test_psnr_matches_uint8_formula():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 8, 9, 3))
    b = np.clip(a + rng.integers(-20, 21, a.shape), 0, 255)
    expected = [10 * math.log10(255 ** 2 / np.mean((x - y) ** 2)) for x, y in zip(a, b)]
    got = metrics.psnr(a / 127.5 - 1, b / 127.5 - 1)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_psnr_of_identical_images_is_large():
    images = np.random.default_rng(2).uniform(-1, 1, (2, 6, 6, 1))
    assert (metrics.psnr(images, images) >= 100).all()
    # Values beyond [-1, 1] are clipped first, so these two are the same image.
    assert metrics.psnr(np.full((1, 4, 4, 1), 2.0), np.ones((1, 4, 4, 1)))[0] >= 100


@pytest.mark.parametrize('shape', [(28, 28, 1), (32, 32, 3), (48, 48, 3), (45, 47, 3),
                                   (96, 96, 1), (176, 176, 1)])
def test_ssim_and_ms_ssim_match_tensorflow(shape):
    targets, predictions = _pairs(shape, seed=sum(shape))
    scales = metrics.ms_ssim_scales(*shape[:2])
    weights = _weights(scales)

    def reference(a, b):
        import tensorflow as tf
        return tf.stack([tf.image.ssim(a, b, max_val=1.0),
                         tf.image.ssim_multiscale(a, b, max_val=1.0, power_factors=weights)])

    want_ssim, want_ms = _tf_eval(reference, _unit(targets), _unit(predictions))
    # TF works in float32; on small maps its rounding reaches ~2e-5.
    np.testing.assert_allclose(metrics.ssim(targets, predictions), want_ssim, atol=1e-4)
    got_ms = metrics.ms_ssim(targets, predictions)
    np.testing.assert_allclose(got_ms, want_ms, atol=1e-4)
    assert got_ms[2] == 0  # the inverted copy: negative cs, clamped
    assert want_ssim[1] > 0.3 and want_ms[1] > 0.5  # the blurred copy is similar


@pytest.mark.parametrize('shape', [(11, 11, 1), (20, 17, 3)])
def test_ssim_matches_a_direct_float64_computation(shape):
    """Full 2-D window built as TF does (softmax of -d²/2σ² over the 11×11 grid),
    plain 'valid' 2-D correlation, one channel at a time."""
    targets, predictions = _pairs(shape, seed=11)
    offsets = np.arange(11) - 5.0
    logits = -(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5 ** 2)
    window = np.exp(logits) / np.exp(logits).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = []
    for target, prediction in zip(_unit(targets), _unit(predictions)):
        per_channel = []
        for x, y in zip(np.moveaxis(target, -1, 0), np.moveaxis(prediction, -1, 0)):
            mean = lambda image: signal.correlate(image, window, mode='valid')  # noqa: E731
            mx, my = mean(x), mean(y)
            vx, vy, cxy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
            ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)
                        / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
            per_channel.append(ssim_map.mean())
        expected.append(np.mean(per_channel))
    np.testing.assert_allclose(metrics.ssim(targets, predictions), expected, rtol=1e-10)


def test_ssim_of_an_image_with_itself_is_one():
    images = _smooth_field(np.random.default_rng(3), (2, 24, 24, 3))
    np.testing.assert_allclose(metrics.ssim(images, images), 1.0, atol=1e-12)
    np.testing.assert_allclose(metrics.ms_ssim(images, images), 1.0, atol=1e-12)


def test_ssim_needs_the_window_to_fit():
    small = np.zeros((1, 10, 30, 1))
    with pytest.raises(ValueError):
        metrics.ssim(small, small)
    with pytest.raises(ValueError):
        metrics.ms_ssim(small, small)


@pytest.mark.parametrize('size, scales', [(11, 1), (21, 1), (22, 2), (28, 2), (64, 3),
                                          (128, 4), (176, 5), (256, 5)])
def test_ms_ssim_scales(size, scales):
    assert metrics.ms_ssim_scales(size, size) == scales


def test_ms_ssim_scales_uses_the_smaller_side_and_rejects_tiny_images():
    assert metrics.ms_ssim_scales(200, 30) == 2
    with pytest.raises(ValueError):
        metrics.ms_ssim_scales(10, 64)


def test_laplacian_variance_matches_scipy():
    rng = np.random.default_rng(4)
    images = rng.uniform(-1, 1, (3, 12, 10, 3))
    unit = _unit(images)
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    expected = []
    for image in unit:
        gray = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
        expected.append(signal.convolve2d(gray, kernel, mode='valid').var())
    np.testing.assert_allclose(metrics.laplacian_variance(images), expected, rtol=1e-10)


def test_gradient_energy_matches_numpy_diff():
    images = np.random.default_rng(5).uniform(-1, 1, (3, 7, 9, 1))
    gray = _unit(images)[..., 0]
    expected = [np.mean(np.diff(g, axis=1) ** 2) + np.mean(np.diff(g, axis=0) ** 2)
                for g in gray]
    np.testing.assert_allclose(metrics.gradient_energy(images), expected, rtol=1e-10)


@pytest.mark.parametrize('measure', [metrics.laplacian_variance, metrics.gradient_energy,
                                     metrics.high_frequency_ratio])
def test_sharpness_measures_fall_with_blur(measure):
    for series in _blurred_set(np.random.default_rng(6)):
        values = measure(series)
        assert (np.diff(values) < 0).all(), (measure.__name__, values)


def test_high_frequency_ratio_matches_a_direct_dft():
    """Spectrum from explicit DFT matrices, frequencies from signed bin indices."""
    images = np.random.default_rng(12).uniform(-1, 1, (2, 12, 15, 3))
    expected = []
    for image in _unit(images):
        gray = image @ [0.299, 0.587, 0.114]
        height, width = gray.shape
        windowed = (gray - gray.mean()) * np.outer(np.hanning(height), np.hanning(width))
        dft = [np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)
               for n in (height, width)]
        power = np.abs(dft[0] @ windowed @ dft[1].T) ** 2
        signed = [np.where(np.arange(n) < (n + 1) // 2, np.arange(n), np.arange(n) - n) / n
                  for n in (height, width)]
        radius = np.sqrt(signed[0][:, None] ** 2 + signed[1][None, :] ** 2)
        expected.append(power[radius > 0.3].sum() / power.sum())
    np.testing.assert_allclose(metrics.high_frequency_ratio(images, cutoff=0.3), expected,
                               rtol=1e-9)


def test_high_frequency_ratio_of_sinusoids_and_constants():
    assert metrics.high_frequency_ratio(_sinusoid(0.05))[0] < 0.01
    assert metrics.high_frequency_ratio(_sinusoid(0.4))[0] > 0.9
    constants = np.stack([np.full((16, 16, 1), value) for value in (-1.0, 0.3, 0.77)])
    np.testing.assert_array_equal(metrics.high_frequency_ratio(constants), 0.0)


def test_sharpness_returns_the_means():
    images = _blurred_set(np.random.default_rng(7)).reshape(-1, 64, 64, 1)
    summary = metrics.sharpness(images)
    assert summary == pytest.approx({
        'laplacian_variance': metrics.laplacian_variance(images).mean(),
        'gradient_energy': metrics.gradient_energy(images).mean(),
        'high_frequency_ratio': metrics.high_frequency_ratio(images).mean()})
    assert all(type(value) is float for value in summary.values())


def test_reconstruction_quality_returns_the_means():
    targets, predictions = _pairs((16, 16, 3), seed=8)
    summary = metrics.reconstruction_quality(targets, predictions)
    assert summary == pytest.approx({
        'psnr': metrics.psnr(targets, predictions).mean(),
        'ssim': metrics.ssim(targets, predictions).mean(),
        'ms_ssim': metrics.ms_ssim(targets, predictions).mean()})
    assert all(type(value) is float for value in summary.values())


def test_reconstruction_quality_of_tiny_images_has_only_psnr():
    targets, predictions = _pairs((8, 8, 1), seed=9)
    summary = metrics.reconstruction_quality(targets, predictions)
    assert list(summary) == ['psnr']
    assert summary['psnr'] == pytest.approx(metrics.psnr(targets, predictions).mean())


def test_chunking_does_not_change_results(monkeypatch):
    targets, predictions = _pairs((24, 20, 3), seed=10)
    whole = (metrics.psnr(targets, predictions), metrics.ms_ssim(targets, predictions),
             metrics.sharpness(predictions))
    monkeypatch.setattr(metrics, '_CHUNK_ELEMENTS', 24 * 20 * 3 + 1)  # one image a chunk
    chunked = (metrics.psnr(targets, predictions), metrics.ms_ssim(targets, predictions),
               metrics.sharpness(predictions))
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-12)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-12)
    assert chunked[2] == pytest.approx(whole[2], rel=1e-12)


def test_shape_mismatch_and_empty_sets_are_refused():
    with pytest.raises(ValueError):
        metrics.psnr(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 5, 1)))
    with pytest.raises(ValueError):
        metrics.sharpness(np.zeros((0, 4, 4, 1)))
    assert metrics.psnr(np.zeros((0, 4, 4, 1)), np.zeros((0, 4, 4, 1))).shape == (0,)


def test_bits_per_dim():
    dims = 28 * 28
    assert metrics.bits_per_dim(dims * math.log(2) * 3, dims) == pytest.approx(3.0)
    np.testing.assert_allclose(metrics.bits_per_dim([0.0, dims * math.log(2)], dims), [0, 1])
    with pytest.raises(ValueError):
        metrics.bits_per_dim(1.0, 0)
