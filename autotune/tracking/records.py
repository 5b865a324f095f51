"""What the loggers receive: the names of the loggers, a ``metrics.jsonl`` record as scalars
under stable names, and a run's configuration as flat hyperparameters. Pure functions, so the
names a dashboard shows are fixed here and tested once."""

from __future__ import annotations

import math
from typing import Any, Iterable

from tql.errors import ConfigError

LOGGERS = ("wandb", "tensorboard")
NONE = "none"


def check_loggers(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """``--log`` values as a tuple of distinct loggers in the order given (``none`` or nothing:
    no logger). A bad value is one line naming it and the choices."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    chosen: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if name in ("", NONE):
                continue
            if name not in LOGGERS:
                raise ConfigError(f"--log {value!r}: choose from {NONE}, {', '.join(LOGGERS)}")
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def record_scalars(record: dict[str, Any]) -> list[tuple[int | None, int, dict[str, float]]]:
    """A ``metrics.jsonl`` record as ``(member, step, {name: value})`` parts (member None: the
    run itself; a population's rows and fitness name their member):

    - ``train`` rows keep their names (``critic/td_loss``, ``entropy/l0_value``,
      ``target_entropy/l0_value``, ``alpha/l0_value``, ``val/td_loss``, ...);
    - ``eval`` records become ``eval/success_rate``, ``eval/progress``, ``eval/gained``,
      ``eval/mean_return`` and ``eval/subtask_<i>`` (the rate of each subtask);
    - ``fitness`` records (population runs) give each member ``pbt/fitness`` and
      ``pbt/val_td``, and ``pbt/copied_from`` to a member replaced by a copy.

    Lists of per-episode values and non-finite numbers are left out (the file has them)."""
    kind, step = record.get("type"), int(record.get("step", 0))
    if kind == "train":
        values = {k: v for k, v in ((k, _number(v)) for k, v in record.items() if k not in ("step", "type", "member"))
                  if v is not None}
        return [(record.get("member"), step, values)]
    if kind == "eval":
        values = {f"eval/{k}": _number(record.get(k)) for k in ("success_rate", "progress", "gained", "mean_return")}
        for i, rate in enumerate(record.get("subtask_rates") or []):
            values[f"eval/subtask_{i}"] = _number(rate)
        return [(None, step, {k: v for k, v in values.items() if v is not None})]
    if kind == "fitness":
        copied = {dst: src for src, dst in record.get("copies") or []}
        parts = []
        for i, (fitness, val_td) in enumerate(zip(record.get("fitness") or [], record.get("val_td") or [])):
            values = {"pbt/fitness": _number(fitness), "pbt/val_td": _number(val_td)}
            if i in copied:
                values["pbt/copied_from"] = float(copied[i])
            parts.append((i, step, {k: v for k, v in values.items() if v is not None}))
        return parts
    return []


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested run configuration (``config.json``) as ``a/b`` keys with plain values (lists
    and other values as text), what hyperparameter tables in both tools take."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}/"))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
