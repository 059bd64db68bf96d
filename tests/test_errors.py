"""Every row of docs/errors.md: one line on stderr naming the problem and the fix, exit
status 2, no traceback, and no file on disk changed."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY
from helpers import blob_images
from utils.data.hdf5_writer import write_images


def write_h5(path, **datasets):
    with h5py.File(path, 'w') as handle:
        for name, value in datasets.items():
            handle[name] = value


def garbage(path):
    with open(path, 'wb') as handle:
        handle.write(b'this is not an HDF5 file' * 10)


def truncated(path):
    write_images(path, blob_images(96, seed=1))
    with open(path, 'r+b') as handle:
        handle.truncate(os.path.getsize(path) // 2)


def damaged_prior(root):
    """A fitted-prior file of the trained model's last step that is not an .npz."""
    garbage(str(root / 'model' / 'prior-10-gmm2.npz'))


def damaged_vae_prior(root):
    """A latent-VAE prior file of the trained model's last step that is not an .npz."""
    garbage(str(root / 'model' / 'prior-10-vae8x5.npz'))


def train_file(make):
    """Setup that replaces data/train.h5 with make(path)."""
    return lambda root: make(str(root / 'data' / 'train.h5'))


def blocker(root):
    """A regular file where a folder would have to be: nothing below it can be made."""
    (root / 'blocker').write_text('a file, not a folder')


def fake_weights(root):
    """A file in place of the Inception weights whose bytes are not theirs."""
    (root / 'blocker').mkdir()
    (root / 'blocker' / 'default_1.pt').write_bytes(b'not the weights' * 100)


# evaluate the training split, with an empty Inception cache of the test's own
FID_EVALUATE = {'action': 'evaluate', 'test_data': 'train.h5',
                'fid_cache_dir': 'BLOCKER/cache'}

