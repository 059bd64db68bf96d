"""Makes the HDF5 files main.py reads, from CelebA, any image folder, or IDX files.

    python -m utils.data.prepare_data --source=celeba --input_dir=img_align_celeba \\
        [--partition_file=list_eval_partition.txt] --flagfile=configs/celeba128.flags
    python -m utils.data.prepare_data --source=folder --input_dir=DIR --valid_ratio=0.05 \\
        --test_ratio=0.05 --data_dir=D --train_data=... --height=64 --width=64 --channel=3
    python -m utils.data.prepare_data --source=idx --input_dir=data/mnist

It takes main.py's flags (data_dir, train_data, valid_data, test_data, height,
width, channel, random_seed, ...), so one --flagfile serves both.

  celeba  a folder of CelebA images (img_align_celeba: 178x218 JPEGs). With
          --partition_file (list_eval_partition.txt) the official split (162,770 /
          19,867 / 19,962); without it a split of the same proportions seeded by
          --random_seed.
  folder  every image below --input_dir (jpg, png, bmp, webp, gif, tiff, ppm, pgm),
          split by --valid_ratio and --test_ratio, seeded by --random_seed.
  idx     MNIST-format IDX image files (gzipped or raw): train and valid from
          train-images-idx3-ubyte, test from t10k-images-idx3-ubyte.

Images are decoded on every core (--workers), converted to --channel (grayscale,
RGBA, palette and CMYK inputs too), cropped (--crop, --crop_size) and resized to
height x width. Unreadable, truncated and non-image files are skipped and listed
in <train_data>.skipped.txt beside the outputs. The three files are written under
temporary names and renamed when all are complete; existing outputs are kept
unless --overwrite.
"""
import collections
import contextlib
import errno
import glob
import json
import multiprocessing
import os
import sys
from multiprocessing import shared_memory

import numpy as np
import progressbar
from absl import app, flags
from PIL import Image

from utils.data import data_flags, image_files, mnist
from utils.run import atomic
from utils.run.errors import UserError, WriteFailed, exit_now
from utils.data.hdf5_writer import MAX_ATTRIBUTE_NAMES, ImageFileWriter

SPLITS = ('train', 'valid', 'test')
CELEBA_SPLIT = (162770, 19867, 19962)  # the official train / valid / test counts
TASK_IMAGES = 64  # images per worker task (fewer, larger tasks: less overhead per image)
TASKS_IN_FLIGHT_PER_WORKER = 4  # tasks queued per worker: bounds the memory in use
FLAGS = flags.FLAGS


def define_flags():
    """The command's own flags; the data flags are data_flags.define()'s, shared with main.py."""
    flags.DEFINE_enum('source', 'idx', ['celeba', 'folder', 'idx'], 'kind of input')
    flags.DEFINE_string('input_dir', mnist.IDX_DIR, 'folder of the input files')
    flags.DEFINE_string('partition_file', '', 'celeba: list_eval_partition.txt ("" = seeded '
                        'split of the official proportions)')
    flags.DEFINE_enum('crop', 'center', list(image_files.CROPS), 'center: a centred box of '
                      'the target aspect ratio; none: resize the whole image')
    flags.DEFINE_integer('crop_size', 0, 'height of the centred crop in source pixels '
                         '(0 = the largest that fits: 178x178 for CelebA)')
    flags.DEFINE_float('valid_ratio', 0.05, 'folder: share of the images in valid_data')
    flags.DEFINE_float('test_ratio', 0.05, 'folder: share of the images in test_data')
    flags.DEFINE_integer('num_valid', mnist.NUM_VALID, 'idx: training images moved to valid')
    flags.DEFINE_integer('workers', 0, 'decoding processes (0 = one per core)')
    flags.DEFINE_boolean('overwrite', False, 'replace existing output files')


# ---------------------------------------------------------------- splits

def seeded_split(paths, fractions, seed):
    """Splits paths into len(fractions) lists by a permutation seeded by `seed`; each
    list keeps the input order."""
    order = np.random.default_rng([seed, 1]).permutation(len(paths))
    bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * len(paths)).astype(int)
    parts = np.split(order, bounds[:-1])
    return [[paths[i] for i in sorted(part)] for part in parts]


def read_partition(path, input_dir):
    """list_eval_partition.txt => {'train': [...], 'valid': [...], 'test': [...]}."""
    splits = {name: [] for name in SPLITS}
    try:
        with open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                name, code = line.split()
                splits[SPLITS[int(code)]].append(os.path.join(input_dir, name))
    except (OSError, ValueError, IndexError) as err:
        raise UserError(f'cannot read the partition file {path} ({err}); give CelebA\'s '
                        f'list_eval_partition.txt ("<name> <0|1|2>" per line)') from None
    return splits


