"""Writing a file so that its final name only ever holds a whole file: the content goes
to a temporary name beside it (same folder, so the rename stays on one file system),
which is renamed into place once complete. A crash or a full disk leaves the earlier
file as it was; the temporary file names the process that wrote it."""
import contextlib
import json
import os


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
