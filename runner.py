"""Runs the graph of network.py: the session runner, the one training loop, and the
actions train / predict / reconstruct / evaluate / interpolate / encode / export as
functions over them (ACTIONS).

    runner = Runner(conf)            # graph, savers and session for a RunConfig
    train(runner)                    # or predict(runner), reconstruct(..), evaluate(..)

The single process, the towers (--num_gpus) and every worker of a cluster run the
same loop, train_loop(); distributed.py only sets up the cluster, builds the Runner
with its Replicas and hands the loop its monitored session.
"""
import collections
import errno
import glob
import json
import os
import re
import shutil
import time

import h5py
import numpy as np
import tensorflow as tf

import data_reader
import network
import ops
import towers
from utils.data import hdf5_images
from utils.evaluation import feature_metrics, measure
from utils.run import (atomic, checkpoints, config, errors, images, latent_prior, latent_vae,
                       priors)
from utils.run.cluster import worker_seed
from utils.run.errors import UserError
from utils.run.progress import CountProgress, TrainingProgress
from utils.run.signals import StopRequests, TrainingStopped

tf1 = tf.compat.v1

GRID_IMAGES = 16  # images per TensorBoard grid and per training sample PNG
PRIOR_STREAM = 7919  # seeds the fixed prior samples apart from other seeded draws
POSTERIOR_STREAM = 15485863  # seeds the order of --sample_prior=posterior's training latents
VANISHED = object()  # a checkpoint deleted while it was read (a training pruned it)
RESTORE_TRIES = 5  # passes over the checkpoints when they keep vanishing under a reader

# Where a cluster worker's graph goes and how its gradients meet (distributed.py).
Replicas = collections.namedtuple('Replicas',
                                  'device_setter sync_replicas num_workers task_index')
# The part one process plays in training: the chief writes checkpoints, summaries,
# validation and samples; a cluster's global step also moves by other workers' steps.
Role = collections.namedtuple('Role', 'is_chief task_index num_workers images_per_step '
                                      'shared_step')


def make_deterministic():
    """Asks TensorFlow for deterministic kernels (GPU runs repeat exactly, more slowly;
    ops without a deterministic kernel then raise an error)."""
    tf.config.experimental.enable_op_determinism()


def has_gpu():
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices('GPU'))


def nchw_convolutions_run():
    """Whether this machine's TensorFlow kernels run an NCHW convolution and its input
    gradient: GPUs do; on the CPU only builds whose oneDNN kernels are active do (they
    are not on every x86 CPU), otherwise TensorFlow answers 'only supports NHWC'."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.zeros([1, 1, 4, 4])
        kernel = tf.ones([3, 3, 1, 1])
        y = tf.nn.conv2d(x, kernel, 1, 'SAME', data_format='NCHW')
        grad = tf.gradients(y, x)[0]
        with tf1.Session(graph=graph) as sess:
            try:
                sess.run(grad)
                return True
            except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
                return False


def session_config(conf):
    """The session's threads, XLA setting and, for towers, devices from the flags."""
    proto = tf1.ConfigProto(intra_op_parallelism_threads=conf.intra_op_threads,
                            inter_op_parallelism_threads=conf.inter_op_threads)
    if conf.xla:
        proto.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    if conf.num_gpus > 1:
        # towers on logical CPUs when there are too few GPUs; ops without a GPU kernel
        # go to the CPU
        if len(tf.config.list_physical_devices('GPU')) < conf.num_gpus:
            proto.device_count['CPU'] = conf.num_gpus
        proto.allow_soft_placement = True
    return proto


def prior_samples(seed, count, latent_len):
    """A fixed batch of z ~ N(0, I): the same (seed, count) gives the same samples."""
    rng = np.random.default_rng([seed, PRIOR_STREAM])
    return rng.standard_normal((count, latent_len)).astype(np.float32)


def training_latent_draw(means, seed, count, temperature=1.0):
    """`count` of the training images' latent means [N, L] in a seeded order without
    repeats (cycling when count > N), their spread about the means' mean scaled by
    `temperature`: --sample_prior=posterior, a prior that copies the training latents
    (what a perfect fit of them would give)."""
    order = np.random.default_rng([seed, POSTERIOR_STREAM]).permutation(len(means))
    centre = means.mean(0)
    return (centre + temperature * (means[np.resize(order, count)] - centre)).astype(np.float32)


def build_options(conf):
    """How the graph's ops are built, from the flags (ops.BuildOptions)."""
    return ops.BuildOptions(data_format=conf.data_format, upsample=conf.upsample,
                            fused_batch_norm=conf.fused_batch_norm)


def training_setup(conf, replicas=None):
    """The optimizer, noise stream and devices of the training graph (network.TrainingSetup)."""
    devices = towers.tower_devices(conf.num_gpus, len(tf.config.list_physical_devices('GPU')))
    if conf.num_gpus > 1 and devices[0].startswith('/cpu'):
        print(f'note: TensorFlow sees fewer than --num_gpus={conf.num_gpus} GPUs: the '
              f'towers run on {conf.num_gpus} logical CPU devices (slower than one)')
    task_index = replicas.task_index if replicas else 0
    aggregate = replicas.num_workers if replicas and replicas.sync_replicas else 0
    return network.TrainingSetup(
        learning_rate=conf.learning_rate, beta1=conf.beta1,
        noise_seed=worker_seed(conf.random_seed, task_index),
        mixed_precision=conf.mixed_precision,
        tower_devices=tuple(devices) if conf.num_gpus > 1 else (),
        replicas_to_aggregate=aggregate, lr_schedule=conf.lr_schedule,
        decay_steps=conf.max_step, kl_warmup_steps=conf.kl_warmup_steps)


