"""What every command line of the package follows (the console scripts and `training/*.py`):

- `--help` shows each option's default (`HelpFormatter`);
- a mistake ends the run with exit code 2 and one line, `PROG: error: MESSAGE`, like argparse's own usage errors;
  the traceback is shown only with `--debug` or `OTSEG_DEBUG=1` (`run_cli`).

    if __name__ == "__main__":
        run_cli(main, prog="otseg-segment")
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

DEBUG_ENV = "OTSEG_DEBUG"
# what a user's mistake raises (a bad value, a missing file or folder, a type that does not fit)
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, FloatingPointError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and `(default: X)` after each option's help, except where the default is
    None or False (the help then says what happens) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in help_text:
            return help_text
        if action.default == [] or not (action.option_strings or action.nargs in ("?", "*")):
            return help_text
        return help_text + " (default: %(default)s)"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)"
    )


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_message(error: BaseException) -> str:
    """One line: the error's message with its whitespace collapsed (KeyError's quotes removed)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    message = " ".join(str(text).split())
    return message or type(error).__name__


def run_cli(main: Callable[[list[str]], object], prog: str, argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)`; a user error (`USER_ERRORS`) becomes `PROG: error: MESSAGE` on stderr and exit code 2,
    with the traceback only under `--debug` / `OTSEG_DEBUG=1`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except USER_ERRORS as error:
        if debug_requested(argv):
            raise
        print(f"{prog}: error: {error_message(error)} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
    except SystemExit as error:  # code that exits with a message (a string): the same one line, exit code 2
        if not isinstance(error.code, str) or debug_requested(argv):
            raise
        message = " ".join(error.code.split()).removeprefix("error: ")
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug_requested(argv):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def quiet_libraries() -> None:
    """Neither transformers' per-load progress bars ("Loading weights", "Writing model shards") nor accelerate's
    INFO lines (several per checkpoint): the scripts report their own progress. Warnings still show."""
    import logging

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def model_source(value: str, flag: str) -> str:
    """Check a model argument before anything is loaded: an existing folder, or a Hub id (`owner/name`) that the
    cache or the network may supply. A path that does not exist is named with its flag."""
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ValueError(f"{flag} {value}: not a folder (give the folder that holds config.json)")
    if value.startswith((".", "/", "~")) or value.count("/") != 1:
        raise ValueError(f"{flag} {value}: no such folder (and not a Hub id of the form owner/name)")
    return value


__all__ = [
    "DEBUG_ENV",
    "HelpFormatter",
    "USER_ERRORS",
    "add_debug_argument",
    "debug_requested",
    "error_message",
    "model_source",
    "quiet_libraries",
    "run_cli",
]
