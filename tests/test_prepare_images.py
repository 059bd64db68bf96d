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
    with pytest.raises(OSError):
        prepare_data.prepare('folder', str(tmp_path / 'img'), outputs_in(tmp_path / 'out'),
                             height=8, width=8, channel=3, workers=1)
    assert os.listdir(tmp_path / 'out') == []


def test_a_killed_conversion_leaves_no_final_file(tmp_path):
    for index in range(600):
        shade = np.full((64, 64), index % 256, np.uint8)
        save(str(tmp_path / 'img' / f'{index:04d}.png'), Image.fromarray(shade))
    out = tmp_path / 'out'
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


def test_command_line_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'utils.data.prepare_data', '--source=folder',
                             f'--input_dir={tmp_path / "nothing"}', f'--data_dir={tmp_path}'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: --input_dir={tmp_path / "nothing"} is not a folder'