def op_error_reason(err):
    """The line of a TensorFlow OpError's message that says what went wrong (not the
    'Graph execution error' header, nor where the op was defined)."""
    noise = ('Graph execution error', 'Detected at node', 'File "', 'Node:', '[[',
             'Traceback', 'Original stack trace')
    for line in str(getattr(err, 'message', err)).splitlines():
        line = line.strip()
        if line and not line.startswith(noise):
            return line
    return type(err).__name__


def checkpoint_names(net, inference, use_averages):
    """{name in a checkpoint: variable} that a saver of the default graph writes and
    restores, in build order: every global variable, or with `inference` the model's
    own (network.inference_variables, the averages when use_averages)."""
    if not inference:
        return {v.op.name: v for v in tf1.global_variables()}
    chosen = network.inference_variables(net, use_averages)
    return chosen if isinstance(chosen, dict) else {v.op.name: v for v in chosen}


def variable_shapes(conf):
    """{False: {checkpoint name: shape} of every variable, True: those that inference
    restores} of the graph conf's model builds, in a graph of its own."""
    with tf.Graph().as_default():
        net = network.build(conf.model, build_options(conf), training_setup(conf))
        averages = conf.inference_weights == 'average'
        return {inference: {name: variable.shape.as_list() for name, variable in
                            checkpoint_names(net, inference, averages).items()}
                for inference in (False, True)}


def other_values(field, value, size_pairs):
    """Values of a model field worth trying for a checkpoint that does not fit: another
    choice, the other boolean, or an integer that scales the sizes that differ
    (size_pairs: (built, saved)), or one away when no size differs (another structure)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, str):
        return [choice for choice in config.choices(field) if choice != value]
    if not isinstance(value, int):
        return []
    tried = {saved * value // built for built, saved in size_pairs
             if built and saved * value % built == 0} if size_pairs else {value - 1, value + 1}
    return sorted(tried - {value, 0})


def fitting_field(conf, inference, saved):
    """Which one model field, given another value, makes the model's variables those of
    a checkpoint (`saved`: {name: shape}): 'latent_len=4 (the flags give 8)', or ''.
    Each value tried builds the model's graph once (on this error path only)."""
    built = variable_shapes(conf)[inference]
    size_pairs = {pair for name, shape in built.items() if name in saved
                  and len(shape) == len(saved[name]) for pair in zip(shape, saved[name])
                  if pair[0] != pair[1]}
    values = conf.model.as_dict()
    # the fields of few values first: each value tried costs a graph
    fields = sorted(config.variable_fields(),
                    key=lambda name: isinstance(values[name], int) and
                    not isinstance(values[name], bool))
    for field in fields:
        for candidate in other_values(field, values[field], size_pairs):
            try:
                other = conf.replace(**{field: candidate})
                other.model  # noqa: B018  (a value the model refuses is no candidate)
            except UserError:
                continue
            shapes = variable_shapes(other)
            if all(saved.get(name) == shape for name, shape in shapes[inference].items()) \
                    and set(saved) <= set(shapes[False]):
                return f'{field}={candidate} (the flags give {values[field]})'
    return ''


def vanished_or(prefix, problem):
    """VANISHED when a file of checkpoint `prefix` is gone (a training pruned it while it
    was read), else `problem`."""
    return VANISHED if checkpoints.missing_part(prefix) else problem


def first_difference(expected, saved):
    """The first variable of `expected` ({checkpoint name: variable}, build order) whose
    shape differs in the checkpoint (`saved`: {name: shape}), as a phrase, or ''."""
    for name, variable in expected.items():
        built = variable.shape.as_list()
        if name in saved and saved[name] != built:
            return f'{name} is {saved[name]} there and {built} here'
    return ''


# ---------------------------------------------------------------- the session runner

