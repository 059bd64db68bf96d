"""Image grids and PNG writing with Pillow. Images come in as float arrays in [-1, 1]."""
import io
import os

import numpy as np
from PIL import Image

from utils.run import atomic

GAP = 2  # pixels of background between tiles
BAND_GAP = 6  # extra pixels between the bands of a stage grid


def to_uint8(images):
    """float [-1, 1] => uint8 [0, 255], clipped and rounded (NaN shows as mid-grey)."""
    values = np.nan_to_num(np.asarray(images, np.float64), nan=0.0)
    return np.clip(np.rint((values + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile_rows(rows, gap=GAP, band_gaps=()):
    """Tiles rows of images into one uint8 picture.

    rows: a list of arrays [n, h, w, c] in [-1, 1] (rows may be shorter than
    the longest one). band_gaps: indices of rows that get extra space above.
    Returns [H, W, c] uint8 with a white background.
    """
    n_cols = max(len(row) for row in rows)
    _, height, width, channels = np.shape(rows[0])
    tops, top = [], 0
    for index in range(len(rows)):
        top += BAND_GAP if index in band_gaps else 0
        tops.append(top)
        top += height + gap
    picture = np.full((top - gap, n_cols * (width + gap) - gap, channels), 255, np.uint8)
    for row, y in zip(rows, tops):
        for col, image in enumerate(to_uint8(row)):
            x = col * (width + gap)
            picture[y:y + height, x:x + width] = image
    return picture


def resize_nearest(images, size):
    """images [n, h, w, c] => [n, size[0], size[1], c] by nearest neighbour (pixels stay
    visible as blocks); the same array when the size already fits."""
    images = np.asarray(images)
    height, width = images.shape[1:3]
    if (height, width) == tuple(size):
        return images
    rows = np.arange(size[0]) * height // size[0]
    cols = np.arange(size[1]) * width // size[1]
    return images[:, rows][:, :, cols]


def stage_grid(stage_images, per_row=16, inputs=None):
    """A grid whose rows are the stages: stage 1 above stage 2 above ...

    stage_images: a list (one entry per stage) of [n, h, w, c] arrays of the
    same n images. The images are cut into bands of `per_row`; each band
    holds the inputs (when given) and then one row per stage. Stages at a
    smaller size (coarse-to-fine) are shown enlarged to the largest size.
    """
    sources = ([inputs] if inputs is not None else []) + list(stage_images)
    size = max(np.shape(source)[1:3] for source in sources)
    sources = [resize_nearest(source, size) for source in sources]
    count = len(sources[0])
    rows, band_starts = [], []
    for start in range(0, count, per_row):
        band_starts.append(len(rows))
        rows.extend(source[start:start + per_row] for source in sources)
    return tile_rows(rows, band_gaps=set(band_starts[1:]))


def _pil_image(picture):
    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    return Image.fromarray(picture)


def save_png(path, picture):
    """Writes a uint8 [h, w, c] picture (c = 1 or 3) as PNG, creating the folder;
    atomically, so a full disk leaves an earlier file of that name whole."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with atomic.replacing(path) as partial:
        _pil_image(picture).save(partial, format='PNG')


def png_bytes(picture):
    """The PNG encoding of a uint8 [h, w, c] picture (for TensorBoard summaries)."""
    buffer = io.BytesIO()
    _pil_image(picture).save(buffer, format='PNG')
    return buffer.getvalue()


def save_each(folder, images, prefix='sample', first_index=0):
    """Writes images [n, h, w, c] in [-1, 1] as folder/prefix_0000.png, ... (numbered from
    first_index); returns the paths."""
    paths = []
    for index, image in enumerate(to_uint8(images), start=first_index):
        path = os.path.join(folder, f'{prefix}_{index:04d}.png')
        save_png(path, image)
        paths.append(path)
    return paths
