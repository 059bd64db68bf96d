"""Analytic multiply-add count of the model's convolutions and dense layers, from the
flags alone (an independent check of the count TensorFlow's profiler makes).

    python benchmarks/flops.py [--flagfile=...] [main.py flags]

Counts 2 FLOPs per multiply-add of every Conv2D and MatMul of one image's forward pass
through the training path (encoder, decoder, refiners); a training step does about
three times that (forward, gradient of the input, gradient of the weights), less the
input gradient of the encoder's first layer, which nothing needs.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main  # noqa: E402  (defines the model flags)
from network import RESNET_BLOCKS, RESNET_WIDEN, RESNET_WIDTH  # noqa: E402
from utils.run import stages  # noqa: E402
from utils.run.shapes import level_sizes  # noqa: E402


def conv(size, kernel, cin, cout):
    """FLOPs of a k×k convolution producing size=(h, w) outputs."""
    return 2 * size[0] * size[1] * kernel * kernel * cin * cout


def upsample(conf, size_in, size_out, cin, cout):
    """FLOPs of ops.resize_conv: a conv on the resized image, or (transpose) one
    multiply-add per input pixel, kernel tap and channel pair."""
    if conf.upsample == 'transpose':
        return conv(size_in, 3, cin, cout)
    return conv(size_out, 3, cin, cout)


def encoder(conf, size):
    """Forward FLOPs of q(z|x) at stage 1's size; also the first layer's (no input grad)."""
    sizes = level_sizes(size[0], size[1], conf.network_depth)
    cin, total, first = conf.channel, 0, 0
    for level in range(conf.network_depth):
        cout = conf.start_channel_num * 2 ** level
        layer = conv(sizes[level + 1], 3, cin, cout)
        first = first or layer
        total += layer
        cin = cout
    bottom = sizes[-1][0] * sizes[-1][1] * cin
    return total + 2 * bottom * 2 * conf.latent_len, first


def decoder(conf, size):
    """Forward FLOPs of the stage-1 decoder."""
    sizes = level_sizes(size[0], size[1], conf.network_depth)
    depth = conf.network_depth
    channels = conf.start_channel_num * 2 ** (depth - 1)
    total = 2 * conf.latent_len * sizes[depth][0] * sizes[depth][1] * channels
    for level in reversed(range(depth)):
        if conf.decoder == 'residual':
            total += 2 * conv(sizes[level + 1], 3, channels, channels)
        out = conf.start_channel_num * 2 ** max(level - 1, 0)
        total += upsample(conf, sizes[level + 1], sizes[level], channels, out)
        channels = out
    return total + conv(sizes[0], 3, channels, conf.channel)


def unet(conf, size):
    """Forward FLOPs of one U-Net refinement stage at `size`."""
    sizes = level_sizes(size[0], size[1], conf.network_depth)
    start = conf.model.refine_channels()
    total = conv(sizes[0], 3, conf.channel, start)
    for level in range(conf.network_depth):
        total += conv(sizes[level + 1], 3, start * 2 ** level, start * 2 ** (level + 1))
    for level in reversed(range(conf.network_depth)):
        channels = start * 2 ** level
        total += upsample(conf, sizes[level + 1], sizes[level], 2 * channels, channels)
        total += conv(sizes[level], 3, 2 * channels, channels)  # merge with the skip
    return total + conv(sizes[0], 3, start, conf.channel)


def resnet(conf, size):
    """Forward FLOPs of one resnet refinement stage at `size`."""
    width = RESNET_WIDTH * conf.model.refine_channels()
    total = conv(size, 5, conf.channel, width)
    total += RESNET_BLOCKS * 2 * conv(size, 3, width, width)
    total += conv(size, 3, width, width)  # the long skip's conv
    wide = RESNET_WIDEN * width
    total += conv(size, 3, width, wide) + conv(size, 3, wide, width)
    return total + conv(size, 3, width, conf.channel)


def count(conf):
    """dict: forward FLOPs per image of each part, 'forward' and 'train' (per image)."""
    sizes = stages.stage_sizes(conf.height, conf.width, conf.num_stages, conf.coarse_scale)
    parts = {}
    parts['encoder'], first = encoder(conf, sizes[0])
    parts['decoder'] = decoder(conf, sizes[0])
    refine = resnet if conf.refine_net == 'resnet' else unet
    for index, size in enumerate(sizes[1:], start=2):
        parts[f'stage{index}'] = refine(conf, size)
    forward = sum(parts.values())
    parts['forward'] = forward
    parts['train'] = 3 * forward - first
    return parts


def run(_):
    """Prints the count for the flags."""
    conf = main.config_from_flags()
    for name, value in count(conf).items():
        print(f'{name:>8}: {value / 1e6:10.2f} MFLOP per image')


if __name__ == '__main__':
    from absl import app
    app.run(run)
