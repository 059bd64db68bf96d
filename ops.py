"""Small stateless layer helpers on tf.compat.v1.get_variable and tf.nn.

Every helper takes a `scope` name and creates its variables inside it, so a
network built twice under a reusing variable scope shares its weights (the
prior-sampling path reuses the reconstruction path's decoder this way).
How the ops are built (layout, upsampling, fused batch norm, tower statistics) is
one frozen BuildOptions passed to the helpers; the module holds no state. Tensors
are NHWC unless options.data_format is 'NCHW': then the image tensors between the
helpers are [b, c, h, w] (channels_axis() says which), and the networks convert at
their ends (to_layout / from_layout).
"""
import dataclasses

import numpy as np

import tensorflow as tf

from utils.evaluation import metrics

tf1 = tf.compat.v1

LEAK = 0.2  # leaky ReLU slope for negative inputs
BN_DECAY = 0.99  # moving-average decay of the batch-norm statistics
BN_EPSILON = 1e-5  # added to the variance before the square root

@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How the helpers build their ops (not what they compute); the defaults are the
    graph the project has always built. One frozen object per graph, passed to every
    helper that depends on it."""

    data_format: str = 'NHWC'  # layout of the image tensors: NHWC (CPU) or NCHW (GPU)
    upsample: str = 'resize'  # resize_conv: 'resize' (nearest + conv) or 'transpose' (conv^T)
    fused_batch_norm: bool = False  # one FusedBatchNormV3 op instead of moments + arithmetic
    tower_sync: object = None  # towers.TowerSync: batch statistics over all towers' slices

    @property
    def nchw(self):
        """Whether image tensors are [b, c, h, w]."""
        return self.data_format == 'NCHW'


DEFAULT_OPTIONS = BuildOptions()


def channels_axis(options=DEFAULT_OPTIONS):
    """The channel axis of image tensors in the options' layout."""
    return 1 if options.nchw else 3


def channels(x, options=DEFAULT_OPTIONS):
    """The channel count of an image tensor in the options' layout."""
    return int(x.shape[channels_axis(options)])


def spatial_size(x, options=DEFAULT_OPTIONS):
    """(h, w) of an image tensor in the options' layout."""
    return (int(x.shape[2]), int(x.shape[3])) if options.nchw else (int(x.shape[1]),
                                                                      int(x.shape[2]))


def to_layout(images, options=DEFAULT_OPTIONS):
    """NHWC images => the options' layout."""
    return tf.transpose(images, [0, 3, 1, 2]) if options.nchw else images


def from_layout(x, options=DEFAULT_OPTIONS):
    """The options' layout => NHWC."""
    return tf.transpose(x, [0, 2, 3, 1]) if options.nchw else x


def he_init():
    """Initialiser for weights feeding a (leaky) ReLU: N(0, 2/fan_in), truncated."""
    return tf1.variance_scaling_initializer(scale=2.0, mode='fan_in',
                                            distribution='truncated_normal')


def lrelu(x, name='lrelu'):
    """Leaky ReLU with slope LEAK below zero."""
    return tf.nn.leaky_relu(x, alpha=LEAK, name=name)


def conv2d(x, out_channels, scope, options=DEFAULT_OPTIONS, kernel=3, stride=1, bias=True):
    """k×k convolution, SAME padding: [b, h, w, c] => [b, ceil(h/s), ceil(w/s), out]."""
    with tf1.variable_scope(scope):
        weights = tf1.get_variable(
            'weights', [kernel, kernel, channels(x, options), out_channels],
            initializer=he_init())
        if options.nchw:
            y = tf.nn.conv2d(x, weights, strides=[1, 1, stride, stride], padding='SAME',
                             data_format='NCHW')
        else:
            y = tf.nn.conv2d(x, weights, strides=[1, stride, stride, 1], padding='SAME')
        if bias:
            biases = tf1.get_variable('biases', [out_channels],
                                      initializer=tf1.zeros_initializer())
            y = tf.nn.bias_add(y, biases, data_format='NCHW') if options.nchw else y + biases
        return y


