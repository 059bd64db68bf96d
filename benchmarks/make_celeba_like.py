"""Generates a folder of CelebA-like JPEGs for benchmarks: 178x218 RGB, photo-like texture.

    python benchmarks/make_celeba_like.py --output_dir=/tmp/celeba_like --count=20000

Each image is 1/f noise (the power spectrum of natural photographs) in correlated
colour with a shaded face-like ellipse, saved as JPEG quality 90, so that decoding
costs about what a CelebA photograph costs (CelebA's img_align_celeba averages about
7 KB a file). Names follow CelebA (000001.jpg, ...); list_eval_partition.txt splits
them in CelebA's proportions.
"""
import multiprocessing
import os
import sys

import numpy as np
from absl import app, flags
from PIL import Image

flags.DEFINE_string('output_dir', '/tmp/celeba_like', 'folder to write the JPEGs into')
flags.DEFINE_integer('count', 20000, 'number of images')
flags.DEFINE_integer('seed', 0, 'random seed')
FLAGS = flags.FLAGS

HEIGHT, WIDTH = 218, 178
CELEBA_SPLIT = (162770, 19867, 19962)  # official train / valid / test counts
SPECTRUM_SLOPE = 1.6  # amplitude ~ 1/f^slope


def amplitude():
    fy = np.fft.fftfreq(HEIGHT)[:, None]
    fx = np.fft.rfftfreq(WIDTH)[None, :]
    frequency = np.hypot(fx, fy)
    frequency[0, 0] = 1.0
    return frequency ** -SPECTRUM_SLOPE


def pink_noise(rng, amp):
    phase = np.exp(2j * np.pi * rng.random(amp.shape))
    field = np.fft.irfft2(amp * phase, s=(HEIGHT, WIDTH))
    return (field - field.mean()) / field.std()


def face_like(rng, amp):
    """One image: [218, 178, 3] uint8."""
    luminance = pink_noise(rng, amp)
    colour = np.stack([luminance + 0.35 * pink_noise(rng, amp) for _ in range(3)], axis=-1)
    image = 110 + 45 * colour * rng.uniform(0.6, 1.2, 3)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    cy, cx = HEIGHT * rng.uniform(0.45, 0.55), WIDTH * rng.uniform(0.45, 0.55)
    ry, rx = HEIGHT * rng.uniform(0.22, 0.3), WIDTH * rng.uniform(0.22, 0.3)
    inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
    face = np.clip(1.2 - inside, 0, 1)[..., None]
    skin = np.array([200, 150, 120]) * rng.uniform(0.6, 1.1) + 12 * luminance[..., None]
    shade = 1 - 0.25 * (xs - cx)[..., None] / rx
    image = image * (1 - face) + skin * shade * face
    return np.clip(image, 0, 255).astype(np.uint8)


def write_range(args):
    start, stop, folder, seed = args
    amp = amplitude()
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        Image.fromarray(face_like(rng, amp)).save(os.path.join(folder, f'{index + 1:06d}.jpg'),
                                                  quality=90)
    return stop - start


def write_partition(folder, count):
    """list_eval_partition.txt: names with 0 (train), 1 (valid), 2 (test), CelebA's proportions."""
    total = sum(CELEBA_SPLIT)
    train = round(count * CELEBA_SPLIT[0] / total)
    valid = round(count * CELEBA_SPLIT[1] / total)
    with open(os.path.join(folder, 'list_eval_partition.txt'), 'w') as handle:
        for index in range(count):
            split = 0 if index < train else 1 if index < train + valid else 2
            handle.write(f'{index + 1:06d}.jpg {split}\n')


def main(argv):
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    step = 500
    jobs = [(start, min(start + step, FLAGS.count), FLAGS.output_dir, FLAGS.seed)
            for start in range(0, FLAGS.count, step)]
    with multiprocessing.Pool() as pool:
        done = 0
        for written in pool.imap_unordered(write_range, jobs):
            done += written
            print(f'\r{done}/{FLAGS.count} images', end='', file=sys.stderr)
    write_partition(FLAGS.output_dir, FLAGS.count)
    sizes = [os.path.getsize(os.path.join(FLAGS.output_dir, f'{i + 1:06d}.jpg'))
             for i in range(0, FLAGS.count, max(1, FLAGS.count // 200))]
    print(f'\nwrote {FLAGS.count} JPEGs to {FLAGS.output_dir}, mean size '
          f'{np.mean(sizes) / 1024:.1f} KB (sampled)')


if __name__ == '__main__':
    app.run(main)
