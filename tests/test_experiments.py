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
