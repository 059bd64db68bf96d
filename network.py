"""The multi-stage VAE: one class that builds the whole graph once and runs it.

Stage 1 is a VAE: encoder q(z|x) => z => decoder => coarse image x̂₁.
Stages 2..num_stages each refine the previous stage's image (a U-Net or a
residual net), each with its own loss. Prior samples z ~ N(0, I) go through
the same decoder and refiners (shared weights, batch norm in inference mode).
See README.md for the loss. With --num_gpus > 1 the training graph is built once
more as towers (towers.py); in a cluster, distributed.py places the graph and
drives the session.
"""
import contextlib
import os
import time

import numpy as np
import tensorflow as tf

import data_reader
import ops
import towers
from utils import checkpoints, images
from utils.cluster import worker_seed
from utils.errors import UserError
from utils.progress import TrainingProgress
from utils import evaluation, feature_metrics, stages
from utils.shapes import level_sizes
from utils.signals import StopRequests, TrainingStopped

tf1 = tf.compat.v1
tf1.disable_eager_execution()  # a static graph run by a Session, TF 1.x style
tf.get_logger().setLevel('WARNING')  # no INFO line per checkpoint restore

MIN_STD = 1e-4  # floor of q(z|x)'s standard deviation, keeps log(std) finite
GRID_IMAGES = 16  # images per TensorBoard grid and per training sample PNG
PRIOR_STREAM = 7919  # seeds the fixed prior samples apart from other seeded draws
RESNET_BLOCKS = 5  # residual blocks of the resnet refiner (as the reference code)
RESNET_WIDTH = 4  # the resnet refiner's channels, in multiples of start_channel_num


def make_deterministic():
    """Asks TensorFlow for deterministic kernels (GPU runs repeat exactly, more slowly;
    ops without a deterministic kernel then raise an error)."""
    tf.config.experimental.enable_op_determinism()


def has_gpu():
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices('GPU'))


def session_config(conf):
    """The session's threads, XLA setting and, for towers, devices from the flags."""
    config = tf1.ConfigProto(intra_op_parallelism_threads=conf.intra_op_threads,
                             inter_op_parallelism_threads=conf.inter_op_threads)
    if conf.xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    if conf.num_gpus > 1:
        # towers on logical CPUs when there are too few GPUs; ops without a GPU kernel
        # go to the CPU
        if len(tf.config.list_physical_devices('GPU')) < conf.num_gpus:
            config.device_count['CPU'] = conf.num_gpus
        config.allow_soft_placement = True
    return config


def _device_scope(device):
    """tf1.device(device), or no scope at all for None (tf1.device(None) would clear
    an enclosing scope, such as a cluster's device setter)."""
    return contextlib.nullcontext() if device is None else tf1.device(device)


def prior_samples(seed, count, latent_len):
    """A fixed batch of z ~ N(0, I): the same (seed, count) gives the same samples."""
    rng = np.random.default_rng([seed, PRIOR_STREAM])
    return rng.standard_normal((count, latent_len)).astype(np.float32)


# ---------------------------------------------------------------- stages

def encoder(image, conf, training):
    """q(z|x): image [b, h, w, c] => mean, std, each [b, latent_len].

    std = softplus(s) + MIN_STD for an unconstrained output s: positive,
    smooth, and close to linear for large s (exp(s) would let the KL's
    std² term explode early in training).
    """
    x = ops.to_layout(image)
    for level in range(conf.network_depth):
        # [b, h_l, w_l, .] => [b, h_l/2, w_l/2, start·2^l]
        x = ops.conv_bn_lrelu(x, conf.start_channel_num * 2 ** level, training,
                              f'down{level}', stride=2)
    # flattened in NHWC order whatever the layout: checkpoints fit both layouts
    flat = tf.reshape(ops.from_layout(x), [-1, int(np.prod(x.shape[1:]))])
    # [b, h_d·w_d·ch] => [b, 2·latent_len]
    stats = ops.dense(flat, 2 * conf.latent_len, 'latent')
    mean, raw_std = tf.split(stats, 2, axis=1)
    return mean, tf.nn.softplus(raw_std) + MIN_STD


