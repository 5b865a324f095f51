"""A study as the tools show it: one point per finished trial (its value, rho and H̄, state
and verdicts: did the control engage, did the collapse alarm fire), written as the trial ends,
beside the runs of its seeds.

TensorBoard: ``<runs>/<study>/<task>/study/``, step = the trial's number. W&B: one run per
worker process and task (job type ``study``, grouped with the trials' runs), its step W&B's
own, since trials end out of order across workers; each point carries ``trial``.

Optuna's ``WeightsAndBiasesCallback`` and ``TensorBoardCallback`` hang on ``study.optimize``;
our workers claim trials from shared storage and tell Optuna themselves, so those callbacks
would never be called. This logs what they log (value and parameters), plus our verdicts.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.tracking.loggers import FailSafe, RunLabels
from autotune.tracking.records import check_loggers
from autotune.tracking.writers import TensorBoardWriter, WandbWriter, usable_loggers


def trial_point(number: int, state: str, value: float | None, attrs: dict[str, Any],
                finished: Sequence[float] = ()) -> dict[str, float]:
    """A finished trial as scalars: ``trial/number``, ``trial/value`` (complete trials),
    ``trial/rho``, ``trial/target_entropy``, ``trial/complete``, ``trial/pruned``, and the
    verdicts ``trial/engaged`` (1 when any seed's control engaged), ``trial/engaged_at``,
    ``trial/collapse_alarm`` (1 when any seed's attention fell below the alarm), the mean
    success over seeds ``trial/success``; given the values of the study's other complete
    trials (``finished``), ``trial/tied_with`` (how many have exactly this value: H̄ did not
    tell them apart) and ``trial/best_so_far``."""
    point: dict[str, float] = {"trial/number": float(number), "trial/complete": float(state == "COMPLETE"),
                               "trial/pruned": float(state == "PRUNED")}
    if value is not None and math.isfinite(value):
        point["trial/value"] = float(value)
        point["trial/tied_with"] = float(sum(v == value for v in finished))
        point["trial/best_so_far"] = float(max([value, *finished]))
    for key in ("rho", "target_entropy"):
        if isinstance(attrs.get(key), (int, float)):
            point[f"trial/{key}"] = float(attrs[key])
    if "engaged_at" in attrs:
        point["trial/engaged"] = float(attrs["engaged_at"] is not None)
        if attrs["engaged_at"] is not None:
            point["trial/engaged_at"] = float(attrs["engaged_at"])
    if state == "COMPLETE" or "collapsed_at" in attrs:
        point["trial/collapse_alarm"] = float(attrs.get("collapsed_at") is not None)
    if attrs.get("successes"):
        point["trial/success"] = float(sum(attrs["successes"]) / len(attrs["successes"]))
    return point


class StudyTracker:
    """This worker's study-level writers, one set per task, opened at the first trial's end."""

    def __init__(self, loggers: Sequence[str], runs_dir: Path, study: str, project: str | None = None,
                 entity: str | None = None, warn: Callable[[str], None] | None = None):
        self.loggers = usable_loggers(loggers)
        self.runs_dir, self.study, self.project, self.entity = Path(runs_dir), study, project, entity
        self.safe = FailSafe(warn, lambda logger, reason: f"{logger} logging of study {study} stopped: {reason}; "
                                                          "the study goes on, its storage keeps every trial")
        self.writers: dict[str, list[Any]] = {}

    def trial_ended(self, task: str, number: int, state: str, value: float | None, attrs: dict[str, Any],
                    finished: Sequence[float] = ()) -> None:
        point = trial_point(number, state, value, attrs, finished)
        for writer in self._writers(task):
            # TensorBoard's step is the trial; W&B's must only grow, and trials end out of order
            self.safe.call(writer, "scalars", number if writer.name == "tensorboard" else None, point)

    def close(self) -> None:
        for writers in self.writers.values():
            for writer in writers:
                self.safe.call(writer, "close", False)
        self.writers = {}

    def __enter__(self) -> "StudyTracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _writers(self, task: str) -> list[Any]:
        if task in self.writers:
            return self.writers[task]
        folder = self.runs_dir / self.study / task / "study"
        folder.mkdir(parents=True, exist_ok=True)
        worker = f"{socket.gethostname()}:{os.getpid()}"
        labels = RunLabels(project=self.project, entity=self.entity, group=f"{self.study}/{task}", job_type="study",
                           name=f"{self.study}:{task} ({worker})")
        config = {"study": self.study, "task": task}
        makers = {"tensorboard": lambda: TensorBoardWriter(folder, config, 0, purge=False),
                  "wandb": lambda: WandbWriter(folder, labels, config, 0, key=worker)}
        self.writers[task] = self.safe.open({logger: makers[logger] for logger in self.loggers})
        return self.writers[task]


def study_tracker(loggers: Sequence[str] | None, runs_dir: Path, study: str, project: str | None = None,
                  entity: str | None = None) -> StudyTracker | None:
    """The study-level writers for ``loggers``, or None when there are none."""
    return StudyTracker(loggers, runs_dir, study, project, entity) if check_loggers(loggers) else None
