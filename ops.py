"""Small stateless layer helpers on tf.compat.v1.get_variable and tf.nn.

Every helper takes a `scope` name and creates its variables inside it, so a
network built twice under a reusing variable scope shares its weights (the
prior-sampling path reuses the reconstruction path's decoder this way).
Tensors are NHWC throughout.
"""
import tensorflow as tf

tf1 = tf.compat.v1

LEAK = 0.2  # leaky ReLU slope for negative inputs
BN_DECAY = 0.99  # moving-average decay of the batch-norm statistics
BN_EPSILON = 1e-5  # added to the variance before the square root


def he_init():
    """Initialiser for weights feeding a (leaky) ReLU: N(0, 2/fan_in), truncated."""
    return tf1.variance_scaling_initializer(scale=2.0, mode='fan_in',
                                            distribution='truncated_normal')


def lrelu(x, name='lrelu'):
    """Leaky ReLU with slope LEAK below zero."""
    return tf.nn.leaky_relu(x, alpha=LEAK, name=name)


def conv2d(x, out_channels, scope, kernel=3, stride=1, bias=True):
    """k×k convolution, SAME padding: [b, h, w, c] => [b, ceil(h/s), ceil(w/s), out]."""
    with tf1.variable_scope(scope):
        in_channels = x.shape[-1]
        weights = tf1.get_variable(
            'weights', [kernel, kernel, in_channels, out_channels],
            initializer=he_init())
        y = tf.nn.conv2d(x, weights, strides=[1, stride, stride, 1], padding='SAME')
        if bias:
            y += tf1.get_variable('biases', [out_channels],
                                  initializer=tf1.zeros_initializer())
        return y


def resize_conv(x, out_channels, size, scope, kernel=3):
    """Nearest-neighbour upsampling to `size` then a convolution.

    [b, h, w, c] => [b, size[0], size[1], out]. Resizing to an explicit size
    (instead of a fixed ×2) lets a decoder land exactly on odd sizes such as
    7 → 14 → 28 or 4 → 7, and avoids the checkerboard of transposed convs.
    """
    x = tf.image.resize(x, size, method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
    return conv2d(x, out_channels, scope, kernel=kernel, bias=False)


def dense(x, units, scope):
    """Fully connected layer: [b, n] => [b, units]."""
    with tf1.variable_scope(scope):
        weights = tf1.get_variable('weights', [x.shape[-1], units],
                                   initializer=he_init())
        biases = tf1.get_variable('biases', [units],
                                  initializer=tf1.zeros_initializer())
        return tf.matmul(x, weights) + biases


def batch_norm(x, training, scope):
    """Batch norm over all axes but the last.

    `training` is a Python bool or a scalar bool tensor. When it is true the
    batch's own statistics normalise the batch and update ops that move the
    running averages are added to tf1.GraphKeys.UPDATE_OPS (the train op runs
    them); otherwise the running averages are used. Python False builds an
    inference-only path that creates no update ops (prior sampling).
    """
    with tf1.variable_scope(scope):
        channels = x.shape[-1]
        beta = tf1.get_variable('beta', [channels], initializer=tf1.zeros_initializer())
        gamma = tf1.get_variable('gamma', [channels], initializer=tf1.ones_initializer())
        moving_mean = tf1.get_variable('moving_mean', [channels], trainable=False,
                                       initializer=tf1.zeros_initializer())
        moving_var = tf1.get_variable('moving_variance', [channels], trainable=False,
                                      initializer=tf1.ones_initializer())
        if training is False:
            mean, var = moving_mean, moving_var
        else:
            batch_mean, batch_var = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
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
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)


def conv_bn_lrelu(x, out_channels, training, scope, stride=1, kernel=3):
    """conv → batch norm → leaky ReLU; the convolution needs no bias before BN."""
    with tf1.variable_scope(scope):
        y = conv2d(x, out_channels, 'conv', kernel=kernel, stride=stride, bias=False)
        return lrelu(batch_norm(y, training, 'bn'))


def residual_block(x, training, scope):
    """Two 3×3 conv+BN layers added to the input: [b, h, w, c] => [b, h, w, c]."""
    with tf1.variable_scope(scope):
        channels = x.shape[-1]
        y = conv_bn_lrelu(x, channels, training, 'layer1')
        y = batch_norm(conv2d(y, channels, 'conv2', bias=False), training, 'bn2')
        return lrelu(x + y)


# ---------------------------------------------------------------- losses
# Each returns one value per image, shape [b]; the model averages over the batch.

def kl_to_standard_normal(mean, std):
    """KL(N(mean, std²) ‖ N(0, I)) summed over latent dimensions: [b, L] => [b].

    Per dimension: ½(μ² + s² − 2 log s − 1).
    """
    return 0.5 * tf.reduce_sum(tf.square(mean) + tf.square(std)
                               - 2.0 * tf.math.log(std) - 1.0, axis=1)


def gaussian_nll(target, prediction, sigma):
    """Gaussian negative log-likelihood, std `sigma`, summed over pixels: => [b].

    Σ (x − x̂)² / (2σ²); the constant D·log(σ√(2π)) is dropped (it moves the
    loss, not its gradient).
    """
    squared = tf.square(target - prediction)
    return tf.reduce_sum(squared, axis=[1, 2, 3]) / (2.0 * sigma ** 2)


def l1_distance(target, prediction):
    """Σ |x − x̂| over pixels: [b, h, w, c] => [b]."""
    return tf.reduce_sum(tf.abs(target - prediction), axis=[1, 2, 3])


def psnr(target, prediction):
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2): => [b]."""
    mse = tf.reduce_mean(tf.square(target - prediction), axis=[1, 2, 3])
    return 10.0 * tf.math.log(4.0 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)


def l2_distance(target, prediction):
    """Σ (x − x̂)² over pixels: [b, h, w, c] => [b]."""
    return tf.reduce_sum(tf.square(target - prediction), axis=[1, 2, 3])
