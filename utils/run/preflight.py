"""Checks made before TensorFlow loads: the folders, modeldir's earlier run and the data.

Each raises UserError with the problem and the fix, before anything on disk changes.
"""
import contextlib
import os
import tempfile

from utils.data import hdf5_images, mnist, prepare_data
from utils.run import atomic, checkpoints, config, folder_lock, priors
from utils.run.errors import UserError

MNIST_FILES = ('mnist_train.h5', 'mnist_valid.h5', 'mnist_test.h5')  # the default split names
# taken from the run unless given
PRIOR_FLAGS = ('sample_prior', 'prior_components', 'prior_vae_width', 'prior_vae_steps',
               'prior_temperature', 'prior_truncation', 'prior_reencode')


def check_writable(**folders):
    """Creates each folder if needed and checks that a file can be written in it.

    folders: flag name => path, e.g. modeldir='modeldir'.
    """
    for flag, folder in folders.items():
        atomic.make_writable_folder(folder, f'--{flag}={folder}')


def describe(keys, values):
    """'a=1, b=2' for the keys of a dict or namespace."""
    get = values.get if isinstance(values, dict) else lambda key: getattr(values, key)
    return ', '.join(f'{key}={get(key)}' for key in keys)


def check_modeldir_for_training(conf):
    """Decides between resuming, starting, and refusing; deletes nothing (prepare_training
    deletes an earlier run for --fresh_start once every check has passed). Returns
    ('resume', ()), ('start', ()) or ('fresh', model names whose run --fresh_start
    deletes: the flags' and the earlier run's own)."""
    saved = checkpoints.load_config(conf.modeldir)
    steps = checkpoints.saved_steps(conf.modeldir, conf.model_name)
    earlier = saved.get('model_name', conf.model_name) if saved else conf.model_name
    if conf.fresh_start:
        names = tuple(dict.fromkeys([conf.model_name, earlier]))
        return ('fresh', names) if saved is not None or steps else ('start', ())
    if saved is None:
        if steps:
            raise UserError(f'{conf.modeldir} holds checkpoints but no {checkpoints.CONFIG_FILE}, '
                            f'so the flags they were trained with are unknown: restore it, or '
                            f'pass --fresh_start to delete them and start over')
        if set(os.listdir(conf.modeldir)) - {folder_lock.LOCK_FILE}:
            raise UserError(f'--modeldir={conf.modeldir} is not empty and holds no run: choose '
                            f'an empty or new folder, or pass --fresh_start to start there')
        return ('start', ())
    if earlier != conf.model_name:
        raise UserError(f'{conf.modeldir} holds the run {earlier!r}, not --model_name='
                        f'{conf.model_name!r}: use --model_name={earlier} to resume it, another '
                        f'--modeldir, or --fresh_start to delete that run')
    if not steps and not checkpoints.saved_steps(conf.modeldir, earlier):
        # a run stopped before its first checkpoint left only its flags: nothing to keep
        print(f'note: {conf.modeldir} holds the flags of a run that saved no checkpoint; '
              f'starting over with the flags given')
        return ('start', ())
    differing = [key for key in config.variable_fields()
                 if config.saved_value(saved, key) != getattr(conf, key)]
    if differing:
        raise UserError(f'{conf.modeldir} holds a model with {describe(differing, saved)} but '
                        f'the flags say {describe(differing, conf)}: use the same flags to '
                        f'resume, another --modeldir, or --fresh_start to delete that run')
    return ('resume', ())


def check_resume_point(conf):
    """Refuses --reload_step=N when it is missing or modeldir has later checkpoints
    (training on from N would overwrite them)."""
    if conf.reload_step > 0 and conf.fresh_start:
        raise UserError(f'--fresh_start trains from step 0 and --reload_step={conf.reload_step} '
                        f'resumes from a checkpoint: drop one of them')
    if conf.reload_step <= 0:
        return
    checkpoints.find_checkpoint(conf.modeldir, conf.model_name, conf.reload_step)
    later = [step for step in checkpoints.saved_steps(conf.modeldir, conf.model_name)
             if step > conf.reload_step]
    if later:
        raise UserError(f'{conf.modeldir} has checkpoints after step {conf.reload_step} '
                        f'({", ".join(map(str, later))}) that training on from --reload_step='
                        f'{conf.reload_step} would overwrite: copy {conf.model_name}-'
                        f'{conf.reload_step}.* and flags.json to a new --modeldir and resume '
                        f'there')


