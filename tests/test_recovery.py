"""Damaged or mismatched state is recovered from or named: a damaged newest checkpoint
is skipped for the newest whole one, a missing data file is named, a flags.json that
describes no model is one error; one training per model folder (the lock, free again
after kill -9); --model_name changes and runs stopped before their first checkpoint."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import main
import runner
from conftest import ROOT, TINY
from helpers import ctrl_c_as_at_a_terminal
from test_crash import main_args, start, wait_for_progress
from utils.run import checkpoints, folder_lock
from utils.run.errors import UserError


@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory):
    """A tiny run with checkpoints msvae-5 and msvae-10, made once (copy before changing)."""
    root = tmp_path_factory.mktemp('two_checkpoints')
    from helpers import blob_images
    from utils.data.hdf5_writer import write_images
    write_images(str(root / 'data' / 'train.h5'), blob_images(96, seed=1))
    write_images(str(root / 'data' / 'test.h5'), blob_images(32, seed=3))
    conf = main.default_config(**dict(TINY, data_dir=str(root / 'data'), valid_data='',
                                      modeldir=str(root / 'model'), logdir=str(root / 'log'),
                                      sampledir=str(root / 'samples')))
    assert main.run(conf) == 10
    return root


def copy_run(source, tmp_path):
    for name in ('data', 'model'):
        shutil.copytree(source / name, tmp_path / name)
    return main.default_config(**dict(TINY, data_dir=str(tmp_path / 'data'), valid_data='',
                                      modeldir=str(tmp_path / 'model'),
                                      logdir=str(tmp_path / 'log'),
                                      sampledir=str(tmp_path / 'samples')))


def truncate(path):
    with open(path, 'r+b') as handle:
        handle.truncate(os.path.getsize(path) // 2)


def zero(path):
    size = os.path.getsize(path)
    with open(path, 'r+b') as handle:
        handle.write(b'\0' * size)


DAMAGE = {
    'truncated_data': lambda prefix: truncate(prefix + '.data-00000-of-00001'),
    'zeroed_data': lambda prefix: zero(prefix + '.data-00000-of-00001'),
    'truncated_index': lambda prefix: truncate(prefix + '.index'),
    'zeroed_index': lambda prefix: zero(prefix + '.index'),
    'missing_data': lambda prefix: os.remove(prefix + '.data-00000-of-00001'),
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_predict_skips_a_damaged_newest_checkpoint_for_the_newest_whole_one(
        damage, two_checkpoints, tmp_path, capsys):
    conf = copy_run(two_checkpoints, tmp_path)
    DAMAGE[damage](os.path.join(conf.modeldir, 'msvae-10'))
    folder = main.run(conf.replace(action='predict'))
    assert os.path.basename(folder) == 'predict_step_5'
    notes = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith('note: skipped checkpoint msvae-10')]
    assert len(notes) == 1 and 'restored msvae-5' in notes[0]
    assert ('is missing' in notes[0]) == (damage == 'missing_data')
    # asked for by its step, the damaged checkpoint is an error that says so
    with pytest.raises(UserError, match='msvae-10 cannot be loaded: (damaged|its data file)'):
        main.run(conf.replace(action='predict', predict_step=10))


def test_a_checkpoint_pruned_while_predict_reads_it_is_looked_for_again(
        two_checkpoints, tmp_path, monkeypatch, capsys):
    """A training in the same folder deletes msvae-10 between predict's listing of its
    variables and the restore: predict restores the newest one still there, and a folder
    whose checkpoints keep vanishing is one error that says why."""
    conf = copy_run(two_checkpoints, tmp_path)
    list_variables = runner.tf1.train.list_variables
    pruned = []

    def list_then_prune(prefix):
        """Lists `prefix`, then plays the training: a newer save (with `always`) and the
        prune of `prefix`."""
        listed = list_variables(prefix)
        if not pruned or pruned[0] == 'always':
            step = int(prefix.rsplit('-', 1)[1])
            if pruned:
                for path in glob.glob(prefix + '.*'):
                    shutil.copy(path, path.replace(f'-{step}.', f'-{step + 5}.'))
            checkpoints.remove_checkpoint(conf.modeldir, 'msvae', step)
            pruned.append(os.path.basename(prefix))
        return listed
    monkeypatch.setattr(runner.tf1.train, 'list_variables', list_then_prune)
    folder = main.run(conf.replace(action='predict'))
    assert os.path.basename(folder) == 'predict_step_5'
    assert pruned == ['msvae-10']
    assert 'skipped' not in capsys.readouterr().out  # not damaged: gone

    conf = copy_run(two_checkpoints, tmp_path / 'again')
    pruned[:] = ['always']
    with pytest.raises(UserError, match=f'deleted while they were read '
                                        f'\\({runner.RESTORE_TRIES} tries\\)'):
        main.run(conf.replace(action='predict'))
    assert pruned[1:] == [f'msvae-{step}' for step in range(10, 10 + 5 * runner.RESTORE_TRIES, 5)]


def test_training_resumes_from_the_newest_whole_checkpoint(two_checkpoints, tmp_path, capsys):
    conf = copy_run(two_checkpoints, tmp_path)
    truncate(os.path.join(conf.modeldir, 'msvae-10.data-00000-of-00001'))
    assert main.run(conf.replace(max_step=12)) == 12
    out = capsys.readouterr().out
    assert 'note: skipped checkpoint msvae-10' in out and 'training steps 6..12' in out
    # step 10 was written again, whole this time
    assert checkpoints.saved_steps(conf.modeldir, 'msvae') == [5, 10, 12]
    assert os.path.basename(main.run(conf.replace(action='predict', predict_step=10))) == \
        'predict_step_10'


def test_no_loadable_checkpoint_at_all_is_one_error(two_checkpoints, tmp_path):
    conf = copy_run(two_checkpoints, tmp_path)
    for step in (5, 10):
        zero(os.path.join(conf.modeldir, f'msvae-{step}.index'))
    with pytest.raises(UserError, match='no checkpoint of msvae in .* can be loaded'):
        main.run(conf.replace(action='predict'))


@pytest.mark.parametrize('content, expected', [
    ('[]', 'not the flags of a run'), ('{}', 'not the flags of a run'),
    ('"msvae"', 'not the flags of a run'), ('{"height": "tall"}', 'does not describe a model'),
    ('{"latent_len": -3}', 'does not describe a model')])
def test_a_flags_file_that_describes_no_model_is_one_error(content, expected, two_checkpoints,
                                                           tmp_path):
    conf = copy_run(two_checkpoints, tmp_path)
    path = os.path.join(conf.modeldir, 'flags.json')
    if content.startswith('{"'):  # a field of the real flags replaced
        import json
        with open(path) as handle:
            saved = json.load(handle)
        saved.update(json.loads(content))
        content = json.dumps(saved)
    with open(path, 'w') as handle:
        handle.write(content)
    with pytest.raises(UserError, match=expected):
        main.run(conf.replace(action='predict'))


# ---------------------------------------------------------------- the model folder

def test_another_model_name_is_refused_and_fresh_start_deletes_the_earlier_run(
        two_checkpoints, tmp_path):
    conf = copy_run(two_checkpoints, tmp_path)
    with pytest.raises(UserError, match="holds the run 'msvae', not --model_name='other'"):
        main.run(conf.replace(model_name='other'))
    assert checkpoints.saved_steps(conf.modeldir, 'msvae') == [5, 10]
    assert main.run(conf.replace(model_name='other', fresh_start=True, max_step=5)) == 5
    assert checkpoints.saved_steps(conf.modeldir, 'msvae') == []  # no orphans left
    assert checkpoints.saved_steps(conf.modeldir, 'other') == [5]
    folder = main.run(conf.replace(model_name='other', action='predict'))
    assert os.path.basename(folder) == 'predict_step_5'


def test_a_run_stopped_before_its_first_checkpoint_does_not_hold_the_folder(
        two_checkpoints, tmp_path, capsys):
    conf = copy_run(two_checkpoints, tmp_path)
    for step in (5, 10):
        checkpoints.remove_checkpoint(conf.modeldir, 'msvae', step)
    # flags.json alone (a kill before step 5): other architecture flags are fine
    assert main.run(conf.replace(latent_len=6, max_step=5)) == 5
    assert 'saved no checkpoint; starting over' in capsys.readouterr().out
    assert checkpoints.load_config(conf.modeldir)['latent_len'] == 6


def test_model_name_with_a_folder_is_refused_before_training():
    with pytest.raises(UserError, match='must be a plain file name'):
        main.validate(main.default_config(model_name='sub/net'))


def holder_pid(modeldir):
    path = os.path.join(modeldir, folder_lock.LOCK_FILE)
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    return int(text.split()[1]) if text.startswith('process ') else None


def test_one_training_per_folder_the_lock_frees_on_kill_and_predict_reads_meanwhile(
        tiny_data, tmp_path):
    modeldir = str(tmp_path / 'model')
    first = start(main_args(tiny_data, tmp_path, max_step=100000, save_step=5,
                            summary_step=1000))
    wait_for_progress(modeldir, 5)
    assert holder_pid(modeldir) == first.pid

    second = subprocess.run(main_args(tiny_data, tmp_path, random_seed=7), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f'is in use by a training (process {first.pid}' in lines[0]

    reader = subprocess.run(main_args(tiny_data, tmp_path, action='predict'), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert reader.returncode == 0, reader.stderr  # reading while training writes

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=300)
    assert holder_pid(modeldir) == first.pid  # the file stays: its lock does not
    third = start(main_args(tiny_data, tmp_path, max_step=100000, save_step=100000,
                            summary_step=1000))
    lines = []
    threading.Thread(target=lambda: lines.extend(third.stdout), daemon=True).start()
    deadline = time.time() + 300  # until its training loop (and signal handling) runs
    while not any('training steps' in line for line in lines) and time.time() < deadline:
        assert third.poll() is None, lines
        time.sleep(0.1)
    assert holder_pid(modeldir) == third.pid
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=300) == 128 + signal.SIGTERM
    assert holder_pid(modeldir) is None  # a run that ends removes its lock file


def test_the_lock_holder_is_named_and_a_failed_check_leaves_no_lock_file(tmp_path):
    folder = str(tmp_path)
    with folder_lock.held(folder):
        assert holder_pid(folder) == os.getpid()
        code = ('import sys; from utils.run import folder_lock\n'
                'try:\n    folder_lock.acquire(sys.argv[1])\n'
                'except Exception as err:\n    print(err)\n')
        other = subprocess.run([sys.executable, '-c', code, folder], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert f'in use by a training (process {os.getpid()}' in other.stdout
    assert not os.path.exists(os.path.join(folder, folder_lock.LOCK_FILE))
    conf = main.default_config(modeldir=str(tmp_path / 'model'), data_dir=str(tmp_path / 'none'),
                               train_data='typo.h5', logdir=str(tmp_path / 'log'),
                               sampledir=str(tmp_path / 's'))
    with pytest.raises(UserError, match='typo.h5 not found'):
        main.run(conf)
    assert os.listdir(tmp_path / 'model') == []
    np.testing.assert_equal(holder_pid(str(tmp_path / 'model')), None)


def test_a_second_predict_of_fewer_samples_leaves_no_stale_ones(two_checkpoints, tmp_path):
    conf = copy_run(two_checkpoints, tmp_path).replace(action='predict')
    folder = main.run(conf.replace(num_samples=6))
    assert main.run(conf.replace(num_samples=3, random_seed=9)) == folder
    assert sorted(name for name in os.listdir(folder) if name.startswith('sample_')) == [
        'sample_0000.png', 'sample_0001.png', 'sample_0002.png']


def test_evaluate_that_cannot_write_its_file_prints_its_report_then_says_what_failed(
        two_checkpoints, tmp_path):
    """A folder in the way of the evaluation JSON stands for a read-only modeldir (which
    root, who runs CI, could write anyway)."""
    conf = copy_run(two_checkpoints, tmp_path)
    os.mkdir(os.path.join(conf.modeldir, 'evaluation-10.json'))
    values = dict(action='evaluate', eval_fid=False, eval_samples=8, test_data='test.h5',
                  data_dir=conf.data_dir, modeldir=conf.modeldir, sampledir=conf.sampledir)
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] +
                            [f'--{name}={value}' for name, value in values.items()],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.startswith('error')]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert 'could not write' in lines[0] and 'the report above holds its numbers' in lines[0]
    assert '| stage | size | PSNR dB' in result.stdout
    assert not [name for name in os.listdir(conf.modeldir) if '.partial-' in name]


def damaged_gzip_file(path, count=96, seed=1):
    """A gzip-compressed images file (as a user's own tool may write) whose fourth chunk
    of 8 images holds random bytes: reading it fails in HDF5's inflate."""
    import h5py
    from helpers import blob_images
    with h5py.File(path, 'w') as handle:
        handle.create_dataset('images', data=blob_images(count, seed=seed),
                              chunks=(8, 16, 16, 1), compression='gzip')
    with h5py.File(path, 'r') as handle:
        info = handle['images'].id.get_chunk_info(3)
    with open(path, 'r+b') as handle:
        handle.seek(info.byte_offset)
        handle.write(np.random.default_rng(0).bytes(info.size))


def run_main(args):
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith('error')]
    tracebacks = 'Traceback' in result.stderr
    return result, errors, tracebacks


