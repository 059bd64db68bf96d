"""The error type for wrong input: main.py prints its message as one line and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (a missing file, a flag that does not fit);
    the message names the problem and the fix."""
