"""Image quality metrics in numpy + scipy: reconstruction fidelity and sharpness.

Images come in as float arrays [n, h, w, c] in [-1, 1] (c = 1 or 3), the
project's convention. Every metric first maps them to [0, 1] with
(x + 1) / 2, clipped, and works in float64, so a data range of 1 here is a
peak-to-peak range of 2 on the [-1, 1] scale.

Per-image metrics return an array [n]. Large sets (say 10,000 images of
128×128×3) are processed a few images at a time, so the float64 working
copies stay small; the inputs may be anything that slices like an array
(an ndarray, a memmap, an h5py dataset).

SSIM and MS-SSIM follow tf.image.ssim / tf.image.ssim_multiscale exactly
(same window, 'valid' filtering, pooling and clamping), only in float64.
"""
import math

import numpy as np

WINDOW_SIZE = 11  # SSIM's Gaussian window, as in Wang et al. 2004 and TF
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
MSE_FLOOR = 1e-10  # caps PSNR at 100 dB instead of dividing by zero
FLAT_RMS = 1e-12  # windowed RMS below this counts as a constant image
HF_CUTOFF = 0.25  # cycles/pixel: half the Nyquist frequency

# Elements (n·h·w·c) converted to float64 at once: 2**20 is 8 MiB per working
# array, and SSIM keeps about a dozen of them alive.
_CHUNK_ELEMENTS = 2 ** 20


def to_unit(images):
    """[-1, 1] => [0, 1] as float64, clipped to [0, 1]."""
    return np.clip((np.asarray(images, np.float64) + 1.0) / 2.0, 0.0, 1.0)


def grayscale(images):
    """[n, h, w, c] in [-1, 1] => [n, h, w] in [0, 1] (BT.601 luma for c = 3)."""
    unit = to_unit(images)
    _check_rank(unit)
    if unit.shape[-1] == 1:
        return unit[..., 0]
    if unit.shape[-1] == 3:
        return unit @ np.asarray(LUMA)
    raise ValueError('grayscale needs 1 or 3 channels, got %d' % unit.shape[-1])


def psnr(targets, predictions):
    """Per-image PSNR in dB, shape [n]: 10·log10(1 / MSE) on the [0, 1] scale.

    MSE is floored at 1e-10, so identical images score 100 dB.
    """
    return _map_pairs(_psnr, targets, predictions)


def ssim(targets, predictions):
    """Per-image SSIM (Wang et al. 2004), shape [n].

    11×11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
    'valid' filtering (no padding). The SSIM map is averaged over positions,
    per channel, then over channels. Matches tf.image.ssim(a, b, max_val=1.0)
    on the [0, 1] images. Raises ValueError when h or w is below 11.
    """
    targets, predictions = _checked_pair(targets, predictions)
    _check_window_fits(*targets.shape[1:3])
    return _map_pairs(lambda x, y: _pyramid(x, y, 1)[0], targets, predictions)


def ms_ssim_scales(height, width):
    """Number of MS-SSIM scales for an image size: 1 to 5.

    The largest s <= 5 with min(h, w) / 2**(s - 1) >= 11, i.e. the coarsest
    scale still holds the 11×11 window. Raises ValueError below 11 pixels,
    where not even single-scale SSIM fits.
    """
    _check_window_fits(height, width)
    side = min(height, width)
    return max(s for s in range(1, len(MS_SSIM_WEIGHTS) + 1)
               if side / 2 ** (s - 1) >= WINDOW_SIZE)


def ms_ssim(targets, predictions):
    """Per-image MS-SSIM (Wang et al. 2003), shape [n].

    Uses s = ms_ssim_scales(h, w) scales with the standard weights cut to the
    first s and renormalised to sum 1. Scales 1..s-1 contribute their mean
    contrast-structure term, the last one its mean SSIM (luminance × cs),
    each clamped at 0 (as TF's relu) and raised to its weight; the product
    is taken per channel and averaged over channels. Between scales: 2×2
    average pooling, after padding an odd height or width by one mirrored
    row/column at the bottom/right. Matches tf.image.ssim_multiscale(a, b,
    max_val=1.0, power_factors=<those weights>).
    """
    targets, predictions = _checked_pair(targets, predictions)
    scales = ms_ssim_scales(*targets.shape[1:3])
    return _map_pairs(lambda x, y: _pyramid(x, y, scales)[1], targets, predictions)


def laplacian_variance(images):
    """Per-image variance of the Laplacian, shape [n].

    Gray [0, 1] image convolved with [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    without padding ((h-2)×(w-2) response); population variance (ddof 0).
    """
    return _map_gray(_laplacian_variance, images)


def gradient_energy(images):
    """Per-image gradient energy, shape [n].

    On the gray [0, 1] image g: mean((g[:, 1:] - g[:, :-1])**2) +
    mean((g[1:, :] - g[:-1, :])**2), each mean over its own (valid) array.
    """
    return _map_gray(_gradient_energy, images)