def resize_conv(x, out_channels, size, scope, options=DEFAULT_OPTIONS, kernel=3):
    """Upsampling to `size` with a convolution: [b, h, w, c] => [b, size[0], size[1], out].

    options.upsample == 'resize': nearest-neighbour resize then a k×k conv;
    resizing to an explicit size (instead of a fixed ×2) lands exactly on odd
    sizes such as 7 → 14 → 28 or 4 → 7, and avoids the checkerboard artefacts
    of transposed convolutions. 'transpose': one stride-2 k×k transposed conv
    (cheaper: it skips the resized copy), cropped to `size` by its output shape.
    """
    if options.upsample == 'transpose':
        return conv2d_transpose(x, out_channels, size, scope, options, kernel=kernel)
    if options.nchw:
        x = nearest_resize_nchw(x, size)
    else:
        x = tf.image.resize(x, size, method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
    return conv2d(x, out_channels, scope, options, kernel=kernel, bias=False)


def nearest_resize_nchw(x, size):
    """tf.image.resize's nearest neighbour (half-pixel centres) on [b, c, h, w]: output
    pixel i takes input pixel floor((i + ½)·in/out), gathered along h, then w."""
    height, width = spatial_size(x, BuildOptions(data_format='NCHW'))
    rows = [int((i + 0.5) * height / size[0]) for i in range(size[0])]
    cols = [int((i + 0.5) * width / size[1]) for i in range(size[1])]
    return tf.gather(tf.gather(x, rows, axis=2), cols, axis=3)


def conv2d_transpose(x, out_channels, size, scope, options=DEFAULT_OPTIONS, kernel=3):
    """Stride-2 transposed convolution, SAME padding, no bias:
    [b, h, w, c] => [b, size[0], size[1], out] with ceil(size/2) == (h, w)."""
    with tf1.variable_scope(scope):
        weights = tf1.get_variable('weights', [kernel, kernel, out_channels, channels(x, options)],
                                   initializer=he_init())
        if options.nchw:
            shape = tf.stack([tf.shape(x)[0], out_channels, size[0], size[1]])
            y = tf.nn.conv2d_transpose(x, weights, shape, strides=[1, 1, 2, 2],
                                       padding='SAME', data_format='NCHW')
            return tf.ensure_shape(y, [None, out_channels, size[0], size[1]])
        shape = tf.stack([tf.shape(x)[0], size[0], size[1], out_channels])
        y = tf.nn.conv2d_transpose(x, weights, shape, strides=[1, 2, 2, 1], padding='SAME')
        return tf.ensure_shape(y, [None, size[0], size[1], out_channels])


def dense(x, units, scope):
    """Fully connected layer: [b, n] => [b, units]."""
    with tf1.variable_scope(scope):
        weights = tf1.get_variable('weights', [x.shape[-1], units],
                                   initializer=he_init())
        biases = tf1.get_variable('biases', [units],
                                  initializer=tf1.zeros_initializer())
        return tf.matmul(x, weights) + biases


def batch_norm(x, training, scope, options=DEFAULT_OPTIONS):
    """Batch norm over all axes but the channels'.

    `training` is a Python bool or a scalar bool tensor. When it is true the
    batch's own statistics normalise the batch and update ops that move the
    running averages are added to tf1.GraphKeys.UPDATE_OPS (the train op runs
    them); otherwise the running averages are used. Python False builds an
    inference-only path that creates no update ops (prior sampling).
    """
    with tf1.variable_scope(scope):
        count = channels(x, options)
        beta = tf1.get_variable('beta', [count], initializer=tf1.zeros_initializer())
        gamma = tf1.get_variable('gamma', [count], initializer=tf1.ones_initializer())
        moving_mean = tf1.get_variable('moving_mean', [count], trainable=False,
                                       initializer=tf1.zeros_initializer())
        moving_var = tf1.get_variable('moving_variance', [count], trainable=False,
                                      initializer=tf1.ones_initializer())
        syncing = options.tower_sync is not None
        if options.fused_batch_norm and x.shape.rank == 4 and not syncing:
            return _fused_batch_norm(x, training, beta, gamma, moving_mean, moving_var,
                                     options.data_format)
        if training is False:
            mean, var = moving_mean, moving_var
        else:
            axes = [0, 2, 3] if options.nchw else list(range(x.shape.rank - 1))
            batch_mean, batch_var = (_tower_moments(x, axes, options) if syncing else
                                     tf.nn.moments(x, axes=axes))
            for variable, value in ((moving_mean, batch_mean), (moving_var, batch_var)):
                # average ← average − (1 − decay)·(average − batch value)
                tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, variable.assign_sub(
                    (1.0 - BN_DECAY) * (variable - value)))
            if training is True:
                mean, var = batch_mean, batch_var
            else:
                mean, var = tf1.cond(training, lambda: (batch_mean, batch_var),
                                     lambda: (tf.identity(moving_mean),
                                              tf.identity(moving_var)))
        if options.nchw:  # per-channel values broadcast over [b, c, h, w]
            mean, var, beta, gamma = (tf.reshape(t, [1, -1, 1, 1])
                                      for t in (mean, var, beta, gamma))
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)


def _tower_moments(x, axes, options):
    """Mean and (biased) variance over `axes` of the whole batch that the towers
    share, from their partial sums: the mean first, then the squared deviations
    from it (two passes, as tf.nn.moments, for the same rounding)."""
    sync = options.tower_sync
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total, count = sync.all_sum([tf.reduce_sum(x, axes), count])
    mean = total / count
    # the variance's gradient through the mean is zero: stopped, as tf.nn.moments does
    centre = tf.stop_gradient(tf.reshape(mean, [-1, 1, 1]) if options.nchw else mean)
    squares, = sync.all_sum([tf.reduce_sum(tf.square(x - centre), axes)])
    return mean, squares / count


