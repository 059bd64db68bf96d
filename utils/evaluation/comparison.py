"""The comparison of several trained models, from what each one gives (no model, no
TensorFlow): a labelled figure of rows of images, the markdown tables of their
--action=evaluate results, and a noise control (a baseline plus the Gaussian pixel
noise that matches another model's sharpness). compare.py runs the models.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.evaluation import metrics
from utils.run import images

LABEL_WIDTH = 150  # pixels of the label column of the figure
SHARPNESS_NAMES = {'laplacian_variance': 'Laplacian var.', 'gradient_energy': 'gradient energy',
                   'high_frequency_ratio': 'HF power'}


def figure(rows, labels, zoom):
    """Rows of images [n, h, w, c] in [-1, 1], one label each, tiled and enlarged
    `zoom` times, with the labels in a column on the left."""
    picture = images.tile_rows(rows)
    picture = np.repeat(np.repeat(picture, zoom, axis=0), zoom, axis=1)
    if picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    canvas = Image.new('RGB', (LABEL_WIDTH + picture.shape[1], picture.shape[0]), 'white')
    canvas.paste(Image.fromarray(picture), (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    row_height = (picture.shape[0] + images.GAP * zoom) / len(rows)
    for index, label in enumerate(labels):
        top = index * row_height + row_height / 2 - 8
        draw.text((6, top), label, fill='black', font=font)
    return np.asarray(canvas)


def _font():
    try:
        return ImageFont.load_default(size=16)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def stage_label(label, stage, stage_count):
    """'MSVAE (stage 1)' for a stage of a multi-stage model, 'VAE' for a one-stage one."""
    return label if stage_count == 1 else f'{label} (stage {stage})'


def markdown(results, labels):
    """Two markdown tables, one row per stage of each model: reconstructions of the test
    split, then prior samples (sharpness as ratios to real test images)."""
    first = results[0]
    lines = [f'{first["test_images"]} test images of {first["test_data"]}, '
             f'{first["prior_samples"]} prior samples (seed {first["random_seed"]}); '
             f'sharpness as the ratio to real test images (1 = as sharp as the data).', '',
             '| model | step | KL nats | −ELBO bits/dim | PSNR dB | SSIM | MS-SSIM | '
             + ' | '.join(SHARPNESS_NAMES.values()) + ' |',
             '|---|---|---|---|---|---|---|' + '---|' * len(SHARPNESS_NAMES)]
    for result, label in zip(results, labels):
        bits = result.get('negative_elbo_bits_per_dim')
        for entry in result['stages']:
            cells = [stage_label(label, entry['stage'], len(result['stages'])),
                     str(result['step']), f'{result["kl"]:.2f}',
                     f'{bits:.3f}' if bits is not None else '-']
            cells += [f'{entry[name]:.4f}' if name in entry else '-'
                      for name in ('psnr', 'ssim', 'ms_ssim')]
            cells += [f'{entry["reconstructions"][name + "_ratio"]:.3f}'
                      for name in SHARPNESS_NAMES]
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '| prior samples of | ' + ' | '.join(SHARPNESS_NAMES.values()) + ' |',
              '|---|' + '---|' * len(SHARPNESS_NAMES)]
    for result, label in zip(results, labels):
        for entry in result['stages']:
            cells = [stage_label(label, entry['stage'], len(result['stages']))]
            cells += [f'{entry["samples"][name + "_ratio"]:.3f}' for name in SHARPNESS_NAMES]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n' + inception_markdown(results, labels)


def training_markdown(trainings, labels):
    """The table of each model's training: its step, the training minutes read from its
    events and the images/s they give ('not recorded' where its log holds no events).
    trainings: one dict per model with 'step', 'batch' and 'seconds' (or None)."""
    lines = ['', 'Training, from each run\'s TensorBoard events (pauses left out).', '',
             '| model | steps | training time | images/s |', '|---|---|---|---|']
    for training, label in zip(trainings, labels):
        seconds = training['seconds']
        timing = (['not recorded', '-'] if not seconds else
                  [f'{seconds / 60:.1f} min',
                   f'{training["step"] * training["batch"] / seconds:.0f}'])
        lines.append('| ' + ' | '.join([label, str(training['step'])] + timing) + ' |')
    return '\n'.join(lines) + '\n'


def inception_markdown(results, labels):
    """The table of FID, KID, precision and recall of each model's final stage (empty
    when no result holds them: evaluated with --noeval_fid)."""
    measured = [(result, label) for result, label in zip(results, labels)
                if 'inception' in result]
    if not measured:
        return ''
    entry = measured[0][0]['inception']
    lines = ['', f'Final stage against {entry["reference_images"]} test images, Inception '
             f'features ({entry["network"]}); FID depends on the number of images: compare '
             f'only at equal counts.', '',
             '| final stage of | samples FID | KID | precision | recall '
             '| reconstructions FID | KID | precision | recall |',
             '|---|---|---|---|---|---|---|---|---|']
    for result, label in measured:
        cells = [label]
        for kind in ('samples', 'reconstructions'):
            s = result['inception'].get(kind)  # reconstructions: left out by the evaluation
            cells += ([f'{s["fid"]:.2f}', f'{s["kid"]:.4f} ± {s["kid_std"]:.4f}',
                       f'{s["precision"]:.3f}', f'{s["recall"]:.3f}'] if s else ['-'] * 4)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def noise_to_match(images, targets, goal, seed=0):
    """The std of Gaussian pixel noise that, added to `images` (clipped to [-1, 1]),
    raises their mean Laplacian variance to `goal` times that of `targets`.

    Returns (std, noisy images); std 0 when the images are already that sharp.
    A control: a model that is "sharper" only as noise would be has the
    noisy baseline's PSNR and SSIM too.
    """
    real = metrics.laplacian_variance(targets).mean()
    noise = np.random.default_rng(seed).standard_normal(np.shape(images))

    def ratio(std):
        return metrics.laplacian_variance(np.clip(images + std * noise, -1, 1)).mean() / real
    if ratio(0.0) >= goal:
        return 0.0, np.asarray(images)
    low, high = 0.0, 0.05
    while ratio(high) < goal and high < 4.0:
        low, high = high, 2 * high
    for _ in range(40):  # bisection: the ratio grows with the noise
        middle = (low + high) / 2
        low, high = (middle, high) if ratio(middle) < goal else (low, middle)
    return high, np.clip(images + high * noise, -1, 1)


def _quality_and_sharpness(targets, outputs, real):
    row = metrics.reconstruction_quality(targets, outputs)
    row.update({f'{name}_ratio': value / real[name]
                for name, value in metrics.sharpness(outputs).items()})
    return row


def control_rows(baseline, best, targets):
    """Rows (baseline, best, baseline + noise) of quality and sharpness ratios on the
    same test images; the noise gives the baseline the Laplacian variance of `best`.
    Returns (noise std, rows)."""
    real = metrics.sharpness(targets)
    goal = metrics.laplacian_variance(best).mean() / real['laplacian_variance']
    std, noisy = noise_to_match(baseline, targets, goal)
    return std, [_quality_and_sharpness(targets, outputs, real)
                 for outputs in (baseline, best, noisy)]


def control_markdown(control, labels, count):
    """The noise-control table (see compare)."""
    std, rows = control
    names = [labels[0], labels[-1], f'{labels[0]} + noise σ={std:.3f}']
    lines = ['', f'Control, on the first {count} test images: {labels[0]}\'s reconstructions '
             f'plus Gaussian pixel noise (std on the [-1, 1] scale) that gives them '
             f'{labels[-1]}\'s Laplacian variance. Sharpness that noise could also give '
             f'comes with the last row\'s PSNR and SSIM.', '',
             '| on the same images | PSNR dB | SSIM | MS-SSIM | '
             + ' | '.join(SHARPNESS_NAMES.values()) + ' |',
             '|---|---|---|---|' + '---|' * len(SHARPNESS_NAMES)]
    for label, row in zip(names, rows):
        cells = [label] + [f'{row[key]:.4f}' if key in row else '-'
                           for key in ('psnr', 'ssim', 'ms_ssim')]
        cells += [f'{row[key + "_ratio"]:.3f}' for key in SHARPNESS_NAMES]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'
