"""The files of a run in modeldir: checkpoints model_name-STEP.* and the run's flags."""
import contextlib
import glob
import json
import os
import re
import shutil

from utils.run import atomic
from utils.run.errors import UserError

CONFIG_FILE = 'flags.json'  # the flags of the run, written beside its checkpoints
STATE_FILE = 'checkpoint'  # TensorFlow's checkpoint state (tf.train.latest_checkpoint)
PARTIAL = '.partial-'  # name prefix of a checkpoint while it is being written
EVALUATION = 'evaluation-{step}.json'  # --action=evaluate's metrics of checkpoint STEP
PRIORS = 'prior-{step}-*.npz'  # the priors (mixtures, latent VAEs) fitted to checkpoint STEP


def checkpoint_prefix(modeldir, model_name, step):
    """The path prefix of the checkpoint of `step`: modeldir/model_name-STEP."""
    return os.path.join(modeldir, f'{model_name}-{step}')


def saved_steps(modeldir, model_name):
    """Steps of the complete checkpoints in modeldir, ascending."""
    pattern = re.compile(re.escape(model_name) + r'-(\d+)\.index$')
    steps = []
    for path in glob.glob(os.path.join(glob.escape(modeldir), f'{glob.escape(model_name)}-*.index')):
        match = pattern.search(os.path.basename(path))
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def find_checkpoint(modeldir, model_name, step):
    """The checkpoint prefix of `step`, or of the latest one when step <= 0.

    Returns None when step <= 0 and there is none; raises UserError when a
    requested step is missing.
    """
    steps = saved_steps(modeldir, model_name)
    if step <= 0:
        return checkpoint_prefix(modeldir, model_name, steps[-1]) if steps else None
    if step not in steps:
        have = ', '.join(map(str, steps[-10:])) or 'none'
        raise UserError(f'no checkpoint {model_name}-{step} in {modeldir} (saved steps: '
                        f'{have}); pick one of them or 0 for the latest')
    return checkpoint_prefix(modeldir, model_name, step)


def missing_part(prefix):
    """What is missing of the checkpoint at `prefix` ('' when its .index and every data
    shard are there): a data file pruned or deleted under a reader, say."""
    if not os.path.exists(prefix + '.index'):
        return f'{os.path.basename(prefix)}.index is missing'
    shards = glob.glob(glob.escape(prefix) + '.data-*-of-*')
    if not shards:
        return f'its data file {os.path.basename(prefix)}.data-00000-of-… is missing'
    total = int(shards[0].rsplit('-of-', 1)[1])
    for index in range(total):
        name = f'{prefix}.data-{index:05d}-of-{total:05d}'
        if not os.path.exists(name):
            return f'its data file {os.path.basename(name)} is missing'
    return ''


def partial_prefix(modeldir, model_name, step):
    """Where checkpoint `step` is written before publish() renames it into place."""
    return os.path.join(modeldir, f'{PARTIAL}{model_name}-{step}')


def publish(modeldir, model_name, step):
    """Renames the checkpoint written at partial_prefix() to model_name-STEP.

    The data files move first and the .index last: saved_steps() sees a
    checkpoint only by its .index, so a kill at any moment leaves either the
    complete checkpoint or none under the final name.
    """
    source = partial_prefix(modeldir, model_name, step)
    target = checkpoint_prefix(modeldir, model_name, step)
    data = sorted(glob.glob(glob.escape(source) + '.data-*'))
    if not data or not os.path.exists(source + '.index'):
        raise OSError(f'checkpoint files missing under {source}')
    for path in data:
        os.replace(path, target + path[len(source):])
    os.replace(source + '.index', target + '.index')
    # a prior fitted to an earlier checkpoint of this step does not belong to this one
    for path in glob.glob(os.path.join(glob.escape(modeldir), PRIORS.format(step=step))):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def write_state(modeldir, model_name, keep=None):
    """Writes TensorFlow's checkpoint state file, atomically: the newest whole checkpoint
    as model_checkpoint_path and the newest `keep` (all when None) as
    all_model_checkpoint_paths, names relative to modeldir, so that
    tf.train.latest_checkpoint(modeldir) and tf.train.get_checkpoint_state find them.
    Without a checkpoint the file is removed."""
    steps = saved_steps(modeldir, model_name)
    path = os.path.join(modeldir, STATE_FILE)
    if not steps:
        if os.path.exists(path):
            os.remove(path)
        return
    names = [json.dumps(f'{model_name}-{step}', ensure_ascii=False)
             for step in steps[-keep if keep else 0:]]
    atomic.write_text(path, f'model_checkpoint_path: {names[-1]}\n' + ''.join(
        f'all_model_checkpoint_paths: {name}\n' for name in names))


