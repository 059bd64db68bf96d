"""Writing a file so that its final name only ever holds a whole file (and checking first
that it fits: check_room): the content goes
to a temporary name beside it (same folder, so the rename stays on one file system),
which is renamed into place once complete. A crash or a full disk leaves the earlier
file as it was; the temporary file names the process that wrote it."""
import contextlib
import json
import os
import resource
import shutil
import tempfile

from utils.run.errors import UserError


def partial_path(path, suffix=''):
    """The temporary name of `path` while this process writes it (`suffix` for writers
    that append their own extension, such as numpy's .npz)."""
    return f'{path}.partial-{os.getpid()}{suffix}'


@contextlib.contextmanager
def replacing(path, suffix=''):
    """Yields the temporary path to write; renames it to `path` when the block ends,
    or deletes it when the block raises."""
    partial = partial_path(path, suffix)
    try:
        yield partial
        publish(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            discard(partial)
        raise


def publish(partial, path):
    """Renames the complete temporary file `partial` to `path` (for writers that keep
    the file open across calls, such as HDF5's)."""
    os.replace(partial, path)


def discard(partial):
    """Deletes the temporary file `partial` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(partial)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with replacing(path) as partial:
        with open(partial, 'w') as handle:
            handle.write(text)


def write_json(path, value, **dump_options):
    """Writes `value` as JSON (json.dumps options) and a newline to `path` atomically."""
    write_text(path, json.dumps(value, **dump_options) + '\n')


def make_writable_folder(folder, name):
    """Creates folder if needed and checks that a file can be written in it; otherwise one
    UserError that calls it `name` (the flag that gave it, e.g. '--modeldir=runs/a')."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f'cannot write to {name} ({err.strerror or err}): choose a writable '
                        f'folder') from None


def check_room(paths, sizes):
    """Refuses, before anything is written, files of about `sizes` bytes at `paths` that
    cannot fit: more bytes than their disk has free, or one larger than this process may
    write (ulimit -f)."""
    folder = os.path.dirname(os.path.abspath(paths[0]))
    free = shutil.disk_usage(folder).free
    need = int(sum(sizes) * 1.01) + 2 ** 20  # the formats' own structures: a little more
    if need > free:
        raise UserError(f'{", ".join(map(os.path.basename, paths))} need about '
                        f'{_size(need)} and {folder} has {_size(free)} free: free disk space '
                        f'or write elsewhere')
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    largest = max(sizes)
    if limit != resource.RLIM_INFINITY and largest * 1.01 + 2 ** 16 > limit:
        raise UserError(f'{paths[sizes.index(largest)]} needs about {_size(largest)}, more '
                        f'than the {_size(limit)} a file of this process may have (ulimit -f): '
                        f'raise the limit or free disk space')


def _size(count):
    """A byte count for people: 43 MB, 12 KB."""
    return f'{count / 1e6:.0f} MB' if count >= 1e6 else f'{max(count / 1e3, 1):.0f} KB'