@pytest.mark.parametrize('memory_mb', [512, 0])  # read whole, and streamed
def test_a_damaged_chunk_in_the_training_file_is_one_line(tiny_data, tmp_path, memory_mb):
    damaged_gzip_file(str(tiny_data / 'train.h5'))
    result, errors, tracebacks = run_main(main_args(tiny_data, tmp_path,
                                                    reader_memory_mb=memory_mb))
    assert result.returncode == 2 and not tracebacks, result.stderr
    assert len(errors) == 1 and 'train.h5 failed' in errors[0] and 'damaged' in errors[0]


def test_a_damaged_validation_file_stops_validation_not_training(tiny_data, tmp_path):
    damaged_gzip_file(str(tiny_data / 'valid.h5'), count=32, seed=2)
    result, errors, tracebacks = run_main(main_args(tiny_data, tmp_path, valid_data='valid.h5',
                                                    valid_images=32))
    assert result.returncode == 0 and not errors and not tracebacks, result.stderr
    assert 'warning: validation stopped: reading' in result.stdout
    assert checkpoints.saved_steps(str(tmp_path / 'model'), 'msvae') == [5, 10]


def test_a_damaged_test_file_is_one_line_for_reconstruct(two_checkpoints, tmp_path):
    conf = copy_run(two_checkpoints, tmp_path)
    damaged_gzip_file(os.path.join(conf.data_dir, 'test.h5'), count=32, seed=3)
    result, errors, tracebacks = run_main(
        [sys.executable, os.path.join(ROOT, 'main.py'), '--action=reconstruct',
         f'--data_dir={conf.data_dir}', '--test_data=test.h5', f'--modeldir={conf.modeldir}',
         f'--sampledir={conf.sampledir}', '--num_samples=32'])
    assert result.returncode == 2 and not tracebacks, result.stderr
    assert len(errors) == 1 and 'test.h5 failed' in errors[0]


