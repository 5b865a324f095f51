"""`tql-tune`: the command-line entry point.

Every user error (``tql.errors.TQLError``) is printed as one line on stderr with exit code 2;
finished work is never lost because every result file is written atomically. The commands
live in ``cli_train`` (train, apply, sizes, tasks, data make), ``cli_studies`` (run, show,
export), ``cli_compare`` (compare, lodo) and ``cli_experiment`` (experiment); importing them
registers them on ``app``.
"""

from __future__ import annotations

import sys

from rich.text import Text

from autotune import cli_studies, cli_train, cli_compare, cli_experiment  # noqa: F401, I001 - registers the commands in --help order
from autotune.cli_common import app, err_console
from tql.errors import TQLError


def _quiet_library_warnings() -> None:
    """Gymnasium and GLFW warn on every env build; they say nothing useful to our users.
    Optuna's per-trial INFO lines repeat what our progress display and tables show."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    warnings.filterwarnings("ignore", message=".*precision lowered.*")
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")


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