def decoder(z, conf, training, size):
    """p(x|z)'s mean: z [b, latent_len] => coarse image [b, h, w, c] in [-1, 1], (h, w) = size.

    Mirrors the encoder, one resize-conv up per level. conf.decoder='residual'
    (the deep residual VAE) puts a residual block before each resize-conv;
    'plain' (the original VAE) has none.
    """
    sizes = level_sizes(size[0], size[1], conf.network_depth)
    depth = conf.network_depth
    bottom_h, bottom_w = sizes[depth]
    channels = conf.start_channel_num * 2 ** (depth - 1)
    # [b, latent_len] => [b, h_d, w_d, start·2^(d-1)]
    x = ops.dense(z, bottom_h * bottom_w * channels, 'project')
    x = ops.to_layout(tf.reshape(x, [-1, bottom_h, bottom_w, channels]))
    x = ops.lrelu(ops.batch_norm(x, training, 'project_bn'))
    for level in reversed(range(depth)):
        if conf.decoder == 'residual':
            # [b, h_{l+1}, w_{l+1}, .] => the same shape, plus the block's identity path
            x = ops.residual_block(x, training, f'res{level}')
        # [b, h_{l+1}, w_{l+1}, .] => [b, h_l, w_l, start·2^(l-1)]
        out_channels = conf.start_channel_num * 2 ** max(level - 1, 0)
        x = ops.resize_conv(x, out_channels, sizes[level], f'up{level}')
        x = ops.lrelu(ops.batch_norm(x, training, f'up{level}_bn'))
    # [b, h, w, start] => [b, h, w, channel]
    return tf.tanh(ops.from_layout(ops.conv2d(x, conf.channel, 'to_image')))


def unet(image, depth, start_channels, training):
    """Refinement U-Net: image [b, h, w, c] => refined image [b, h, w, c] in [-1, 1].

    `depth` stride-2 levels down, then back up with resize-convs to the exact
    size of each skip, concatenated with it (any h, w with min(h, w) >= 2^depth).
    """
    sizes = level_sizes(int(image.shape[1]), int(image.shape[2]), depth)
    # [b, h, w, c] => [b, h, w, start]
    x = ops.conv_bn_lrelu(ops.to_layout(image), start_channels, training, 'in')
    skips = [x]
    for level in range(depth):
        # [b, h_l, w_l, .] => [b, h_{l+1}, w_{l+1}, start·2^(l+1)]
        x = ops.conv_bn_lrelu(x, start_channels * 2 ** (level + 1), training,
                              f'down{level}', stride=2)
        skips.append(x)
    for level in reversed(range(depth)):
        channels = start_channels * 2 ** level
        # [b, h_{l+1}, w_{l+1}, .] => [b, h_l, w_l, start·2^l]
        x = ops.resize_conv(x, channels, sizes[level], f'up{level}')
        x = ops.lrelu(ops.batch_norm(x, training, f'up{level}_bn'))
        # concat the skip: [b, h_l, w_l, 2·start·2^l] => [b, h_l, w_l, start·2^l]
        x = ops.conv_bn_lrelu(tf.concat([x, skips[level]], axis=ops.channels_axis()), channels,
                              training,
                              f'merge{level}')
    # [b, h, w, start] => [b, h, w, c]
    return tf.tanh(ops.from_layout(ops.conv2d(x, int(image.shape[-1]), 'to_image')))


