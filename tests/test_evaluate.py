"""--action=reconstruct, --action=evaluate and the comparison of several models."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

import main
from conftest import ROOT
from helpers import blob_images
from utils.data.hdf5_writer import write_images
from utils.evaluation import comparison, fid, inception, measure, metrics, training_time
from utils.run import checkpoints, config

FINITE_KEYS = ('psnr', 'ssim', 'ms_ssim')


@pytest.fixture
def trained(tiny_conf, tiny_data):
    """make(**flags) => the RunConfig of a tiny model trained 10 steps, with a test split."""
    write_images(str(tiny_data / 'test.h5'), blob_images(40, seed=4))

    def make(**overrides):
        conf = tiny_conf(valid_data='', **overrides)
        assert main.run(conf) == conf.max_step
        return conf
    return make


def as_action(conf, action, **overrides):
    values = conf.as_dict()
    values.update(action=action, **overrides)
    return config.RunConfig(**values)


def test_dequantized_nll_against_monte_carlo():
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (3, 4, 4, 1))
    targets = levels * (2 / 255) - 1
    means = np.clip(targets + rng.normal(0, 0.2, targets.shape), -1, 1)
    sigma, step = 0.3, 2 / 255
    u = rng.random((20000,) + targets.shape)
    log_density = stats.norm.logpdf(targets + u * step, loc=means, scale=sigma)
    expected = -log_density.sum(axis=(2, 3, 4)).mean(axis=0) - 16 * math.log(step)
    np.testing.assert_allclose(measure.dequantized_nll(targets, means, sigma), expected,
                               rtol=1e-3)


def test_reconstruct_writes_rows_input_and_every_stage(trained, tiny_data):
    conf = trained(num_stages=3)
    folder = main.run(as_action(conf, 'reconstruct', num_samples=6))
    names = sorted(os.listdir(folder))
    for prefix in ('input', 'stage1', 'stage2', 'stage3'):
        assert [n for n in names if n.startswith(prefix + '_')] == [
            f'{prefix}_{i:04d}.png' for i in range(6)]
    with Image.open(os.path.join(folder, 'grid.png')) as grid:
        assert grid.size == (6 * 16 + 5 * 2, 4 * 16 + 3 * 2)  # (N + 1) rows of 6
    with Image.open(os.path.join(folder, 'input_0002.png')) as png:
        np.testing.assert_array_equal(np.asarray(png), blob_images(40, seed=4)[2, ..., 0])


def test_evaluate_json_matches_the_graph_metrics(trained):
    conf = trained(num_stages=2)
    result = main.run(as_action(conf, 'evaluate', eval_samples=24))
    path = checkpoints.evaluation_path(conf.modeldir, 10)
    with open(path) as handle:
        saved = json.load(handle)
    assert saved == json.loads(json.dumps(result))
    assert (saved['test_images'], saved['prior_samples']) == (24, 24)

    def values(node):
        if isinstance(node, dict):
            return [v for value in node.values() for v in values(value)]
        if isinstance(node, list):
            return [v for value in node for v in values(value)]
        return [node] if isinstance(node, float) else []
    assert all(math.isfinite(v) for v in values(saved))
    assert len(saved['stages']) == 2
    for entry in saved['stages']:
        assert entry['size'] == [16, 16] and all(key in entry for key in FINITE_KEYS)
        for kind in ('reconstructions', 'samples'):
            for name in measure.SHARPNESS:
                ratio = entry[kind][name] / entry['real'][name]
                assert entry[kind][f'{name}_ratio'] == pytest.approx(ratio)
    # the same test images through the graph's own TensorFlow metrics
    runner = main.load_tensorflow_quietly()
    model = runner.Runner(conf)
    model.restore(10)
    graph = model.evaluate_metrics(model.test_batches(24))
    model.close()
    assert saved['kl'] == pytest.approx(graph['kl'], rel=1e-4)
    for stage in (1, 2):
        assert saved['stages'][stage - 1]['psnr'] == pytest.approx(graph[f'stage{stage}_psnr'],
                                                                   rel=1e-4)
    # −ELBO: KL plus the stage-1 loss, the Gaussian constant and the bin width (see README)
    step = 2 / 255
    dims = 16 * 16
    constant = dims * (math.log(conf.sigma * math.sqrt(2 * math.pi)) - math.log(step))
    lower = (graph['kl'] + graph['stage1_loss'] + constant) / (dims * math.log(2))
    assert saved['negative_elbo_bits_per_dim'] == pytest.approx(lower, rel=0.02)


def test_evaluate_writes_fid_kid_precision_recall_of_the_final_stage(trained):
    conf = trained(num_stages=2)
    saved = main.run(as_action(conf, 'evaluate', eval_samples=24))['inception']
    assert saved['reference_images'] == 24
    for kind in ('reconstructions', 'samples'):
        entry = saved[kind]
        assert entry['images'] == 24 and entry['fid'] > 0 and entry['kid_std'] >= 0
        assert 0 <= entry['precision'] <= 1 and 0 <= entry['recall'] <= 1
    # the same numbers from the final stage's reconstructions, computed here batch by
    # batch as evaluate does (ε is drawn per batch from the seed and the step)
    runner = main.load_tensorflow_quietly()
    model = runner.Runner(conf)
    model.restore(10)
    batches = list(model.test_batches(24))
    tests = np.concatenate(batches)
    outputs = np.concatenate([model.reconstruct_batch(b)['outputs'][-1] for b in batches])
    model.close()
    with inception.InceptionFeatures(1) as features:
        real, fake = features(tests), features(outputs)
    assert saved['reconstructions']['fid'] == pytest.approx(fid.fid(real, fake), rel=1e-4)
    assert saved['reconstructions']['kid'] == pytest.approx(fid.kid(real, fake)[0], rel=1e-4)
    precision, recall = fid.precision_recall(real, fake)
    assert (saved['reconstructions']['precision'], saved['reconstructions']['recall']) == \
        pytest.approx((precision, recall))
    # --noeval_fid: the rest of the evaluation without the Inception network
    assert 'inception' not in main.run(as_action(conf, 'evaluate', eval_samples=24,
                                                 eval_fid=False))


def test_the_truncation_sweep_gives_what_evaluate_gives_at_each_truncation(trained, tmp_path):
    conf = trained(num_stages=2, sample_prior='gmm', prior_components=2)
    sys.path.insert(0, os.path.join(ROOT, 'experiments'))
    import truncation_sweep
    conf = as_action(conf, 'evaluate', eval_samples=24, eval_fid_reconstructions=False)
    rows = truncation_sweep.sweep(conf, [0.0, 0.3])
    assert [row['truncation'] for row in rows] == [0.0, 0.3]
    assert rows[0]['draws_per_sample'] == 1 and rows[1]['draws_per_sample'] > 1.1
    runner = main.load_tensorflow_quietly()
    for row in rows:
        # evaluate itself (main.run would take the run's own --prior_truncation, 0)
        model = runner.Runner(as_action(conf, 'evaluate', prior_truncation=row['truncation']))
        try:
            result = runner.evaluate(model)
        finally:
            model.close()
        scores, final = result['inception']['samples'], result['stages'][-1]['samples']
        for name in ('fid', 'kid'):
            assert row[name] == pytest.approx(scores[name], rel=1e-3)
        assert (row['precision'], row['recall']) == (scores['precision'], scores['recall'])
        for name in ('laplacian_variance', 'high_frequency_ratio'):
            assert row[f'{name}_ratio'] == pytest.approx(final[f'{name}_ratio'], rel=1e-4)
    # truncating changed the samples, and so their scores
    assert rows[1]['fid'] != pytest.approx(rows[0]['fid'], rel=1e-3)
    markdown, figure = truncation_sweep.write_outputs(rows, conf, str(tmp_path / 'out'),
                                                      'sweep')
    lines = open(markdown).read().splitlines()
    assert '24 per row (seed 1234) against the first 24 test images' in lines[0]
    assert lines[-2].startswith('| 0 | 1.000 | ') and lines[-1].startswith('| 0.3 | ')
    assert Image.open(figure).size[0] > 100


def test_evaluate_coarse_to_fine_sizes(trained):
    conf = trained(num_stages=2, coarse_scale=1)
    result = main.run(as_action(conf, 'evaluate', eval_samples=16, eval_fid=False))
    assert [entry['size'] for entry in result['stages']] == [[8, 8], [16, 16]]
    assert 'negative_elbo_bits_per_dim' not in result  # stage 1 sees averaged pixels
    assert 'ssim' not in result['stages'][0]  # 8x8 is smaller than one SSIM window
    assert 'ms_ssim' not in result['stages'][0] and 'ms_ssim' in result['stages'][1]
    folder = main.run(as_action(conf, 'reconstruct', num_samples=4))
    with Image.open(os.path.join(folder, 'stage1_0000.png')) as png:
        assert png.size == (8, 8)
    with Image.open(os.path.join(folder, 'grid.png')) as grid:
        assert grid.size == (4 * 16 + 3 * 2, 3 * 16 + 2 * 2)  # stage 1 shown enlarged


def compare_command(*args):
    """python compare.py ARGS..., as a user runs it."""
    return subprocess.run([sys.executable, os.path.join(ROOT, 'compare.py'), *args],
                          capture_output=True, text=True, timeout=600)


def test_compare_writes_figure_and_table(trained, tmp_path):
    vae = trained(num_stages=1, decoder='plain', modeldir=str(tmp_path / 'vae'),
                  logdir=str(tmp_path / 'vae_log'), eval_samples=24)
    msvae = trained(num_stages=2, modeldir=str(tmp_path / 'msvae'),
                    logdir=str(tmp_path / 'msvae_log'), eval_samples=24)
    shutil.rmtree(vae.logdir)  # a run whose events are gone: its time is not recorded
    out = tmp_path / 'out'
    done = compare_command(vae.modeldir, msvae.modeldir, '--labels=VAE,MSVAE', f'--out={out}',
                           '--num_images=5', '--name=side')
    assert done.returncode == 0, done.stderr
    for conf in (vae, msvae):  # computed because they were missing
        assert os.path.exists(checkpoints.evaluation_path(conf.modeldir, 10))
    with Image.open(out / 'side.png') as picture:
        zoom = 3
        assert picture.size == (comparison.LABEL_WIDTH + zoom * (5 * 16 + 4 * 2),
                                zoom * (3 * 16 + 2 * 2))
        pixels = np.asarray(picture.convert('L'))
    assert pixels[:, :comparison.LABEL_WIDTH].min() < 100  # the labels are drawn
    table = (out / 'side.md').read_text()
    rows = [line.split(' | ')[0] for line in table.splitlines() if line.startswith('| ')]
    # reconstructions, samples, training, FID and control tables
    assert rows.count('| VAE') == 5
    assert rows.count('| MSVAE (stage 1)') == 2 and rows.count('| MSVAE (stage 2)') == 2
    assert rows.count('| MSVAE') == 3 and sum(r.startswith('| VAE + noise') for r in rows) == 1
    with open(checkpoints.evaluation_path(msvae.modeldir, 10)) as handle:
        saved = json.load(handle)
    psnr = saved['stages'][1]['psnr']
    assert f'| MSVAE (stage 2) | 10 |' in table and f'{psnr:.4f}' in table
    assert f'| MSVAE | {saved["inception"]["samples"]["fid"]:.2f} |' in table
    assert '| VAE | 10 | not recorded | - |' in table
    seconds = training_time.training_seconds(training_time.summary_times(msvae.logdir))
    last = max(seconds)
    spent = seconds[last] * 10 / last  # step 10, at the run's pace after its last summary
    timing = [row for row in table.splitlines() if row.startswith('| MSVAE | 10 | ')]
    assert len(timing) == 1 and f'| {spent / 60:.1f} min |' in timing[0]
    assert timing[0].endswith(f'| {10 * msvae.batch / spent:.0f} |')


def test_compare_refuses_a_folder_without_a_model(tmp_path):
    done = compare_command(str(tmp_path / 'nothing'), f'--out={tmp_path / "out"}')
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f'error: {tmp_path / "nothing"} holds no trained model (flags.json missing)']



def test_noise_control_matches_the_goal_and_costs_fidelity():
    targets = blob_images(30, 16, 16, seed=5).astype(np.float64) / 127.5 - 1
    blurred = np.stack([targets[i - 1] * 0.3 + targets[i] * 0.7 for i in range(30)])
    real = metrics.laplacian_variance(targets).mean()
    start = metrics.laplacian_variance(blurred).mean() / real
    std, noisy = comparison.noise_to_match(blurred, targets, goal=3 * start)
    assert std > 0
    assert metrics.laplacian_variance(noisy).mean() / real == pytest.approx(3 * start, rel=1e-3)
    assert metrics.psnr(targets, noisy).mean() < metrics.psnr(targets, blurred).mean()
    assert comparison.noise_to_match(blurred, targets, goal=start / 2)[0] == 0.0
