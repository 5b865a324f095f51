"""`tql-tune`: the command-line entry point.

Every user error (``tql.errors.TQLError``) is printed as one line on stderr with exit code 2;
finished work is never lost because every result file is written atomically. The commands
live in ``train`` (train, apply, sizes, tasks, data make), ``study_commands`` (run, show, export),
``compare`` (compare, lodo) and ``experiment`` (experiment); importing them registers them on
``app`` (``common``). Each command parses its options and calls the Python API (``autotune.api``,
``tql.train``): the CLI adds the terminal, nothing else.

May import: anything in ``autotune`` and ``tql``, typer, rich (this package alone may print).
Public names: ``app`` (the Typer application) and ``main`` (the console script).
"""

from __future__ import annotations

import sys

from rich.text import Text

from autotune.cli import study_commands, train, compare, experiment  # noqa: F401, I001 - registers the commands in --help order
from autotune.cli.common import app, err_console
from tql.errors import TQLError


def _quiet_library_warnings() -> None:
    """Third-party warnings about env builds say nothing useful to our users (``tql.envs``);
    Optuna's per-trial INFO lines repeat what our progress display and tables show. A warning
    of ours is one line on stderr, once, not Python's two-line form with a source line."""
    import warnings

    import optuna

    from tql.envs import silence_env_warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    silence_env_warnings()
    warnings.filterwarnings("once", category=RuntimeWarning)
    warnings.showwarning = _show_warning_on_one_line


def _show_warning_on_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(Text.assemble(("warning: ", "yellow"), str(message)), soft_wrap=True, highlight=False)


def main() -> None:
    _quiet_library_warnings()
    try:
        app()
    except TQLError as exc:
        # A Text, not markup: messages hold brackets such as tql-tune[postgres] or [0.1, 1.0].
        err_console.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved (checkpoints and results are written atomically)")
        sys.exit(130)


if __name__ == "__main__":
    main()
