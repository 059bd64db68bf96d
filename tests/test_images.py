"""Image grids and PNG writing."""
import numpy as np
from PIL import Image

from utils.run import images


def test_to_uint8_maps_the_range_and_clips():
    np.testing.assert_array_equal(images.to_uint8(np.array([-1.5, -1.0, 0.0, 1.0, 2.0])),
                                  [0, 0, 128, 255, 255])


def test_stage_grid_layout():
    n, h, w = 10, 3, 2
    stage1 = np.full((n, h, w, 1), -1.0)  # black
    stage2 = np.full((n, h, w, 1), 0.0)  # grey
    picture = images.stage_grid([stage1, stage2], per_row=4)
    bands = 3  # 4 + 4 + 2 images
    gap = images.GAP
    assert picture.shape == (bands * 2 * (h + gap) - gap + (bands - 1) * images.BAND_GAP,
                             4 * (w + gap) - gap, 1)
    assert (picture[0:h, 0:w] == 0).all()  # stage 1 on top
    assert (picture[h + gap:2 * h + gap, 0:w] == 128).all()  # stage 2 below it
    last_band = 2 * 2 * (h + gap) + 2 * images.BAND_GAP
    assert (picture[last_band:last_band + h, 2 * (w + gap):] == 255).all()  # empty slots


def test_save_png_and_save_each(tmp_path):
    rgb = np.random.default_rng(0).uniform(-1, 1, (3, 5, 4, 3))
    paths = images.save_each(str(tmp_path / 'x'), rgb)
    assert len(paths) == 3
    with Image.open(paths[1]) as png:
        assert png.size == (4, 5) and png.mode == 'RGB'
        np.testing.assert_array_equal(np.asarray(png), images.to_uint8(rgb[1]))
    gray = images.tile_rows([np.zeros((2, 5, 4, 1))])
    images.save_png(str(tmp_path / 'g.png'), gray)
    with Image.open(tmp_path / 'g.png') as png:
        assert png.mode == 'L' and png.size == (2 * 4 + images.GAP, 5)
    assert images.png_bytes(gray)[:8] == b'\x89PNG\r\n\x1a\n'
