"""The multi-stage VAE's graph, and nothing else: no session, no files, no printing.

Stage 1 is a VAE: encoder q(z|x) => z => decoder => coarse image x̂₁.
Stages 2..num_stages each refine the previous stage's image (a U-Net or a
residual net), each with its own loss. Prior samples z ~ N(0, I) go through
the same decoder and refiners (shared weights, batch norm in inference mode).
See README.md for the loss.

Every builder takes its configuration explicitly: the frozen model configuration
(utils.run.config.ModelConfig), how the ops are built (ops.BuildOptions) and, for
the training graph, a TrainingSetup. build() returns the graph's endpoints as one
named bundle; runner.py runs them. With more than one tower device the training
graph is built once more as towers (towers.py).
"""
import collections
import contextlib
import dataclasses

import numpy as np
import tensorflow as tf

import ops
import towers
from utils.run.shapes import level_sizes

tf1 = tf.compat.v1

MIN_STD = 1e-4  # floor of q(z|x)'s standard deviation, keeps log(std) finite
RESNET_BLOCKS = 5  # residual blocks of the resnet refiner (as the reference code)
RESNET_WIDTH = 4  # the resnet refiner's channels, in multiples of model.refine_channels()
RESNET_WIDEN = 4  # the resnet refiner's widening conv: this many times its width


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """How the training graph learns and where it runs (not what the model is)."""

    learning_rate: float  # Adam's step size
    beta1: float  # Adam's first-moment decay
    noise_seed: int  # seeds ε with the global step: a resumed run draws the same noise
    mixed_precision: bool = False  # float16 compute with dynamic loss scaling (GPU)
    tower_devices: tuple = ()  # more than one: a tower per device, each on a batch slice
    replicas_to_aggregate: int = 0  # > 0: SyncReplicasOptimizer over that many workers
    lr_schedule: str = 'constant'  # or 'cosine': from learning_rate down to 0 at decay_steps
    decay_steps: int = 0  # the cosine schedule's length (the run's max_step)
    kl_warmup_steps: int = 0  # > 0: the KL's weight rises linearly from 0 to 1 this long


# The graph's endpoints: what runner.py feeds and fetches.
Endpoints = collections.namedtuple('Endpoints', [
    'images',  # placeholder [b, h, w, c] in [-1, 1]
    'training',  # placeholder_with_default(False): batch norm on the batch's statistics
    'prior_z',  # placeholder [b, latent_len] of prior samples
    'global_step',
    'targets',  # the input at each stage's size
    'z_mean', 'z_std',  # q(z|x), each [b, latent_len]
    'stage_outputs',  # each stage's image of the input, [b, h_k, w_k, c]
    'sample_outputs',  # each stage's image of prior_z (batch norm in inference mode)
    'per_image',  # {name: [b]}: KL, every stage's loss and PSNR
    'metrics',  # {name: scalar}: their batch means and the weighted 'total'
    'train_metrics',  # the metrics the train op minimises (the towers' mean with towers)
    'model_variables',  # what inference needs: weights, batch-norm averages, global step
    'train_op',
    'sync_optimizer',  # the SyncReplicasOptimizer, or None
    'weight_averages',  # the ExponentialMovingAverage of the trained weights, or None
])


def device_scope(device):
    """tf1.device(device), or no scope at all for None (tf1.device(None) would clear
    an enclosing scope, such as a cluster's device setter)."""
    return contextlib.nullcontext() if device is None else tf1.device(device)


# ---------------------------------------------------------------- stages

def encoder(image, model, options, training):
    """q(z|x): image [b, h, w, c] => mean, std, each [b, latent_len].

    std = softplus(s) + MIN_STD for an unconstrained output s: positive,
    smooth, and close to linear for large s (exp(s) would let the KL's
    std² term explode early in training).
    """
    x = ops.to_layout(image, options)
    for level in range(model.network_depth):
        # [b, h_l, w_l, .] => [b, h_l/2, w_l/2, start·2^l]
        x = ops.conv_bn_lrelu(x, model.start_channel_num * 2 ** level, training,
                              f'down{level}', options, stride=2)
    # flattened in NHWC order whatever the layout: checkpoints fit both layouts
    flat = tf.reshape(ops.from_layout(x, options), [-1, int(np.prod(x.shape[1:]))])
    # [b, h_d·w_d·ch] => [b, 2·latent_len]
    stats = ops.dense(flat, 2 * model.latent_len, 'latent')
    mean, raw_std = tf.split(stats, 2, axis=1)
    return mean, tf.nn.softplus(raw_std) + MIN_STD