def image_splits(source, input_dir, partition_file='', valid_ratio=0.05, test_ratio=0.05,
                 seed=0):
    """{'train': paths, 'valid': paths, 'test': paths} of an image source."""
    if not os.path.isdir(input_dir):
        raise UserError(f'--input_dir={input_dir} is not a folder')
    if source == 'celeba' and partition_file:
        return read_partition(partition_file, input_dir)
    paths = image_files.find_images(input_dir)
    if not paths:
        raise UserError(f'no image files below {input_dir}')
    if source == 'celeba':
        fractions = CELEBA_SPLIT
    else:
        if not (0 <= valid_ratio and 0 <= test_ratio and valid_ratio + test_ratio < 1):
            raise UserError('--valid_ratio and --test_ratio must be >= 0 with a sum below 1')
        fractions = (1 - valid_ratio - test_ratio, valid_ratio, test_ratio)
    return dict(zip(SPLITS, seeded_split(paths, fractions, seed)))


# ---------------------------------------------------------------- conversion

# Decoded images travel from the workers to the writing process through shared
# memory: each task fills a run of slots of one shared array in place and returns
# only why files were skipped, so no image is pickled through a pipe.
_SLOTS = None  # the shared [slots, h, w, c] uint8 array, in each worker
_MEMORY = None  # the shared memory block behind it


def split_tasks(splits):
    """(split name, up to TASK_IMAGES paths) over the splits in order."""
    for name in SPLITS:
        paths = splits[name]
        for start in range(0, len(paths), TASK_IMAGES):
            yield name, paths[start:start + TASK_IMAGES]


def _attach(name, shape):
    """Pool initializer: maps the shared slot array into this worker."""
    global _SLOTS, _MEMORY
    _MEMORY = shared_memory.SharedMemory(name=name)
    _SLOTS = np.ndarray(shape, np.uint8, buffer=_MEMORY.buf)


def decode_into_slots(task):
    """Decodes task's paths into slots first, first+1, ...; returns the skip reasons
    (None for a file that was decoded)."""
    first, paths, options = task
    reasons = []
    for offset, path in enumerate(paths):
        try:
            _SLOTS[first + offset] = image_files.load_image(path, **options)
            reasons.append(None)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            reasons.append(f'{type(err).__name__}: {err}')
    return reasons


class Converter:
    """Decodes image files on a process pool and streams them into HDF5 files."""

    def __init__(self, height, width, channel, crop='center', crop_size=0, workers=0):
        self.shape = (height, width, channel)
        self.options = dict(height=height, width=width, channel=channel, crop=crop,
                            crop_size=crop_size)
        self.workers = workers or os.cpu_count()
        self.in_flight = TASKS_IN_FLIGHT_PER_WORKER * self.workers

    def convert(self, splits, outputs, attrs):
        """Writes each split's images to its output; returns (counts, skipped) where
        skipped lists (split, path, reason)."""
        skipped, writers, memory = [], [], None
        slots = (self.in_flight, TASK_IMAGES) + self.shape
        try:  # whatever stops it (Ctrl-C too): no partial file, no shared memory stays
            for name, path in zip(SPLITS, outputs):
                writers.append(ImageFileWriter(path, self.shape, max(len(splits[name]), 1)))
            memory = shared_memory.SharedMemory(create=True, size=int(np.prod(slots)))
            bar = progress_bar(sum(len(paths) for paths in splits.values()))
            shared = np.ndarray(slots, np.uint8, buffer=memory.buf)
            worker_view = (self.in_flight * TASK_IMAGES,) + self.shape
            with multiprocessing.Pool(self.workers, _attach, (memory.name, worker_view)) as pool:
                for name, paths, reasons, slot in self._run(pool, split_tasks(splits)):
                    writer = writers[SPLITS.index(name)]
                    kept = [i for i, reason in enumerate(reasons) if reason is None]
                    if kept:
                        block = shared[slot, :len(paths)]
                        writer.append(block if len(kept) == len(paths) else block[kept])
                    skipped += [(name, paths[i], r) for i, r in enumerate(reasons) if r]
                    bar.update(bar.value + len(paths))
            bar.finish()
            counts = {name: writer.count for name, writer in zip(SPLITS, writers)}
            empty = [name for name in SPLITS if counts[name] == 0]
            if empty:  # before any commit: the existing outputs stay untouched
                example = f', e.g. {skipped[0][1]}: {skipped[0][2]}' if skipped else ''
                raise UserError(f'no image of the {" and ".join(empty)} split could be made '
                                f'({len(skipped)} files unreadable{example}); nothing was '
                                f'written: check --input_dir and the split settings')
            for name, writer in zip(SPLITS, writers):
                names = [os.path.basename(p) for s, p, _ in skipped if s == name]
                writer.commit(dict(attrs, split=name, split_counts=json.dumps(counts),
                                   skipped_count=len(names),
                                   skipped_files=json.dumps(names[:MAX_ATTRIBUTE_NAMES])))
        finally:
            for writer in writers:
                writer.close()
            if memory is not None:
                memory.close()
                memory.unlink()
        return counts, skipped

    def _run(self, pool, tasks):
        """Keeps `in_flight` tasks running, each on its own slot run; yields
        (split, paths, reasons, slot) in task order as they complete."""
        pending = collections.deque()
        free = list(range(self.in_flight))
        for name, paths in tasks:
            if not free:
                yield self._finish(pending, free)
            slot = free.pop()
            result = pool.apply_async(decode_into_slots,
                                      ((slot * TASK_IMAGES, paths, self.options),))
            pending.append((name, paths, result, slot))
        while pending:
            yield self._finish(pending, free)

    @staticmethod
    def _finish(pending, free):
        name, paths, result, slot = pending.popleft()
        reasons = result.get()
        free.append(slot)
        return name, paths, reasons, slot


