"""User-facing errors.

Every error a user can cause by bad input derives from ``TQLError``; the CLI prints its
message on one line and exits with code 2. The message must name the bad value and the
valid choices (or how to fix it).
"""


class TQLError(Exception):
    """Bad input or missing resource; the message is shown to the user verbatim."""


class UnknownTaskError(TQLError, ValueError):
    pass


class MissingDatasetError(TQLError, FileNotFoundError):
    pass


class ConfigError(TQLError, ValueError):
    pass