def decoder(z, model, options, training, size):
    """p(x|z)'s mean: z [b, latent_len] => coarse image [b, h, w, c] in [-1, 1], (h, w) = size.

    Mirrors the encoder, one resize-conv up per level. model.decoder='residual'
    (the deep residual VAE) puts a residual block before each resize-conv;
    'plain' (the original VAE) has none.
    """
    depth = model.network_depth
    sizes = level_sizes(size[0], size[1], depth)
    bottom_h, bottom_w = sizes[depth]
    channels = model.start_channel_num * 2 ** (depth - 1)
    # [b, latent_len] => [b, h_d, w_d, start·2^(d-1)]
    x = ops.dense(z, bottom_h * bottom_w * channels, 'project')
    x = ops.to_layout(tf.reshape(x, [-1, bottom_h, bottom_w, channels]), options)
    x = ops.lrelu(ops.batch_norm(x, training, 'project_bn', options))
    for level in reversed(range(depth)):
        if model.decoder == 'residual':
            # [b, h_{l+1}, w_{l+1}, .] => the same shape, plus the block's identity path
            x = ops.residual_block(x, training, f'res{level}', options)
        # [b, h_{l+1}, w_{l+1}, .] => [b, h_l, w_l, start·2^(l-1)]
        out_channels = model.start_channel_num * 2 ** max(level - 1, 0)
        x = ops.resize_conv(x, out_channels, sizes[level], f'up{level}', options)
        x = ops.lrelu(ops.batch_norm(x, training, f'up{level}_bn', options))
    # [b, h, w, start] => [b, h, w, channel]
    return tf.tanh(ops.from_layout(ops.conv2d(x, model.channel, 'to_image', options), options))


def unet(image, depth, start_channels, options, training):
    """Refinement U-Net: image [b, h, w, c] => refined image [b, h, w, c] in [-1, 1].

    `depth` stride-2 levels down, then back up with resize-convs to the exact
    size of each skip, concatenated with it (any h, w with min(h, w) >= 2^depth).
    """
    sizes = level_sizes(int(image.shape[1]), int(image.shape[2]), depth)
    # [b, h, w, c] => [b, h, w, start]
    x = ops.conv_bn_lrelu(ops.to_layout(image, options), start_channels, training, 'in', options)
    skips = [x]
    for level in range(depth):
        # [b, h_l, w_l, .] => [b, h_{l+1}, w_{l+1}, start·2^(l+1)]
        x = ops.conv_bn_lrelu(x, start_channels * 2 ** (level + 1), training,
                              f'down{level}', options, stride=2)
        skips.append(x)
    for level in reversed(range(depth)):
        channels = start_channels * 2 ** level
        # [b, h_{l+1}, w_{l+1}, .] => [b, h_l, w_l, start·2^l]
        x = ops.resize_conv(x, channels, sizes[level], f'up{level}', options)
        x = ops.lrelu(ops.batch_norm(x, training, f'up{level}_bn', options))
        # concat the skip: [b, h_l, w_l, 2·start·2^l] => [b, h_l, w_l, start·2^l]
        x = ops.conv_bn_lrelu(tf.concat([x, skips[level]], axis=ops.channels_axis(options)),
                              channels, training, f'merge{level}', options)
    # [b, h, w, start] => [b, h, w, c]
    out = ops.conv2d(x, int(image.shape[-1]), 'to_image', options)
    return tf.tanh(ops.from_layout(out, options))


