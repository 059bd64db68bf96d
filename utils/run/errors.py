"""The error types: main.py prints their message as one line and exits with status 2."""
import errno
import os
import sys


class UserError(Exception):
    """A problem the user can fix (a missing file, a flag that does not fit);
    the message names the problem and the fix."""


class WriteFailed(UserError):
    """Writing an output failed midway (a full disk, a read-only folder). HDF5 may then
    crash while Python tears its objects down, so a command ends at once after saying
    so (exit_now)."""


def write_failure(err, what=None):
    """The WriteFailed of an OSError raised while writing `what` (err.filename if None):
    the reason, and the fix that the errno points to."""
    where = what or getattr(err, 'filename', None) or 'an output file'
    code = getattr(err, 'errno', None)
    reason = ' '.join(str(getattr(err, 'strerror', None) or err).split())[:160]
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(
            text in reason.lower() for text in ('too large', 'space left', 'write failed')):
        fix = 'free disk space'
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f'make {os.path.dirname(os.path.abspath(where))} writable or choose another folder'
    else:
        fix = 'check the path'
    return WriteFailed(f'could not write {where} ({reason}); the files written before are '
                       f'as they were: {fix}, then run the same command again')


def exit_now(code):
    """Ends the process with `code` without Python's teardown (after a failed HDF5 write,
    HDF5 crashes on its objects' clean-up); the error line is out, partial files gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