def _fused_batch_norm(x, training, beta, gamma, moving_mean, moving_var, data_format):
    """batch_norm with FusedBatchNormV3 and the same moving averages (they take the
    op's batch variance, which is the unbiased one)."""
    def infer():
        return tf1.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean, variance=moving_var,
                                       epsilon=BN_EPSILON, is_training=False,
                                       data_format=data_format)[0]
    if training is False:
        return infer()
    # made outside any cond, as in batch_norm, so that the train op can run the updates
    y, batch_mean, batch_var = tf1.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON,
                                                       is_training=True,
                                                       data_format=data_format)
    for variable, value in ((moving_mean, batch_mean), (moving_var, batch_var)):
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, variable.assign_sub(
            (1.0 - BN_DECAY) * (variable - value)))
    return y if training is True else tf1.cond(training, lambda: y, infer)


def conv_bn_lrelu(x, out_channels, training, scope, options=DEFAULT_OPTIONS, stride=1,
                  kernel=3):
    """conv → batch norm → leaky ReLU; the convolution needs no bias before BN."""
    with tf1.variable_scope(scope):
        y = conv2d(x, out_channels, 'conv', options, kernel=kernel, stride=stride, bias=False)
        return lrelu(batch_norm(y, training, 'bn', options))


def residual_block(x, training, scope, options=DEFAULT_OPTIONS):
    """Two 3×3 conv+BN layers added to the input: [b, h, w, c] => [b, h, w, c]."""
    with tf1.variable_scope(scope):
        count = channels(x, options)
        y = conv_bn_lrelu(x, count, training, 'layer1', options)
        y = batch_norm(conv2d(y, count, 'conv2', options, bias=False), training, 'bn2', options)
        return lrelu(x + y)


# ---------------------------------------------------------------- losses
# Each returns one value per image, shape [b]; the model averages over the batch.

def kl_to_standard_normal(mean, std):
    """KL(N(mean, std²) ‖ N(0, I)) summed over latent dimensions: [b, L] => [b].

    Per dimension: ½(μ² + s² − 2 log s − 1).
    """
    return 0.5 * tf.reduce_sum(tf.square(mean) + tf.square(std)
                               - 2.0 * tf.math.log(std) - 1.0, axis=1)


def gaussian_nll(target, prediction, sigma, log_sigma=None):
    """Gaussian negative log-likelihood, std `sigma`, summed over pixels: => [b].

    Σ (x − x̂)² / (2σ²); the constant D·log(σ√(2π)) is dropped (it moves the
    loss, not its gradient). With a trained σ, given as the tensor `log_sigma`,
    its term D·log σ is kept (it is what stops σ from growing without bound);
    D·log √(2π) is still dropped.
    """
    squared = tf.reduce_sum(tf.square(target - prediction), axis=[1, 2, 3])
    if log_sigma is None:
        return squared / (2.0 * sigma ** 2)
    dims = float(np.prod(target.shape[1:]))
    return squared * tf.exp(-2.0 * log_sigma) / 2.0 + dims * log_sigma


def gradient_l1(target, prediction):
    """Σ |∇x − ∇x̂| over pixels, ∇ the horizontal and vertical neighbour differences:
    [b, h, w, c] => [b]. Zero for equal images; it penalises edges that are missing
    or added, and is blind to a uniform offset."""
    def differences(images):
        return (images[:, 1:, :, :] - images[:, :-1, :, :],
                images[:, :, 1:, :] - images[:, :, :-1, :])
    (target_y, target_x), (output_y, output_x) = differences(target), differences(prediction)
    return (tf.reduce_sum(tf.abs(target_y - output_y), axis=[1, 2, 3])
            + tf.reduce_sum(tf.abs(target_x - output_x), axis=[1, 2, 3]))


def ssim_distance(target, prediction):
    """D·(1 − SSIM) of images in [-1, 1], D the pixels per image: [b, h, w, c] => [b].

    SSIM (Wang et al. 2004) as tf.image.ssim computes it on the [0, 1] scale: an 11×11
    Gaussian window of σ 1.5 (smaller for images under 11 pixels), the mean of the map
    over the valid positions and the channels. Scaled by D so that a weight of 1 sits
    beside the L1 sum, not 784 times under it. Zero for equal images; unlike L1 it
    compares local contrast and structure, so a flat guess of a textured patch costs.
    """
    height, width, channels = prediction.shape[1:]
    window = min(11, height, width)
    similarity = tf.image.ssim((target + 1.0) / 2.0, (prediction + 1.0) / 2.0, max_val=1.0,
                               filter_size=window, filter_sigma=1.5)
    return float(height * width * channels) * (1.0 - similarity)


def l1_distance(target, prediction):
    """Σ |x − x̂| over pixels: [b, h, w, c] => [b]."""
    return tf.reduce_sum(tf.abs(target - prediction), axis=[1, 2, 3])


def psnr(target, prediction):
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2): => [b];
    metrics.psnr_from_mse on the [0, 1] scale, whose MSE is a quarter of this one."""
    mse = tf.reduce_mean(tf.square(target - prediction), axis=[1, 2, 3]) / 4.0
    return metrics.psnr_from_mse(mse, log10=lambda v: tf.math.log(v) / tf.math.log(10.0),
                                 maximum=tf.maximum)


def l2_distance(target, prediction):
    """Σ (x − x̂)² over pixels: [b, h, w, c] => [b]."""
    return tf.reduce_sum(tf.square(target - prediction), axis=[1, 2, 3])
