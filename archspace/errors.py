"""The project's user errors and the one error boundary every command line uses.

A :class:`UsageError` is bad input from a user (a missing file, a foreign checkpoint, a zero width, an unknown model
name): the entry points report it as one line on stderr, ``PROG: error: MESSAGE``, and exit with status 2. Every
other exception is a bug and keeps its traceback. The project's own error types (``ModelSpecError``,
``CheckpointError``, ``CandidateError``, ``DataError``, ``ConfigError``, ...) derive from it, so one ``except``
clause at each entry point covers them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

#: Environment variable that makes every entry point re-raise user errors with their traceback (for debugging).
DEBUG_ENV = "GHN_DEBUG"


class UsageError(ValueError):
    """Bad input from a user; the message says what was wrong and what to do, in one line.

    Subclasses ``ValueError`` so that library callers who catch ``ValueError`` keep working.
    """


def debug_enabled() -> bool:
    """Whether tracebacks of user errors are wanted: ``GHN_DEBUG=1`` or Hydra's ``HYDRA_FULL_ERROR=1``."""
    return any(os.environ.get(k, "") not in ("", "0") for k in (DEBUG_ENV, "HYDRA_FULL_ERROR"))


def run_cli(prog: str, fn: Callable[[], int | None], debug: bool = False) -> int:
    """Run a command-line body inside the project's error boundary.

    Args:
        prog: the command's name, printed before the message (``ghn``, ``ghn-train``, ...).
        fn: the body; its return value (``None`` counts as 0) is the exit status.
        debug: re-raise user errors with their traceback (also when :func:`debug_enabled`).

    Returns:
        The exit status: ``fn``'s, 2 for a :class:`UsageError`, 1 when stdout was closed early (``| head``).

    Raises:
        Exception: anything that is not a :class:`UsageError` (a bug), unchanged.
    """
    try:
        status = fn()
        return 0 if status is None else int(status)
    except UsageError as e:
        if debug or debug_enabled():
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
