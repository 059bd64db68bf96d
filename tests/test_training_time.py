"""Training time per step from a run's events (pauses between resumed parts left out),
the checkpoints reached within each budget, and the recipe report's table and figure."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from PIL import Image

from conftest import ROOT
from utils.evaluation import training_time

tf1 = tf.compat.v1


def write_events(logdir, step_times, tag='train/total'):
    """Events of `tag` at the given (step, wall time) pairs."""
    writer = tf1.summary.FileWriter(logdir)
    for step, wall in step_times:
        summary = tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=1.0)])
        writer.add_event(tf1.Event(wall_time=wall, step=step, summary=summary))
    writer.close()


def test_a_pause_between_parts_is_not_training(tmp_path):
    # 2 s per 10 steps; an hour's pause after step 30 (the run was stopped and resumed)
    times = [(10, 1000.0), (20, 1002.0), (30, 1004.0), (40, 4604.0), (50, 4606.0)]
    write_events(str(tmp_path), times)
    read = training_time.summary_times(str(tmp_path))
    assert read == times
    seconds = training_time.training_seconds(read)
    # the first 10 steps at the median pace (0.2 s/step), then the gaps without the pause
    assert seconds == pytest.approx({10: 2.0, 20: 4.0, 30: 6.0, 40: 6.0, 50: 8.0})
    assert training_time.seconds_at(seconds, 25) == pytest.approx(5.0)
    with pytest.raises(ValueError, match='outside'):
        training_time.seconds_at(seconds, 60)


def test_steps_within_each_budget():
    seconds = {step: step * 0.6 for step in range(100, 2001, 100)}  # 0.6 s a step
    saved = [500, 1000, 1500, 2000]
    # 5 min = 500 steps, 12 min = 1200, 1 min: none saved yet
    assert training_time.steps_at_minutes(seconds, saved, [1, 5, 12, 60]) == [None, 500, 1000,
                                                                              2000]


def fake_run(run, data, evaluated):
    """A run folder: flags.json, events of 0.3 s a step to step 2000, and one evaluation
    JSON per (step, variant, FID) of `evaluated`."""
    (run / 'model').mkdir(parents=True)
    if not (data / 'train.h5').exists():
        import h5py
        import numpy as np
        data.mkdir(exist_ok=True)
        with h5py.File(data / 'train.h5', 'w') as handle:
            handle['images'] = np.zeros((640, 4, 4, 1), np.uint8)
    (run / 'model' / 'flags.json').write_text(json.dumps(
        {'model_name': 'msvae', 'data_dir': str(data), 'train_data': 'train.h5', 'batch': 64}))
    write_events(str(run / 'log'), [(step, 100.0 + step * 0.3) for step in range(50, 2001, 50)])
    for step, variant, fid in evaluated:
        stage = {'samples': {'laplacian_variance_ratio': 0.95, 'high_frequency_ratio_ratio': 1.02}}
        result = {'stages': [stage], 'inception': {'samples': {
            'fid': fid, 'kid': 0.004, 'precision': 0.7, 'recall': 0.65, 'images': 10000}}}
        name = f'evaluation-{step}-{variant}.json' if variant else f'evaluation-{step}.json'
        (run / 'model' / name).write_text(json.dumps(result))


def report(*args):
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'recipe_report.py'),
                           *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_report_writes_a_table_and_a_figure_of_the_evaluations(tmp_path):
    run = tmp_path / 'run'
    fake_run(run, tmp_path / 'data', [(1000, 'gmm10', 12.5), (2000, 'gmm10', 9.25),
                                      (2000, '', 30.0)])  # the last: another prior
    out = tmp_path / 'out'
    report(f'--run={run}', f'--out={out}', '--name=r')
    table = (out / 'r.md').read_text().splitlines()
    rows = [line for line in table if line.startswith('| ') and 'min |' in line]
    # step 1000 after 1000 steps at 0.3 s (5 min), 100 epochs of 640 at batch 64
    assert rows == ['| 5 min | 1000 | 100.0 | 12.50 | 0.0040 | 0.700 | 0.650 | 0.950 | 1.020 '
                    '| 10000 |',
                    '| 10 min | 2000 | 200.0 | 9.25 | 0.0040 | 0.700 | 0.650 | 0.950 | 1.020 '
                    '| 10000 |']
    with Image.open(out / 'r_fid_time.png') as picture:
        assert picture.size[0] > 300 and picture.size[1] > 200
        colours = picture.convert('L').getcolors(maxcolors=1 << 16)
        assert len(colours) > 10  # a drawn plot, not a blank


def test_the_ablation_table_has_a_row_per_lever_and_says_which_were_not_run(tmp_path):
    root, data = tmp_path / 'ablation', tmp_path / 'data'
    fake_run(root / 'recipe', data, [(2000, 'gmm200', 9.5), (2000, 'gmm200-last', 11.0),
                                     (2000, 'gmm10', 10.5), (2000, '', 20.25)])
    fake_run(root / 'no_cosine', data, [(1000, 'gmm200', 14.0), (2000, 'gmm200', 12.75)])
    report(f'--ablation={root}', f'--out={tmp_path}', '--name=r')
    table = (tmp_path / 'r_ablation.md').read_text()
    rows = {line.split(' | ')[0][2:]: line.split(' | ')[1:4]
            for line in table.splitlines() if line.startswith('| ') and '---' not in line}
    assert rows['nothing: the full recipe'] == ['2000', '10.0 min', '9.50']
    assert rows['cosine schedule (constant rate)'] == ['2000', '10.0 min', '12.75']  # last step
    assert rows["averaged weights (the last step's)"] == ['2000', '10.0 min', '11.00']
    assert rows['200 components (10)'] == ['2000', '10.0 min', '10.50']
    assert rows['mixture prior (N(0, I) samples)'] == ['2000', '10.0 min', '20.25']
    assert rows['capacity (16 channels first)'][0] == 'not run'
    assert rows['the 32-d latent (16-d)'][0] == 'not run'
    assert rows["stage 2's SSIM (added, weight 1)"][0] == 'not run'
    assert len(rows) == 1 + 10  # the header and one row per lever
