"""Side-by-side comparison of trained models: a figure of the same test images
reconstructed by each (rows: input, then each model's last stage) and a markdown
table of their --action=evaluate metrics.

    python compare.py --labels="VAE,deep residual VAE,MSVAE" --out=docs \\
        runs/vae/model runs/residual_vae/model runs/msvae/model

Each model is rebuilt from its modeldir's flags.json and its latest checkpoint
(or --step). Its metrics are read from modeldir/evaluation-STEP.json, and
computed (as --action=evaluate does) when that file is missing. The figure and
tables are utils.evaluation.comparison's.
"""
import json
import os
import sys

import numpy as np
from absl import app, flags

import main
from utils.evaluation import comparison, training_time
from utils.run import checkpoints, images, preflight
from utils.run.errors import UserError

flags.DEFINE_string('labels', '', 'comma-separated row labels ("" = the folder names)')
flags.DEFINE_string('out', 'comparison', 'folder of the figure and table')
flags.DEFINE_string('name', 'comparison', 'file name of the figure (.png) and table (.md)')
flags.DEFINE_integer('num_images', 12, 'test images in the figure')
flags.DEFINE_integer('control_images', 2000, 'test images of the noise control')
flags.DEFINE_integer('step', 0, 'checkpoint step of every model (0 = each one\'s latest)')
FLAGS = flags.FLAGS


def load_model(runner, modeldir, step):
    """(runner.Runner, conf) of the run in modeldir, restored from `step` (the latest when 0)."""
    saved = checkpoints.load_config(modeldir)
    if saved is None:
        raise UserError(f'{modeldir} holds no trained model ({checkpoints.CONFIG_FILE} missing)')
    values = {key: value for key, value in saved.items() if key in main.FLAG_NAMES}
    # the run's speed flags may name a GPU this machine lacks; they do not change results
    values.update(modeldir=modeldir, action='evaluate', predict_step=step,
                  mixed_precision=False, xla=False)
    conf = main.default_config(**values)
    main.validate(conf)
    conf = preflight.prepare_prediction(conf)
    model = runner.Runner(conf)
    model.restore(step)
    return model, conf


def model_metrics(runner, model, conf):
    """The evaluation of the model's checkpoint: read from its JSON, or computed now."""
    path = checkpoints.evaluation_path(conf.modeldir, model.step(),
                                        runner.evaluation_variant(conf))
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    print(f'{path} missing: evaluating {conf.modeldir}')
    return runner.evaluate(model)


def compare(modeldirs, labels, out, name, num_images, step=0, zoom=3, control_images=2000):
    """Writes out/name.png and out/name.md; returns their paths.

    With two or more models the table also gets the noise control: the first
    model's reconstructions of the first control_images test images plus the
    pixel noise that matches the last model's Laplacian variance on them.
    """
    runner = main.load_tensorflow_quietly()
    rows, results, trainings, finals, test_batch = [], [], [], [], None
    for modeldir in modeldirs:
        model, conf = load_model(runner, modeldir, step)
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
            results.append(model_metrics(runner, model, conf))
            trainings.append(training_record(model.step(), conf))
            # the noise control needs the first and the last model's reconstructions
            ends = (modeldir == modeldirs[0] or modeldir == modeldirs[-1]) and len(modeldirs) > 1
            finals.append(final_stage(model, control_images) if ends else None)
        finally:
            model.close()
    control = None
    if len(modeldirs) > 1:
        control = comparison.control_rows(finals[0][1], finals[-1][1], finals[0][0])
    os.makedirs(out, exist_ok=True)
    picture_path, table_path = (os.path.join(out, f'{name}.png'),
                                os.path.join(out, f'{name}.md'))
    images.save_png(picture_path, comparison.figure(rows, ['input'] + labels, zoom))
    with open(table_path, 'w') as handle:
        handle.write(comparison.markdown(results, labels))
        handle.write(comparison.training_markdown(trainings, labels))
        if control is not None:
            handle.write(comparison.control_markdown(control, labels, len(finals[0][0])))
    return picture_path, table_path


def training_record(step, conf):
    """{'step', 'batch', 'seconds'}: the seconds of training to reach `step`, read from
    the events in the run's logdir (None when there are none); a step after the last
    summary is counted at the run's mean pace."""
    seconds = None
    if os.path.isdir(conf.logdir):
        by_step = training_time.training_seconds(training_time.summary_times(conf.logdir))
        last = max(by_step, default=0)
        if step > last > 0:
            seconds = by_step[last] * step / last
        elif by_step and step >= min(by_step):
            seconds = training_time.seconds_at(by_step, step)
    return {'step': step, 'batch': conf.batch, 'seconds': seconds}


def final_stage(model, count):
    """(the first `count` test images, the model's last-stage reconstructions of them)."""
    inputs, outputs = [], []
    for batch in model.test_batches(count):
        inputs.append(batch)
        outputs.append(model.reconstruct_batch(batch)['outputs'][-1])
    return np.concatenate(inputs), np.concatenate(outputs)


def labels_for(modeldirs, labels):
    """The row labels: --labels, or each model folder's parent folder name."""
    found = labels.split(',') if labels else [
        os.path.basename(os.path.dirname(os.path.abspath(d))) for d in modeldirs]
    if len(found) != len(modeldirs):
        raise UserError(f'{len(found)} labels for {len(modeldirs)} model folders: give one '
                        f'--labels entry per folder')
    return found


def run(argv):
    """Command-line entry (argv: the program name and the model folders, flags parsed):
    one error line and exit status 2 for wrong input."""
    try:
        modeldirs = argv[1:]
        if not modeldirs:
            raise UserError('no model folders: python compare.py [flags] MODELDIR...')
        if FLAGS.num_images <= 0 or FLAGS.control_images <= 0:
            raise UserError('--num_images and --control_images must be positive')
        paths = compare(modeldirs, labels_for(modeldirs, FLAGS.labels), FLAGS.out, FLAGS.name,
                        FLAGS.num_images, FLAGS.step, control_images=FLAGS.control_images)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'wrote {paths[0]} and {paths[1]}')
    return 0


if __name__ == '__main__':
    app.run(run, flags_parser=main.flags_parser('python compare.py'))