# id: (setup(root) or None, or a tuple of them, extra flags, expected part of the message)
CASES = {
    'missing_file': (None, {'train_data': 'missing.h5'}, 'missing.h5 not found'),
    'not_hdf5': (train_file(garbage), {}, 'is not a readable HDF5 file'),
    'truncated_hdf5': (train_file(truncated), {}, 'is not a readable HDF5 file'),
    'no_images_dataset': (train_file(lambda p: write_h5(p, pixels=np.zeros((9, 16, 16, 1),
                                                                            np.uint8))),
                          {}, 'has no dataset "images"'),
    'wrong_dtype': (train_file(lambda p: write_h5(p, images=np.zeros((9, 16, 16, 1),
                                                                     np.float32))),
                    {}, 'is float32, expected uint8'),
    'wrong_rank': (train_file(lambda p: write_h5(p, images=np.zeros((9, 16, 16), np.uint8))),
                   {}, 'expected [N, height, width, channel]'),
    'channel_mismatch': (None, {'channel': 3}, 'set --channel=1'),
    'size_mismatch': (None, {'height': 32, 'width': 32, 'network_depth': 2},
                      'set --height=16 --width=16'),
    'empty_split': (train_file(lambda p: write_h5(p, images=np.zeros((0, 16, 16, 1),
                                                                     np.uint8))),
                    {}, 'holds no images'),
    'batch_larger_than_split': (None, {'batch': 100}, 'fewer than --batch=100'),
    'network_too_deep': (None, {'network_depth': 5}, 'too deep for 16x16 images'),
    'images_too_small': (train_file(lambda p: write_images(p, np.zeros((96, 1, 1, 1),
                                                                       np.uint8))),
                         {'height': 1, 'width': 1, 'network_depth': 1},
                         'too small for one stride-2 level'),
    'model_name_with_folder': (None, {'model_name': 'sub/net'}, 'must be a plain file name'),
    'path_not_utf8': (None, {'logdir': 'BLOCKER/log\udcff'}, 'is not valid UTF-8'),
    'sigma_not_positive': (None, {'sigma': 0}, '--sigma=0.0 must be positive'),
    'learning_rate_not_positive': (None, {'learning_rate': -1},
                                   '--learning_rate=-1.0 must be positive'),
    'step_count_not_positive': (None, {'max_step': 0}, '--max_step=0 must be positive'),
    'unknown_action': (None, {'action': 'dance'}, '--action=dance: value should be one of'),
    'predict_without_model': (None, {'action': 'predict'}, 'holds no trained model'),
    'predict_without_checkpoint': ('flags_only', {'action': 'predict'},
                                   'no checkpoint msvae-* in'),
    'predict_step_missing': ('trained', {'action': 'predict', 'predict_step': 7},
                             'no checkpoint msvae-7'),
    'unwritable_logdir': (blocker, {'logdir': 'BLOCKER/log'},
                          'cannot write to --logdir'),
    'unwritable_modeldir': (blocker, {'modeldir': 'BLOCKER/model'},
                            'cannot write to --modeldir'),
    'unwritable_sampledir': (blocker, {'sampledir': 'BLOCKER/s'},
                             'cannot write to --sampledir'),
    'architecture_changed': ('trained', {'latent_len': 8}, 'holds a model with latent_len=4'),
    'refiner_width_changed': ('trained', {'refine_channel_num': 8},
                              'holds a model with refine_channel_num=0'),
    'modeldir_holds_something_else': (lambda root: (root / 'model').mkdir() or (
        root / 'model' / 'notes.txt').write_text('mine'), {}, 'is not empty and holds no run'),
    'checkpoints_without_flags': ('trained_no_flags', {}, 'no flags.json'),
    'reload_step_would_overwrite': ('trained', {'reload_step': 5}, 'checkpoints after step 5'),
    'reload_step_missing': ('trained', {'reload_step': 3}, 'no checkpoint msvae-3'),
    'num_stages_not_positive': (None, {'num_stages': 0}, '--num_stages=0 must be 1'),
    'unknown_decoder': (None, {'decoder': 'fancy'}, '--decoder=fancy: value should be one of'),
    'unknown_refine_net': (None, {'refine_net': 'gan'}, '--refine_net=gan: value should be one of'),
    'unknown_refine_loss': (None, {'refine_loss': 'l3'}, '--refine_loss=l3: value should be one of'),
    'refine_weights_mismatch': (None, {'num_stages': 3, 'refine_weights': '1,2,3'},
                                '3 values for 2 refinement stages'),
    'refine_weights_not_numbers': (None, {'refine_weights': 'heavy'}, 'not a number'),
    'coarse_scale_too_large': (None, {'coarse_scale': 2},
                               '--coarse_scale=2 must be between 0 and --num_stages-1 = 1'),
    'coarse_network_too_deep': (None, {'coarse_scale': 1, 'network_depth': 4},
                                'too deep for 8x8 images'),
    'evaluate_without_test_data': ('trained', {'action': 'evaluate', 'test_data': 'gone.h5'},
                                   'gone.h5 not found'),
    'reconstruct_without_model': (None, {'action': 'reconstruct'}, 'holds no trained model'),
    'unknown_data_format': (None, {'data_format': 'NWHC'}, '--data_format=NWHC: value should be one of'),
    'unknown_upsample': (None, {'upsample': 'bicubic'}, '--upsample=bicubic: value should be one of'),
    'flag_not_a_number': (None, {'batch': 'abc'}, 'flag --batch=abc: invalid literal'),
    'unknown_flag': (None, {'nosuchflag': 1}, "Unknown command line flag 'nosuchflag'"),
    'missing_flagfile': (None, {'flagfile': 'BLOCKER/none.flags'},
                         'error: Unable to open flagfile'),
    'data_file_is_folder': (lambda root: (root / 'data' / 'images').mkdir(),
                            {'train_data': 'images'}, 'is a folder, not an HDF5 file'),
    'export_without_dir': ('trained', {'action': 'export'}, 'needs --export_dir'),
    'export_into_a_full_folder': (('trained', fake_weights),
                                  {'action': 'export', 'export_dir': 'BLOCKER'},
                                  'is not empty: choose a new or empty folder'),
    'ema_decay_out_of_range': (None, {'ema_decay': 1.0}, '--ema_decay=1.0 must be in [0, 1)'),
    'refine_gradient_weight_negative': (None, {'refine_gradient_weight': -1},
                                        '--refine_gradient_weight=-1.0 must be 0'),
    'refine_ssim_weight_negative': (None, {'refine_ssim_weight': -2},
                                    '--refine_ssim_weight=-2.0 must be 0'),
    'refine_channel_num_negative': (None, {'refine_channel_num': -8},
                                    '--refine_channel_num=-8 must be 0'),
    'kl_warmup_negative': (None, {'kl_warmup_steps': -5}, '--kl_warmup_steps=-5 must be 0'),
    'prior_components_not_positive': (None, {'prior_components': 0},
                                      '--prior_components=0 must be positive'),
    'prior_vae_width_not_positive': (None, {'prior_vae_width': 0},
                                     '--prior_vae_width=0 must be positive'),
    'prior_vae_steps_not_positive': (None, {'prior_vae_steps': 0},
                                     '--prior_vae_steps=0 must be positive'),
    'prior_temperature_out_of_range': (None, {'prior_temperature': 0},
                                       '--prior_temperature=0.0 must be in (0, 10]'),
    'prior_truncation_out_of_range': (None, {'prior_truncation': 1.0},
                                      '--prior_truncation=1.0 must be in [0, 1)'),
    'prior_truncation_without_a_mixture': ('trained', {'action': 'predict',
                                                       'prior_truncation': 0.1},
                                           '--prior_truncation=0.1 needs --sample_prior=gmm'),
    'prior_reencode_negative': (None, {'prior_reencode': -1},
                                '--prior_reencode=-1 must be in [0, 100]'),
    'ema_decay_with_cluster': (None, {'ema_decay': 0.99, 'ps_hosts': 'localhost:2222',
                                      'worker_hosts': 'localhost:2223', 'job_name': 'worker'},
                               'with a cluster is not supported'),
    'fit_prior_without_train_data': ('trained', {'action': 'fit_prior',
                                                 'train_data': 'gone.h5'}, 'gone.h5 not found'),
    'gmm_prior_damaged': (('trained', damaged_prior), {'action': 'predict',
                                                       'sample_prior': 'gmm',
                                                       'prior_components': 2}, 'is damaged'),
    'vae_prior_damaged': (('trained', damaged_vae_prior), {'action': 'predict',
                                                          'sample_prior': 'vae',
                                                          'prior_vae_width': 8,
                                                          'prior_vae_steps': 5},
                          'is damaged (not an .npz of the latent VAE'),
    'gmm_prior_too_many_components': ('trained', {'action': 'fit_prior',
                                                  'prior_components': 500},
                                      'cannot fit a mixture of --prior_components=500'),
    'gmm_training_with_too_many_components': (None, {'sample_prior': 'gmm',
                                                     'prior_components': 500},
                                              'lower it to 96 or less'),
    'interpolation_steps_too_few': (None, {'interpolation_steps': 1}, 'must be 2 or more'),
    'encode_split_without_file': ('trained', {'action': 'encode', 'encode_split': 'valid'},
                                  '--encode_split=valid names no file'),
    'fresh_start_with_missing_data': ('trained', {'fresh_start': True, 'train_data': 'typo.h5'},
                                      'typo.h5 not found'),
    'fresh_start_with_too_large_batch': ('trained', {'fresh_start': True, 'batch': 6000},
                                         'fewer than --batch=6000'),
    'fresh_start_with_reload_step': ('trained', {'fresh_start': True, 'reload_step': 5},
                                     '--fresh_start trains from step 0'),
    'threads_negative': (None, {'intra_op_threads': -1}, '--intra_op_threads and'),
    'mixed_precision_without_gpu': (None, {'mixed_precision': True},
                                    '--mixed_precision needs a GPU'),
    'nchw_without_kernels': (None, {'data_format': 'NCHW'},
                             '--data_format=NCHW needs NCHW convolution kernels'),
    'num_gpus_not_positive': (None, {'num_gpus': 0}, '--num_gpus=0 must be 1'),
    'batch_not_split_by_towers': (None, {'num_gpus': 3}, 'must be a multiple of --num_gpus=3'),
    'sync_replicas_without_cluster': (None, {'sync_replicas': True},
                                      '--sync_replicas needs a cluster'),
    'cluster_incomplete': (None, {'job_name': 'worker', 'worker_hosts': '127.0.0.1:2223'},
                           'no ps hosts'),
    'cluster_host_without_port': (None, {'job_name': 'worker', 'ps_hosts': 'localhost',
                                         'worker_hosts': '127.0.0.1:2223'},
                                  '"localhost" in the ps hosts is not host:port'),
    'cluster_task_index_out_of_range': (None, {'job_name': 'worker', 'task_index': 2,
                                               'ps_hosts': '127.0.0.1:2222',
                                               'worker_hosts': '127.0.0.1:2223'},
                                        'task index 2 is not a worker'),
    'cluster_unknown_job': (None, {'job_name': 'chief', 'ps_hosts': '127.0.0.1:2222',
                                   'worker_hosts': '127.0.0.1:2223'},
                            'job "chief" is not one of ps, worker'),
    'cluster_with_towers': (None, {'job_name': 'worker', 'num_gpus': 2,
                                   'ps_hosts': '127.0.0.1:2222',
                                   'worker_hosts': '127.0.0.1:2223'},
                            'run one worker per GPU instead'),
    'cluster_not_training': ('trained', {'action': 'predict', 'job_name': 'worker',
                                         'ps_hosts': '127.0.0.1:2222',
                                         'worker_hosts': '127.0.0.1:2223'},
                             '--action=predict runs in one process'),
    'fid_weights_missing': ('trained', dict(FID_EVALUATE, inception_weights='BLOCKER/none.pt'),
                            'the FID Inception weights are missing'),
    'fid_weights_wrong_checksum': (('trained', fake_weights),
                                   dict(FID_EVALUATE, inception_weights='BLOCKER/default_1.pt'),
                                   'not the FID Inception weights'),
    'fid_too_few_images': ('trained', dict(FID_EVALUATE, eval_samples=3),
                           'need at least 4 images per set'),
}


