"""``python -m autotune.cli``: the same as ``tql-tune``."""

from autotune.cli import main

main()
