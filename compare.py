"""Side-by-side comparison of trained models: a figure of the same test images
reconstructed by each (rows: input, then each model's last stage) and a markdown
table of their --action=evaluate metrics.

    python compare.py --labels="VAE,deep residual VAE,MSVAE" --out=docs \\
        runs/vae/model runs/residual_vae/model runs/msvae/model

Each model is rebuilt from its modeldir's flags.json and its latest checkpoint
(or --step). Its metrics are read from modeldir/evaluation-STEP.json, and
computed (as --action=evaluate does) when that file is missing.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import main
from utils.evaluation import metrics
from utils.run import checkpoints, images, preflight
from utils.run.errors import UserError

LABEL_WIDTH = 150  # pixels of the label column of the figure
SHARPNESS_NAMES = {'laplacian_variance': 'Laplacian var.', 'gradient_energy': 'gradient energy',
                   'high_frequency_ratio': 'HF power'}


def load_model(network, modeldir, step):
    """(model, conf) of the run in modeldir, restored from `step` (the latest when 0)."""
    saved = checkpoints.load_config(modeldir)
    if saved is None:
        raise UserError(f'{modeldir} holds no trained model ({checkpoints.CONFIG_FILE} missing)')
    values = {key: value for key, value in saved.items() if key in main.FLAG_NAMES}
    # the run's speed flags may name a GPU this machine lacks; they do not change results
    values.update(modeldir=modeldir, action='evaluate', predict_step=step,
                  mixed_precision=False, xla=False)
    conf = main.default_config(**values)
    main.validate(conf)
    preflight.prepare_prediction(conf)
    model = network.MSVAE(conf)
    model.restore(step)
    return model, conf


def model_metrics(model, conf):
    """The evaluation of the model's checkpoint: read from its JSON, or computed now."""
    path = checkpoints.evaluation_path(conf.modeldir, model.step())
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    print(f'{path} missing: evaluating {conf.modeldir}')
    return model.evaluate()


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
            s = result['inception'][kind]
            cells += [f'{s["fid"]:.2f}', f'{s["kid"]:.4f} ± {s["kid_std"]:.4f}',
                      f'{s["precision"]:.3f}', f'{s["recall"]:.3f}']
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


def compare(modeldirs, labels, out, name, num_images, step=0, zoom=3, control_images=2000):
    """Writes out/name.png and out/name.md; returns their paths.

    With two or more models the table also gets the noise control: the first
    model's reconstructions of the first control_images test images plus the
    pixel noise that matches the last model's Laplacian variance on them.
    """
    network = main.import_network_quietly()
    rows, results, finals, test_batch = [], [], [], None
    for modeldir in modeldirs:
        model, conf = load_model(network, modeldir, step)
        try:
            if test_batch is None:
                test_batch = np.concatenate(list(model.test_batches(num_images)))
                rows.append(test_batch)
                shape = test_batch.shape[1:]
            elif (conf.height, conf.width, conf.channel) != shape:
                raise UserError(f'{modeldir} models {conf.height}x{conf.width}x{conf.channel} '
                                f'images, {modeldirs[0]} {"x".join(map(str, shape))}: compare '
                                f'models of one image size')
            outputs = model.reconstruct_batch(test_batch)['outputs']
            rows.append(images.resize_nearest(outputs[-1], shape[:2]))
            results.append(model_metrics(model, conf))
            # the noise control needs the first and the last model's reconstructions
            ends = (modeldir == modeldirs[0] or modeldir == modeldirs[-1]) and len(modeldirs) > 1
            finals.append(final_stage(model, control_images) if ends else None)
        finally:
            model.close()
    control = None
    if len(modeldirs) > 1:
        control = control_rows(finals[0][1], finals[-1][1], finals[0][0])
    os.makedirs(out, exist_ok=True)
    picture_path, table_path = (os.path.join(out, f'{name}.png'),
                                os.path.join(out, f'{name}.md'))
    images.save_png(picture_path, figure(rows, ['input'] + labels, zoom))
    with open(table_path, 'w') as handle:
        handle.write(markdown(results, labels))
        if control is not None:
            handle.write(control_markdown(control, labels, len(finals[0][0])))
    return picture_path, table_path


def final_stage(model, count):
    """(the first `count` test images, the model's last-stage reconstructions of them)."""
    inputs, outputs = [], []
    for batch in model.test_batches(count):
        inputs.append(batch)
        outputs.append(model.reconstruct_batch(batch)['outputs'][-1])
    return np.concatenate(inputs), np.concatenate(outputs)


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


def parse_args(argv):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('modeldirs', nargs='+', help='the models\' --modeldir folders')
    parser.add_argument('--labels', default='', help='comma-separated row labels (default: '
                        'the folder names)')
    parser.add_argument('--out', default='comparison', help='folder of the figure and table '
                        '(default: comparison)')
    parser.add_argument('--name', default='comparison', help='file name of the figure (.png) '
                        'and table (.md) (default: comparison)')
    parser.add_argument('--num_images', type=int, default=12, help='test images in the figure '
                        '(default: 12)')
    parser.add_argument('--control_images', type=int, default=2000, help='test images of the '
                        'noise control (default: 2000)')
    parser.add_argument('--step', type=int, default=0, help='checkpoint step of every model '
                        '(default: 0 = each one\'s latest)')
    args = parser.parse_args(argv)
    labels = args.labels.split(',') if args.labels else [
        os.path.basename(os.path.dirname(os.path.abspath(d))) for d in args.modeldirs]
    if len(labels) != len(args.modeldirs):
        parser.error(f'{len(labels)} labels for {len(args.modeldirs)} model folders')
    if args.num_images <= 0 or args.control_images <= 0:
        parser.error('--num_images and --control_images must be positive')
    args.labels = labels
    return args


def run(argv=None):
    """Command-line entry: one error line and exit status 2 for wrong input."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = compare(args.modeldirs, args.labels, args.out, args.name, args.num_images,
                        args.step, control_images=args.control_images)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'wrote {paths[0]} and {paths[1]}')
    return 0


if __name__ == '__main__':
    sys.exit(run())
