"""--action=evaluate: every stage of a trained model measured on the test split and on
prior samples, as a dict (written as JSON) and a printed table.

The model is reached through two callables, so this module needs no TensorFlow:
    reconstruct(batch) => {'outputs': [per stage], 'targets': [per stage], 'kl': [b]}
    sample(z) => [per stage]
Images are float arrays in [-1, 1]; each stage is compared with the input at its
own size (`targets`, area-downsampled when the stage is smaller).
"""
import math

import numpy as np

from utils.evaluation import feature_metrics, metrics
from utils.run import atomic
from utils.run.progress import CountProgress

SHARPNESS = ('laplacian_variance', 'gradient_energy', 'high_frequency_ratio')
QUALITY = ('psnr', 'ssim', 'ms_ssim')
PIXEL_LEVELS = 256  # 8-bit data: the bins of the dequantisation


class Means:
    """Running means of named per-image values."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, name, values):
        """Adds the per-image `values` (an array [n]) to the mean of `name`."""
        values = np.asarray(values, np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + values.size

    def get(self, name):
        """The mean of `name` so far."""
        return self.sums[name] / self.counts[name]

    def __contains__(self, name):
        return name in self.sums


def dequantized_nll(targets, means, sigma):
    """−log p of the uniformly dequantised image under N(means, sigma²), nats per image.

    Pixels are 8-bit levels k mapped to x = k·Δ − 1, Δ = 2/255. Dequantising
    adds u·Δ, u ~ U[0, 1), and E_u[(x + uΔ − m)²] = (x + Δ/2 − m)² + Δ²/12
    exactly, so no noise is drawn. The −D·log Δ term turns the density into
    the probability of the pixel's bin: the sum bounds −log P(image).
    """
    targets, means = np.asarray(targets, np.float64), np.asarray(means, np.float64)
    step = 2.0 / (PIXEL_LEVELS - 1)
    count = len(targets)
    dims = targets[0].size
    squared = ((targets + step / 2 - means) ** 2 + step ** 2 / 12).reshape(count, -1).sum(1)
    log_norm = math.log(sigma * math.sqrt(2 * math.pi))
    return squared / (2 * sigma ** 2) + dims * (log_norm - math.log(step))


def _ssim_fits(size):
    """SSIM and MS-SSIM need at least one 11×11 window (a small coarse stage has none)."""
    return min(size) >= metrics.WINDOW_SIZE


def _add_sharpness(means, prefix, images):
    for name in SHARPNESS:
        means.add(f'{prefix}/{name}', getattr(metrics, name)(images))


def _add_reconstructions(means, result, sigma, full_size):
    outputs, targets = result['outputs'], result['targets']
    means.add('kl', result['kl'])
    if targets[0].shape[1:3] == full_size:  # bits/dim only for 8-bit data (see README)
        means.add('nelbo', np.asarray(result['kl']) + dequantized_nll(targets[0], outputs[0],
                                                                      sigma))
    for stage, (target, output) in enumerate(zip(targets, outputs), start=1):
        means.add(f'{stage}/psnr', metrics.psnr(target, output))
        if _ssim_fits(target.shape[1:3]):
            means.add(f'{stage}/ssim', metrics.ssim(target, output))
            means.add(f'{stage}/ms_ssim', metrics.ms_ssim(target, output))
        _add_sharpness(means, f'{stage}/reconstructions', output)
        _add_sharpness(means, f'{stage}/real', target)


def measure(reconstruct, sample, test_batches, prior_batches, conf, counts, features=None):
    """Runs the model over both sets and returns the Means of every value.

    counts: (test images, prior samples), for the progress bars.
    features: None, or a feature_metrics.InceptionMetrics that gets each batch's
    final-stage reconstructions and samples (for FID, KID, precision and recall).
    """
    means = Means()
    full_size = (conf.height, conf.width)
    progress = CountProgress(counts[0], 'test images')
    for batch in test_batches:
        result = reconstruct(batch)
        _add_reconstructions(means, result, conf.sigma, full_size)
        if features is not None:
            features.add('reconstructions', result['outputs'][-1])
        progress.add(len(batch))
    progress.finish()
    progress = CountProgress(counts[1], 'prior samples')
    for z in prior_batches:
        outputs = sample(z)
        for stage, output in enumerate(outputs, start=1):
            _add_sharpness(means, f'{stage}/samples', output)
        if features is not None:
            features.add('samples', outputs[-1])
        progress.add(len(z))
    progress.finish()
    return means


def _sharpness_entry(means, stage, kind):
    entry = {}
    for name in SHARPNESS:
        value = means.get(f'{stage}/{kind}/{name}')
        entry[name] = value
        if kind != 'real':
            real = means.get(f'{stage}/real/{name}')
            entry[f'{name}_ratio'] = value / real if real > 0 else 0.0
    return entry


def summarize(means, conf, sizes):
    """The metrics dict written as JSON: model-level values, then one entry per stage."""
    dims = conf.channel * conf.height * conf.width
    result = {'kl': means.get('kl')}
    if 'nelbo' in means:
        result['negative_elbo_bits_per_dim'] = metrics.bits_per_dim(means.get('nelbo'), dims)
    result['stages'] = []
    for stage, size in enumerate(sizes, start=1):
        entry = {'stage': stage, 'size': list(size)}
        entry.update({name: means.get(f'{stage}/{name}') for name in QUALITY
                      if f'{stage}/{name}' in means})
        for kind in ('reconstructions', 'samples', 'real'):
            entry[kind] = _sharpness_entry(means, stage, kind)
        result['stages'].append(entry)
    return result


def table(result):
    """A markdown table of the per-stage metrics (one row per stage)."""
    header = ['stage', 'size', 'PSNR dB', 'SSIM', 'MS-SSIM',
              'Lap. var ×real (rec / samp)', 'grad. energy ×real (rec / samp)',
              'HF ratio ×real (rec / samp)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for entry in result['stages']:
        cells = [str(entry['stage']), 'x'.join(map(str, entry['size']))]
        cells += [f'{entry[name]:.4g}' if name in entry else '-' for name in QUALITY]
        for name in SHARPNESS:
            cells.append(f'{entry["reconstructions"][name + "_ratio"]:.3f} / '
                         f'{entry["samples"][name + "_ratio"]:.3f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def report(result):
    """The printed summary: the counts, KL and bits/dim, then the per-stage table."""
    bits = result.get('negative_elbo_bits_per_dim')
    head = (f'step {result["step"]}: {result["test_images"]} test images, '
            f'{result["prior_samples"]} prior samples; KL {result["kl"]:.3f} nats'
            + (f', negative ELBO {bits:.4f} bits/dim' if bits is not None else ''))
    lines = [head, table(result)]
    if 'inception' in result:
        lines.append(feature_metrics.report(result['inception']))
    return '\n'.join(lines)


def write_json(path, result):
    """Writes `result` to path atomically (a temporary file renamed into place)."""
    atomic.write_json(path, result, indent=1)