def resnet(image, width, options, training):
    """SRResNet-like refiner (the reference code's stage 2): image [b, h, w, c] =>
    refined image [b, h, w, c] in [-1, 1], all at full resolution.

    A wide 5×5 convolution, RESNET_BLOCKS residual blocks, a convolution added
    back to the first one's output (the long skip), then a widening and a
    narrowing convolution to the image.
    """
    # [b, h, w, c] => [b, h, w, width]
    first = ops.conv_bn_lrelu(ops.to_layout(image, options), width, training, 'in', options,
                              kernel=5)
    x = first
    for index in range(RESNET_BLOCKS):
        # [b, h, w, width] => [b, h, w, width]
        x = ops.residual_block(x, training, f'res{index}', options)
    # long skip: [b, h, w, width] => [b, h, w, width]
    x = ops.batch_norm(ops.conv2d(x, width, 'merge', options, bias=False), training,
                       'merge_bn', options) + first
    # [b, h, w, width] => [b, h, w, RESNET_WIDEN·width] => [b, h, w, width]
    x = ops.conv_bn_lrelu(x, RESNET_WIDEN * width, training, 'wide', options)
    x = ops.conv_bn_lrelu(x, width, training, 'narrow', options)
    # [b, h, w, width] => [b, h, w, c]
    out = ops.conv2d(x, int(image.shape[-1]), 'to_image', options)
    return tf.tanh(ops.from_layout(out, options))


def refiner(image, model, options, training):
    """The refinement network that model.refine_net names."""
    if model.refine_net == 'resnet':
        return resnet(image, RESNET_WIDTH * model.refine_channels(), options, training)
    return unet(image, model.network_depth, model.refine_channels(), options, training)


def resize(images, size, method):
    """images [b, h, w, c] => [b, size[0], size[1], c]; no op when the size is already right."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return tf.image.resize(images, size, method=method)


def stages(z, model, options, training):
    """z => [stage 1 image, ..., stage N image]; variables shared between calls.

    Stage k > 1 refines stage k-1's image, upsampled bilinearly first when
    stage k works at a larger size (coarse-to-fine). Without stage_gradient
    the image passed on is a constant to the later stage's loss, so each
    stage learns from its own loss only.
    """
    sizes = model.stage_sizes()
    with tf1.variable_scope('stage1/decoder', reuse=tf1.AUTO_REUSE):
        outputs = [decoder(z, model, options, training, sizes[0])]
    for index in range(2, model.num_stages + 1):
        previous = outputs[-1] if model.stage_gradient else tf.stop_gradient(outputs[-1])
        previous = resize(previous, sizes[index - 1], tf.image.ResizeMethod.BILINEAR)
        with tf1.variable_scope(f'stage{index}', reuse=tf1.AUTO_REUSE):
            outputs.append(refiner(previous, model, options, training))
    return outputs


def stage_targets(images, model):
    """The input at every stage's size (area-downsampled for a smaller stage)."""
    return [resize(images, size, tf.image.ResizeMethod.AREA) for size in model.stage_sizes()]


def encode(image, model, options, training):
    """q(z|x) at stage 1's size => (mean, std); variables shared between calls."""
    with tf1.variable_scope('stage1/encoder', reuse=tf1.AUTO_REUSE):
        return encoder(image, model, options, training)