def high_frequency_ratio(images, cutoff=HF_CUTOFF):
    """Per-image share of spectral power above `cutoff` cycles/pixel, shape [n].

    Gray [0, 1] image, mean removed, times a 2-D Hann window (outer product
    of np.hanning(h) and np.hanning(w)); power |FFT|**2; radial frequency
    sqrt(fy**2 + fx**2) with fy, fx from np.fft.fftfreq. Returns
    power(radius > cutoff) / total power, and 0.0 for a constant image.
    """
    return _map_gray(lambda gray: _high_frequency_ratio(gray, cutoff), images)


def sharpness(images):
    """Mean sharpness over images: a dict with 'laplacian_variance',
    'gradient_energy' and 'high_frequency_ratio' (cutoff 0.25), as floats.

    One pass over the images. Raises ValueError for zero images.
    """
    def per_chunk(gray):
        return np.stack([_laplacian_variance(gray), _gradient_energy(gray),
                         _high_frequency_ratio(gray, HF_CUTOFF)], axis=1)
    _check_nonempty(images)
    means = _map_gray(per_chunk, images).mean(axis=0)
    return dict(zip(('laplacian_variance', 'gradient_energy', 'high_frequency_ratio'),
                    map(float, means)))


def reconstruction_quality(targets, predictions):
    """Mean fidelity of predictions to targets: a dict of floats.

    Always 'psnr'; 'ssim' and 'ms_ssim' too when h and w are at least 11 (the
    SSIM window). Smaller images get no SSIM keys rather than NaN, which JSON
    cannot hold. One pass over the images. Raises ValueError for zero images.
    """
    targets, predictions = _checked_pair(targets, predictions)
    _check_nonempty(targets)
    height, width = targets.shape[1:3]
    scales = (ms_ssim_scales(height, width)
              if min(height, width) >= WINDOW_SIZE else 0)

    def per_chunk(x, y):
        columns = [_psnr(x, y)]
        if scales:
            columns.extend(_pyramid(x, y, scales))
        return np.stack(columns, axis=1)

    means = _map_pairs(per_chunk, targets, predictions).mean(axis=0)
    names = ('psnr', 'ssim', 'ms_ssim') if scales else ('psnr',)
    return dict(zip(names, map(float, means)))


def bits_per_dim(nll_nats_per_image, dims):
    """Negative log-likelihood in nats per image => bits per dimension:
    nll / (dims · ln 2). Scalars give a float, arrays an array."""
    if dims <= 0:
        raise ValueError('dims must be positive, got %r' % (dims,))
    bits = np.asarray(nll_nats_per_image, np.float64) / (dims * math.log(2.0))
    return float(bits) if bits.ndim == 0 else bits


# ---- chunking -----------------------------------------------------------

def _check_rank(images):
    if len(images.shape) != 4:
        raise ValueError('images must be [n, h, w, c], got shape %s' % (images.shape,))


def _check_nonempty(images):
    # A mean over no images is NaN, which helps no one downstream.
    if _as_array_like(images).shape[0] == 0:
        raise ValueError('no images')


def _checked_pair(targets, predictions):
    targets, predictions = _as_array_like(targets), _as_array_like(predictions)
    _check_rank(targets)
    if tuple(targets.shape) != tuple(predictions.shape):
        raise ValueError('targets %s and predictions %s differ in shape'
                         % (tuple(targets.shape), tuple(predictions.shape)))
    return targets, predictions


def _check_window_fits(height, width):
    if min(height, width) < WINDOW_SIZE:
        raise ValueError('SSIM needs images of at least %d×%d pixels, got %d×%d'
                         % (WINDOW_SIZE, WINDOW_SIZE, height, width))


def _as_array_like(images):
    # Keep anything sliceable with a shape (ndarray, memmap, h5py dataset) as
    # it is, so only one chunk at a time is ever read and converted.
    return images if hasattr(images, 'shape') else np.asarray(images)


