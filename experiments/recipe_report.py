"""The figure and table of a recipe's run: FID (and KID, precision, recall, the sharpness
ratios) of the checkpoints evaluated at several training times, read from their
evaluation JSONs and the run's TensorBoard events.

    python experiments/recipe_report.py --run=runs/mnist_best --out=docs --name=best_recipe
    python experiments/recipe_report.py --run=runs/mnist_best --steps_at=10,30,60,90

    python experiments/recipe_report.py --ablation=runs/ablation --out=docs

--steps_at prints the saved steps reached within each budget (minutes), for the
evaluations; without it the script writes OUT/NAME.md (a table per evaluated step)
and OUT/NAME_fid_time.png (FID against training minutes). --ablation writes
OUT/NAME_ablation.md instead: one row per lever removed (experiments/ablation.sh).
"""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from utils.evaluation import training_time  # noqa: E402
from utils.run import checkpoints  # noqa: E402

flags.DEFINE_string('run', 'runs/mnist_best', 'the run: RUN/model and RUN/log')
flags.DEFINE_string('out', 'docs', 'folder of the table and the figure')
flags.DEFINE_string('name', 'best_recipe', 'file names: NAME.md and NAME_fid_time.png')
flags.DEFINE_list('steps_at', [], 'print the saved steps reached within these minutes')
flags.DEFINE_string('variant', 'gmm10', 'the evaluations of this variant (runner.'
                    'evaluation_variant: "" = N(0, I) and the inference weights, gmmK, ...)')
flags.DEFINE_string('ablation', '', 'a folder of experiments/ablation.sh runs: write the '
                    'ablation table of their last evaluations instead')
FLAGS = flags.FLAGS

# experiments/ablation.sh's rows: what is taken out of the recipe, its run, and the
# evaluation variant read (the inference-time levers are evaluations of the recipe's run).
ABLATION = (('nothing: the full recipe', 'recipe', 'gmm200'),
            ('capacity (16 channels first)', 'no_capacity', 'gmm200'),
            ('cosine schedule (constant rate)', 'no_cosine', 'gmm200'),
            ('trained σ (fixed 0.5)', 'no_learned_sigma', 'gmm200'),
            ('stage 2\'s gradient L1 (added, weight 0.5)', 'gradient_loss', 'gmm200'),
            ('stage 2\'s SSIM (added, weight 1)', 'ssim_loss', 'gmm200'),
            ('the 32-d latent (16-d)', 'latent16', 'gmm200'),
            ('averaged weights (the last step\'s)', 'recipe', 'gmm200-last'),
            ('200 components (10)', 'recipe', 'gmm10'),
            ('mixture prior (N(0, I) samples)', 'recipe', ''))

EVALUATION = re.compile(r'evaluation-(\d+)(?:-(.+))?\.json$')


def evaluations(modeldir, variant):
    """{step: evaluation dict} of modeldir's evaluation JSONs of `variant` that hold FID."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(modeldir), 'evaluation-*.json')):
        match = EVALUATION.search(os.path.basename(path))
        if not match or (match.group(2) or '') != variant:
            continue
        with open(path) as handle:
            result = json.load(handle)
        if 'inception' in result:
            found[int(match.group(1))] = result
    return found


def rows(results, seconds, images_per_epoch, batch):
    """One dict per evaluated step: time, epochs and the final stage's sample metrics."""
    table = []
    for step in sorted(results):
        result = results[step]
        samples = result['inception']['samples']
        final = result['stages'][-1]['samples']
        table.append({'step': step, 'minutes': training_time.seconds_at(seconds, step) / 60,
                      'epochs': step * batch / images_per_epoch, 'fid': samples['fid'],
                      'kid': samples['kid'], 'precision': samples['precision'],
                      'recall': samples['recall'], 'images': samples['images'],
                      'laplacian': final['laplacian_variance_ratio'],
                      'high_frequency': final['high_frequency_ratio_ratio']})
    return table


