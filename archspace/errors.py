"""The project's user errors and the one error boundary every command line uses.

A :class:`UsageError` is bad input from a user (a missing file, a foreign checkpoint, a zero width, an unknown model
name): the entry points report it as one line on stderr, ``PROG: error: MESSAGE``, and exit with status 2. Every
other exception is a bug and keeps its traceback. The project's own error types (``ModelSpecError``,
``CheckpointError``, ``CandidateError``, ``DataError``, ``ConfigError``, ...) derive from it, so one ``except``
clause at each entry point covers them all.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Iterable

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


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors (unknown option, bad choice, a value of the wrong type) raise
    :class:`UsageError`, so that :func:`run_cli` reports them like every other bad input: one line, exit status 2,
    instead of a usage block. Subcommand parsers made with ``add_subparsers`` inherit the class.

    Parse inside the body given to :func:`run_cli`.
    """

    def error(self, message: str):
        """Raise the argparse message as a :class:`UsageError` pointing to ``--help``."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """``argparse`` type of an option that takes an integer >= 1 (widths, sizes, steps, thread counts).

    Raises:
        argparse.ArgumentTypeError: ``text`` is not an integer >= 1 (argparse names the option).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def suggest(name: str, known: Iterable[str], listing: str | None = None, prefix: str = "") -> str:
    """The end of an "unknown name" message: the closest known names, or where to find them.

    Matching ignores case (``difflib.get_close_matches`` on lower-cased names, at most three).

    Args:
        name: what the user wrote.
        known: the valid names.
        listing: hint used when nothing is close (default: the list of known names when there are at most 12).
        prefix: written before each suggested name (``"torchvision:"`` to suggest whole specs).

    Returns:
        ``"; did you mean X, Y?"``, else ``"; " + listing``, else ``"; choose one of A, B, C"``, else ``""``.
    """
    by_lower = {k.lower(): k for k in sorted(set(known))}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3)
    if close:
        return "; did you mean " + ", ".join(prefix + by_lower[c] for c in close) + "?"
    if listing:
        return "; " + listing
    if 0 < len(by_lower) <= 12:
        return "; choose one of " + ", ".join(by_lower.values())
    return ""