@pytest.fixture(scope='module')
def trained_model(tmp_path_factory):
    """A tiny model trained for 10 steps (checkpoints 5 and 10), made once."""
    root = tmp_path_factory.mktemp('trained')
    data = root / 'data'
    write_images(str(data / 'train.h5'), blob_images(96, seed=1))
    args = [f'--{k}={v}' for k, v in dict(TINY, data_dir=data, modeldir=root / 'model',
                                           logdir=root / 'log', sampledir=root / 's',
                                           valid_data='').items()]
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root / 'model'


def snapshot(root):
    """path => sha256 of every file under root."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, 'rb') as handle:
                found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def prepare(setup, root, trained_model):
    """Runs one setup of a case: a copy of the trained model (whole, without flags.json
    or without checkpoints), or setup(root)."""
    if setup in ('trained', 'trained_no_flags', 'flags_only'):
        shutil.copytree(trained_model, root / 'model')
        if setup == 'trained_no_flags':
            os.remove(root / 'model' / 'flags.json')
        if setup == 'flags_only':
            for path in (root / 'model').glob('msvae-*'):
                path.unlink()
    elif setup is not None:
        setup(root)


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_gives_one_line_and_changes_nothing(case, tmp_path, trained_model):
    if case == 'mixed_precision_without_gpu' and tf.config.list_physical_devices('GPU'):
        pytest.skip('this machine has a GPU')
    if case == 'nchw_without_kernels' and tf.config.list_physical_devices('GPU'):
        pytest.skip('this machine has a GPU, whose kernels run NCHW')
    setups, extra, expected = CASES[case]
    write_images(str(tmp_path / 'data' / 'train.h5'), blob_images(96, seed=1))
    for setup in setups if isinstance(setups, tuple) else (setups,):
        prepare(setup, tmp_path, trained_model)
    values = dict(TINY, data_dir=tmp_path / 'data', modeldir=tmp_path / 'model',
                  logdir=tmp_path / 'log', sampledir=tmp_path / 'samples', valid_data='')
    values.update({k: str(v).replace('BLOCKER', str(tmp_path / 'blocker'))
                   for k, v in extra.items()})
    before = snapshot(tmp_path)
    # without oneDNN's kernels a CPU has no NCHW convolution, on any x86 machine
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0') if case == 'nchw_without_kernels' else None
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] +
                            [f'--{k}={v}' for k, v in values.items()],
                            capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
    assert snapshot(tmp_path) == before
    print(lines[0].replace(str(tmp_path), '<tmp>'))


def test_every_case_is_in_the_docs_table_and_back():
    with open(os.path.join(ROOT, 'docs', 'errors.md')) as handle:
        documented = set(re.findall(r'^\| `([a-z0-9_]+)` \|', handle.read(), re.MULTILINE))
    assert documented == set(CASES)
