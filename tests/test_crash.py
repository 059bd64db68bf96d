"""Nothing lost: kill -9 at random moments, SIGTERM/SIGINT, and a full disk while saving."""
import glob
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY
from utils.run import checkpoints

# timing-sensitive (kill at random moments, local ports, deadlines): the suite runs
# these alone, after the parallel part (README "Two commands")
pytestmark = pytest.mark.serial


def main_args(tiny_data, tmp_path, **overrides):
    values = dict(TINY, data_dir=str(tiny_data), modeldir=str(tmp_path / 'model'),
                  logdir=str(tmp_path / 'log'), sampledir=str(tmp_path / 'samples'),
                  valid_data='')
    values.update(overrides)
    return [sys.executable, os.path.join(ROOT, 'main.py')] + [
        f'--{name}={value}' for name, value in values.items()]


def start(command, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kwargs)


def check_latest_checkpoint(modeldir):
    """The newest checkpoint loads whole, holds its own step, and has no half-written twin.
    Returns its step (0 when there is none)."""
    steps = checkpoints.saved_steps(modeldir, 'msvae')
    for index in glob.glob(os.path.join(modeldir, 'msvae-*.index')):
        assert glob.glob(index[:-len('.index')] + '.data-*'), f'{index} without data'
    state = tf.train.get_checkpoint_state(modeldir)
    if not steps:
        assert state is None
        return 0
    # TensorFlow's state file names whole checkpoints only: the newest, or (killed between
    # publishing a checkpoint and rewriting the file) the one before it
    listed = [os.path.basename(path) for path in state.all_model_checkpoint_paths]
    assert set(listed) <= {f'msvae-{step}' for step in steps}
    assert tf.train.latest_checkpoint(modeldir) in [
        checkpoints.checkpoint_prefix(modeldir, 'msvae', step) for step in steps[-2:]]
    reader = tf.train.load_checkpoint(checkpoints.checkpoint_prefix(modeldir, 'msvae', steps[-1]))
    for name in reader.get_variable_to_shape_map():
        assert np.all(np.isfinite(reader.get_tensor(name))), name
    assert reader.get_tensor('global_step') == steps[-1]
    return steps[-1]


def wait_for_progress(modeldir, beyond, timeout=300):
    """Waits until a checkpoint newer than step `beyond` appears (training is running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = checkpoints.saved_steps(modeldir, 'msvae')
        if steps and steps[-1] > beyond:
            return
        time.sleep(0.05)
    raise AssertionError('training made no progress')


def test_kill_nine_at_random_moments_loses_nothing_saved(tiny_data, tmp_path):
    """Twelve kill -9s: two during start-up, ten while training saves every step. Each
    restart finds a whole checkpoint no older than the last one seen, and a last run
    resumes from the newest and ends at its max_step."""
    rng = random.Random(2026)
    modeldir = str(tmp_path / 'model')
    command = main_args(tiny_data, tmp_path, max_step=1500, save_step=1, keep_checkpoints=3,
                        summary_step=50)
    last, kills, during_save = 0, 0, 0
    while kills < 12:
        process = start(command)
        if kills < 2:
            time.sleep(rng.uniform(0.2, 3.0))
        else:
            wait_for_progress(modeldir, last)
            time.sleep(rng.uniform(0.0, 1.0))
        process.kill()
        process.communicate()
        assert process.returncode == -signal.SIGKILL
        kills += 1
        during_save += bool(glob.glob(os.path.join(modeldir, checkpoints.PARTIAL + '*')))
        latest = check_latest_checkpoint(modeldir)
        assert latest >= last, 'the global step went back past a save'
        last = latest
    assert last > 0
    # the last run ends a few steps on (1500 is only a step the kills never reach)
    end = last + 5
    finished = subprocess.run(main_args(tiny_data, tmp_path, max_step=end, save_step=1,
                                        keep_checkpoints=3, summary_step=50),
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f'steps {last + 1}..{end} (resumed)' in finished.stdout
    assert check_latest_checkpoint(modeldir) == end
    assert tf.train.latest_checkpoint(modeldir) == os.path.join(modeldir, f'msvae-{end}')
    assert [os.path.basename(path) for path in tf.train.get_checkpoint_state(
        modeldir).all_model_checkpoint_paths] == [f'msvae-{step}' for step in range(end - 2,
                                                                                    end + 1)]
    assert not glob.glob(os.path.join(modeldir, checkpoints.PARTIAL + '*'))
    print(f'{kills} kills, {during_save} during a checkpoint write, last saved step {last}')


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_it_arrived_at_and_exits(tiny_data, tmp_path, signum):
    modeldir = str(tmp_path / 'model')
    process = start(main_args(tiny_data, tmp_path, max_step=100000, save_step=100000,
                              summary_step=1000))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    # waits on the events themselves (training began, the process ended), under caps
    # generous enough for a loaded machine: the run had ~100,000 steps left, so ending
    # at all means that the signal stopped it
    deadline = time.time() + 300
    while not any('training steps' in line for line in lines) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signum)
    process.wait(timeout=300)
    reader.join(timeout=30)
    assert process.returncode == 128 + signum
    stopped = [line for line in lines if line.startswith('stopped by')]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0]
    step = int(stopped[0].split(' at step ')[1].split(':')[0])
    assert step > 0 and checkpoints.saved_steps(modeldir, 'msvae') == [step]
    assert check_latest_checkpoint(modeldir) == step


def limit_file_size(limit):
    """For preexec_fn: files may not grow past `limit` bytes; writes beyond fail with
    EFBIG (as on a full disk) instead of killing the process."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def test_a_full_disk_while_saving_keeps_the_earlier_checkpoint(tiny_data, tmp_path):
    modeldir = str(tmp_path / 'model')
    first = subprocess.run(main_args(tiny_data, tmp_path, max_step=5), capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    before = {path: open(path, 'rb').read() for path in glob.glob(modeldir + '/msvae-5.*')}
    data_size = os.path.getsize(glob.glob(modeldir + '/msvae-5.data-*')[0])
    full = subprocess.run(main_args(tiny_data, tmp_path, max_step=10), capture_output=True,
                          text=True, timeout=600, preexec_fn=limit_file_size(data_size // 2))
    assert full.returncode == 2
    errors = [line for line in full.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'could not write checkpoint msvae-10' in errors[0]
    assert 'msvae-5' not in errors[0] or 'intact' in errors[0]
    assert {path: open(path, 'rb').read() for path in glob.glob(modeldir + '/msvae-5.*')} == before
    assert checkpoints.saved_steps(modeldir, 'msvae') == [5]
    assert check_latest_checkpoint(modeldir) == 5
    assert not glob.glob(os.path.join(modeldir, checkpoints.PARTIAL + '*'))
    resumed = subprocess.run(main_args(tiny_data, tmp_path, max_step=10), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0 and 'steps 6..10 (resumed)' in resumed.stdout