def noise(shape, seed, global_step):
    """ε ~ N(0, I) drawn statelessly from (seed, global_step): step s always gets the
    same noise, so a resumed run repeats an uninterrupted one."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.convert_to_tensor(global_step)])
    return tf.random.stateless_normal(shape, seed=pair)


# ---------------------------------------------------------------- losses

def log_sigma_variable(model):
    """log σ of stage 1's Gaussian decoder as a trained variable (model.learn_sigma),
    starting at log(model.sigma); shared by every tower."""
    with tf1.variable_scope('stage1', reuse=tf1.AUTO_REUSE):
        return tf1.get_variable('log_sigma', [], initializer=tf1.constant_initializer(
            np.log(model.sigma)))


def per_image_terms(targets, outputs, z_mean, z_std, model):
    """Per-image KL, stage losses and PSNRs (see README "The loss"). Each stage is
    compared with the input area-downsampled to its own size."""
    distance = ops.l1_distance if model.refine_loss == 'l1' else ops.l2_distance
    log_sigma = log_sigma_variable(model) if model.learn_sigma else None
    per_image = {
        'kl': ops.kl_to_standard_normal(z_mean, z_std),
        'stage1_loss': ops.gaussian_nll(targets[0], outputs[0], model.sigma, log_sigma),
    }
    for index in range(2, model.num_stages + 1):
        target, output = targets[index - 1], outputs[index - 1]
        per_image[f'stage{index}_loss'] = distance(target, output)
        if model.refine_gradient_weight > 0:
            per_image[f'stage{index}_loss'] += (model.refine_gradient_weight
                                                * ops.gradient_l1(target, output))
        if model.refine_ssim_weight > 0:
            per_image[f'stage{index}_loss'] += (model.refine_ssim_weight
                                                * ops.ssim_distance(target, output))
    for index, (target, output) in enumerate(zip(targets, outputs), start=1):
        per_image[f'stage{index}_psnr'] = ops.psnr(target, output)
    return per_image


def batch_means(per_image, model, kl_weight=None):
    """The batch means of the per-image values and the weighted total loss (the KL
    times `kl_weight`, a scalar tensor, during a warm-up). A trained σ is reported
    as 'sigma'."""
    metrics = {name: tf.reduce_mean(value) for name, value in per_image.items()
               if not name.endswith('_psnr')}
    kl = metrics['kl'] if kl_weight is None else kl_weight * metrics['kl']
    weighted = [kl, metrics['stage1_loss']] + [
        weight * metrics[f'stage{index}_loss']
        for index, weight in enumerate(model.weights(), start=2)]
    metrics['total'] = tf.add_n(weighted, name='total_loss')
    for index in range(1, model.num_stages + 1):
        metrics[f'stage{index}_psnr'] = tf.reduce_mean(per_image[f'stage{index}_psnr'])
    if model.learn_sigma:
        metrics['sigma'] = tf.exp(log_sigma_variable(model))
    return metrics


def kl_weight(global_step, warmup_steps):
    """The KL's weight at `global_step`: rising linearly from 0 to 1 over `warmup_steps`,
    or None (weight 1, no op) without a warm-up."""
    if warmup_steps <= 0:
        return None
    return tf.minimum(1.0, tf.cast(global_step, tf.float32) / float(warmup_steps))


def learning_rate(global_step, setup):
    """setup.learning_rate, or its cosine decay to 0 at setup.decay_steps."""
    if setup.lr_schedule == 'constant':
        return setup.learning_rate
    return tf1.train.cosine_decay(setup.learning_rate, global_step, max(setup.decay_steps, 1))


def inference_variables(net, use_averages=True):
    """What the actions other than train restore and export writes: the model's own
    variables, as a list, or, when the model keeps moving averages of its weights (and
    use_averages), as {checkpoint name: variable} with every trained weight read from
    its average."""
    averages = net.weight_averages
    if averages is None or not use_averages:
        return net.model_variables
    trained = set(tf1.trainable_variables())
    return {averages.average_name(v) if v in trained else v.op.name: v
            for v in net.model_variables}


# ---------------------------------------------------------------- the whole graph

def build(model, options, setup):
    """Builds the model into the default graph; returns its Endpoints.

    model: a ModelConfig; options: ops.BuildOptions; setup: a TrainingSetup.
    Variables are created in a fixed order under the scopes stage1/encoder,
    stage1/decoder and stageK, so checkpoints of earlier builds load.
    """
    images = tf1.placeholder(tf.float32, [None, model.height, model.width, model.channel],
                             name='images')
    training = tf1.placeholder_with_default(False, [], name='training')
    prior_z = tf1.placeholder(tf.float32, [None, model.latent_len], name='prior_z')
    with device_scope(_first_tower_device(setup)):
        global_step = tf1.train.get_or_create_global_step()
        targets = stage_targets(images, model)
        z_mean, z_std = encode(targets[0], model, options, training)
        epsilon = noise(tf.shape(z_mean), setup.noise_seed, global_step)
        stage_outputs = stages(z_mean + z_std * epsilon, model, options, training)
        sample_outputs = stages(prior_z, model, options, training=False)
        per_image = per_image_terms(targets, stage_outputs, z_mean, z_std, model)
        metrics = batch_means(per_image, model, kl_weight(global_step, setup.kl_warmup_steps))
    if len(setup.tower_devices) > 1:
        train_metrics, updates = _build_towers(images, global_step, model, options, setup)
    else:
        train_metrics = metrics
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    model_variables = tf1.global_variables()  # made before the optimizer's own
    with device_scope(_first_tower_device(setup)):  # Adam's own variables on the CPU
        train_op, sync_optimizer = _optimizer(train_metrics['total'], updates, global_step,
                                              setup)
        train_op, weight_averages = _average_weights(train_op, global_step, model)
    return Endpoints(images, training, prior_z, global_step, targets, z_mean, z_std,
                     stage_outputs, sample_outputs, per_image, metrics, train_metrics,
                     model_variables, train_op, sync_optimizer, weight_averages)


def _average_weights(train_op, global_step, model):
    """With model.ema_decay > 0, a train op that also moves an exponential moving average
    of every trained weight after the step, and the ExponentialMovingAverage; else
    (train_op, None). The decay is min(ema_decay, (1 + n) / (10 + n)), n the global
    step after the update, so early averages do not hold on to the initial weights."""
    if model.ema_decay <= 0:
        return train_op, None
    averages = tf1.train.ExponentialMovingAverage(model.ema_decay, num_updates=global_step)
    with tf.control_dependencies([train_op]):
        return averages.apply(tf1.trainable_variables()), averages


def _first_tower_device(setup):
    """With towers, the evaluation and sampling graph runs on the first tower's
    device (variables on the CPU); otherwise TensorFlow places it."""
    if len(setup.tower_devices) <= 1:
        return None
    return towers.variables_apart(setup.tower_devices[0])


def _build_towers(images, global_step, model, options, setup):
    """The training graph as one tower per device, each on its slice of the batch with
    its slice of the noise; returns the metrics averaged over the towers (= the
    whole batch's) and the batch-norm updates (the first tower's: every tower
    computes the same, synchronised, statistics)."""
    devices = setup.tower_devices
    count = len(devices)
    slices = tf.split(images, count)
    epsilons = tf.split(noise([tf.shape(images)[0], model.latent_len], setup.noise_seed,
                              global_step), count)
    sync = towers.TowerSync(count)
    tower_options = dataclasses.replace(options, tower_sync=sync)
    tf1.get_default_graph().switch_to_thread_local()  # each builder thread: its own scope

    def build_tower(index):
        with tf.name_scope(f'tower{index}'), \
                tf1.device(towers.variables_apart(devices[index])):
            targets = stage_targets(slices[index], model)
            z_mean, z_std = encode(targets[0], model, tower_options, True)
            outputs = stages(z_mean + z_std * epsilons[index], model, tower_options, True)
            return batch_means(per_image_terms(targets, outputs, z_mean, z_std, model), model,
                               kl_weight(global_step, setup.kl_warmup_steps))

    metrics = towers.average(sync.build(build_tower))
    return metrics, tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope='tower0/')


def _optimizer(loss, updates, global_step, setup):
    """Adam on all trainable variables; each step also runs the batch-norm `updates`.
    Returns (train op, the SyncReplicasOptimizer or None).

    With towers the gradient ops sit on their forward ops' devices: each tower
    back-propagates its own slice, and a variable's gradient is the sum of the
    towers' parts, i.e. the average of the towers' gradients (the loss is their
    mean). With replicas_to_aggregate, the workers' gradients are averaged before
    one update (SyncReplicasOptimizer)."""
    optimizer = tf1.train.AdamOptimizer(learning_rate(global_step, setup), beta1=setup.beta1)
    if setup.mixed_precision:  # float16 where safe, loss scaled against underflow
        optimizer = tf1.mixed_precision.enable_mixed_precision_graph_rewrite(
            optimizer, loss_scale='dynamic')
    if setup.replicas_to_aggregate:
        sync_optimizer = tf1.train.SyncReplicasOptimizer(
            optimizer, replicas_to_aggregate=setup.replicas_to_aggregate,
            total_num_replicas=setup.replicas_to_aggregate)
        # the chief's aggregated update runs without a batch: the batch-norm updates
        # go with each worker's own step, not into the update's dependencies
        return tf.group(sync_optimizer.minimize(loss, global_step=global_step),
                        *updates), sync_optimizer
    with tf.control_dependencies(updates):
        return optimizer.minimize(loss, global_step=global_step,
                                  colocate_gradients_with_ops=len(setup.tower_devices) > 1), None