def resnet(image, width, training):
    """SRResNet-like refiner (the reference code's stage 2): image [b, h, w, c] =>
    refined image [b, h, w, c] in [-1, 1], all at full resolution.

    A wide 5×5 convolution, RESNET_BLOCKS residual blocks, a convolution added
    back to the first one's output (the long skip), then a widening and a
    narrowing convolution to the image.
    """
    # [b, h, w, c] => [b, h, w, width]
    first = ops.conv_bn_lrelu(ops.to_layout(image), width, training, 'in', kernel=5)
    x = first
    for index in range(RESNET_BLOCKS):
        # [b, h, w, width] => [b, h, w, width]
        x = ops.residual_block(x, training, f'res{index}')
    # long skip: [b, h, w, width] => [b, h, w, width]
    x = ops.batch_norm(ops.conv2d(x, width, 'merge', bias=False), training, 'merge_bn') + first
    # [b, h, w, width] => [b, h, w, 4·width] => [b, h, w, width]
    x = ops.conv_bn_lrelu(x, 4 * width, training, 'wide')
    x = ops.conv_bn_lrelu(x, width, training, 'narrow')
    # [b, h, w, width] => [b, h, w, c]
    return tf.tanh(ops.from_layout(ops.conv2d(x, int(image.shape[-1]), 'to_image')))


def refiner(image, conf, training):
    """The refinement network that conf.refine_net names."""
    if conf.refine_net == 'resnet':
        return resnet(image, RESNET_WIDTH * conf.start_channel_num, training)
    return unet(image, conf.network_depth, conf.start_channel_num, training)


