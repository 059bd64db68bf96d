"""utils.data.prepare_data on image sources: splits, modes, crops, skipped files, safety."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from helpers import ctrl_c_as_at_a_terminal
from utils.data import image_files, prepare_data
from utils.run.errors import UserError


def save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def mixed_folder(root, count=30):
    """`count` readable images of mixed modes, formats and sizes in nested folders, plus a
    truncated JPEG, a text file named .png, and a file that is not an image by name."""
    rng = np.random.default_rng(0)
    makers = [
        lambda a: (Image.fromarray(a), 'jpg', {}),
        lambda a: (Image.fromarray(a[..., 0]), 'png', {}),  # L
        lambda a: (Image.fromarray(np.dstack([a, a[..., :1]])), 'png', {}),  # RGBA
        lambda a: (Image.fromarray(a).convert('P'), 'gif', {'transparency': 0}),
        lambda a: (Image.fromarray(a).convert('CMYK'), 'jpg', {}),
        lambda a: (Image.fromarray((a[..., 0].astype(np.uint16) * 257)), 'png', {}),  # I;16
        lambda a: (Image.fromarray(a), 'bmp', {}),
        lambda a: (Image.fromarray(a), 'webp', {}),
    ]
    for index in range(count):
        size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image, extension, options = makers[index % len(makers)](array)
        save(str(root / f'sub{index % 3}' / f'img{index:03d}.{extension}'), image, **options)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / 'cut.jpg')
    data = (root / 'cut.jpg').read_bytes()
    (root / 'cut.jpg').write_bytes(data[:len(data) // 2])
    (root / 'notes.png').write_text('not an image')
    (root / 'readme.txt').write_text('ignored: not an image name')
    return count


def outputs_in(folder):
    return [str(folder / f'{split}.h5') for split in prepare_data.SPLITS]


def read(path):
    with h5py.File(path, 'r') as handle:
        return handle['images'][...], dict(handle['images'].attrs)


@pytest.mark.parametrize('channel', [1, 3])
def test_folder_source_splits_converts_and_reports_skips(tmp_path, channel):
    readable = mixed_folder(tmp_path / 'in')
    outputs = outputs_in(tmp_path / 'out')
    counts, skipped = prepare_data.prepare(
        'folder', str(tmp_path / 'in'), outputs, height=16, width=12, channel=channel,
        valid_ratio=0.2, test_ratio=0.1, seed=3, workers=2)
    assert sorted(os.path.basename(p) for _, p, _ in skipped) == ['cut.jpg', 'notes.png']
    assert sum(counts.values()) == readable
    total = readable + 2  # the split is drawn before decoding
    expected = np.diff(np.round(np.cumsum([0.7, 0.2, 0.1]) * total).astype(int), prepend=0)
    skipped_per_split = [sum(s == name for s, _, _ in skipped) for name in prepare_data.SPLITS]
    assert [counts[s] for s in prepare_data.SPLITS] == list(expected - skipped_per_split)
    for path, split in zip(outputs, prepare_data.SPLITS):
        images, attrs = read(path)
        assert images.shape == (counts[split], 16, 12, channel) and images.dtype == np.uint8
        assert attrs['source'] == 'folder' and attrs['split'] == split
        assert json.loads(attrs['split_counts']) == counts
        assert attrs['skipped_count'] == skipped_per_split[prepare_data.SPLITS.index(split)]
    report = open(prepare_data.skipped_list_path(outputs[0])).read().splitlines()
    assert len(report) == 2 and all(line.count('\t') == 2 for line in report)
    assert any('cut.jpg' in line and 'truncated' in line for line in report)
    assert not glob.glob(str(tmp_path / 'out' / '*.partial*'))


def test_every_mode_becomes_the_requested_channels(tmp_path):
    mixed_folder(tmp_path / 'in', count=8)  # one file of each kind
    for path in sorted(image_files.find_images(str(tmp_path / 'in'))):
        if path.endswith(('cut.jpg', 'notes.png')):
            continue
        for channel in (1, 3):
            image = image_files.load_image(path, 10, 10, channel)
            assert image.shape == (10, 10, channel) and image.dtype == np.uint8
            assert image.std() > 0, path  # content survived the conversion


def test_transparent_pixels_land_on_black_and_16_bit_is_scaled(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent
    Image.fromarray(rgba).save(tmp_path / 'clear.png')
    assert image_files.load_image(str(tmp_path / 'clear.png'), 8, 8, 3).max() == 0
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / 'deep.png')
    assert image_files.load_image(str(tmp_path / 'deep.png'), 8, 8, 1).min() == 255


def test_crop_geometry():
    celeba = (178, 218)
    assert image_files.crop_box(celeba, (128, 128), 'center') == (0, 20, 178, 198)
    assert image_files.crop_box(celeba, (64, 64), 'center', 148) == (15, 35, 163, 183)
    assert image_files.crop_box(celeba, (128, 128), 'none') == (0, 0, 178, 218)
    assert image_files.crop_box((100, 50), (20, 40), 'center') == (37.5, 0, 62.5, 50)
    with pytest.raises(ValueError, match='does not fit'):
        image_files.crop_box(celeba, (64, 64), 'center', 200)


def test_center_crop_keeps_the_middle_of_a_celeba_sized_image(tmp_path):
    picture = np.zeros((218, 178, 3), np.uint8)
    picture[:20] = picture[198:] = (255, 0, 0)  # red bands above and below the square
    picture[20:198] = (0, 255, 0)
    Image.fromarray(picture).save(tmp_path / 'face.png')
    cropped = image_files.load_image(str(tmp_path / 'face.png'), 32, 32, 3)
    assert (cropped[..., 1] == 255).all() and (cropped[..., 0] == 0).all()
    whole = image_files.load_image(str(tmp_path / 'face.png'), 32, 32, 3, crop='none')
    assert whole[0, :, 0].min() > 200 and whole[16, :, 1].min() > 200


def celeba_folder(root, count):
    for index in range(count):
        shade = np.full((218, 178, 3), index * 5 % 256, np.uint8)
        save(str(root / f'{index + 1:06d}.jpg'), Image.fromarray(shade), quality=90)


def test_celeba_official_partition_and_missing_files(tmp_path):
    celeba_folder(tmp_path / 'img', 12)
    codes = [0] * 8 + [1] * 2 + [2] * 2
    lines = [f'{i + 1:06d}.jpg {code}' for i, code in enumerate(codes)] + ['000099.jpg 0']
    (tmp_path / 'list_eval_partition.txt').write_text('\n'.join(lines) + '\n')
    outputs = outputs_in(tmp_path / 'out')
    counts, skipped = prepare_data.prepare(
        'celeba', str(tmp_path / 'img'), outputs, height=32, width=32, channel=3,
        partition_file=str(tmp_path / 'list_eval_partition.txt'), workers=1)
    assert counts == {'train': 8, 'valid': 2, 'test': 2}
    assert [os.path.basename(p) for _, p, _ in skipped] == ['000099.jpg']
    images, attrs = read(outputs[1])
    assert abs(int(images[0].mean()) - 8 * 5) <= 2  # 000009.jpg is the first valid image
    assert attrs['crop'] == 'center' and attrs['height'] == 32


def test_celeba_without_partition_uses_the_official_proportions(tmp_path):
    celeba_folder(tmp_path / 'img', 60)
    counts, _ = prepare_data.prepare('celeba', str(tmp_path / 'img'), outputs_in(tmp_path),
                                     height=16, width=16, channel=3, seed=1, workers=2)
    total = sum(prepare_data.CELEBA_SPLIT)
    train = round(60 * prepare_data.CELEBA_SPLIT[0] / total)
    valid = round(60 * sum(prepare_data.CELEBA_SPLIT[:2]) / total) - train
    assert counts == {'train': train, 'valid': valid, 'test': 60 - train - valid}


def test_existing_outputs_are_kept_without_overwrite(tmp_path):
    celeba_folder(tmp_path / 'img', 6)
    outputs = outputs_in(tmp_path / 'out')
    prepare_data.prepare('folder', str(tmp_path / 'img'), outputs, height=8, width=8,
                         channel=3, valid_ratio=0.2, test_ratio=0.2, workers=1)
    before = open(outputs[0], 'rb').read()
    with pytest.raises(UserError, match='--overwrite'):
        prepare_data.prepare('folder', str(tmp_path / 'img'), outputs, height=4, width=4,
                             channel=3, workers=1)
    assert open(outputs[0], 'rb').read() == before
    prepare_data.prepare('folder', str(tmp_path / 'img'), outputs, height=4, width=4,
                         channel=3, valid_ratio=0.2, test_ratio=0.2, workers=1, overwrite=True)
    assert read(outputs[0])[0].shape[1:] == (4, 4, 3)


def test_a_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    celeba_folder(tmp_path / 'img', 20)

    def disk_full(self, block):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(prepare_data.ImageFileWriter, 'append', disk_full)
    with pytest.raises(UserError, match='No space left on device.*free disk space'):
        prepare_data.prepare('folder', str(tmp_path / 'img'), outputs_in(tmp_path / 'out'),
                             height=8, width=8, channel=3, workers=1)
    assert os.listdir(tmp_path / 'out') == []


def shades_folder(folder, count=600):
    """`count` 64×64 grey PNGs: a conversion long enough to be stopped midway."""
    for index in range(count):
        shade = np.full((64, 64), index % 256, np.uint8)
        save(str(folder / f'{index:04d}.png'), Image.fromarray(shade))


def start_slow_conversion(tmp_path):
    """The input folder of a long conversion under tmp_path; returns its output folder."""
    shades_folder(tmp_path / 'img')
    return tmp_path / 'out'


def test_a_killed_conversion_leaves_no_final_file(tmp_path):
    out = start_slow_conversion(tmp_path)
    process = subprocess.Popen(
        [sys.executable, '-m', 'utils.data.prepare_data', '--source=folder',
         f'--input_dir={tmp_path / "img"}', f'--data_dir={out}', '--height=64', '--width=64',
         '--workers=1'], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob(str(out / '*.partial-*')) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert glob.glob(str(out / '*.partial-*'))  # it was killed while writing
    assert not [p for p in os.listdir(out) if p.endswith('.h5')]
    # the next run removes what the killed one left (the command's default file names)
    prepare_data.check_outputs([str(out / f'mnist_{split}.h5') for split in prepare_data.SPLITS],
                               overwrite=False)
    assert os.listdir(out) == []


def test_command_line_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'utils.data.prepare_data', '--source=folder',
                             f'--input_dir={tmp_path / "nothing"}', f'--data_dir={tmp_path}'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: --input_dir={tmp_path / "nothing"} is not a folder'


def run_prepare(*args, **kwargs):
    result = subprocess.run([sys.executable, '-m', 'utils.data.prepare_data', *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, **kwargs)
    return result, messages(result.stderr)


def messages(stderr):
    """stderr's lines without the progress bar's."""
    return [line for line in stderr.splitlines() if line.strip()
            and not ('|' in line and ('ETA' in line or 'Time:' in line))]


def test_no_decodable_image_is_an_error_and_overwrite_keeps_the_old_files(tmp_path):
    celeba_folder(tmp_path / 'img', 6)
    outputs = outputs_in(tmp_path / 'out')
    prepare_data.prepare('folder', str(tmp_path / 'img'), outputs, height=8, width=8,
                         channel=3, valid_ratio=0.2, test_ratio=0.2, workers=1)
    before = [open(path, 'rb').read() for path in outputs]
    junk = tmp_path / 'junk'
    junk.mkdir()
    for index in range(5):
        (junk / f'{index}.jpg').write_bytes(np.random.default_rng(index).bytes(500))
    result, lines = run_prepare('--source=folder', f'--input_dir={junk}',
                                f'--data_dir={tmp_path / "out"}', '--height=8', '--width=8',
                                '--channel=3', '--workers=1', '--overwrite')
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith('error: no image of the train and valid and test split')
    assert [open(path, 'rb').read() for path in outputs] == before
    assert sorted(os.listdir(tmp_path / 'out')) == sorted(os.path.basename(p) for p in outputs)


@pytest.mark.parametrize('args, expected', [
    (['--height=0'], '--height=0 must be positive'),
    (['--workers=-1'], '--workers=-1 must be 0 (one per core) or more'),
    (['--channel=2'], '--channel=2 must be 1 or 3'),
    (['--data_dir=FILE'], 'cannot write to'),
])
def test_impossible_settings_are_one_line(tmp_path, args, expected):
    (tmp_path / 'file').write_text('a file, not a folder')
    args = [arg.replace('FILE', str(tmp_path / 'file')) for arg in args]
    result, lines = run_prepare('--source=idx', *([f'--data_dir={tmp_path / "out"}'] if not any(
        arg.startswith('--data_dir') for arg in args) else []), *args)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith('error: ') and expected in lines[0]


@pytest.mark.parametrize('damage', ['truncated', 'not_gzip'])
def test_a_damaged_idx_file_is_one_line(tmp_path, damage):
    from utils.data import mnist
    idx = tmp_path / 'idx'
    idx.mkdir()
    for name in (mnist.TRAIN_IMAGES, mnist.TEST_IMAGES):
        source = open(os.path.join(mnist.IDX_DIR, name), 'rb').read()
        (idx / name).write_bytes(source[:len(source) // 3] if damage == 'truncated'
                                 else b'plain bytes, no gzip header' * 10)
    result, lines = run_prepare('--source=idx', f'--input_dir={idx}',
                                f'--data_dir={tmp_path / "out"}')
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert 'cannot be read' in lines[0] and 'fetch it again' in lines[0]
    assert os.listdir(tmp_path / 'out') == []


def small_files():
    """For preexec_fn: files of at most 10 MB; writes beyond fail (EFBIG) as on a full disk."""
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000_000, 10_000_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_outputs_that_cannot_fit_are_refused_before_writing(tmp_path):
    result, lines = run_prepare('--source=idx', f'--data_dir={tmp_path / "out"}',
                                preexec_fn=small_files)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert 'mnist_train.h5 needs about 43 MB, more than the 10 MB' in lines[0]
    assert os.listdir(tmp_path / 'out') == []


def test_a_write_that_fails_midway_is_one_line_and_leaves_no_partial_file(tmp_path):
    """The disk fills up after the space check (it is not checked here): one line, no
    partial file, and no crash of HDF5 while the process ends."""
    code = ('import sys\nfrom utils.data import data_flags, prepare_data\n'
            'from absl import app\n'
            'prepare_data.check_space = lambda *args: None\n'
            'data_flags.define()\nprepare_data.define_flags()\n'
            'app.run(prepare_data.main, flags_parser=prepare_data.parse_flags)\n')
    result = subprocess.run([sys.executable, '-c', code, '--source=idx',
                             f'--data_dir={tmp_path / "out"}'], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, preexec_fn=small_files)
    lines = messages(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert 'could not write the HDF5 files' in lines[0] and 'free disk space' in lines[0]
    assert os.listdir(tmp_path / 'out') == []


def test_ctrl_c_is_one_line_and_leaves_no_partial_file(tmp_path):
    out = start_slow_conversion(tmp_path)
    process = subprocess.Popen(
        [sys.executable, '-m', 'utils.data.prepare_data', '--source=folder',
         f'--input_dir={tmp_path / "img"}', f'--data_dir={out}', '--height=64', '--width=64',
         '--workers=1'], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=ctrl_c_as_at_a_terminal)
    deadline = time.time() + 300
    while not glob.glob(str(out / '*.partial-*')) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    lines = messages(stderr)
    assert process.returncode == 130 and lines == [
        'interrupted: nothing was written (the half-written files were removed)'], stderr
    assert os.listdir(out) == []