class Runner:
    """The graph of a RunConfig in its own tf.Graph, with its saver and session: restores,
    saves, steps and samples. Holds no training loop (train_loop does)."""

    def __init__(self, conf, replicas=None):
        """replicas: None for one process (the runner opens its own session), or a
        cluster worker's Replicas: the graph is placed by its device setter, and the
        worker's monitored session is handed over later (attach)."""
        self.conf = conf
        self.model = conf.model
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(conf.random_seed)
            setter = replicas.device_setter if replicas else None
            with network.device_scope(setter):
                self.net = network.build(self.model, build_options(conf),
                                         training_setup(conf, replicas))
                self._add_run_ops()
            if replicas is None:  # a MonitoredSession adds its own ops, then finalizes
                self.graph.finalize()
        self.session_config = session_config(conf)
        self.sess = None if replicas else tf1.Session(graph=self.graph,
                                                      config=self.session_config)
        self.fitted = None  # the fitted prior of the restored step (gmm or vae)

    def _add_run_ops(self):
        net = self.net
        self.train_summary = tf1.summary.merge(
            [tf1.summary.scalar(f'train/{name}', value)
             for name, value in net.train_metrics.items()])
        # checkpoints.prune keeps the newest (across restarts too), and modeldir is scanned
        # for them, so the Saver neither deletes nor writes a "checkpoint" state file
        self.saver = tf1.train.Saver(tf1.global_variables(), max_to_keep=None)
        # inference needs no optimizer state: predict and the other actions restore, and
        # export writes, only the model's own variables
        inference = network.inference_variables(net, self.conf.inference_weights == 'average')
        self.model_saver = tf1.train.Saver(inference, max_to_keep=None)
        # {name in a checkpoint: variable} of each saver, in build order (the shape check)
        averages = self.conf.inference_weights == 'average'
        self.saved_names = {flag: checkpoint_names(net, flag, averages)
                            for flag in (False, True)}
        # checked before each save: a step can turn the weights to Inf/NaN while its
        # own loss, computed before the update, was still finite
        self.variables_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in tf1.global_variables()
             if v.dtype.base_dtype.is_floating])
        self.init_op = tf1.global_variables_initializer()

    def attach(self, session):
        """Uses `session` (a cluster worker's raw session) for everything but the
        training steps, which go through the monitored session."""
        self.sess = session

    # ------------------------------------------------------------ checkpoints

    def step(self):
        """The global step held in the session."""
        return int(self.sess.run(self.net.global_step))

    def restore(self, step, inference=False):
        """Loads checkpoint `step` of modeldir (the latest whole one when step <= 0): every
        variable, or with `inference` the model's own only (an exported checkpoint
        holds no optimizer state).

        A latest checkpoint that is damaged or incomplete is skipped with a note in
        favour of the newest whole one; one that a training in the same folder prunes
        while it is read is looked for again. Returns the restored global step, or None
        when step <= 0 and modeldir holds no checkpoint. Raises UserError when a
        requested checkpoint is damaged or gone, or a checkpoint does not fit the model.
        """
        for _ in range(RESTORE_TRIES):
            restored = self._restore_newest(step, inference)
            if restored is not VANISHED:
                return restored
        raise UserError(f'the checkpoints of {self.conf.modeldir} were deleted while they '
                        f'were read ({RESTORE_TRIES} tries): a training there prunes them '
                        f'faster than they load; raise its --keep_checkpoints or '
                        f'--save_step, or read a copy')

    def _restore_newest(self, step, inference):
        """One pass of restore(): the restored step, None, or VANISHED when a checkpoint
        went away under the reader (a training pruned it)."""
        conf = self.conf
        prefix = checkpoints.find_checkpoint(conf.modeldir, conf.model_name, step)
        if prefix is None:
            return None
        candidates = [prefix] if step > 0 else [
            checkpoints.checkpoint_prefix(conf.modeldir, conf.model_name, saved)
            for saved in reversed(checkpoints.saved_steps(conf.modeldir, conf.model_name))]
        skipped = []
        for prefix in candidates:
            if not os.path.exists(prefix + '.index'):
                return VANISHED  # pruned since the listing
            problem = checkpoints.missing_part(prefix) or self._load(prefix, inference)
            if problem is VANISHED:
                return VANISHED
            if not problem:
                for name, why in skipped:
                    print(f'note: skipped checkpoint {name} ({why}); restored '
                          f'{os.path.basename(prefix)}')
                return self.step()
            if step > 0:
                saved = checkpoints.saved_steps(conf.modeldir, conf.model_name)
                raise UserError(f'checkpoint {prefix} cannot be loaded: {problem}; pick another '
                                f'step ({", ".join(map(str, saved))}) or 0 for the newest '
                                f'whole one')
            skipped.append((os.path.basename(prefix), problem))
        raise UserError(f'no checkpoint of {conf.model_name} in {conf.modeldir} can be loaded ('
                        + '; '.join(f'{name}: {why}' for name, why in skipped)[:300]
                        + '): restore them, or train from scratch in another --modeldir')

    def _load(self, prefix, inference):
        """Restores `prefix`; returns '', why the checkpoint is damaged (its bytes do not
        check out) or VANISHED when its files went away meanwhile. Raises UserError when
        it does not fit the model."""
        try:
            saved = {name: list(shape) for name, shape in tf1.train.list_variables(prefix)}
        except (tf.errors.OpError, ValueError) as err:
            return vanished_or(prefix, f'damaged: {op_error_reason(err)[:120]}')
        difference = first_difference(self.saved_names[inference], saved)
        missing = [name for name in self.saved_names[inference] if name not in saved]
        # a variable of another model (under the stages' scopes, and not even an optimizer
        # slot or average of this one; top-level state such as a GPU run's loss scale is
        # not the model's)
        extra = sorted(name for name in saved if re.match(r'stage\d+/', name)
                       and name not in self.saved_names[False])
        if difference or missing or extra:
            fits = fitting_field(self.conf, inference, saved)
            what = difference or (f'{missing[0]} is not in it ({len(missing)} missing)'
                                  if missing else f'it holds {extra[0]}, which this model '
                                  f'has not ({len(extra)} such)')
            raise UserError(f'checkpoint {prefix} does not fit the model built from the '
                            f'flags: {what}; ' + (f'it fits {fits}: use the flags it was '
                                                  f'trained with' if fits else
                                                  'no single model field explains it: use '
                                                  'the flags it was trained with') +
                            ' or another --modeldir')
        try:
            (self.model_saver if inference else self.saver).restore(self.sess, prefix)
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as err:
            return vanished_or(prefix, f'damaged: {op_error_reason(err)[:120]}')
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, ValueError) as err:
            if checkpoints.missing_part(prefix):
                return VANISHED  # pruned between the listing and the restore
            if isinstance(err, ValueError):
                raise
            raise UserError(f'checkpoint {prefix} does not fit the model built from the '
                            f'flags ({op_error_reason(err)[:200]}); use the flags it was '
                            f'trained with or another --modeldir') from None
        return ''

    def restore_for(self, action):
        """Loads predict_step (the latest when <= 0) for `action`; returns its step."""
        step = self.restore(self.conf.predict_step, inference=True)
        if step is None:
            raise UserError(f'no checkpoint {self.conf.model_name}-* in {self.conf.modeldir}: '
                            f'train first or point --modeldir at a trained model before '
                            f'--action={action}')
        return step

    def save(self):
        """Writes checkpoint model_name-STEP of all global variables, then deletes all
        but the newest keep_checkpoints (also those of earlier runs); returns its prefix.

        The checkpoint is written under a temporary name and renamed into place
        (checkpoints.publish), so a kill or a full disk during the write leaves
        the earlier checkpoints as they were. TensorFlow's `checkpoint` state file
        then names it (checkpoints.write_state).
        """
        conf = self.conf
        step = self.step()
        if not self.sess.run(self.variables_finite):
            raise UserError(self.diverged_message(step, {}))
        self.write_checkpoint(self.saver, conf.modeldir, step)
        # the state file first lists only what pruning keeps: at any moment it names
        # whole checkpoints
        checkpoints.write_state(conf.modeldir, conf.model_name, conf.keep_checkpoints)
        checkpoints.prune(conf.modeldir, conf.model_name, conf.keep_checkpoints)
        return checkpoints.checkpoint_prefix(conf.modeldir, conf.model_name, step)

    def write_checkpoint(self, saver, folder, step, retry='to resume'):
        """Writes `saver`'s variables as folder/model_name-STEP under a temporary name,
        then renames it into place (checkpoints.publish); a failed write (a full disk)
        leaves nothing behind and raises UserError."""
        name = self.conf.model_name
        try:
            saver.save(self.sess, checkpoints.partial_prefix(folder, name, step),
                       write_meta_graph=False, write_state=False)
            checkpoints.publish(folder, name, step)
        except (tf.errors.OpError, OSError) as err:
            checkpoints.discard_partial(folder, name)
            reason = op_error_reason(err) if isinstance(err, tf.errors.OpError) else \
                (err.strerror or str(err))
            full = any(text in reason.lower() for text in ('space left', 'too large', 'quota')) \
                or getattr(err, 'errno', None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            fix = 'free disk space' if full else f'make {folder} writable'
            raise UserError(f'could not write checkpoint {name}-{step} in {folder} '
                            f'({reason[:200]}); the earlier checkpoints are intact: {fix}, '
                            f'then run the same command {retry}') from None

    def initialize_or_restore(self):
        """Restores reload_step (or the latest checkpoint), else initialises; returns the step."""
        step = self.restore(self.conf.reload_step)
        if step is None:
            self.sess.run(self.init_op)
            step = 0
        return step

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

    # ------------------------------------------------------------ running the graph

    def train_step(self, batch, with_summary=False, session=None):
        """One Adam step on `batch` (through `session`, default the runner's); returns
        the metrics and the summary (None unless asked)."""
        fetches = {'train': self.net.train_op, 'metrics': self.net.train_metrics}
        if with_summary:
            fetches['summary'] = self.train_summary
        result = (session or self.sess).run(fetches, {self.net.images: batch,
                                                      self.net.training: True})
        return result['metrics'], result.get('summary')

    def evaluate_metrics(self, batches):
        """Metrics averaged over all images of `batches` (batch norm in inference mode)."""
        sums, count = {}, 0
        for batch in batches:
            values = self.sess.run(self.net.metrics, {self.net.images: batch})
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(batch)
            count += len(batch)
        return {name: total / count for name, total in sums.items()}

    def encode_batch(self, batch):
        """q(z|x) of a batch in inference mode: (mean, std), each [b, latent_len]."""
        return self.sess.run([self.net.z_mean, self.net.z_std], {self.net.images: batch})

    def sample_batch(self, z):
        """Every stage's image of the prior samples `z` [b, latent_len]."""
        return self.sess.run(self.net.sample_outputs, {self.net.prior_z: z})

    def decoder_sigma(self):
        """Stage 1's σ: the trained value with learn_sigma, else the flag's."""
        if self.model.learn_sigma:
            return float(self.sess.run(self.net.metrics['sigma']))
        return self.model.sigma

    def normal_samples(self, count):
        """The first `count` of the fixed samples of N(0, I)."""
        return prior_samples(self.conf.random_seed, count, self.model.latent_len)

    def prior_z(self, count):
        """The first `count` fixed samples of the prior that --sample_prior names: N(0, I),
        the training latents themselves, or the Gaussian mixture or latent VAE fitted to
        the restored step (fitted now when not saved), their spread scaled by
        --prior_temperature (the mixture's truncated by --prior_truncation), then
        re-encoded --prior_reencode times."""
        return self.reencoded(self.drawn_prior_z(count), self.conf.prior_reencode)

    def drawn_prior_z(self, count):
        """prior_z before re-encoding: the prior's own samples."""
        temperature = self.conf.prior_temperature
        if self.conf.sample_prior == 'normal':
            return temperature * self.normal_samples(count)
        if self.conf.sample_prior == 'posterior':
            return training_latent_draw(self.training_latent_means(), self.conf.random_seed,
                                        count, temperature)
        if self.fitted is None or self.fitted.step != self.step():
            self.fitted = fitted_prior(self, self.step())
        if self.conf.sample_prior == 'gmm':
            return latent_prior.sample(self.fitted, self.conf.random_seed, count, temperature,
                                       self.conf.prior_truncation)
        return priors.module(self.conf).sample(self.fitted, self.conf.random_seed, count,
                                              temperature)

    def reencoded(self, z, passes):
        """`z` [n, latent_len] after `passes` trips through the model: each decoded to stage
        1's image and replaced by the encoder's mean of it. A latent that fell between the
        training images' posteriors decodes to an image the encoder maps back near them,
        so the trip draws samples toward the latents the decoder was trained on."""
        if passes == 0:
            return z
        batch = self.conf.batch
        progress = CountProgress(passes * len(z), f're-encoding {len(z)} prior samples '
                                                  f'{passes}x')
        for _ in range(passes):
            parts = []
            for start in range(0, len(z), batch):
                coarse = self.sess.run(self.net.sample_outputs[0],
                                       {self.net.prior_z: z[start:start + batch]})
                parts.append(self.encode_batch(coarse)[0])
                progress.add(len(coarse))
            z = np.concatenate(parts)
        progress.finish()
        return z

    def sample(self, count):
        """Every stage's image for the first `count` fixed samples of --sample_prior."""
        return self.sample_batch(self.prior_z(count))

    def training_latent_means(self):
        """The latent means of every training image (inference mode), [N, latent_len]."""
        conf, model = self.conf, self.model
        path = os.path.join(conf.data_dir, conf.train_data)
        handle, source = hdf5_images.open_images(path, model.height, model.width,
                                                 model.channel)
        count = source.shape[0]
        handle.close()
        progress = CountProgress(count, f'encoding {conf.train_data}')
        means = []
        for batch in hdf5_images.sequential_batches(path, model.height, model.width,
                                                    model.channel, conf.batch):
            means.append(self.encode_batch(batch)[0])
            progress.add(len(batch))
        progress.finish()
        return np.concatenate(means)

    def reconstruct_batch(self, batch):
        """One batch through the model (batch norm in inference mode): every stage's
        output, the input at every stage's size, and the per-image KL."""
        return self.sess.run({'outputs': self.net.stage_outputs, 'targets': self.net.targets,
                              'kl': self.net.per_image['kl']}, {self.net.images: batch})

    def test_batches(self, limit):
        """Float batches of the first `limit` test images, in file order."""
        conf, model = self.conf, self.model
        return hdf5_images.sequential_batches(os.path.join(conf.data_dir, conf.test_data),
                                              model.height, model.width, model.channel,
                                              conf.batch, limit=limit)

    def close(self):
        """Releases the session."""
        self.sess.close()


def new_prior(runner, conf, step):
    """The prior of conf.sample_prior ('gmm' or 'vae') fitted now to the training images'
    latent means under the restored checkpoint `step`."""
    means = runner.training_latent_means()
    if conf.sample_prior == 'gmm':
        print(f'fitting a {conf.prior_components}-component Gaussian mixture to the latent '
              f'means of {len(means)} training images (step {step})')
        return latent_prior.fit(means, conf.prior_components, conf.random_seed, step)
    print(f'training a latent VAE of {conf.prior_vae_width} units for '
          f'{conf.prior_vae_steps} steps on the latent means of {len(means)} training '
          f'images (step {step})')
    progress = CountProgress(conf.prior_vae_steps * latent_vae.BATCH, 'latent VAE training',
                             unit='latent')
    prior = latent_vae.fit(means, conf.prior_vae_width, conf.prior_vae_steps,
                           conf.random_seed, step, progress)
    progress.finish()
    return prior


def fitted_prior(runner, step):
    """The fitted prior (a Gaussian mixture or a latent VAE) of checkpoint `step`
    (priors.path): loaded when saved, else fitted to the training images' latent means
    and saved beside the checkpoint (a read-only modeldir gets a note, and the prior is
    used unsaved)."""
    conf = runner.conf
    path = priors.path(conf, step)
    if os.path.exists(path):
        return priors.module(conf).load(path, runner.model.latent_len)
    prior = new_prior(runner, conf, step)
    try:
        priors.module(conf).save(path, prior)
    except OSError as err:
        print(f'note: could not write {path} ({err.strerror or err}); the prior is used '
              f'without being saved and is fitted again next time')
    return prior


# ---------------------------------------------------------------- periodic tasks

class Every:
    """Whether a periodic task is due at a global step that may jump (other workers
    also advance it): due once each time the step reaches a new multiple."""

    def __init__(self, interval, start):
        self.interval = interval
        self.next = (start // interval + 1) * interval

    def due(self, step):
        """True the first time `step` reaches or passes the next multiple."""
        if step < self.next:
            return False
        self.next = (step // self.interval + 1) * self.interval
        return True


def validate(runner, writer, step):
    """Writes valid/ scalars over valid_images and image grids to TensorBoard."""
    conf, model = runner.conf, runner.model
    path = os.path.join(conf.data_dir, conf.valid_data)
    batches = hdf5_images.sequential_batches(path, model.height, model.width, model.channel,
                                             conf.batch, limit=conf.valid_images)
    metrics = runner.evaluate_metrics(batches)
    values = [tf1.Summary.Value(tag=f'valid/{name}', simple_value=value)
              for name, value in metrics.items()]
    first = next(hdf5_images.sequential_batches(path, model.height, model.width,
                                                model.channel, GRID_IMAGES))
    reconstructions = runner.sess.run(runner.net.stage_outputs, {runner.net.images: first})
    grids = {'valid/reconstructions': images.stage_grid(reconstructions, per_row=8,
                                                          inputs=first),
             'valid/prior_samples': images.stage_grid(
                 runner.sample_batch(runner.normal_samples(GRID_IMAGES)), per_row=8)}
    for tag, picture in grids.items():
        values.append(tf1.Summary.Value(tag=tag, image=tf1.Summary.Image(
            height=picture.shape[0], width=picture.shape[1],
            colorspace=picture.shape[2], encoded_image_string=images.png_bytes(picture))))
    writer.add_summary(tf1.Summary(value=values), step)
    writer.flush()
    return metrics


def write_training_samples(runner, step):
    """sampledir/train/step_STEP.png: the fixed N(0, I) samples through every stage."""
    picture = images.stage_grid(runner.sample_batch(runner.normal_samples(GRID_IMAGES)),
                                per_row=8)
    images.save_png(os.path.join(runner.conf.sampledir, 'train', f'step_{step:07d}.png'),
                    picture)


def save_with_samples(runner, step):
    """A checkpoint of `step` and its sample grid; returns the checkpoint's prefix."""
    prefix = runner.save()
    write_training_samples(runner, step)
    return prefix


# ---------------------------------------------------------------- the training loop

SINGLE_PROCESS = Role(is_chief=True, task_index=0, num_workers=1, images_per_step=None,
                      shared_step=False)


def train_loop(runner, role, start, session, stop, should_stop=lambda: False):
    """The one training loop: steps from `start` until max_step (or a signal in `stop`,
    or should_stop()), with the chief's periodic summaries, validation and saves.

    session: what runs the training steps (the runner's session, or a cluster
    worker's monitored session). The chief saves the last step when the loop ends
    (on a signal too). Raises UserError at a non-finite loss. Returns (last step,
    steps run by this process, prefix of the last checkpoint or None).
    """
    conf = runner.conf
    model = runner.model
    graph = runner.graph if start == 0 and not role.shared_step else None
    writer = tf1.summary.FileWriter(conf.logdir, graph) if role.is_chief else None
    reader = data_reader.BatchReader(
        os.path.join(conf.data_dir, conf.train_data), model.height, model.width,
        model.channel, conf.batch, worker_seed(conf.random_seed, role.task_index),
        start_step=start // role.num_workers, memory_limit_mb=conf.reader_memory_mb)
    progress = TrainingProgress(start, conf.max_step, role.images_per_step or conf.batch)
    summaries, validations, saves = (Every(interval, start) for interval in
                                     (conf.summary_step, conf.test_step, conf.save_step))
    step, local_steps, saved = start, 0, None
    validating = bool(conf.valid_data)
    try:
        while step < conf.max_step and not stop.signum and not should_stop():
            metrics, summary = runner.train_step(
                reader.next_batch(), with_summary=writer is not None and summaries.due(step + 1),
                session=session)
            local_steps += 1
            step = runner.step() if role.shared_step else step + 1
            if not np.isfinite(metrics['total']):
                raise UserError(runner.diverged_message(step, metrics))
            progress.update(step, metrics)
            if writer is None:
                continue
            if summary is not None:
                writer.add_summary(summary, step)
            if validating and validations.due(step):
                try:
                    validate(runner, writer, step)
                except hdf5_images.DataError as err:  # training goes on without it
                    print(f'warning: validation stopped: {err}')
                    validating = False
                progress.pause()
            if saves.due(step) or step >= conf.max_step:
                saved = (step, save_with_samples(runner, step))
                progress.pause()
    finally:
        progress.finish()
        reader.close()
        if writer is not None:
            writer.close()
    if role.is_chief and (saved is None or saved[0] != step):
        # a signal's save is the checkpoint alone, as the steps' samples were not due
        saved = (step, runner.save() if stop.signum else save_with_samples(runner, step))
    return step, local_steps, saved[1] if saved else None


# ---------------------------------------------------------------- the actions

def train(runner):
    """Trains from the latest checkpoint (or from scratch) to max_step in this process."""
    conf = runner.conf
    start = runner.initialize_or_restore()
    if start >= conf.max_step:
        print(f'{conf.modeldir} is already at step {start} >= --max_step='
              f'{conf.max_step}; raise --max_step to train on')
        return start
    print(f'training steps {start + 1}..{conf.max_step} '
          f'({"resumed" if start else "from scratch"}), checkpoints in {conf.modeldir}')
    began = time.perf_counter()
    with StopRequests() as stop:
        step, _, prefix = train_loop(runner, SINGLE_PROCESS, start, runner.sess, stop)
        if stop.signum:
            print(f'stopped by {stop.name} at step {step}: saved {prefix}; run '
                  f'the same command to resume')
            raise TrainingStopped(stop.signum)
    seconds = time.perf_counter() - began
    print(f'trained {conf.max_step - start} steps in {seconds:.0f} s '
          f'({(conf.max_step - start) * conf.batch / seconds:.0f} images/s); '
          f'last checkpoint {prefix}')
    if conf.sample_prior in priors.FITTED:  # the prior that predict and evaluate will sample
        # fitted to the latents of the weights they decode with (the averages, when
        # kept), read back from the checkpoint just saved, not the last step's
        runner.restore(step, inference=True)
        fitted_prior(runner, step)
    return conf.max_step


def fit_prior(runner):
    """Fits the prior of --sample_prior (the Gaussian mixture of --prior_components, also
    for normal and posterior, or the latent VAE with --sample_prior=vae) to the training
    images' latent means under predict_step (the latest when <= 0) and saves it beside
    the checkpoint, replacing an earlier fit; predict and evaluate with the same
    --sample_prior sample it."""
    conf = runner.conf
    if conf.sample_prior not in priors.FITTED:  # nothing to fit: the mixture, then
        conf = conf.replace(sample_prior='gmm')
    step = runner.restore_for('fit_prior')
    path = priors.path(conf, step)
    prior = new_prior(runner, conf, step)
    try:
        priors.module(conf).save(path, prior)
    except OSError as err:
        raise UserError(f'could not write {path} ({err.strerror or err}): make '
                        f'{conf.modeldir} writable or free disk space') from None
    print(f'fitted the {priors.name(conf)} prior to the latent means of {prior.images} '
          f'training images under step {step}; wrote {path}')
    return path


def _row_names(model):
    return ', '.join(f'stage {index}' for index in range(1, model.num_stages + 1))


GRID_SAMPLES = 256  # predict's grid.png shows at most the first 256 samples


def predict(runner):
    """Loads predict_step (the latest when <= 0) and writes num_samples prior samples
    (of --sample_prior) to sampledir/predict_step_STEP[_VARIANT] (evaluation_variant):
    one PNG each (final stage) and grid.png whose rows are the stages (the first
    GRID_SAMPLES); samples of an earlier, longer predict there are removed. The samples
    go through the model --batch at a time, so their number is bounded by the disk only."""
    conf = runner.conf
    step = runner.restore_for('predict')
    z = runner.prior_z(conf.num_samples)
    # another prior or other weights go to their own folder, never mixed with these
    variant = evaluation_variant(conf)
    folder = os.path.join(conf.sampledir, f'predict_step_{step}' + (f'_{variant}' if variant
                                                                    else ''))
    # an earlier predict of more samples left files that these would not overwrite
    for stale in glob.glob(os.path.join(glob.escape(folder), 'sample_*.png')):
        index = re.fullmatch(r'sample_(\d+)\.png', os.path.basename(stale))
        if index and int(index.group(1)) >= conf.num_samples:
            os.remove(stale)
    grid = []  # per batch: each stage's images among the first GRID_SAMPLES
    progress = CountProgress(len(z), 'prior samples')
    for start in range(0, len(z), conf.batch):
        outputs = runner.sample_batch(z[start:start + conf.batch])
        images.save_each(folder, outputs[-1], first_index=start)
        if start < GRID_SAMPLES:
            grid.append([stage[:GRID_SAMPLES - start] for stage in outputs])
        progress.add(len(outputs[-1]))
    progress.finish()
    images.save_png(os.path.join(folder, 'grid.png'),
                    images.stage_grid([np.concatenate(stage) for stage in zip(*grid)]))
    print(f'wrote {len(z)} samples of step {step} and grid.png (rows: '
          f'{_row_names(runner.model)}) to {folder}')
    return folder


def reconstruct(runner):
    """Writes the first num_samples test images and their reconstructions: grid.png
    (rows input, stage 1, ..., stage N) and input_XXXX.png, stageK_XXXX.png."""
    conf = runner.conf
    step = runner.restore_for('reconstruct')
    inputs, outputs = [], []
    for batch in runner.test_batches(conf.num_samples):
        inputs.append(batch)
        outputs.append(runner.reconstruct_batch(batch)['outputs'])
    inputs = np.concatenate(inputs)
    stage_images = [np.concatenate(stage) for stage in zip(*outputs)]
    folder = os.path.join(conf.sampledir, f'reconstruct_step_{step}')
    images.save_each(folder, inputs, prefix='input')
    for index, stage in enumerate(stage_images, start=1):
        images.save_each(folder, stage, prefix=f'stage{index}')
    images.save_png(os.path.join(folder, 'grid.png'),
                    images.stage_grid(stage_images, inputs=inputs))
    print(f'wrote {len(inputs)} test images of {conf.test_data} with their reconstructions '
          f'by step {step} and grid.png (rows: input, {_row_names(runner.model)}) to {folder}')
    return folder


def evaluate(runner):
    """Measures every stage on the first eval_samples test images and on eval_samples
    prior samples; writes modeldir/evaluation-STEP.json and prints a table."""
    conf, model = runner.conf, runner.model
    step = runner.restore_for('evaluate')
    handle, test_images = hdf5_images.open_images(
        os.path.join(conf.data_dir, conf.test_data), model.height, model.width, model.channel)
    test_count = min(conf.eval_samples, test_images.shape[0])
    handle.close()
    z = runner.prior_z(conf.eval_samples)
    prior_batches = (z[start:start + conf.batch] for start in range(0, len(z), conf.batch))
    inception = (feature_metrics.InceptionMetrics(conf, test_count)
                 if conf.eval_fid else None)
    means = measure.measure(runner.reconstruct_batch, runner.sample_batch,
                            runner.test_batches(test_count), prior_batches,
                            conf.replace(sigma=runner.decoder_sigma()),
                            (test_count, len(z)), inception)
    result = {'step': step, 'model': model.as_dict(),
              'test_data': os.path.join(conf.data_dir, conf.test_data),
              'test_images': test_count, 'prior_samples': len(z),
              'sample_prior': priors.name(conf), 'prior_temperature': conf.prior_temperature,
              'prior_truncation': conf.prior_truncation,
              'prior_reencode': conf.prior_reencode,
              'inference_weights': (
                  conf.inference_weights if model.ema_decay > 0 else 'last'),
              'random_seed': conf.random_seed}
    result.update(measure.summarize(means, conf, model.stage_sizes()))
    if inception is not None:
        result['inception'] = inception.summary()
        inception.close()
    path = checkpoints.evaluation_path(conf.modeldir, step, evaluation_variant(conf))
    print(measure.report(result))  # first: a folder that cannot be written loses nothing
    try:
        measure.write_json(path, result)
    except OSError as err:
        raise UserError(f'could not write {path} ({err.strerror or err}); the report above '
                        f'holds its numbers: make {conf.modeldir} writable and evaluate '
                        f'again to keep them') from None
    print(f'wrote {path}')
    return result


def evaluation_variant(conf):
    """What sets an evaluation apart from the plain one of its step: '' (N(0, I), the
    model's inference weights), else 'gmmK' or 'vaeWxS', 'tT' (--prior_temperature=T
    other than 1), 'qQ' (--prior_truncation=Q other than 0), 'rN' (--prior_reencode=N
    other than 0), 'last' (a model with averaged weights evaluated with its last step's)
    or several of them, joined by '-'."""
    parts = [] if conf.sample_prior == 'normal' else [priors.name(conf)]
    if conf.prior_temperature != 1:
        parts.append(f't{conf.prior_temperature:g}')
    if conf.prior_truncation:
        parts.append(f'q{conf.prior_truncation:g}')
    if conf.prior_reencode:
        parts.append(f'r{conf.prior_reencode}')
    if conf.ema_decay > 0 and conf.inference_weights == 'last':
        parts.append('last')
    return '-'.join(parts)


def lerp(a, b, steps):
    """`steps` points from a to b on the straight line, ends included: [n, L] pairs =>
    [n, steps, L]."""
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    return a[:, None] * (1 - t) + b[:, None] * t


def slerp(a, b, steps):
    """`steps` points from a to b on the great circle between them (the path along which
    N(0, I) samples keep their typical norm), ends included: => [n, steps, L]."""
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))[:, None, None]
    safe = np.where(angle < 1e-6, 1.0, np.sin(angle))
    curved = (np.sin((1 - t) * angle) * a[:, None] + np.sin(t * angle) * b[:, None]) / safe
    return np.where(angle < 1e-6, lerp(a, b, steps), curved)


def _decode_paths(runner, paths):
    """Every stage's images of latent paths [n, steps, L], as [n·steps, h, w, c] each."""
    return runner.sample_batch(paths.reshape(-1, paths.shape[-1]).astype(np.float32))


def interpolation_images(runner, pairs, steps):
    """(inputs [2·pairs, h, w, c], each stage's images along the linear paths between the
    latent means of the test pairs (0, 1), (2, 3), ..., each stage's images along the
    spherical paths between pairs of the fixed prior samples); every path `steps`
    images long, ends included, [pairs·steps, h, w, c] per stage."""
    conf = runner.conf
    inputs = np.concatenate(list(runner.test_batches(2 * pairs)))
    if len(inputs) < 2 * pairs:
        raise UserError(f'{conf.test_data} holds {len(inputs)} images, fewer than the '
                        f'{2 * pairs} of --interpolation_pairs={pairs}: lower it')
    means, _ = runner.encode_batch(inputs)
    prior = prior_samples(conf.random_seed, 2 * pairs, runner.model.latent_len)
    return (inputs, _decode_paths(runner, lerp(means[0::2], means[1::2], steps)),
            _decode_paths(runner, slerp(prior[0::2], prior[1::2], steps)))


def interpolate(runner):
    """Writes two grids of latent interpolations through every stage: test_pairs.png
    (pairs of test images, their latent means joined linearly; a row with the two
    images, then a row per stage, per pair) and prior_pairs.png (pairs of the fixed
    prior samples joined spherically)."""
    conf = runner.conf
    step = runner.restore_for('interpolate')
    pairs, steps = conf.interpolation_pairs, conf.interpolation_steps
    inputs, test_paths, prior_paths = interpolation_images(runner, pairs, steps)
    # the input row: the pair's two images at the ends, black between
    ends = np.full((pairs, steps) + inputs.shape[1:], -1.0, np.float32)
    ends[:, 0], ends[:, -1] = inputs[0::2], inputs[1::2]
    folder = os.path.join(conf.sampledir, f'interpolate_step_{step}')
    images.save_png(os.path.join(folder, 'test_pairs.png'), images.stage_grid(
        test_paths, per_row=steps, inputs=ends.reshape((-1,) + inputs.shape[1:])))
    images.save_png(os.path.join(folder, 'prior_pairs.png'),
                    images.stage_grid(prior_paths, per_row=steps))
    print(f'wrote test_pairs.png ({pairs} pairs of {conf.test_data}, linear in the latent '
          f'means) and prior_pairs.png ({pairs} pairs of prior samples, spherical), '
          f'{steps} steps each, rows: {_row_names(runner.model)}, by step {step}, to {folder}')
    return folder


def encode(runner):
    """Writes the latent mean and standard deviation of every image of the encode_split
    split to sampledir/encode_step_STEP/<split file>_latents.h5 (datasets mean, std and
    index, float32 [N, latent_len] and int64 [N]; the step and the source as attributes),
    batch by batch, so memory does not grow with the split."""
    conf, model = runner.conf, runner.model
    step = runner.restore_for('encode')
    name = getattr(conf, f'{conf.encode_split}_data')
    source = os.path.join(conf.data_dir, name)
    handle, source_images = hdf5_images.open_images(source, model.height, model.width,
                                                    model.channel)
    count = source_images.shape[0]
    handle.close()
    folder = os.path.join(conf.sampledir, f'encode_step_{step}')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{os.path.splitext(os.path.basename(name))[0]}_latents.h5')
    # checked first: after a failed write h5py also prints its objects' failed clean-up
    atomic.check_room([path], [count * (2 * model.latent_len * 4 + 8)])
    try:
        _write_latents(runner, source, path, count, step)
    except (OSError, RuntimeError) as err:  # h5py fails a full disk's close as RuntimeError
        raise errors.write_failure(err, path) from None
    print(f'wrote the latent mean and std of the {count} images of {source} by step {step} '
          f'to {path}')
    return path


def _write_latents(runner, source, path, count, step):
    conf, model = runner.conf, runner.model
    progress = CountProgress(count, f'encoding {os.path.basename(source)}')
    with atomic.replacing(path) as partial, h5py.File(partial, 'w') as out:
        shape = (count, model.latent_len)
        means = out.create_dataset('mean', shape, np.float32)
        stds = out.create_dataset('std', shape, np.float32)
        out.create_dataset('index', data=np.arange(count, dtype=np.int64))
        out.attrs.update(step=step, source=source, split=conf.encode_split,
                         modeldir=conf.modeldir, model=json.dumps(model.as_dict()))
        start = 0
        for batch in hdf5_images.sequential_batches(source, model.height, model.width,
                                                    model.channel, conf.batch):
            means[start:start + len(batch)], stds[start:start + len(batch)] = \
                runner.encode_batch(batch)
            start += len(batch)
            progress.add(len(batch))
    progress.finish()


def export(runner):
    """Writes an inference-only copy of predict_step (the latest when <= 0) to export_dir:
    the model's variables without the optimizer's (a third of the size), flags.json and
    TensorFlow's checkpoint state file, and the step's fitted priors. predict, reconstruct, evaluate, interpolate and
    encode load it as any model folder; training cannot resume from it."""
    conf = runner.conf
    step = runner.restore_for('export')
    target = conf.export_dir
    os.makedirs(target, exist_ok=True)
    runner.write_checkpoint(runner.model_saver, target, step, retry='again')
    checkpoints.write_state(target, conf.model_name)
    saved = checkpoints.load_config(conf.modeldir)
    checkpoints.save_config(target, dict(saved, **runner.model.as_dict()))
    for path in glob.glob(os.path.join(glob.escape(conf.modeldir),
                                       checkpoints.PRIORS.format(step=step))):
        with atomic.replacing(os.path.join(target, os.path.basename(path))) as partial:
            shutil.copyfile(path, partial)  # the fitted priors travel with the weights
    size = sum(os.path.getsize(path) for path in
               glob.glob(glob.escape(checkpoints.checkpoint_prefix(target, conf.model_name,
                                                                   step)) + '.*'))
    print(f'exported step {step} of {conf.modeldir} for inference ({size / 1e6:.1f} MB, no '
          f'optimizer state) to {target}')
    return target


ACTIONS = {'train': train, 'predict': predict, 'reconstruct': reconstruct,
           'evaluate': evaluate, 'interpolate': interpolate, 'encode': encode,
           'export': export, 'fit_prior': fit_prior}
