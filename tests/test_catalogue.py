"""Every action under a full disk: whatever file it writes first (flags.json, a checkpoint,
events, samples, the evaluation JSON, a fitted prior, an HDF5 output, a cache), the run
ends with one error line and exit status 2, no traceback, no partial file, and every file
that was there before is as it was.

A full disk is a file-size limit of 1 KB (RLIMIT_FSIZE: a write past it fails with EFBIG,
as with ENOSPC; the few bytes of Python's and TensorFlow's start-up still fit), so the
test needs no special file system and also works as root, for whom no folder is
read-only.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

import main
from conftest import ROOT, TINY
from test_errors import snapshot

ACTIONS = {
    'train_from_scratch': {'action': 'train', 'modeldir': 'new_model'},
    'train_resumed': {'action': 'train', 'max_step': 15},
    'predict': {'action': 'predict'},
    'predict_gmm': {'action': 'predict', 'sample_prior': 'gmm', 'prior_components': 2},
    'reconstruct': {'action': 'reconstruct'},
    'evaluate': {'action': 'evaluate', 'eval_fid': False, 'eval_samples': 16},
    'interpolate': {'action': 'interpolate', 'interpolation_pairs': 2},
    'encode': {'action': 'encode'},
    'export': {'action': 'export', 'export_dir': 'exported'},
    'fit_prior': {'action': 'fit_prior', 'prior_components': 2},
    'bundled_mnist': {'action': 'train', 'modeldir': 'mnist_model', 'data_dir': 'mnist_data',
                      'train_data': 'mnist_train.h5', 'valid_data': 'mnist_valid.h5',
                      'test_data': 'mnist_test.h5', 'height': 28, 'width': 28},
}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('catalogue')
    from helpers import blob_images
    from utils.data.hdf5_writer import write_images
    write_images(str(root / 'data' / 'train.h5'), blob_images(96, seed=1))
    write_images(str(root / 'data' / 'test.h5'), blob_images(32, seed=3))
    conf = main.default_config(**dict(TINY, data_dir=str(root / 'data'), valid_data='',
                                      test_data='test.h5', modeldir=str(root / 'model'),
                                      logdir=str(root / 'log'), sampledir=str(root / 's')))
    assert main.run(conf) == 10
    return root


def full_disk():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.parametrize('case', sorted(ACTIONS))
def test_a_full_disk_is_one_line_and_loses_nothing(case, trained, tmp_path):
    shutil.copytree(trained, tmp_path / 'run')
    root = tmp_path / 'run'
    values = dict(TINY, data_dir=root / 'data', valid_data='', test_data='test.h5',
                  modeldir=root / 'model', logdir=root / 'log', sampledir=root / 's')
    for key, value in ACTIONS[case].items():
        values[key] = root / value if key.endswith('dir') else value
    before = snapshot(root)
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] +
                            [f'--{k}={v}' for k, v in values.items()], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, preexec_fn=full_disk)
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert 'Traceback' not in result.stderr, result.stderr
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    after = snapshot(root)
    assert {path: after.get(path) for path in before} == before  # nothing changed or lost
    assert not [path for path in after if '.partial-' in path]
    print(case, errors[0].replace(str(root), '<dir>'))