def resize(images, size, method):
    """images [b, h, w, c] => [b, size[0], size[1], c]; no op when the size is already right."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return tf.image.resize(images, size, method=method)


# ---------------------------------------------------------------- the model

class MSVAE:
    """Builds the graph for `conf` (a namespace of the flags) in its own tf.Graph
    and session, and trains or samples with it."""

    def __init__(self, conf, cluster=None):
        """cluster: None for one process (the model opens its own session), or a
        distributed.Cluster: the graph is placed by its device setter, its optimizer
        wrapped for synchronous replicas, and the trainer provides the session."""
        self.conf = conf
        self.cluster = cluster
        self.tower_devices = towers.tower_devices(
            conf.num_gpus, len(tf.config.list_physical_devices('GPU')))
        if conf.num_gpus > 1 and self.tower_devices[0].startswith('/cpu'):
            print(f'note: TensorFlow sees fewer than --num_gpus={conf.num_gpus} GPUs: the '
                  f'towers run on {conf.num_gpus} logical CPU devices (slower than one)')
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(conf.random_seed)
            with _device_scope(cluster.device_setter if cluster else None), \
                    ops.build_options(fused_batch_norm=conf.fused_batch_norm,
                                      upsample=conf.upsample, data_format=conf.data_format):
                self._build()
            if cluster is None:  # a MonitoredSession adds its own ops, then finalizes
                self.graph.finalize()
        self.session_config = session_config(conf)
        self.sess = None if cluster else tf1.Session(graph=self.graph,
                                                     config=self.session_config)

    # ------------------------------------------------------------ graph

    def _build(self):
        conf = self.conf
        shape = [None, conf.height, conf.width, conf.channel]
        self.images = tf1.placeholder(tf.float32, shape, name='images')
        self.training = tf1.placeholder_with_default(False, [], name='training')
        self.prior_z = tf1.placeholder(tf.float32, [None, conf.latent_len], name='prior_z')
        self.sizes = stages.stage_sizes(conf.height, conf.width, conf.num_stages,
                                        conf.coarse_scale)
        self.refine_weights = stages.refine_weights(conf.refine_weights, conf.num_stages)
        with _device_scope(self._first_tower_device()):
            self.global_step = tf1.train.get_or_create_global_step()
            # the input at each stage's size: what that stage's loss compares with
            self.targets = self._targets(self.images)
            self.z_mean, self.z_std = self._encode(self.targets[0], self.training)
            epsilon = self._noise(tf.shape(self.z_mean))
            self.stage_outputs = self._stages(self.z_mean + self.z_std * epsilon, self.training)
            self.sample_outputs = self._stages(self.prior_z, training=False)
            self.per_image = self._per_image(self.targets, self.stage_outputs, self.z_mean,
                                             self.z_std)
            self.metrics = self._batch_means(self.per_image)
        if conf.num_gpus > 1:
            self.train_metrics, updates = self._build_towers()
        else:
            self.train_metrics = self.metrics
            updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        with _device_scope(self._first_tower_device()):  # Adam's own variables on the CPU
            self.train_op = self._optimizer(self.train_metrics['total'], updates)
        self.train_summary = tf1.summary.merge(
            [tf1.summary.scalar(f'train/{name}', value)
             for name, value in self.train_metrics.items()])
        # checkpoints.prune keeps the newest (across restarts too), and modeldir is scanned
        # for them, so the Saver neither deletes nor writes a "checkpoint" state file
        self.saver = tf1.train.Saver(tf1.global_variables(), max_to_keep=None)
        # checked before each save: a step can turn the weights to Inf/NaN while its
        # own loss, computed before the update, was still finite
        self.variables_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in tf1.global_variables()
             if v.dtype.base_dtype.is_floating])
        self.init_op = tf1.global_variables_initializer()

    def _first_tower_device(self):
        """With towers, the evaluation and sampling graph runs on the first tower's
        device (variables on the CPU); otherwise TensorFlow places it."""
        if self.conf.num_gpus == 1:
            return None
        return towers.variables_apart(self.tower_devices[0])

    def _build_towers(self):
        """The training graph as num_gpus towers, each on its slice of the batch with
        its slice of the noise; returns the metrics averaged over the towers (= the
        whole batch's) and the batch-norm updates (the first tower's: every tower
        computes the same, synchronised, statistics)."""
        count, devices = self.conf.num_gpus, self.tower_devices
        slices = tf.split(self.images, count)
        noise = tf.split(self._noise([tf.shape(self.images)[0], self.conf.latent_len]), count)
        sync = towers.TowerSync(count)
        self.graph.switch_to_thread_local()  # each builder thread keeps its own device scope

        def build_tower(index):
            with tf.name_scope(f'tower{index}'), \
                    tf1.device(towers.variables_apart(devices[index])):
                targets = self._targets(slices[index])
                z_mean, z_std = self._encode(targets[0], True)
                outputs = self._stages(z_mean + z_std * noise[index], True)
                return self._batch_means(self._per_image(targets, outputs, z_mean, z_std))

        with ops.build_options(tower_sync=sync):
            metrics = towers.average(sync.build(build_tower))
        return metrics, tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope='tower0/')

    def _stages(self, z, training):
        """z => [stage 1 image, ..., stage N image]; variables shared between calls.

        Stage k > 1 refines stage k-1's image, upsampled bilinearly first when
        stage k works at a larger size (coarse-to-fine). Without stage_gradient
        the image passed on is a constant to the later stage's loss, so each
        stage learns from its own loss only.
        """
        conf = self.conf
        with tf1.variable_scope('stage1/decoder', reuse=tf1.AUTO_REUSE):
            outputs = [decoder(z, conf, training, self.sizes[0])]
        for index in range(2, conf.num_stages + 1):
            previous = outputs[-1] if conf.stage_gradient else tf.stop_gradient(outputs[-1])
            previous = resize(previous, self.sizes[index - 1], tf.image.ResizeMethod.BILINEAR)
            with tf1.variable_scope(f'stage{index}', reuse=tf1.AUTO_REUSE):
                outputs.append(refiner(previous, conf, training))
        return outputs

    def _targets(self, images):
        """The input at every stage's size (area-downsampled for a smaller stage)."""
        return [resize(images, size, tf.image.ResizeMethod.AREA) for size in self.sizes]

    def _encode(self, image, training):
        """q(z|x) at stage 1's size => (mean, std); variables shared between calls."""
        with tf1.variable_scope('stage1/encoder', reuse=tf1.AUTO_REUSE):
            return encoder(image, self.conf, training)

    def _noise(self, shape):
        """ε ~ N(0, I) drawn statelessly from (random_seed, global_step): step s always
        gets the same noise, so a resumed run repeats an uninterrupted one. A worker
        of a cluster other than the first draws its own stream."""
        stream = worker_seed(self.conf.random_seed, self.conf.task_index)
        seed = tf.stack([tf.constant(stream, tf.int64), tf.convert_to_tensor(self.global_step)])
        return tf.random.stateless_normal(shape, seed=seed)

    def _per_image(self, targets, outputs, z_mean, z_std):
        """Per-image KL, stage losses and PSNRs (see README "The loss"). Each stage is
        compared with the input area-downsampled to its own size."""
        conf = self.conf
        distance = ops.l1_distance if conf.refine_loss == 'l1' else ops.l2_distance
        per_image = {
            'kl': ops.kl_to_standard_normal(z_mean, z_std),
            'stage1_loss': ops.gaussian_nll(targets[0], outputs[0], conf.sigma),
        }
        for index in range(2, conf.num_stages + 1):
            per_image[f'stage{index}_loss'] = distance(targets[index - 1], outputs[index - 1])
        for index, (target, output) in enumerate(zip(targets, outputs), start=1):
            per_image[f'stage{index}_psnr'] = ops.psnr(target, output)
        return per_image

    def _batch_means(self, per_image):
        """The batch means of the per-image values and the weighted total loss."""
        metrics = {name: tf.reduce_mean(value) for name, value in per_image.items()
                   if not name.endswith('_psnr')}
        weighted = [metrics['kl'], metrics['stage1_loss']] + [
            weight * metrics[f'stage{index}_loss']
            for index, weight in enumerate(self.refine_weights, start=2)]
        metrics['total'] = tf.add_n(weighted, name='total_loss')
        for index in range(1, self.conf.num_stages + 1):
            metrics[f'stage{index}_psnr'] = tf.reduce_mean(per_image[f'stage{index}_psnr'])
        return metrics

    def _optimizer(self, loss, updates):
        """Adam on all trainable variables; each step also runs the batch-norm `updates`.

        With towers the gradient ops sit on their forward ops' devices: each tower
        back-propagates its own slice, and a variable's gradient is the sum of the
        towers' parts, i.e. the average of the towers' gradients (the loss is their
        mean). In a cluster with --sync_replicas, the workers' gradients are averaged
        before one update (SyncReplicasOptimizer)."""
        conf = self.conf
        optimizer = tf1.train.AdamOptimizer(conf.learning_rate, beta1=conf.beta1)
        if conf.mixed_precision:  # float16 where safe, loss scaled against underflow
            optimizer = tf1.mixed_precision.enable_mixed_precision_graph_rewrite(
                optimizer, loss_scale='dynamic')
        if self.cluster and self.cluster.sync_replicas:
            self.sync_optimizer = tf1.train.SyncReplicasOptimizer(
                optimizer, replicas_to_aggregate=self.cluster.num_workers,
                total_num_replicas=self.cluster.num_workers)
            # the chief's aggregated update runs without a batch: the batch-norm updates
            # go with each worker's own step, not into the update's dependencies
            return tf.group(self.sync_optimizer.minimize(loss, global_step=self.global_step),
                            *updates)
        with tf.control_dependencies(updates):
            return optimizer.minimize(loss, global_step=self.global_step,
                                      colocate_gradients_with_ops=conf.num_gpus > 1)

    # ------------------------------------------------------------ checkpoints

    def step(self):
        """The global step held in the session."""
        return int(self.sess.run(self.global_step))

    def restore(self, step):
        """Loads checkpoint `step` of modeldir (the latest when step <= 0).

        Returns the restored global step, or None when step <= 0 and modeldir
        holds no checkpoint. Raises UserError when a checkpoint does not fit.
        """
        conf = self.conf
        prefix = checkpoints.find_checkpoint(conf.modeldir, conf.model_name, step)
        if prefix is None:
            return None
        try:
            self.saver.restore(self.sess, prefix)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(f'checkpoint {prefix} does not fit the model built from the '
                            f'flags ({first[:200]}); use the flags it was trained with or '
                            f'another --modeldir') from None
        return self.step()

    def save(self):
        """Writes checkpoint model_name-STEP of all global variables, then deletes all
        but the newest keep_checkpoints (also those of earlier runs); returns its prefix.

        The checkpoint is written under a temporary name and renamed into place
        (checkpoints.publish), so a kill or a full disk during the write leaves
        the earlier checkpoints as they were.
        """
        conf = self.conf
        step = self.step()
        if not self.sess.run(self.variables_finite):
            raise UserError(self.diverged_message(step, {}))
        try:
            self.saver.save(self.sess, checkpoints.partial_prefix(conf.modeldir, conf.model_name,
                                                                 step),
                            write_meta_graph=False, write_state=False)
            checkpoints.publish(conf.modeldir, conf.model_name, step)
        except (tf.errors.OpError, OSError) as err:
            checkpoints.discard_partial(conf.modeldir, conf.model_name)
            reason = (getattr(err, 'message', None) or str(err)).strip().splitlines()[0]
            raise UserError(f'could not write checkpoint {conf.model_name}-{step} in '
                            f'{conf.modeldir} ({reason[:200]}); the earlier checkpoints are '
                            f'intact: free disk space, then run the same command to '
                            f'resume') from None
        checkpoints.prune(conf.modeldir, conf.model_name, conf.keep_checkpoints)
        return checkpoints.checkpoint_prefix(conf.modeldir, conf.model_name, step)

    def initialize_or_restore(self):
        """Restores reload_step (or the latest checkpoint), else initialises; returns the step."""
        step = self.restore(self.conf.reload_step)
        if step is None:
            self.sess.run(self.init_op)
            step = 0
        return step

    # ------------------------------------------------------------ training

    def train_step(self, batch, with_summary=False):
        """One Adam step on `batch`; returns the metrics (and the summary when asked)."""
        fetches = {'train': self.train_op, 'metrics': self.train_metrics}
        if with_summary:
            fetches['summary'] = self.train_summary
        result = self.sess.run(fetches, {self.images: batch, self.training: True})
        return result['metrics'], result.get('summary')

    def train(self):
        """Trains from the latest checkpoint (or from scratch) to max_step."""
        conf = self.conf
        start = self.initialize_or_restore()
        if start >= conf.max_step:
            print(f'{conf.modeldir} is already at step {start} >= --max_step='
                  f'{conf.max_step}; raise --max_step to train on')
            return start
        print(f'training steps {start + 1}..{conf.max_step} '
              f'({"resumed" if start else "from scratch"}), checkpoints in {conf.modeldir}')
        writer = tf1.summary.FileWriter(conf.logdir, self.graph if start == 0 else None)
        reader = data_reader.BatchReader(
            os.path.join(conf.data_dir, conf.train_data), conf.height, conf.width,
            conf.channel, conf.batch, conf.random_seed, start_step=start,
            memory_limit_mb=conf.reader_memory_mb)
        progress = TrainingProgress(start, conf.max_step, conf.batch)
        began = time.perf_counter()
        with StopRequests() as stop:
            try:
                self._train_loop(start, reader, writer, progress, stop)
            finally:
                progress.finish()
                reader.close()
                writer.close()
            if stop.signum:
                prefix = self.save()
                print(f'stopped by {stop.name} at step {self.step()}: saved {prefix}; run '
                      f'the same command to resume')
                raise TrainingStopped(stop.signum)
        seconds = time.perf_counter() - began
        print(f'trained {conf.max_step - start} steps in {seconds:.0f} s '
              f'({(conf.max_step - start) * conf.batch / seconds:.0f} images/s); '
              f'last checkpoint {checkpoints.checkpoint_prefix(conf.modeldir, conf.model_name, conf.max_step)}')
        return conf.max_step

    def _train_loop(self, start, reader, writer, progress, stop):
        conf = self.conf
        for step in range(start + 1, conf.max_step + 1):
            if stop.signum:
                return
            metrics, summary = self.train_step(reader.next_batch(),
                                               with_summary=step % conf.summary_step == 0)
            if not np.isfinite(metrics['total']):
                raise UserError(self.diverged_message(step, metrics))
            if summary is not None:
                writer.add_summary(summary, step)
            progress.update(step, metrics)
            if conf.valid_data and step % conf.test_step == 0:
                self.validate(writer, step)
                progress.pause()
            if step % conf.save_step == 0 or step == conf.max_step:
                self.save()
                self.write_training_samples(step)
                progress.pause()

    def diverged_message(self, step, metrics):
        """The error for a non-finite loss (metrics) or non-finite weights (no metrics)."""
        conf = self.conf
        kept = checkpoints.saved_steps(conf.modeldir, conf.model_name)
        last = f'{conf.model_name}-{kept[-1]}' if kept else 'none yet'
        bad = ', '.join(f'{k}={v:.4g}' for k, v in metrics.items() if not np.isfinite(v))
        what = f'the loss is not finite at step {step} ({bad})' if metrics else \
            f'the weights are not finite after step {step}'
        return (f'{what}; nothing was saved, the last good checkpoint is {last}: lower '
                f'--learning_rate or raise --sigma')

    # ------------------------------------------------------------ validation

    def evaluate_metrics(self, batches):
        """Metrics averaged over all images of `batches` (batch norm in inference mode)."""
        sums, count = {}, 0
        for batch in batches:
            values = self.sess.run(self.metrics, {self.images: batch})
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(batch)
            count += len(batch)
        return {name: total / count for name, total in sums.items()}

    def validate(self, writer, step):
        """Writes valid/ scalars over valid_images and image grids to TensorBoard."""
        conf = self.conf
        path = os.path.join(conf.data_dir, conf.valid_data)
        batches = data_reader.sequential_batches(path, conf.height, conf.width, conf.channel,
                                                 conf.batch, limit=conf.valid_images)
        metrics = self.evaluate_metrics(batches)
        values = [tf1.Summary.Value(tag=f'valid/{name}', simple_value=value)
                  for name, value in metrics.items()]
        first = next(data_reader.sequential_batches(path, conf.height, conf.width,
                                                    conf.channel, GRID_IMAGES))
        reconstructions = self.sess.run(self.stage_outputs, {self.images: first})
        grids = {'valid/reconstructions': images.stage_grid(reconstructions, per_row=8,
                                                              inputs=first),
                 'valid/prior_samples': images.stage_grid(self.sample(GRID_IMAGES), per_row=8)}
        for tag, picture in grids.items():
            values.append(tf1.Summary.Value(tag=tag, image=tf1.Summary.Image(
                height=picture.shape[0], width=picture.shape[1],
                colorspace=picture.shape[2], encoded_image_string=images.png_bytes(picture))))
        writer.add_summary(tf1.Summary(value=values), step)
        writer.flush()
        return metrics

    # ------------------------------------------------------------ sampling

    def sample(self, count):
        """Every stage's image for the first `count` of the fixed prior samples."""
        return self._sample_batch(prior_samples(self.conf.random_seed, count,
                                                self.conf.latent_len))

    def write_training_samples(self, step):
        picture = images.stage_grid(self.sample(GRID_IMAGES), per_row=8)
        images.save_png(os.path.join(self.conf.sampledir, 'train', f'step_{step:07d}.png'),
                        picture)

    def _restore_for(self, action):
        """Loads predict_step (the latest when <= 0) for `action`; returns its step."""
        step = self.restore(self.conf.predict_step)
        if step is None:
            raise UserError(f'no checkpoint {self.conf.model_name}-* in {self.conf.modeldir}: '
                            f'train first or point --modeldir at a trained model before '
                            f'--action={action}')
        return step

    def predict(self):
        """Loads predict_step (the latest when <= 0) and writes num_samples prior samples:
        one PNG each (final stage) and grid.png whose rows are the stages."""
        conf = self.conf
        step = self._restore_for('predict')
        outputs = self.sample(conf.num_samples)
        folder = os.path.join(conf.sampledir, f'predict_step_{step}')
        paths = images.save_each(folder, outputs[-1])
        images.save_png(os.path.join(folder, 'grid.png'), images.stage_grid(outputs))
        print(f'wrote {len(paths)} samples of step {step} and grid.png (rows: '
              f'{self._row_names()}) to {folder}')
        return folder

    def _row_names(self):
        return ', '.join(f'stage {index}' for index in range(1, self.conf.num_stages + 1))

    # ------------------------------------------------------------ test split

    def test_batches(self, limit):
        """Float batches of the first `limit` test images, in file order."""
        conf = self.conf
        return data_reader.sequential_batches(os.path.join(conf.data_dir, conf.test_data),
                                              conf.height, conf.width, conf.channel,
                                              conf.batch, limit=limit)

    def reconstruct_batch(self, batch):
        """One batch through the model (batch norm in inference mode): every stage's
        output, the input at every stage's size, and the per-image KL."""
        return self.sess.run({'outputs': self.stage_outputs, 'targets': self.targets,
                              'kl': self.per_image['kl']}, {self.images: batch})

    def reconstruct(self):
        """Writes the first num_samples test images and their reconstructions: grid.png
        (rows input, stage 1, ..., stage N) and input_XXXX.png, stageK_XXXX.png."""
        conf = self.conf
        step = self._restore_for('reconstruct')
        inputs, outputs = [], []
        for batch in self.test_batches(conf.num_samples):
            inputs.append(batch)
            outputs.append(self.reconstruct_batch(batch)['outputs'])
        inputs = np.concatenate(inputs)
        stage_images = [np.concatenate(stage) for stage in zip(*outputs)]
        folder = os.path.join(conf.sampledir, f'reconstruct_step_{step}')
        images.save_each(folder, inputs, prefix='input')
        for index, stage in enumerate(stage_images, start=1):
            images.save_each(folder, stage, prefix=f'stage{index}')
        images.save_png(os.path.join(folder, 'grid.png'),
                        images.stage_grid(stage_images, inputs=inputs))
        print(f'wrote {len(inputs)} test images of {conf.test_data} with their reconstructions '
              f'by step {step} and grid.png (rows: input, {self._row_names()}) to {folder}')
        return folder

    def evaluate(self):
        """Measures every stage on the first eval_samples test images and on eval_samples
        prior samples; writes modeldir/evaluation-STEP.json and prints a table."""
        conf = self.conf
        step = self._restore_for('evaluate')
        handle, test_images = data_reader.open_images(
            os.path.join(conf.data_dir, conf.test_data), conf.height, conf.width, conf.channel)
        test_count = min(conf.eval_samples, test_images.shape[0])
        handle.close()
        z = prior_samples(conf.random_seed, conf.eval_samples, conf.latent_len)
        prior_batches = (z[start:start + conf.batch] for start in range(0, len(z), conf.batch))
        inception = feature_metrics.InceptionMetrics(conf, test_count) if conf.eval_fid else None
        means = evaluation.measure(self.reconstruct_batch, self._sample_batch,
                                   self.test_batches(test_count), prior_batches, conf,
                                   (test_count, len(z)), inception)
        result = {'step': step, 'model': {key: getattr(conf, key) for key in
                                          checkpoints.MODEL_KEYS},
                  'test_data': os.path.join(conf.data_dir, conf.test_data),
                  'test_images': test_count, 'prior_samples': len(z),
                  'random_seed': conf.random_seed}
        result.update(evaluation.summarize(means, conf, self.sizes))
        if inception is not None:
            result['inception'] = inception.summary()
            inception.close()
        path = checkpoints.evaluation_path(conf.modeldir, step)
        evaluation.write_json(path, result)
        print(evaluation.report(result))
        print(f'wrote {path}')
        return result

    def _sample_batch(self, z):
        return self.sess.run(self.sample_outputs, {self.prior_z: z})

    def close(self):
        """Releases the session."""
        self.sess.close()