def remove_checkpoint(modeldir, model_name, step):
    """Deletes the files of one checkpoint, the .index first (so it is never half there)."""
    prefix = checkpoint_prefix(modeldir, model_name, step)
    if os.path.exists(prefix + '.index'):
        os.remove(prefix + '.index')
    for path in glob.glob(glob.escape(prefix) + '.*'):
        os.remove(path)
    for path in glob.glob(os.path.join(glob.escape(modeldir), PRIORS.format(step=step))):
        os.remove(path)


def prune(modeldir, model_name, keep):
    """Deletes all but the newest `keep` checkpoints; returns the deleted steps."""
    old = saved_steps(modeldir, model_name)[:-keep]
    for step in old:
        remove_checkpoint(modeldir, model_name, step)
    return old


def discard_partial(modeldir, model_name):
    """Removes what an interrupted save left: files and folders under the partial
    prefix, and data files of a step whose .index never arrived. Returns their count."""
    leftovers = glob.glob(os.path.join(glob.escape(modeldir), PARTIAL + '*'))
    complete = set(saved_steps(modeldir, model_name))
    pattern = re.compile(re.escape(model_name) + r'-(\d+)\.data-')
    for path in glob.glob(os.path.join(glob.escape(modeldir), f'{glob.escape(model_name)}-*.data-*')):
        match = pattern.match(os.path.basename(path))
        if match and int(match.group(1)) not in complete:
            leftovers.append(path)
    for path in leftovers:  # already gone is fine: what matters is that it is gone
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return len(leftovers)


def remove_run(modeldir, model_name):
    """Deletes every checkpoint of model_name, flags.json, the evaluation files and the
    fitted priors; returns how many checkpoints."""
    steps = saved_steps(modeldir, model_name)
    for step in steps:
        remove_checkpoint(modeldir, model_name, step)
    discard_partial(modeldir, model_name)
    for pattern in (EVALUATION.format(step='*'), PRIORS.format(step='*')):
        for path in glob.glob(os.path.join(glob.escape(modeldir), pattern)):
            os.remove(path)
    for name in (CONFIG_FILE, STATE_FILE):
        if os.path.exists(os.path.join(modeldir, name)):
            os.remove(os.path.join(modeldir, name))
    return len(steps)


def save_config(modeldir, config):
    """Writes the run's flags (a dict) to modeldir/flags.json, atomically."""
    os.makedirs(modeldir, exist_ok=True)
    atomic.write_json(os.path.join(modeldir, CONFIG_FILE), config, indent=1, sort_keys=True)


def load_config(modeldir):
    """The flags saved in modeldir/flags.json as a dict, or None when there are none."""
    path = os.path.join(modeldir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            saved = json.load(handle)
    except (OSError, ValueError) as err:
        raise UserError(f'{path} is unreadable ({err}); restore it or use another '
                        f'--modeldir') from None
    if not isinstance(saved, dict) or not saved:
        raise UserError(f'{path} holds {json.dumps(saved)[:40]}, not the flags of a run (an '
                        f'object of flag names and values): restore it or use another '
                        f'--modeldir')
    return saved


def evaluation_path(modeldir, step, variant=''):
    """Where --action=evaluate writes the metrics of checkpoint `step`: evaluation-STEP.json,
    or evaluation-STEP-VARIANT.json for another prior or weights (runner's
    evaluation_variant)."""
    suffix = f'-{variant}' if variant else ''
    return os.path.join(modeldir, EVALUATION.format(step=f'{step}{suffix}'))