def make_bundled_mnist(conf, needed):
    """Makes the three MNIST files from the bundled IDX files when the split flags are
    the defaults and the file `needed` is missing."""
    defaults = (conf.train_data, conf.valid_data, conf.test_data) == MNIST_FILES
    if not defaults or os.path.exists(needed):
        return
    outputs = [os.path.join(conf.data_dir, name) for name in MNIST_FILES]
    missing = [path for path in outputs if not os.path.exists(path)]
    print(f'making {", ".join(missing)} from the bundled MNIST IDX files in {mnist.IDX_DIR}')
    if len(missing) == len(outputs):
        prepare_data.prepare('idx', mnist.IDX_DIR, outputs)
        return
    # some splits are there: all three are made aside and only the missing ones moved in
    with tempfile.TemporaryDirectory(dir=conf.data_dir, prefix='.mnist-') as aside:
        made = [os.path.join(aside, name) for name in MNIST_FILES]
        prepare_data.prepare('idx', mnist.IDX_DIR, made)
        for source, target in zip(made, outputs):
            if target in missing:
                os.replace(source, target)


def check_training_data(conf):
    """Makes the bundled MNIST files when they are the missing defaults; checks that the
    splits match the flags and that the training split holds at least one batch."""
    train_path = os.path.join(conf.data_dir, conf.train_data)
    make_bundled_mnist(conf, train_path)
    paths = [train_path] + ([os.path.join(conf.data_dir, conf.valid_data)]
                            if conf.valid_data else [])
    for path in paths:
        handle, images = hdf5_images.open_images(path, conf.height, conf.width, conf.channel)
        count = images.shape[0]
        handle.close()
        if path == train_path and count < conf.batch:
            raise UserError(f'{path} holds {count} images, fewer than --batch={conf.batch}: '
                            f'lower --batch to {count} or less, or use more data')
        if path == train_path and conf.sample_prior == 'gmm':
            check_prior_components(conf, count)


def check_prior_components(conf, count):
    """The Gaussian mixture that --sample_prior=gmm fits has no more components than
    the `count` training images it is fitted to (the latent VAE needs only the batch of
    images that training does)."""
    if conf.sample_prior != 'vae' and count < conf.prior_components:
        raise UserError(f'{count} training images cannot fit a mixture of '
                        f'--prior_components={conf.prior_components}: lower it to {count} '
                        f'or less')


@contextlib.contextmanager
def prepare_training(conf):
    """Locks modeldir for this training (folder_lock), makes all checks of --action=train,
    then writes this run's flags to modeldir; the lock is held until the block ends. A
    failed check frees the lock and leaves modeldir as it was."""
    check_prior_truncation(conf)
    check_writable(modeldir=conf.modeldir, logdir=conf.logdir, sampledir=conf.sampledir)
    with folder_lock.held(conf.modeldir):
        decision = check_modeldir_for_training(conf)
        check_resume_point(conf)
        check_training_data(conf)
        if decision[0] == 'fresh':  # only now, with every check passed
            count = sum(checkpoints.remove_run(conf.modeldir, name) for name in decision[1])
            print(f'--fresh_start: deleted {count} checkpoints and the flags of the earlier '
                  f'run in {conf.modeldir} (its TensorBoard events stay in {conf.logdir})')
        checkpoints.discard_partial(conf.modeldir, conf.model_name)
        checkpoints.write_state(conf.modeldir, conf.model_name)  # current after a kill -9
        checkpoints.save_config(conf.modeldir, conf.as_dict())
        yield


