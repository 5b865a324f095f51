"""``TrackingHooks``: a run's records sent to its W&B and TensorBoard writers as the run
writes them, and ``RunLabels``: how the tools group runs (study / task / trial / seed,
approach / task / seed).

A logger must never cost the run: a writer that fails (disk full, a W&B error) is said once
and dropped, and training goes on with ``metrics.jsonl`` as the record. The writers queue
their work off the training thread (TensorBoard's event writer, W&B's service process), and
they are called once per logged row, not per update."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.tracking.records import check_loggers, flat_config, record_scalars
from autotune.tracking.writers import TensorBoardWriter, WandbWriter, require
from tql.trainer.hooks import TrainHooks

Warn = Callable[[str], None]


@dataclass(frozen=True)
class RunLabels:
    """Where a run shows up: W&B's project / entity (None: ``WANDB_PROJECT`` /
    ``WANDB_ENTITY``, else project ``tql-tune``), group, job type, name and tags, and
    ``config``: labels added to the run's hyperparameters (study, trial, approach, ...)."""

    project: str | None = None
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


def python_warning(text: str) -> None:
    """A line as a Python warning: where a logger speaks when the run has no console."""
    import warnings

    warnings.warn(text, RuntimeWarning, stacklevel=3)


class TrackingHooks(TrainHooks):
    """Mirrors a run into ``loggers`` (names from ``records.LOGGERS``). The writers open at
    ``on_start`` (a population member's at its first record) and close at ``on_close``."""

    def __init__(self, loggers: Sequence[str], labels: RunLabels | None = None, warn: Warn | None = None):
        self.loggers = check_loggers(loggers)
        for logger in self.loggers:
            require(logger)
        self.labels, self.warn = labels or RunLabels(), warn or python_warning
        self.writers: dict[int | None, list[Any]] = {}
        self.failed: set[str] = set()
        self.folder: Path | None = None
        self.config: dict[str, Any] = {}
        self.start_step = 0
        self.offline_runs: list[Path] = []  # W&B runs written offline: what `wandb sync` uploads

    # ----- TrainHooks ------------------------------------------------------------------------
    def on_start(self, run: dict[str, Any]) -> None:
        self.folder, self.start_step = Path(run["out_dir"]), int(run.get("step", 0))
        self.config = {**flat_config({k: v for k, v in run.items() if k not in ("out_dir", "step")}),
                       **flat_config(self.labels.config, "labels/")}
        if "population" not in run:  # a population opens each member's writers at its first record
            self._open(None)

    def on_record(self, record: dict[str, Any]) -> None:
        for member, step, values in record_scalars(record):
            if values:
                for writer in self._writers(member):
                    self._guard(writer, writer.scalars, step, values)

    def on_close(self, summary: dict[str, Any] | None) -> None:
        for writers in self.writers.values():
            for writer in writers:
                if summary is not None:
                    self._guard(writer, writer.summary, _summary_values(summary))
                if getattr(writer, "offline", False):
                    self.offline_runs.append(writer.folder)
                self._guard(writer, writer.close, summary is None)
        self.writers = {}

    # ----- writers ---------------------------------------------------------------------------
    def _writers(self, member: int | None) -> list[Any]:
        if member not in self.writers:
            self._open(member)
        return self.writers.get(member, [])

    def _open(self, member: int | None) -> None:
        if self.folder is None:
            return
        folder = self.folder if member is None else self.folder / f"member-{member}"
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config if member is None else {**self.config, "member": member}
        opened = []
        for logger in self.loggers:
            if logger in self.failed:
                continue
            try:
                if logger == "tensorboard":
                    opened.append(TensorBoardWriter(folder, self.labels, config, self.start_step))
                else:
                    opened.append(WandbWriter(self.folder, self.labels, config, self.start_step, member))
            except Exception as exc:  # noqa: BLE001 - any failure of a logger must leave the run alone
                self._fail(logger, exc)
        self.writers[member] = opened

    def _guard(self, writer: Any, call: Callable[..., None], *args: Any) -> None:
        if writer.name in self.failed:
            return
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - see _open
            self._fail(writer.name, exc)

    def _fail(self, logger: str, exc: Exception) -> None:
        self.failed.add(logger)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f" ({self.folder})" if self.folder is not None else ""
        self.warn(f"{logger} logging stopped{where}: {reason}; training goes on, metrics.jsonl keeps every record")


def _summary_values(summary: dict[str, Any]) -> dict[str, Any]:
    """The run's ``summary.json`` as a dashboard's summary: its plain fields."""
    keep = ("task", "steps", "final_success", "wall_seconds", "stopped_early", "best_member", "members")
    values = {k: summary[k] for k in keep if k in summary and summary[k] is not None}
    last = (summary.get("evals") or [{}])[-1]
    for key in ("success_rate", "progress", "gained"):
        if last.get(key) is not None:
            values[f"final/{key}"] = last[key]
    collapse = (summary.get("extra") or {}).get("collapse")
    values["collapse_alarm"] = collapse is not None
    return values


def tracking_hooks(log: Sequence[str] | str | None, labels: RunLabels | None = None,
                   warn: Warn | None = None) -> TrackingHooks | None:
    """The hooks that mirror a run into ``log``'s loggers, or None when there are none."""
    loggers = check_loggers(log)
    return TrackingHooks(loggers, labels, warn) if loggers else None
