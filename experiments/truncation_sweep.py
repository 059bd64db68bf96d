"""FID, KID, precision, recall and the sharpness ratios of a fitted mixture's prior samples
at several --prior_truncation values, from one pass of the model and of the Inception
network: the mixture's draw is decoded and its features taken once, and each
truncation's N samples are the first N of the draw that pass its density floor, the
latents that `main.py --action=evaluate --prior_truncation=Q` samples.

    python experiments/truncation_sweep.py --flagfile=configs/mnist_best.flags \\
        --truncations=0,0.02,0.05,0.1,0.2 --sweep_out=docs --sweep_name=truncation_sweep

main.py's flags name the model (--modeldir, --predict_step), N (--eval_samples), the seed
and the mixture (--prior_components; fitted when not saved yet, as evaluate does). Writes
SWEEP_OUT/SWEEP_NAME.md (a row per truncation) and SWEEP_OUT/SWEEP_NAME.png (precision,
recall and FID against the truncation). It costs one evaluation's Inception time plus
the extra draws that the largest truncation drops (a fifth more for 0.2).
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import main  # noqa: E402  (defines main.py's flags, which this script takes)
from utils.data import hdf5_images  # noqa: E402
from utils.evaluation import feature_metrics, metrics  # noqa: E402
from utils.run import atomic, latent_prior, preflight  # noqa: E402
from utils.run.errors import UserError  # noqa: E402
from utils.run.progress import CountProgress  # noqa: E402

flags.DEFINE_list('truncations', ['0', '0.02', '0.05', '0.1', '0.2'],
                  'the --prior_truncation values compared (each in [0, 1))')
flags.DEFINE_string('sweep_out', 'docs', 'folder of the table and the figure')
flags.DEFINE_string('sweep_name', 'truncation_sweep', 'file names: NAME.md and NAME.png')
FLAGS = flags.FLAGS

SHARPNESS = ('laplacian_variance', 'high_frequency_ratio')  # the goal's two ratios
COLUMNS = ('truncation', 'draws per sample', 'FID', 'KID', 'precision', 'recall',
           'Laplacian var. ×real', 'HF ratio ×real')


def sweep_config(conf, given):
    """conf for sampling its run's mixture untruncated, with the run's flags that the
    command does not give (`given`: flag names) as evaluate takes them
    (prepare_prediction checks the checkpoint and the splits)."""
    conf = conf.replace(action='evaluate', sample_prior='gmm', prior_truncation=0.0)
    main.validate(conf)
    return preflight.prepare_prediction(conf, set(given) | {'sample_prior', 'prior_truncation'})


def chosen_samples(prior, seed, truncations, count):
    """The mixture's draw of `seed`, just long enough that each truncation keeps `count`
    samples of it, and {truncation: the indices of those samples in the draw}."""
    length = math.ceil(count / (1 - max(truncations)) * 1.05) + 64
    floors = {q: latent_prior.density_floor(prior, q) if q else -np.inf for q in truncations}
    while True:
        z = latent_prior.sample(prior, seed, length)
        log_densities = latent_prior.log_density(prior, z)
        chosen = {q: np.flatnonzero(log_densities >= floor)[:count]
                  for q, floor in floors.items()}
        if all(len(indices) == count for indices in chosen.values()):
            return z[:1 + max(indices[-1] for indices in chosen.values())], chosen
        length = math.ceil(length * 1.5)  # the draw kept fewer than its share: longer


def sample_features(model, extractor, z, batch):
    """The final stage's Inception features [n, 2048] and per-image sharpness of z's
    samples, a batch at a time."""
    features, sharpness = [], {name: [] for name in SHARPNESS}
    progress = CountProgress(len(z), 'prior samples')
    for start in range(0, len(z), batch):
        images = model.sample_batch(z[start:start + batch])[-1]
        features.append(extractor(images).astype(np.float32))
        for name in SHARPNESS:
            sharpness[name].append(getattr(metrics, name)(images))
        progress.add(len(images))
    progress.finish()
    return np.concatenate(features), {k: np.concatenate(v) for k, v in sharpness.items()}


def real_sharpness(conf, count):
    """The mean of each SHARPNESS value over the first `count` test images."""
    batches = hdf5_images.sequential_batches(os.path.join(conf.data_dir, conf.test_data),
                                             conf.height, conf.width, conf.channel,
                                             conf.batch, limit=count)
    values = {name: [] for name in SHARPNESS}
    for batch in batches:
        for name in SHARPNESS:
            values[name].append(getattr(metrics, name)(batch))
    return {name: float(np.concatenate(parts).mean()) for name, parts in values.items()}


def sweep(conf, truncations, given=()):
    """One row per truncation: its scores against the first --eval_samples test images
    (feature_metrics.scores), its sharpness ratios, and the draws it took per sample.
    given: the flags the command names (the run's own are taken for the others)."""
    conf = sweep_config(conf, given)
    runner = main.load_tensorflow_quietly()  # TensorFlow set up once the flags are checked
    model = runner.Runner(conf)
    try:
        step = model.restore_for('evaluate')
        prior = runner.fitted_prior(model, step)
        handle, test_images = hdf5_images.open_images(
            os.path.join(conf.data_dir, conf.test_data), conf.height, conf.width, conf.channel)
        test_count = min(conf.eval_samples, test_images.shape[0])
        handle.close()
        inception = feature_metrics.InceptionMetrics(conf, test_count)
        try:
            z, chosen = chosen_samples(prior, conf.random_seed, truncations, conf.eval_samples)
            features, sharpness = sample_features(model, inception.extractor, z, conf.batch)
        finally:
            inception.close()
    finally:
        model.close()
    real = real_sharpness(conf, test_count)
    rows = []
    for q in truncations:
        indices = chosen[q]
        row = {'truncation': q, 'step': step, 'test_images': test_count,
               'draws_per_sample': (indices[-1] + 1) / len(indices)}
        row.update(feature_metrics.scores(features[indices], inception.reference))
        row.update({f'{name}_ratio': float(sharpness[name][indices].mean()) / real[name]
                    for name in SHARPNESS})
        rows.append(row)
    return rows


def table(rows):
    """The Markdown table of the rows."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for row in rows:
        lines.append(f'| {row["truncation"]:g} | {row["draws_per_sample"]:.3f} | '
                     f'{row["fid"]:.2f} | {row["kid"]:.4f} | {row["precision"]:.3f} | '
                     f'{row["recall"]:.3f} | {row["laplacian_variance_ratio"]:.3f} | '
                     f'{row["high_frequency_ratio_ratio"]:.3f} |')
    return '\n'.join(lines) + '\n'


def write_figure(path, rows):
    """Precision and recall (left axis) and FID (right) against the truncation."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    from matplotlib import pyplot
    shares = [row['truncation'] for row in rows]
    figure, left = pyplot.subplots(figsize=(6, 4))
    left.plot(shares, [row['precision'] for row in rows], 'o-', label='precision')
    left.plot(shares, [row['recall'] for row in rows], 's-', label='recall')
    left.set_xlabel('--prior_truncation (share of the mixture\'s draws dropped)')
    left.set_ylabel('precision, recall')
    right = left.twinx()
    right.plot(shares, [row['fid'] for row in rows], 'k^--', label='FID')
    right.set_ylabel('FID')
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc='best')
    figure.tight_layout()
    with atomic.replacing(path, suffix='.png') as partial:
        figure.savefig(partial, format='png')
    pyplot.close(figure)


