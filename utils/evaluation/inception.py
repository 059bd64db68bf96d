"""The FID Inception-v3 feature network in TensorFlow ops, in its own graph and session.

The network is the one of the original FID code (the 2015-12-05 TensorFlow
Inception-v3; weights from utils/evaluation/inception_weights.py): 2048 features per image from
the last average pool ("pool3"). Its FID-specific details, kept here: batch norm
without a scale, ε = 0.001; the 3×3 average pools inside the blocks do not count the
padding; the last block takes a 3×3 *max* pool where the one before takes an average.

Images come in [-1, 1], NHWC, with 1 or 3 channels. As the FID reference does with
8-bit images, they are taken to 0..255 and rounded to whole levels (generated
images as they would be saved as PNGs), grayscale is repeated to three channels,
resized to 299×299 bilinearly with TensorFlow's original resize (no half-pixel
centres: source pixel = output pixel × in/out, edges clamped), then mapped to
(p − 128) / 128.
"""
import numpy as np
import tensorflow as tf

from utils.evaluation import inception_weights

tf1 = tf.compat.v1
INPUT_SIZE = 299
FEATURES = 2048
BN_EPSILON = 1e-3
DEFAULT_BATCH = 50  # images per session call; memory ~ 1.3 GB at 299x299


def to_network_input(images, quantize=True):
    """[-1, 1] NHWC images (1 or 3 channels) => the network's 299×299×3 input."""
    levels = tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0)
    if quantize:
        levels = tf.round(levels)
    if images.shape[-1] == 1:
        levels = tf.tile(levels, [1, 1, 1, 3])
    resized = tf.raw_ops.ResizeBilinear(images=levels, size=[INPUT_SIZE, INPUT_SIZE],
                                        align_corners=False, half_pixel_centers=False)
    return (resized - 128.0) / 128.0


class _Builder:
    """Builds the network's ops from the weight arrays (batch norm folded into each
    convolution: scale 1/sqrt(var + ε), bias beta − mean·scale)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def conv(self, x, name):
        """Conv2dLayer `name`: convolution, batch norm, ReLU."""
        get = lambda field: self.arrays[f'{name}/{field}']  # noqa: E731
        scale = 1.0 / np.sqrt(get('var').astype(np.float64) + BN_EPSILON)
        kernel = (get('weight').astype(np.float64) * scale[:, None, None, None])
        kernel = np.transpose(kernel, (2, 3, 1, 0)).astype(np.float32)  # OIHW => HWIO
        bias = (get('beta') - get('mean') * scale).astype(np.float32)
        pad_h, pad_w = (int(p) for p in get('padding'))
        stride = int(get('stride'))
        y = tf.nn.conv2d(x, tf.constant(kernel), strides=[1, stride, stride, 1],
                         padding=[[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        return tf.nn.relu(tf.nn.bias_add(y, tf.constant(bias)))

    def chain(self, x, prefix, count):
        """prefix/conv, prefix/conv_1, ..., count convolutions one after another."""
        for index in range(count):
            x = self.conv(x, f'{prefix}/conv' + (f'_{index}' if index else ''))
        return x

    @staticmethod
    def avg_pool3(x):
        # SAME average pooling divides by the pixels inside the image: padding not counted
        return tf.nn.avg_pool2d(x, 3, 1, 'SAME')

    def block_a(self, x, name):
        """InceptionA (35×35): 1×1 | 1×1, 5×5 | 1×1, 3×3, 3×3 | avg pool, 1×1."""
        return tf.concat([self.conv(x, f'{name}/conv'), self.chain(x, f'{name}/tower', 2),
                          self.chain(x, f'{name}/tower_1', 3),
                          self.conv(self.avg_pool3(x), f'{name}/tower_2/conv')], axis=3)

    def block_b(self, x, name):
        """InceptionB (35 => 17): 3×3 stride 2 | 1×1, 3×3, 3×3 stride 2 | max pool."""
        return tf.concat([self.conv(x, f'{name}/conv'), self.chain(x, f'{name}/tower', 3),
                          tf.nn.max_pool2d(x, 3, 2, 'VALID')], axis=3)

    def block_c(self, x, name):
        """InceptionC (17×17): factorised 7×7 towers."""
        return tf.concat([self.conv(x, f'{name}/conv'), self.chain(x, f'{name}/tower', 3),
                          self.chain(x, f'{name}/tower_1', 5),
                          self.conv(self.avg_pool3(x), f'{name}/tower_2/conv')], axis=3)

    def block_d(self, x, name):
        """InceptionD (17 => 8)."""
        return tf.concat([self.chain(x, f'{name}/tower', 2), self.chain(x, f'{name}/tower_1', 4),
                          tf.nn.max_pool2d(x, 3, 2, 'VALID')], axis=3)

    def block_e(self, x, name, pool):
        """InceptionE (8×8): split 1×3 / 3×1 towers; `pool` is the FID variant's pool."""
        a = self.conv(x, f'{name}/tower_conv')
        b = self.conv(self.conv(x, f'{name}/tower_1_conv'), f'{name}/tower_1_conv_1')
        return tf.concat([self.conv(x, f'{name}/conv'),
                          self.conv(a, f'{name}/tower_mixed_conv'),
                          self.conv(a, f'{name}/tower_mixed_conv_1'),
                          self.conv(b, f'{name}/tower_1_mixed_conv'),
                          self.conv(b, f'{name}/tower_1_mixed_conv_1'),
                          self.conv(pool(x), f'{name}/tower_2_conv')], axis=3)

    def network(self, x):
        """299×299×3 input => [b, 2048] pool3 features."""
        x = self._stem(x)
        for name in ('mixed', 'mixed_1', 'mixed_2'):
            x = self.block_a(x, name)
        x = self.block_b(x, 'mixed_3')
        for name in ('mixed_4', 'mixed_5', 'mixed_6', 'mixed_7'):
            x = self.block_c(x, name)
        x = self.block_d(x, 'mixed_8')
        x = self.block_e(x, 'mixed_9', self.avg_pool3)
        x = self.block_e(x, 'mixed_10', lambda t: tf.nn.max_pool2d(t, 3, 1, 'SAME'))
        return tf.reduce_mean(x, axis=[1, 2])  # the 8×8 average pool

    def _stem(self, x):
        for name in ('conv', 'conv_1', 'conv_2'):
            x = self.conv(x, name)
        x = tf.nn.max_pool2d(x, 3, 2, 'VALID')
        x = self.conv(self.conv(x, 'conv_3'), 'conv_4')
        return tf.nn.max_pool2d(x, 3, 2, 'VALID')


class InceptionFeatures:
    """The feature network in its own tf.Graph and Session.

        with InceptionFeatures(channel=1) as net:
            features = net(images)        # [n, 2048] float64
    """

    def __init__(self, channel, arrays=None, batch=DEFAULT_BATCH, quantize=True,
                 session_config=None):
        arrays = arrays if arrays is not None else inception_weights.load_weights()
        self.batch = batch
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.float32, [None, None, None, channel], 'images')
            self.features = _Builder(arrays).network(to_network_input(self.images, quantize))
        self.sess = tf1.Session(graph=self.graph, config=session_config)

    def __call__(self, images):
        """Features [n, 2048] (float64) of images [n, h, w, channel] in [-1, 1]."""
        parts = [self.sess.run(self.features, {self.images: images[start:start + self.batch]})
                 for start in range(0, len(images), self.batch)]
        if not parts:
            return np.zeros((0, FEATURES))
        return np.concatenate(parts).astype(np.float64)

    def close(self):
        """Releases the session."""
        self.sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
