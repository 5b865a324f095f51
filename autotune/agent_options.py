"""Agent settings from the command line: a named set (``--settings``) plus single options
(``--agent KEY=VALUE``), and H̄ given as a number, one per layer or a table."""

from __future__ import annotations

import dataclasses
from typing import Any

from tql.agent import FQL_SETTINGS, LEGACY_SETTINGS, AgentConfig
from tql.entropy import SHARINGS
from tql.errors import ConfigError
from tql.targets import GROUP_NAMES, Table

# Named sets of agent options: the published TQL configuration (the defaults), FQL's own
# optimiser settings, and small-alpha, tql-tune 0.1's (alpha from 0.01 at its own lr 3e-4,
# summed penalty, Adam 3e-4 with no decay or schedule, no actor LayerNorm).
SETTINGS: dict[str, dict[str, Any]] = {
    "published": {},
    "fql": dict(FQL_SETTINGS),
    "small-alpha": {**LEGACY_SETTINGS, "critic_lr": 3e-4, "actor_lr": 3e-4},
}
RENAMED_SETTINGS = {"legacy": "small-alpha"}  # tql-tune 0.1 called them "legacy"


def _parse_value(name: str, text: str, default: Any) -> Any:
    text = text.strip()
    if name in _BOOL_OR_NONE:  # compile: true, false, or none (the device decides)
        if text.lower() == "none":
            return None
        default = False
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.split(",") if v.strip())
        if default is None or isinstance(default, float):
            return None if text.lower() == "none" else float(text)
        if isinstance(default, int):
            return int(text)
    except ValueError:
        kind = "true or false" if isinstance(default, bool) else type(default or 0.0).__name__
        raise ConfigError(f"agent option {name}={text!r}: expected {kind}") from None
    return text


_BOOL_OR_NONE = {f.name for f in dataclasses.fields(AgentConfig) if str(f.type) == "bool | None"}


def with_sharing(options: list[str], sharing: str | None) -> list[str]:
    """``--agent`` options plus ``--temperature-sharing`` (one temperature per (layer, group),
    per layer or for the whole critic), checked; refused beside a different
    ``--agent temperature_sharing=...``."""
    if sharing is None:
        return list(options)
    if sharing not in SHARINGS:
        raise ConfigError(f"--temperature-sharing {sharing!r} is not one of: {', '.join(SHARINGS)}")
    given = [o.partition("=")[2].strip() for o in options
             if o.partition("=")[0].strip().replace("-", "_") == "temperature_sharing"]
    if any(value != sharing for value in given):
        raise ConfigError(f"--temperature-sharing {sharing} and --agent temperature_sharing={given[0]} disagree; "
                          "give one")
    return [*options, f"temperature_sharing={sharing}"]


def agent_overrides(settings: str = "published", options: list[str] | None = None) -> dict[str, Any]:
    """The overrides of a named settings set plus ``KEY=VALUE`` options (these win)."""
    if settings in RENAMED_SETTINGS:
        raise ConfigError(f"settings {settings!r} are called {RENAMED_SETTINGS[settings]!r} since tql-tune 0.2")
    if settings not in SETTINGS:
        raise ConfigError(f"settings {settings!r} is not one of: {', '.join(SETTINGS)}")
    defaults = {f.name: getattr(AgentConfig(), f.name) for f in dataclasses.fields(AgentConfig)}
    overrides = dict(SETTINGS[settings])
    for option in options or []:
        name, sep, text = option.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in defaults:
            raise ConfigError(f"agent option {option!r}: write KEY=VALUE with KEY one of: {', '.join(defaults)}")
        overrides[name] = _parse_value(name, text, defaults[name])
    return overrides


def describe_table(table: Table) -> str:
    """``l0 3.00/3.00, l1 2.50/2.50`` ([VALUE] row / other rows per layer), or one number."""
    values = {v for row in table for v in row}
    if len(values) == 1:
        return f"{values.pop():.3f}"
    if not table:
        return "none (no attention)"
    return ", ".join(f"l{i} " + "/".join(f"{v:.2f}" for v in row) for i, row in enumerate(table)) + \
        f" ({'/'.join(GROUP_NAMES)})"
