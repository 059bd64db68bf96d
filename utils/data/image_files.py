"""Image files => uint8 arrays: finding them, decoding, mode conversion, crop and resize."""
import math
import os

import numpy as np
from PIL import Image, ImageFile

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff', '.ppm',
              '.pgm')
CROPS = ('center', 'none')
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, and skipped


def find_images(folder):
    """Image files (by extension) below `folder`, recursively, sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, name) for name in sorted(files)
                     if name.lower().endswith(EXTENSIONS))
    return found


def crop_box(size, target, crop, crop_size=0):
    """The (left, top, right, bottom) box, in source pixels, of an image of `size` (w, h)
    that is resized to `target` (w, h).

    crop='center': a box of the target's aspect ratio, centred; crop_size is its
    height in source pixels (0 = the largest box that fits). crop='none': the whole
    image (resizing then changes the aspect ratio when it differs).
    """
    width, height = size
    if crop == 'none':
        return (0.0, 0.0, float(width), float(height))
    aspect = target[0] / target[1]
    box_height = crop_size or min(height, width / aspect)
    box_width = box_height * aspect
    if box_height > height or box_width > width + 1e-9:
        raise ValueError(f'a {box_width:.0f}x{box_height:.0f} crop does not fit in a '
                         f'{width}x{height} image')
    left, top = (width - box_width) / 2, (height - box_height) / 2
    return (left, top, left + box_width, top + box_height)


def to_mode(image, channel):
    """A PIL image in mode 'L' (channel 1) or 'RGB' (channel 3).

    Transparent pixels (RGBA, LA, palette with transparency) are laid on black;
    16-bit and float grayscale is scaled to 8 bits; CMYK and YCbCr are converted.
    """
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
        values = np.asarray(image, np.float64)
        peak = 65535.0 if image.mode.startswith('I;16') or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == 'P' and 'transparency' in image.info or image.mode in ('PA', 'LA', 'RGBa'):
        image = image.convert('RGBA')
    if image.mode == 'RGBA':
        black = Image.new('RGBA', image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image)
    return image.convert('L' if channel == 1 else 'RGB')


def load_image(path, height, width, channel, crop='center', crop_size=0):
    """Decodes `path`, converts its mode, crops and resizes it: uint8 [height, width, channel].

    Raises OSError, ValueError or SyntaxError (PIL's error for some broken headers)
    for a file that is not a readable image, or one the crop does not fit.
    """
    with Image.open(path) as image:
        box = crop_box(image.size, (width, height), crop, crop_size)
        scale = min((box[2] - box[0]) / width, (box[3] - box[1]) / height)
        if image.format == 'JPEG' and scale >= 2:
            # decode at 1/2, 1/4 or 1/8 scale (much faster) while the crop stays
            # at least as large as the target
            full = image.size
            image.draft(image.mode, (math.ceil(full[0] / scale), math.ceil(full[1] / scale)))
            sx, sy = image.size[0] / full[0], image.size[1] / full[1]
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        image = to_mode(image, channel).crop(tuple(round(v) for v in box))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        return np.asarray(image, np.uint8).reshape(height, width, channel)