def prepare_prediction(conf, given_flags=()):
    """The configuration to predict, reconstruct or evaluate with: conf with the model's
    fields taken from modeldir's flags.json (a differing flag in given_flags gets a
    note), and its --sample_prior, --prior_components, --prior_temperature,
    --prior_truncation and --prior_reencode unless given_flags has them.
    Checks the checkpoint, sampledir and the splits that the action reads."""
    saved = checkpoints.load_config(conf.modeldir)
    if saved is None:
        raise UserError(f'{conf.modeldir} holds no trained model ({checkpoints.CONFIG_FILE} '
                        f'missing): train first or point --modeldir at a trained model')
    taken = {}
    for key in config.field_names():
        value = config.saved_value(saved, key)
        if value is None:  # a run from before the flag existed had its default
            continue
        if key in given_flags and value != getattr(conf, key):
            print(f'note: --{key}={getattr(conf, key)} ignored; the model in {conf.modeldir} '
                  f'was trained with {key}={value}')
        taken[key] = value
    for key in PRIOR_FLAGS:  # the prior the run was trained for, unless the command says
        if key not in given_flags and key in saved:
            taken[key] = saved[key]
    conf = conf.replace(**taken)
    check_prior_truncation(conf)
    try:
        conf.model  # noqa: B018  (the saved fields must make a model)
    except UserError as err:
        raise UserError(f'{os.path.join(conf.modeldir, checkpoints.CONFIG_FILE)} does not '
                        f'describe a model ({str(err).split(":")[0]}): restore it from the '
                        f'run\'s flags') from None
    if checkpoints.find_checkpoint(conf.modeldir, conf.model_name, conf.predict_step) is None:
        raise UserError(f'no checkpoint {conf.model_name}-* in {conf.modeldir}: train first '
                        f'(it saves every --save_step steps) or point --modeldir at a trained '
                        f'model')
    check_writable(sampledir=conf.sampledir)
    if conf.action in ('reconstruct', 'evaluate', 'interpolate'):
        check_split(conf, 'test')
    if conf.action == 'encode':
        check_split(conf, conf.encode_split)
    if conf.action == 'fit_prior' or needs_prior_fit(conf):
        check_prior_components(conf, check_split(conf, 'train'))
    elif conf.sample_prior == 'posterior' and conf.action in ('predict', 'evaluate'):
        check_split(conf, 'train')  # its latents are the prior
    if conf.action == 'export':
        check_export_dir(conf)
    return conf


def check_prior_truncation(conf):
    """UserError when --prior_truncation is set for a prior without a density to truncate
    by (only the Gaussian mixture's is computed)."""
    if conf.prior_truncation and conf.sample_prior != 'gmm':
        raise UserError(f'--prior_truncation={conf.prior_truncation:g} needs '
                        f'--sample_prior=gmm (the mixture\'s density decides what is dropped), '
                        f'not {conf.sample_prior}: set it to 0 or sample the mixture')


def needs_prior_fit(conf):
    """Whether the action samples a fitted prior (a Gaussian mixture or a latent VAE) that
    is not saved yet for the step it loads (it is then fitted on the training split)."""
    if conf.sample_prior not in priors.FITTED or conf.action not in ('predict', 'evaluate'):
        return False
    steps = checkpoints.saved_steps(conf.modeldir, conf.model_name)
    step = conf.predict_step if conf.predict_step > 0 else steps[-1]
    return not os.path.exists(priors.path(conf, step))


def check_split(conf, split):
    """The file of `split` ('train', 'valid' or 'test') exists (the bundled MNIST is made
    when it is a missing default) and matches the model's image shape; returns its
    number of images."""
    name = getattr(conf, f'{split}_data')
    if not name and conf.action == 'encode':
        raise UserError(f'--encode_split={split} names no file: give its file flag or '
                        f'another split')
    if not name:
        raise UserError(f'--{split}_data is empty: --action={conf.action} reads the {split} '
                        f'split, give its file')
    path = os.path.join(conf.data_dir, name)
    make_bundled_mnist(conf, path)
    handle, images = hdf5_images.open_images(path, conf.height, conf.width, conf.channel)
    count = images.shape[0]
    handle.close()
    return count


def check_export_dir(conf):
    """--export_dir is given, is not modeldir, and is a new or empty folder."""
    target = conf.export_dir
    if not target:
        raise UserError('--action=export needs --export_dir: a new folder for the '
                        'inference-only model')
    if os.path.abspath(target) == os.path.abspath(conf.modeldir):
        raise UserError(f'--export_dir={target} is --modeldir itself: choose a new folder')
    if os.path.isdir(target) and os.listdir(target):
        raise UserError(f'--export_dir={target} is not empty: choose a new or empty folder '
                        f'(nothing there is overwritten)')
    check_writable(export_dir=target)
