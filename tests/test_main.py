"""main.py as a user runs it: train, resume, predict, TensorBoard files, and wrong input."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

import main
from conftest import ROOT, TINY


def run_main(*args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def tiny_args(tiny_data, tmp_path, **overrides):
    values = dict(TINY, data_dir=str(tiny_data), modeldir=str(tmp_path / 'model'),
                  logdir=str(tmp_path / 'log'), sampledir=str(tmp_path / 'samples'))
    values.update(overrides)
    return [f'--{name}={value}' for name, value in values.items()]


def event_tags(logdir):
    tags = {}
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, value))
            if event.graph_def:
                tags.setdefault('graph', []).append(event.step)
    return tags


def test_train_resume_predict_as_subprocesses(tiny_data, tmp_path):
    done = run_main(*tiny_args(tiny_data, tmp_path))
    assert done.returncode == 0, done.stderr
    model_dir = tmp_path / 'model'
    assert sorted(p.name for p in model_dir.glob('*.index')) == ['msvae-10.index',
                                                                 'msvae-5.index']
    saved = json.loads((model_dir / 'flags.json').read_text())
    assert saved['network_depth'] == 2 and saved['latent_len'] == 4
    train_pngs = sorted(p.name for p in (tmp_path / 'samples' / 'train').glob('*.png'))
    assert train_pngs == ['step_0000005.png', 'step_0000010.png']

    tags = event_tags(str(tmp_path / 'log'))
    for name in ('total', 'kl', 'stage1_loss', 'stage2_loss', 'stage1_psnr', 'stage2_psnr'):
        assert [step for step, _ in tags[f'train/{name}']] == [5, 10]
        assert [step for step, _ in tags[f'valid/{name}']] == [5, 10]
    assert tags['valid/kl'][0][1].simple_value > 0
    image = tags['valid/reconstructions'][0][1].image
    # two bands of 8 images, each band rows input, stage 1, stage 2
    assert (image.height, image.width) == (6 * (16 + 2) - 2 + 6, 8 * (16 + 2) - 2)
    assert 'graph' in tags

    resumed = run_main(*tiny_args(tiny_data, tmp_path, max_step=15))
    assert resumed.returncode == 0, resumed.stderr
    assert 'steps 11..15 (resumed)' in resumed.stdout
    reader = tf.train.load_checkpoint(str(model_dir / 'msvae-15'))
    assert reader.get_tensor('global_step') == 15

    predicted = run_main(f'--modeldir={model_dir}', f'--sampledir={tmp_path / "out"}',
                         '--num_samples=5', '--action=predict', '--data_dir=/nonexistent')
    assert predicted.returncode == 0, predicted.stderr
    folder = tmp_path / 'out' / 'predict_step_15'
    samples = sorted(folder.glob('sample_*.png'))
    assert len(samples) == 5
    pixels = []
    for path in samples:
        with Image.open(path) as png:
            assert png.size == (16, 16) and png.mode == 'L'
            pixels.append(np.asarray(png, np.float32))
    assert all(p.std() > 1 for p in pixels)  # not constant images
    assert not np.allclose(pixels[0], pixels[1])  # different samples
    with Image.open(folder / 'grid.png') as grid:
        assert grid.size == (5 * 16 + 4 * 2, 2 * 16 + 2)  # one band: stage 1 over stage 2


def test_predict_writes_the_requested_number_of_samples(tiny_conf):
    conf = tiny_conf(max_step=5)
    assert main.run(conf) == 5
    for count in (3, 20):
        folder = main.run(tiny_conf(action='predict', num_samples=count, predict_step=-1))
        assert len(glob.glob(os.path.join(folder, 'sample_*.png'))) == count


def test_predict_goes_a_batch_at_a_time_and_its_grid_shows_the_first_samples(tiny_conf):
    """More samples than a batch and than the grid holds: every PNG is the sample that one
    pass of all of them gives, and the grid has GRID_SAMPLES of them (16 bands of 16)."""
    import runner
    from utils.run import images
    conf = tiny_conf(max_step=5)
    assert main.run(conf) == 5
    count = runner.GRID_SAMPLES + 20  # 276 samples at --batch=8
    folder = main.run(tiny_conf(action='predict', num_samples=count, predict_step=-1))
    model = runner.Runner(tiny_conf(action='predict'))
    try:
        model.restore_for('predict')
        whole = model.sample(count)[-1]  # one pass of all of them
    finally:
        model.close()
    expected = images.to_uint8(whole)
    for index in (0, 7, 8, 255, 256, count - 1):
        with Image.open(os.path.join(folder, f'sample_{index:04d}.png')) as picture:
            written = np.asarray(picture).reshape(expected[index].shape)
        assert np.abs(written.astype(int) - expected[index]).max() <= 1, index
    assert len(glob.glob(os.path.join(folder, 'sample_*.png'))) == count
    rows, gap = 16 * 2, images.GAP  # 16 bands of 16 samples, a row per stage
    with Image.open(os.path.join(folder, 'grid.png')) as grid:
        assert grid.size == (16 * 16 + 15 * gap,
                             rows * 16 + (rows - 1) * gap + 15 * images.BAND_GAP)


def test_help_shows_every_default():
    result = run_main('--helpshort')  # absl prints the help and exits with status 1
    for name in main.FLAG_NAMES:
        assert f'--{name}:' in result.stdout or f'--[no]{name}:' in result.stdout
    assert result.stdout.count('(default:') >= len(main.FLAG_NAMES)


def test_celeba_flagfile_is_a_valid_128px_rgb_setting():
    flags = main.FLAGS
    flags.unparse_flags()
    try:
        flags(['main.py', f'--flagfile={os.path.join(ROOT, "configs", "celeba128.flags")}'])
        conf = main.config_from_flags()
    finally:
        flags.unparse_flags()
    assert (conf.height, conf.width, conf.channel) == (128, 128, 3)
    assert conf.train_data == 'celeba128_train.h5'
    main.validate(conf)  # raises on flags that cannot work together


def test_fresh_start_deletes_the_earlier_run_and_deterministic_trains(tiny_data, tmp_path):
    first = run_main(*tiny_args(tiny_data, tmp_path, max_step=10, valid_data=''))
    assert first.returncode == 0, first.stderr
    (tmp_path / 'model' / 'notes.txt').write_text('kept')
    again = run_main(*tiny_args(tiny_data, tmp_path, max_step=5, valid_data='', latent_len=6),
                     '--fresh_start', '--deterministic')
    assert again.returncode == 0, again.stderr
    assert 'deleted 2 checkpoints' in again.stdout and 'steps 1..5 (from scratch)' in again.stdout
    model_dir = tmp_path / 'model'
    assert sorted(p.name for p in model_dir.glob('*.index')) == ['msvae-5.index']
    assert json.loads((model_dir / 'flags.json').read_text())['latent_len'] == 6
    assert (model_dir / 'notes.txt').read_text() == 'kept'