def _chunk_slices(shape):
    per_image = max(1, int(np.prod(shape[1:])))
    step = max(1, _CHUNK_ELEMENTS // per_image)
    return [slice(start, start + step) for start in range(0, shape[0], step)]


def _map_pairs(fn, targets, predictions):
    """fn(x, y) on [0, 1] float64 chunks; results concatenated along axis 0."""
    targets, predictions = _checked_pair(targets, predictions)
    parts = [fn(to_unit(targets[s]), to_unit(predictions[s]))
             for s in _chunk_slices(targets.shape)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _map_gray(fn, images):
    """fn(gray) on [m, h, w] float64 chunks in [0, 1]; results concatenated."""
    images = _as_array_like(images)
    _check_rank(images)
    parts = [fn(grayscale(images[s])) for s in _chunk_slices(images.shape)]
    return np.concatenate(parts) if parts else np.zeros(0)


# ---- PSNR and SSIM ------------------------------------------------------

def psnr_from_mse(mse, log10=np.log10, maximum=np.maximum):
    """PSNR in dB of images on the [0, 1] scale from their MSE: 10·log10(1 / MSE), the
    MSE floored at MSE_FLOOR. The one PSNR formula of the project: the graph passes
    TensorFlow's log10 and maximum (ops.psnr), the metrics here numpy's."""
    return 10.0 * log10(1.0 / maximum(mse, MSE_FLOOR))


def _psnr(x, y):
    return psnr_from_mse(np.mean((x - y) ** 2, axis=(1, 2, 3)))


def _gaussian_1d(size=WINDOW_SIZE, sigma=WINDOW_SIGMA):
    # TF samples exp(-d²/2σ²) at integer offsets from the centre and
    # normalises the 2-D product with a softmax; that 2-D window is exactly
    # the outer product of this normalised 1-D one, so filter separably.
    offsets = np.arange(size) - (size - 1) / 2.0
    weights = np.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return weights / weights.sum()


def _filter_valid(x, kernel):
    """Separable 'valid' filtering of [m, h, w, c] over h, then w."""
    size = len(kernel)
    rows = x.shape[1] - size + 1
    x = sum(weight * x[:, i:i + rows] for i, weight in enumerate(kernel))
    cols = x.shape[2] - size + 1
    return sum(weight * x[:, :, i:i + cols] for i, weight in enumerate(kernel))


def _ssim_terms(x, y):
    """Per-channel mean SSIM and mean contrast-structure, each [m, c]."""
    kernel = _gaussian_1d()
    c1, c2 = K1 ** 2, K2 ** 2  # data range 1
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    mu_xy, mu_sq = mu_x * mu_y, mu_x ** 2 + mu_y ** 2
    # Biased (weights-sum-to-1) covariances, no compensation factor: TF and
    # the MATLAB reference do the same.
    cov_xy = _filter_valid(x * y, kernel) - mu_xy
    var_sum = _filter_valid(x * x + y * y, kernel) - mu_sq
    luminance = (2.0 * mu_xy + c1) / (mu_sq + c1)
    cs = (2.0 * cov_xy + c2) / (var_sum + c2)
    return (luminance * cs).mean(axis=(1, 2)), cs.mean(axis=(1, 2))


def _downsample(x):
    """2×2 average pooling; an odd side first gets one mirrored row/column
    at the bottom/right (TF's SYMMETRIC padding, which repeats the edge)."""
    _, height, width, _ = x.shape
    x = np.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode='symmetric')
    m, height, width, c = x.shape
    return x.reshape(m, height // 2, 2, width // 2, 2, c).mean(axis=(2, 4))


def _ms_ssim_weights(scales):
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    return weights / weights.sum()


def _pyramid(x, y, scales):
    """(single-scale SSIM [m], MS-SSIM [m]) over `scales` scales."""
    factors = []
    for scale in range(scales):
        if scale:
            x, y = _downsample(x), _downsample(y)
        ssim_c, cs_c = _ssim_terms(x, y)
        if scale == 0:
            first_ssim = ssim_c.mean(axis=1)
        if scale < scales - 1:
            factors.append(cs_c)
    factors.append(ssim_c)
    # Clamp at 0 like TF's relu: a negative term has no real fractional power.
    stacked = np.maximum(np.stack(factors, axis=-1), 0.0)
    per_channel = np.prod(stacked ** _ms_ssim_weights(scales), axis=-1)
    return first_ssim, per_channel.mean(axis=1)


# ---- sharpness ----------------------------------------------------------

def _laplacian_variance(gray):
    # The kernel is symmetric, so convolution = correlation = these slices.
    response = (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2]
                + gray[:, 1:-1, 2:] - 4.0 * gray[:, 1:-1, 1:-1])
    return response.reshape(len(gray), -1).var(axis=1)


def _gradient_energy(gray):
    dx = np.diff(gray, axis=2)
    dy = np.diff(gray, axis=1)
    return (dx ** 2).mean(axis=(1, 2)) + (dy ** 2).mean(axis=(1, 2))


def _high_frequency_ratio(gray, cutoff):
    _, height, width = gray.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width),
                                   indexing='ij'))
    windowed = (gray - gray.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.fft2(windowed)) ** 2
    total = power.sum(axis=(1, 2))
    high = power[:, radius > cutoff].sum(axis=1)
    # Rounding in the mean leaves ~1e-17 residue on a constant image; a ratio
    # of that noise is meaningless, so such images count as having no power.
    flat = np.sqrt((windowed ** 2).mean(axis=(1, 2))) < FLAT_RMS
    return np.where(flat, 0.0, high / np.where(flat, 1.0, total))
