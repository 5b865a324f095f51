"""What every function of the API shares: the ``say`` callback and the agent options as the
commands give them (``--agent KEY=VALUE`` strings, or a dict, plus ``--temperature-sharing``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

Say = Callable[[str], None]


def quiet(text: str) -> None:
    """A ``say`` that says nothing."""


def option_list(agent: Sequence[str] | dict[str, Any], sharing: str | None) -> list[str]:
    """``--agent KEY=VALUE`` options (or a dict of them) plus ``--temperature-sharing``."""
    from autotune.agent_options import with_sharing

    return with_sharing([f"{k}={v}" for k, v in agent.items()] if isinstance(agent, dict) else list(agent), sharing)


def agent_options(agent: Sequence[str] | dict[str, Any], sharing: str | None = None) -> dict[str, Any]:
    """``--agent`` options and ``--temperature-sharing`` as checked AgentConfig overrides."""
    from autotune.agent_options import agent_overrides

    return agent_overrides("published", option_list(agent, sharing))