def markdown(table, variant):
    """The table as markdown."""
    lines = [f'Prior samples ({variant or "N(0, I)"}) of each checkpoint against the test images; '
             f'sharpness as a ratio to the real digits\'.', '',
             '| training time | step | epochs | FID | KID | precision | recall '
             '| Laplacian var. ×real | HF ratio ×real | N |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in table:
        lines.append(f'| {row["minutes"]:.0f} min | {row["step"]} | {row["epochs"]:.1f} | '
                     f'{row["fid"]:.2f} | {row["kid"]:.4f} | {row["precision"]:.3f} | '
                     f'{row["recall"]:.3f} | {row["laplacian"]:.3f} | '
                     f'{row["high_frequency"]:.3f} | {row["images"]} |')
    return '\n'.join(lines) + '\n'


def run_rows(run, variant):
    """rows() of one run's evaluations of `variant` (an empty list when it has none)."""
    modeldir, logdir = os.path.join(run, 'model'), os.path.join(run, 'log')
    config = checkpoints.load_config(modeldir)
    results = evaluations(modeldir, variant) if config else {}
    if not results:
        return []
    seconds = training_time.training_seconds(training_time.summary_times(logdir))
    import h5py
    with h5py.File(os.path.join(config['data_dir'], config['train_data']), 'r') as handle:
        images_per_epoch = handle['images'].shape[0]
    return rows(results, seconds, images_per_epoch, config['batch'])


def ablation_markdown(root):
    """The ablation table: the last evaluated step of each ABLATION row, or 'not run'."""
    lines = ['Each row takes one lever out of configs/mnist_best.flags (or adds one it '
             'leaves out); all trained alike '
             '(experiments/ablation.sh). FID and the others of the final stage\'s prior '
             'samples against as many test images.', '',
             '| lever removed (or added) | step | training time | FID | KID | precision | recall '
             '| Laplacian var. ×real | HF ratio ×real | N |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for label, run, variant in ABLATION:
        found = run_rows(os.path.join(root, run), variant)
        if not found:
            lines.append(f'| {label} | not run | | | | | | | | |')
            continue
        row = found[-1]
        lines.append(f'| {label} | {row["step"]} | {row["minutes"]:.1f} min | {row["fid"]:.2f} | '
                     f'{row["kid"]:.4f} | {row["precision"]:.3f} | {row["recall"]:.3f} | '
                     f'{row["laplacian"]:.3f} | {row["high_frequency"]:.3f} | '
                     f'{row["images"]} |')
    return '\n'.join(lines) + '\n'


def figure(table, path, title):
    """FID against training minutes, each point labelled with its step."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    from matplotlib import pyplot

    figure_, axes = pyplot.subplots(figsize=(5, 3.2), dpi=120)
    minutes = [row['minutes'] for row in table]
    fids = [row['fid'] for row in table]
    axes.plot(minutes, fids, marker='o')
    for row in table:
        axes.annotate(f'step {row["step"]}', (row['minutes'], row['fid']),
                      textcoords='offset points', xytext=(4, 6), fontsize=7)
    axes.set_xlabel('training time on 2 CPU cores (min)')
    axes.set_ylabel('FID of prior samples')
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    figure_.tight_layout()
    figure_.savefig(path)
    pyplot.close(figure_)


def main(argv):
    del argv
    if FLAGS.ablation:
        table = ablation_markdown(FLAGS.ablation)
        os.makedirs(FLAGS.out, exist_ok=True)
        with open(os.path.join(FLAGS.out, f'{FLAGS.name}_ablation.md'), 'w') as handle:
            handle.write(table)
        print(table)
        return 0
    modeldir, logdir = os.path.join(FLAGS.run, 'model'), os.path.join(FLAGS.run, 'log')
    config = checkpoints.load_config(modeldir)
    seconds = training_time.training_seconds(training_time.summary_times(logdir))
    if FLAGS.steps_at:
        saved = checkpoints.saved_steps(modeldir, config['model_name'])
        chosen = training_time.steps_at_minutes(seconds, saved, map(float, FLAGS.steps_at))
        print(' '.join(str(step) for step in chosen if step is not None))
        return 0
    table = run_rows(FLAGS.run, FLAGS.variant)
    if not table:
        print(f'no evaluation with FID of variant {FLAGS.variant!r} in {modeldir}',
              file=sys.stderr)
        return 2
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, f'{FLAGS.name}.md'), 'w') as handle:
        handle.write(markdown(table, FLAGS.variant))
    figure(table, os.path.join(FLAGS.out, f'{FLAGS.name}_fid_time.png'),
           f'{FLAGS.run}: FID of {table[-1]["images"]} samples')
    print(markdown(table, FLAGS.variant))
    return 0


if __name__ == '__main__':
    app.run(main)
