"""One training per model folder: an exclusive lock on modeldir/.lock while a training
(or a cluster's chief) writes checkpoints there.

The lock is an flock(2) on the file, which the kernel releases when the process ends in
any way, kill -9 included: a lock file left by a killed run holds no lock and does not
block the next one. The file names the holder (process id, host, start time, command)
for the message of a second training. Predict, reconstruct, evaluate and the other
actions only read the folder and take no lock.
"""
import contextlib
import fcntl
import os
import socket
import sys
import time

from utils.run.errors import UserError

LOCK_FILE = '.lock'


def _holder(path):
    """The holder's description written in the lock file ('' when unreadable)."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ''


def acquire(folder):
    """Locks `folder` for this process; returns the open lock file (release() frees it).
    Raises UserError naming the holder when another process has it."""
    path = os.path.join(folder, LOCK_FILE)
    while True:
        try:
            handle = open(path, 'a+')
        except OSError as err:
            raise UserError(f'cannot create {path} ({err.strerror or err}): choose a writable '
                            f'--modeldir') from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = _holder(path) or 'another process'
            raise UserError(f'--modeldir={folder} is in use by a training ({holder}): wait for '
                            f'it to end or stop it, or train into another --modeldir; predict '
                            f'and evaluate may read it meanwhile') from None
        # the holder before us may have removed the file between our open and our lock:
        # the lock is ours only if it is on the file that the path names now
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        handle.close()
    try:  # who holds it, for a second training's message; the lock works without it
        handle.seek(0)
        handle.truncate()
        handle.write(f'process {os.getpid()} on {socket.gethostname()}, since '
                     f'{time.strftime("%Y-%m-%d %H:%M:%S")}: {" ".join(sys.argv)[:200]}\n')
        handle.flush()
    except OSError:  # a full disk
        pass
    return handle


def release(handle):
    """Removes the lock file and frees the lock (in this order: a process that opened the
    file meanwhile finds it gone and tries again)."""
    with contextlib.suppress(OSError):
        os.remove(handle.name)
    handle.close()


@contextlib.contextmanager
def held(folder):
    """The lock of `folder` for the block."""
    handle = acquire(folder)
    try:
        yield handle
    finally:
        release(handle)