def progress_bar(total):
    """A progress bar over `total` images that shows images/s."""
    widgets = [progressbar.Percentage(), ' ', progressbar.SimpleProgress(), ' images ',
               progressbar.Bar(), ' ', progressbar.FileTransferSpeed(unit='img'), ' ',
               progressbar.AdaptiveETA()]
    return progressbar.ProgressBar(max_value=max(total, 1), widgets=widgets).start()


def write_skipped_list(path, skipped):
    """One line per skipped file: split, path, reason; written atomically."""
    atomic.write_text(path, ''.join(f'{split}\t{name}\t{reason}\n'
                                    for split, name, reason in skipped))


def skipped_list_path(train_output):
    """<train file without .h5>.skipped.txt, beside the outputs."""
    stem = train_output[:-3] if train_output.endswith('.h5') else train_output
    return stem + '.skipped.txt'


# ---------------------------------------------------------------- entry points

def check_outputs(outputs, overwrite):
    """Refuses to replace existing outputs without --overwrite, and outputs whose folder
    is not a writable folder; removes what killed earlier runs left half-written."""
    for folder in sorted({os.path.dirname(os.path.abspath(path)) for path in outputs}):
        atomic.make_writable_folder(folder, folder)
    existing = [path for path in outputs if os.path.exists(path)]
    if existing and not overwrite:
        raise UserError(f'{", ".join(existing)} already exist: pass --overwrite to replace them')
    for path in outputs:
        remove_stale_partials(path)