def write_outputs(rows, conf, out, name):
    """OUT/NAME.md and OUT/NAME.png; returns their paths."""
    atomic.make_writable_folder(out, f'--sweep_out={out}')
    markdown, figure = os.path.join(out, f'{name}.md'), os.path.join(out, f'{name}.png')
    header = (f'Prior samples of {conf.modeldir} (step {rows[0]["step"]}) at each '
              f'--prior_truncation, {conf.eval_samples} per row (seed {conf.random_seed}) '
              f'against the first {rows[0]["test_images"]} test images; written by '
              f'experiments/truncation_sweep.py.\n\n')
    atomic.write_text(markdown, header + table(rows))
    write_figure(figure, rows)
    return markdown, figure


def truncations_from(values):
    """The --truncations list as floats; UserError for a value outside [0, 1)."""
    try:
        shares = [float(value) for value in values]
    except ValueError:
        raise UserError(f'--truncations={",".join(values)} must be numbers in [0, 1)') from None
    if not shares or any(not 0 <= share < 1 for share in shares):
        raise UserError(f'--truncations={",".join(values)} must be numbers in [0, 1)')
    return shares


def run(argv):
    """absl entry point: the sweep, its table printed and written; wrong input is one line
    on stderr and exit status 2, as in main.py."""
    if len(argv) > 1:
        print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
        return 2
    try:
        conf = main.config_from_flags()
        given = [name for name in main.FLAG_NAMES if FLAGS[name].present]
        rows = sweep(conf, truncations_from(FLAGS.truncations), given)
        print(table(rows), end='')
        for path in write_outputs(rows, conf, FLAGS.sweep_out, FLAGS.sweep_name):
            print(f'wrote {path}')
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    app.run(run, flags_parser=main.flags_parser('python experiments/truncation_sweep.py'))
