"""The checkpoint files of modeldir: publishing, pruning and cleaning up after a crash."""
import json
import os

import pytest

from utils.run import atomic, checkpoints


def fake_checkpoint(folder, name):
    """The two files TensorFlow writes for one checkpoint, under prefix folder/name."""
    (folder / f'{name}.data-00000-of-00001').write_bytes(b'weights')
    (folder / f'{name}.index').write_bytes(b'index')


def test_publish_makes_a_checkpoint_visible_only_when_whole(tmp_path):
    fake_checkpoint(tmp_path, f'{checkpoints.PARTIAL}m-7')
    assert checkpoints.saved_steps(str(tmp_path), 'm') == []
    checkpoints.publish(str(tmp_path), 'm', 7)
    assert checkpoints.saved_steps(str(tmp_path), 'm') == [7]
    assert sorted(os.listdir(tmp_path)) == ['m-7.data-00000-of-00001', 'm-7.index']
    with pytest.raises(OSError):
        checkpoints.publish(str(tmp_path), 'm', 8)  # nothing written for step 8


def test_discard_partial_removes_what_a_crash_left(tmp_path):
    fake_checkpoint(tmp_path, 'm-5')
    fake_checkpoint(tmp_path, f'{checkpoints.PARTIAL}m-6')  # killed before publish
    (tmp_path / f'{checkpoints.PARTIAL}m-6_temp').mkdir()  # TensorFlow's shard folder
    (tmp_path / f'{checkpoints.PARTIAL}m-6_temp' / 'part').write_bytes(b'x')
    (tmp_path / 'm-7.data-00000-of-00001').write_bytes(b'w')  # killed between the renames
    (tmp_path / 'other.txt').write_text('not ours')
    assert checkpoints.discard_partial(str(tmp_path), 'm') == 4
    assert sorted(os.listdir(tmp_path)) == ['m-5.data-00000-of-00001', 'm-5.index',
                                            'other.txt']


def test_prune_keeps_the_newest_and_remove_run_keeps_other_files(tmp_path):
    for step in (1, 2, 10, 20):
        fake_checkpoint(tmp_path, f'm-{step}')
    fake_checkpoint(tmp_path, 'n-3')  # another model_name
    assert checkpoints.prune(str(tmp_path), 'm', 2) == [1, 2]
    assert checkpoints.saved_steps(str(tmp_path), 'm') == [10, 20]  # numeric, not text order
    checkpoints.save_config(str(tmp_path), {'latent_len': 4})
    assert checkpoints.load_config(str(tmp_path)) == {'latent_len': 4}
    assert checkpoints.remove_run(str(tmp_path), 'm') == 2
    assert sorted(os.listdir(tmp_path)) == ['n-3.data-00000-of-00001', 'n-3.index']


def test_find_checkpoint(tmp_path):
    assert checkpoints.find_checkpoint(str(tmp_path), 'm', 0) is None
    fake_checkpoint(tmp_path, 'm-4')
    fake_checkpoint(tmp_path, 'm-12')
    assert checkpoints.find_checkpoint(str(tmp_path), 'm', -1) == str(tmp_path / 'm-12')
    assert checkpoints.find_checkpoint(str(tmp_path), 'm', 4) == str(tmp_path / 'm-4')
    with pytest.raises(checkpoints.UserError, match='saved steps: 4, 12'):
        checkpoints.find_checkpoint(str(tmp_path), 'm', 5)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / 'result.json'
    atomic.write_json(str(path), {'a': 1}, indent=1)
    assert json.loads(path.read_text()) == {'a': 1}
    with pytest.raises(OSError, match='disk full'):
        with atomic.replacing(str(path)) as partial:
            with open(partial, 'w') as handle:
                handle.write('{"a": ')  # half written, then the disk fills
            assert os.path.exists(partial) and partial != str(path)
            raise OSError('disk full')
    assert json.loads(path.read_text()) == {'a': 1}
    assert os.listdir(tmp_path) == ['result.json']
