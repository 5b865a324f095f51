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
from autotune.tracking.writers import TensorBoardWriter, WandbWriter, usable_loggers
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


class FailSafe:
    """Calls into writers that may fail: a logger's first failure is said in one line (``line``
    gives it from the logger's name and the reason) and that logger is dropped; nothing
    reaches the caller, whose run or study goes on."""

    def __init__(self, warn: Warn | None, line: Callable[[str, str], str]):
        self.warn, self.line, self.failed = warn or python_warning, line, set()

    def open(self, makers: dict[str, Callable[[], Any]]) -> list[Any]:
        """A writer per logger (``makers``: logger -> constructor), those that open."""
        opened = []
        for logger, make in makers.items():
            if logger in self.failed:
                continue
            try:
                opened.append(make())
            except Exception as exc:  # noqa: BLE001 - any failure of a logger must leave the run alone
                self.fail(logger, exc)
        return opened

    def call(self, writer: Any, method: str, *args: Any) -> None:
        if writer.name in self.failed:
            return
        try:
            getattr(writer, method)(*args)
        except Exception as exc:  # noqa: BLE001 - see open
            self.fail(writer.name, exc)

    def fail(self, logger: str, exc: Exception) -> None:
        self.failed.add(logger)
        self.warn(self.line(logger, (str(exc).strip().splitlines() or [type(exc).__name__])[0]))


class TrackingHooks(TrainHooks):
    """Mirrors a run into ``loggers`` (names from ``records.LOGGERS``). The writers open at
    ``on_start`` (a population member's at its first record) and close at ``on_close``."""

    def __init__(self, loggers: Sequence[str], labels: RunLabels | None = None, warn: Warn | None = None):
        self.loggers = usable_loggers(loggers)
        self.labels = labels or RunLabels()
        self.safe = FailSafe(warn, self._failure_line)
        self.writers: dict[int | None, list[Any]] = {}
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
                    self.safe.call(writer, "scalars", step, values)

    def on_close(self, summary: dict[str, Any] | None) -> None:
        for writers in self.writers.values():
            for writer in writers:
                if summary is not None:
                    self.safe.call(writer, "summary", _summary_values(summary))
                if getattr(writer, "offline", False):
                    self.offline_runs.append(writer.folder)
                self.safe.call(writer, "close", summary is None)
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
        makers = {"tensorboard": lambda: TensorBoardWriter(folder, config, self.start_step),
                  "wandb": lambda: WandbWriter(self.folder, self.labels, config, self.start_step, member)}
        self.writers[member] = self.safe.open({logger: makers[logger] for logger in self.loggers})

    def _failure_line(self, logger: str, reason: str) -> str:
        where = f" ({self.folder})" if self.folder is not None else ""
        return f"{logger} logging stopped{where}: {reason}; training goes on, metrics.jsonl keeps every record"


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