def test_an_hdf5_file_open_for_writing_is_named_as_such(tiny_data, tmp_path):
    code = ('import h5py, sys, time\nf = h5py.File(sys.argv[1], "a")\nprint("open", flush=True)\n'
            'time.sleep(60)\n')
    writer = subprocess.Popen([sys.executable, '-c', code, str(tiny_data / 'train.h5')],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == 'open'
        result, errors, _ = run_main(main_args(tiny_data, tmp_path))
    finally:
        writer.kill()
        writer.wait()
    if result.returncode == 0:
        pytest.skip('HDF5 file locking is off on this system')
    assert len(errors) == 1 and 'is open for writing by another process' in errors[0]


def test_a_missing_bundled_split_is_made_alone_and_the_others_stay(tmp_path):
    from utils.run import preflight
    data = tmp_path / 'data'
    data.mkdir()
    for name in ('mnist_valid.h5', 'mnist_test.h5'):
        (data / name).write_bytes(b'mine')  # not touched, whatever they hold
    conf = main.default_config(data_dir=str(data))
    preflight.make_bundled_mnist(conf, str(data / 'mnist_train.h5'))
    assert sorted(os.listdir(data)) == ['mnist_test.h5', 'mnist_train.h5', 'mnist_valid.h5']
    assert (data / 'mnist_valid.h5').read_bytes() == b'mine'
    import h5py
    with h5py.File(data / 'mnist_train.h5', 'r') as handle:
        assert handle['images'].shape == (55000, 28, 28, 1)


def test_ctrl_c_during_predict_is_one_line_about_predict_and_leaves_the_model(
        two_checkpoints, tmp_path):
    from test_errors import snapshot
    conf = copy_run(two_checkpoints, tmp_path)
    before = snapshot(conf.modeldir)
    args = [f'--{k}={v}' for k, v in dict(TINY, data_dir=conf.data_dir, valid_data='',
                                           modeldir=conf.modeldir, sampledir=conf.sampledir,
                                           action='predict', num_samples=10 ** 5).items()]
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=ctrl_c_as_at_a_terminal)
    chunks = []  # raw: the progress bar redraws its line with \r, not \n

    def read():
        while chunk := process.stderr.read1(4096):
            chunks.append(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 300  # until it samples
    while b'prior samples' not in b''.join(chunks) and time.time() < deadline:
        assert process.poll() is None, b''.join(chunks)[-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 130
    reader.join(timeout=60)
    lines = b''.join(chunks).decode(errors='replace').splitlines()
    said = [line for line in lines if line.startswith('interrupted')]
    assert not any('Traceback' in line for line in lines)
    assert len(said) == 1 and '--action=predict stopped' in said[0], lines[-5:]
    assert snapshot(conf.modeldir) == before


@pytest.mark.parametrize('field, value, fits', [('latent_len', 8, 'latent_len=4'),
                                                ('start_channel_num', 6, 'start_channel_num=4'),
                                                ('decoder', 'plain', 'decoder=residual')])
def test_a_flags_json_that_does_not_fit_the_checkpoint_names_the_field(
        field, value, fits, two_checkpoints, tmp_path):
    """flags.json edited after training: predict names the field and the value that fit
    (a plain decoder's variables are all in the residual one's checkpoint: the extra
    ones are what give it away)."""
    conf = copy_run(two_checkpoints, tmp_path)
    saved = checkpoints.load_config(conf.modeldir)
    checkpoints.save_config(conf.modeldir, dict(saved, **{field: value}))
    given = {name: getattr(conf, name) for name in ('data_dir', 'modeldir', 'sampledir')}
    predict = main.default_config(**dict(given, action='predict'))
    with pytest.raises(UserError, match=rf'does not fit the model built from the flags: .*'
                                        rf'it fits {fits} \(the flags give {value}\)'):
        main.run(predict)