def remove_stale_partials(path):
    """Deletes path.partial-PID files whose writing process is gone (a killed run's)."""
    for partial in glob.glob(glob.escape(path) + '.partial-*'):
        pid = partial.rsplit('.partial-', 1)[1].split('.')[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(partial)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_settings(height, width, channel, crop_size, valid_ratio, test_ratio, num_valid,
                   workers):
    """The numbers of a conversion that no data can satisfy."""
    for name, value in (('height', height), ('width', width)):
        if value <= 0:
            raise UserError(f'--{name}={value} must be positive: the output images\' size')
    if channel not in (1, 3):
        raise UserError(f'--channel={channel} must be 1 or 3')
    if crop_size < 0:
        raise UserError(f'--crop_size={crop_size} must be 0 (the crop\'s default) or more')
    if workers < 0:
        raise UserError(f'--workers={workers} must be 0 (one per core) or more')
    if not (0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise UserError(f'--valid_ratio={valid_ratio} and --test_ratio={test_ratio} must each '
                        f'be in [0, 1) and leave images for training')
    if num_valid <= 0:
        raise UserError(f'--num_valid={num_valid} must be positive')


def prepare(source, input_dir, outputs, overwrite=False, num_valid=mnist.NUM_VALID,
            height=28, width=28, channel=1, crop='center', crop_size=0, partition_file='',
            valid_ratio=0.05, test_ratio=0.05, seed=0, workers=0):
    """Writes the three split files `outputs` (train, valid, test) from a source.

    Returns (counts per split, skipped files as (split, path, reason)).
    """
    check_settings(height, width, channel, crop_size, valid_ratio, test_ratio, num_valid,
                   workers)
    check_outputs(outputs, overwrite)
    try:
        return _convert(source, input_dir, outputs, num_valid, height, width, channel, crop,
                        crop_size, partition_file, valid_ratio, test_ratio, seed, workers)
    except BaseException as err:  # every output is still as it was; no partial file stays
        for path in outputs:
            atomic.discard(atomic.partial_path(path))
        if not isinstance(err, OSError):
            raise
        full = getattr(err, 'errno', None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or \
            any(text in str(err).lower() for text in ('space', 'too large', 'quota'))
        reason = ' '.join(str(err).split())[:160]  # HDF5's messages span lines
        raise WriteFailed(f'could not write the HDF5 files in '
                          f'{os.path.dirname(os.path.abspath(outputs[0]))} ({reason}); the '
                          f'existing files are as they were: '
                          f'{"free disk space" if full else "check the folder"} and run the '
                          f'same command again') from None


def check_space(outputs, counts, shape):
    """Refuses, before anything is written, outputs that cannot fit (atomic.check_room)."""
    atomic.check_room(outputs, [count * int(np.prod(shape)) for count in counts])


def _convert(source, input_dir, outputs, num_valid, height, width, channel, crop, crop_size,
             partition_file, valid_ratio, test_ratio, seed, workers):
    if source == 'idx':
        counts = mnist.convert(find_idx(input_dir, 'train-images-idx3-ubyte'),
                               find_idx(input_dir, 't10k-images-idx3-ubyte'), outputs,
                               num_valid, expected_shape=(height, width, channel),
                               before_writing=lambda counts: check_space(
                                   outputs, counts, (height, width, channel)))
        return dict(zip(SPLITS, counts)), []
    splits = image_splits(source, input_dir, partition_file, valid_ratio, test_ratio, seed)
    check_space(outputs, [len(splits[name]) for name in SPLITS], (height, width, channel))
    converter = Converter(height, width, channel, crop, crop_size, workers)
    attrs = dict(source=source, input_dir=os.path.abspath(input_dir), crop=crop,
                 crop_size=crop_size, height=height, width=width, channel=channel,
                 partition_file=partition_file, seed=seed)
    counts, skipped = converter.convert(splits, outputs, attrs)
    if skipped:
        write_skipped_list(skipped_list_path(outputs[0]), skipped)
    return counts, skipped


def find_idx(input_dir, stem):
    """The path of input_dir/stem or input_dir/stem.gz."""
    for name in (stem + '.gz', stem):
        path = os.path.join(input_dir, name)
        if os.path.isfile(path):
            return path
    raise UserError(f'no {stem}[.gz] in {input_dir}: point --input_dir at the IDX files')


def main(argv):
    """Command-line entry: one error line and exit status 2 on wrong input."""
    del argv
    outputs = [os.path.join(FLAGS.data_dir, name)
               for name in (FLAGS.train_data, FLAGS.valid_data, FLAGS.test_data)]
    try:
        counts, skipped = prepare(
            FLAGS.source, FLAGS.input_dir, outputs, FLAGS.overwrite, FLAGS.num_valid,
            FLAGS.height, FLAGS.width, FLAGS.channel, FLAGS.crop, FLAGS.crop_size,
            FLAGS.partition_file, FLAGS.valid_ratio, FLAGS.test_ratio, FLAGS.random_seed,
            FLAGS.workers)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        if isinstance(err, WriteFailed):
            exit_now(2)
        return 2
    except KeyboardInterrupt:
        print('interrupted: nothing was written (the half-written files were removed)',
              file=sys.stderr)
        return 130
    for path, name in zip(outputs, SPLITS):
        print(f'{path}: {counts[name]} images')
    if skipped:
        print(f'skipped {len(skipped)} unreadable files, listed in '
              f'{skipped_list_path(outputs[0])}')
    return 0


def parse_flags(argv):
    """absl's parse, where a flag file may also hold flags of main.py (one file serves
    both commands): those are skipped. An unknown flag on the command line itself, or
    a value that does not parse, ends with one error line and exit status 2."""
    given = {arg[2:].split('=')[0] for arg in argv[1:] if arg.startswith('--')}
    try:
        rest = FLAGS(argv, known_only=True)
    except flags.Error as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    unknown = [arg for arg in rest[1:] if arg.startswith('--')
               and arg[2:].split('=')[0] in given]
    if unknown or len([arg for arg in rest[1:] if not arg.startswith('--')]):
        print(f'error: unknown arguments {unknown or rest[1:]}: python -m '
              f'utils.data.prepare_data --helpfull lists the flags', file=sys.stderr)
        sys.exit(2)
    return rest[:1]


if __name__ == '__main__':
    data_flags.define()
    define_flags()
    app.run(main, flags_parser=parse_flags)
