"""The one place tql builds an OGBench environment, quiet about what its libraries warn.

Every env build and reset prints gymnasium's "Box low's precision lowered by casting to
float32" (with raw ANSI colour codes: OGBench makes a new action space on every access),
GLFW's missing-DISPLAY error on a headless machine, and deprecations from MuJoCo, OGBench and
gymnasium: nothing a user can act on. The warnings come on every reset, long after the build,
so the filters stay for the process. Evaluation and data-generation worker processes start
with Python's default filters and build their own envs here, so this reaches them too; other
warnings are left alone.
"""

from __future__ import annotations

import warnings

# (message regex, category, module regex) of the warnings OGBench envs are known to give.
KNOWN_ENV_WARNINGS = (
    (r".*precision lowered by casting to float32", UserWarning, ""),
    (r".*DISPLAY environment variable", Warning, ""),
    ("", DeprecationWarning, r"(gymnasium|mujoco|ogbench|glfw|dm_control)(\.|$)"),
)


def silence_env_warnings() -> None:
    """Ignore ``KNOWN_ENV_WARNINGS`` in this process (idempotent: warnings drops duplicates)."""
    for message, category, module in KNOWN_ENV_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def make_env(env_name: str, **kwargs):
    """``gymnasium.make(env_name, **kwargs)`` with the OGBench environments registered."""
    silence_env_warnings()
    import gymnasium

    import ogbench  # noqa: F401  (registers the OGBench environments)

    return gymnasium.make(env_name, **kwargs)
